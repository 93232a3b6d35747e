"""The simulator's true DECam optics: trimmed CCD pixel <-> focal plane (mm) <-> field angle <-> sky.

The simulator's own model, in the form the Community Pipeline publishes (TPV), sharing nothing with the
pipeline's camera model:

* Pixels are 0-based in the trimmed, assembled CCD frame (array ``[y, x]``, pixel centres at integers). A CCD
  sits on the focal plane where it really is (:attr:`simulator.camera.SimCcd.true_center_mm`,
  ``true_rotation_deg``: the nominal table plus a few microns and thousandths of a degree).
* Focal plane (mm) -> field coordinates ``(u, v)`` (degrees) at the nominal plate scale
  :data:`PLATE_SCALE_ARCSEC_PER_MM`; focal-plane +y points East and +x South, as in the real DECam headers.
* ``(u, v)`` -> tangent-plane ``(xi, eta)`` by a TPV polynomial about the optical axis: the radial cubic
  ``xi = u (1 + k r^2)`` whose ``k`` (:data:`RADIAL_PER_DEG2`) makes the pixel scale fall from 0.2636 arcsec at
  the centre to 0.2626 at the edge, plus, on every CCD, the non-radial part of the CP's real TPV solution
  of CCD S29 (``simulator/data/cp_tpv_s29.yaml``: its third-order polynomial less the best affine map and
  radial cubic, about 50 mas RMS and 0.25 arcsec at most over a CCD) in the CCD's own pixel frame.
* ``(xi, eta)`` -> sky by the gnomonic projection about the true boresight.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import yaml

from .camera import CCD_SHAPE, PIXEL_SIZE_MM, SimCcd

PLATE_SCALE_ARCSEC_PER_MM = 17.575
"""DECam's plate scale at the optical axis (0.2636 arcsec per 15 um pixel)."""

EDGE_RADIUS_DEG = 1.1
"""Field radius (degrees) of the edge of the focal plane."""

RADIAL_PER_DEG2 = (0.2626 / 0.2636 - 1.0) / (3.0 * EDGE_RADIUS_DEG**2)
"""Radial TPV coefficient k (per square degree): the radial scale ``1 + 3 k r^2`` is 0.2626 / 0.2636 at the
edge, as DECam's pixel scale falls from the centre to the edge."""

TPV_POWERS = ((0, 0), (1, 0), (0, 1), None, (2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3))
"""Powers (i, j) of (u, v) in term k of PV1_k (PV2_k: of (v, u)); k = 3 (the radial term) unused by the CP."""

_CENTRE = ((CCD_SHAPE[1] - 1) / 2.0, (CCD_SHAPE[0] - 1) / 2.0)
_SCALE_DEG_PER_MM = PLATE_SCALE_ARCSEC_PER_MM / 3600.0


