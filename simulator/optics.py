"""The simulator's true DECam optics: trimmed CCD pixel <-> focal plane (mm) <-> field angle <-> sky.

Pixel coordinates are 0-based in the trimmed, assembled CCD frame (array ``[y, x]``, x along the 2048 side,
pixel centres at integers). Focal plane: CCD bounds from chipcenters.txt, 15 um pixels, the CCD rotated by
``rotation_deg`` about its centre. Field angle theta (radians) = sum c_k r^k with the obs_decam radial
coefficients. On the sky, focal-plane +y points East (increasing RA) and +x points South, like the real
DECam raw headers (CD1_2 > 0, CD2_1 < 0); the tangent-plane projection is about the true boresight.
"""

from __future__ import annotations

import numpy as np

from pipeline.decam.camera import (
    CCD_CENTRE_X_PIX,
    CCD_CENTRE_Y_PIX,
    PIXEL_SIZE_MM,
    RADIAL_COEFFS,
    CcdInfo,
    field_angle_of_radius,
    focal_to_tangent,
    pixel_to_focal,
)


def _dtheta_dr(r: np.ndarray) -> np.ndarray:
    c = RADIAL_COEFFS
    return c[1] + r * (2 * c[2] + r * 3 * c[3])


def _r_of_theta(theta: np.ndarray) -> np.ndarray:
    r = (theta - RADIAL_COEFFS[0]) / RADIAL_COEFFS[1]
    for _ in range(6):
        r = r - (field_angle_of_radius(r) - theta) / _dtheta_dr(r)
    return r




def focal_to_pixel(ccd: CcdInfo, fx, fy) -> tuple[np.ndarray, np.ndarray]:
    """Focal plane (mm) -> trimmed 0-based pixel."""
    xc, yc = ccd.center_mm
    dx = np.asarray(fx, dtype=float) - xc
    dy = np.asarray(fy, dtype=float) - yc
    t = np.deg2rad(ccd.rotation_deg)
    u = np.cos(t) * dx + np.sin(t) * dy
    v = -np.sin(t) * dx + np.cos(t) * dy
    return u / PIXEL_SIZE_MM + CCD_CENTRE_X_PIX, v / PIXEL_SIZE_MM + CCD_CENTRE_Y_PIX




def tangent_to_focal(xi, eta) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`focal_to_tangent`."""
    xi = np.asarray(xi, dtype=float)
    eta = np.asarray(eta, dtype=float)
    rho = np.hypot(xi, eta)
    r = _r_of_theta(np.arctan(rho))
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(rho > 0, r / np.where(rho > 0, rho, 1.0), 1.0 / RADIAL_COEFFS[1])
    return -k * eta, k * xi


def tangent_to_sky(xi, eta, ra0_deg: float, dec0_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) de-projection about (ra0, dec0); xi, eta in radians. Returns degrees."""
    xi = np.asarray(xi, dtype=float)
    eta = np.asarray(eta, dtype=float)
    d0 = np.deg2rad(dec0_deg)
    den = np.cos(d0) - eta * np.sin(d0)
    ra = np.deg2rad(ra0_deg) + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den))
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def sky_to_tangent(ra_deg, dec_deg, ra0_deg: float, dec0_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection about (ra0, dec0): degrees -> (xi, eta) radians. Points > 90 deg away get NaN."""
    a = np.deg2rad(np.asarray(ra_deg, dtype=float) - ra0_deg)
    d = np.deg2rad(np.asarray(dec_deg, dtype=float))
    d0 = np.deg2rad(dec0_deg)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    cosc = np.where(cosc > 0, cosc, np.nan)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return xi, eta


def pixel_to_sky(ccd: CcdInfo, x, y, ra0_deg: float, dec0_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """True mapping: trimmed 0-based pixel -> (ra, dec) degrees for a boresight (ra0, dec0)."""
    fx, fy = pixel_to_focal(ccd, x, y)
    xi, eta = focal_to_tangent(fx, fy)
    return tangent_to_sky(xi, eta, ra0_deg, dec0_deg)


def sky_to_pixel(ccd: CcdInfo, ra, dec, ra0_deg: float, dec0_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """True mapping: (ra, dec) degrees -> trimmed 0-based pixel (may be off the CCD)."""
    xi, eta = sky_to_tangent(ra, dec, ra0_deg, dec0_deg)
    fx, fy = tangent_to_focal(xi, eta)
    return focal_to_pixel(ccd, fx, fy)


def local_jacobian(ccd: CcdInfo, x: float, y: float, ra0_deg: float, dec0_deg: float) -> np.ndarray:
    """2x2 matrix J (arcsec per pixel): (east, north) offset = J @ (dx, dy) near pixel (x, y)."""
    ra, dec = pixel_to_sky(ccd, [x, x + 1.0, x], [y, y, y + 1.0], ra0_deg, dec0_deg)
    cosd = np.cos(np.deg2rad(dec[0]))
    dra = (ra[1:] - ra[0] + 180.0) % 360.0 - 180.0
    east = dra * cosd * 3600.0
    north = (dec[1:] - dec[0]) * 3600.0
    return np.array([[east[0], east[1]], [north[0], north[1]]])