def tpv_polynomial(pv: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Evaluate a TPV axis polynomial ``sum_k pv[k] u^i v^j`` (11 coefficients, ``TPV_POWERS``)."""
    out = np.zeros(np.broadcast(u, v).shape)
    for c, p in zip(pv, TPV_POWERS):
        if p is not None and c != 0.0:
            out = out + c * u ** p[0] * v ** p[1]
    return out


def _pixel_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic monomials of the normalised trimmed-pixel coordinates (last axis: 10 terms)."""
    s = (np.asarray(x, float) - _CENTRE[0]) / _CENTRE[0]
    t = (np.asarray(y, float) - _CENTRE[1]) / _CENTRE[1]
    return np.stack([s**i * t ** (k - i) for k in range(4) for i in range(k + 1)], axis=-1)


@functools.cache
def _ccd_ripple_coeffs() -> np.ndarray:
    """(10, 2) coefficients (degrees) of the non-radial part of the CP's S29 solution over the CCD's pixels."""
    card = yaml.safe_load((resources.files("simulator") / "data" / "cp_tpv_s29.yaml").read_text())
    pv1 = np.array([card[f"PV1_{k}"] for k in range(11)])
    pv2 = np.array([card[f"PV2_{k}"] for k in range(11)])
    cd = np.array([[card["CD1_1"], card["CD1_2"]], [card["CD2_1"], card["CD2_2"]]])
    gx, gy = np.meshgrid(np.linspace(0, CCD_SHAPE[1] - 1, 33), np.linspace(0, CCD_SHAPE[0] - 1, 65))
    gx, gy = gx.ravel(), gy.ravel()
    # CP pixels are 1-based on an image trimmed by one pixel (LTV = -1): CP p = trimmed 0-based p + 1 + LTV
    u, v = cd @ np.stack([gx + 1.0 + card["LTV1"] - card["CRPIX1"], gy + 1.0 + card["LTV2"] - card["CRPIX2"]])
    xi, eta = tpv_polynomial(pv1, u, v), tpv_polynomial(pv2, v, u)
    r2 = u * u + v * v
    one, zero = np.ones_like(u), np.zeros_like(u)
    design = np.block([[np.column_stack([one, u, v, zero, zero, zero, u * r2])],
                       [np.column_stack([zero, zero, zero, one, u, v, v * r2])]])
    target = np.concatenate([xi, eta])
    fit, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = (target - design @ fit).reshape(2, -1).T
    coeffs, *_ = np.linalg.lstsq(_pixel_terms(gx, gy), residual, rcond=None)
    return coeffs


def ccd_ripple_deg(x, y) -> tuple[np.ndarray, np.ndarray]:
    """The CCD-level non-radial distortion (dxi, deta), degrees, at trimmed pixels (x, y) (same on every CCD)."""
    d = _pixel_terms(x, y) @ _ccd_ripple_coeffs()
    return d[..., 0], d[..., 1]


def pixel_to_focal(ccd: SimCcd, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed 0-based pixel -> where it really is on the focal plane (mm)."""
    u = (np.asarray(x, dtype=float) - _CENTRE[0]) * PIXEL_SIZE_MM
    v = (np.asarray(y, dtype=float) - _CENTRE[1]) * PIXEL_SIZE_MM
    t = np.deg2rad(ccd.true_rotation_deg)
    xc, yc = ccd.true_center_mm
    return xc + np.cos(t) * u - np.sin(t) * v, yc + np.sin(t) * u + np.cos(t) * v


def pixel_to_tangent_deg(ccd: SimCcd, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed 0-based pixel -> true gnomonic tangent-plane coordinates (xi East, eta North), degrees."""
    fx, fy = pixel_to_focal(ccd, x, y)
    u, v = _SCALE_DEG_PER_MM * fy, -_SCALE_DEG_PER_MM * fx
    radial = 1.0 + RADIAL_PER_DEG2 * (u * u + v * v)
    dxi, deta = ccd_ripple_deg(x, y)
    return u * radial + dxi, v * radial + deta


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


def pixel_to_sky(ccd: SimCcd, x, y, ra0_deg: float, dec0_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """True mapping: trimmed 0-based pixel -> (ra, dec) degrees for a boresight (ra0, dec0)."""
    xi, eta = pixel_to_tangent_deg(ccd, x, y)
    return tangent_to_sky(np.deg2rad(xi), np.deg2rad(eta), ra0_deg, dec0_deg)


def sky_to_pixel(ccd: SimCcd, ra, dec, ra0_deg: float, dec0_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """True mapping: (ra, dec) degrees -> trimmed 0-based pixel (may be off the CCD).

    Inverts :func:`pixel_to_tangent_deg` by fixed-point steps through its Jacobian at the CCD's centre (the
    distortion changes it by under 2% across the field: 8 steps reach far below a micro-pixel).
    """
    xi, eta = sky_to_tangent(ra, dec, ra0_deg, dec0_deg)
    target = np.stack([np.rad2deg(xi), np.rad2deg(eta)])
    cx, cy = _CENTRE
    c = np.array(pixel_to_tangent_deg(ccd, [cx, cx + 1.0, cx], [cy, cy, cy + 1.0]))
    jac_inv = np.linalg.inv(np.column_stack([c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]]))
    pix = np.array([cx, cy])[:, None] + jac_inv @ (target.reshape(2, -1) - c[:, :1])
    for _ in range(8):
        pix = pix + jac_inv @ (target.reshape(2, -1) - np.array(pixel_to_tangent_deg(ccd, pix[0], pix[1])))
    return pix[0].reshape(target.shape[1:]), pix[1].reshape(target.shape[1:])


def local_jacobian(ccd: SimCcd, x: float, y: float, ra0_deg: float, dec0_deg: float) -> np.ndarray:
    """2x2 matrix J (arcsec per pixel): (east, north) offset = J @ (dx, dy) near pixel (x, y)."""
    ra, dec = pixel_to_sky(ccd, [x, x + 1.0, x], [y, y, y + 1.0], ra0_deg, dec0_deg)
    cosd = np.cos(np.deg2rad(dec[0]))
    dra = (ra[1:] - ra[0] + 180.0) % 360.0 - 180.0
    east = dra * cosd * 3600.0
    north = (dec[1:] - dec[0]) * 3600.0
    return np.array([[east[0], east[1]], [north[0], north[1]]])
