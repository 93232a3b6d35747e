"""What the optics make of a bright star beyond its PSF: diffraction spikes, a halo and a pupil ghost.

* Diffraction spikes: the secondary mirror's four spider vanes spread light into a cross aligned with the
  camera (here the CCD's axes), each arm as sharp across as the PSF and falling as ``r**-2`` along its length;
  the four arms hold :data:`SPIKE_FRACTION` of the star's flux within :data:`STAMP_RADIUS` pixels.
* Halo: a scattered-light aureole about the star, ``(1 + (r / r_core)**2)**-1.5``, holding
  :data:`HALO_FRACTION` of its flux within the stamp (far beyond the Moffat core's wings).
* Ghost: light reflected between the filter, the corrector's lenses and the CCDs comes to focus far from
  the focal plane, so it lands as an out-of-focus image of the pupil, a ring (annulus) of a few hundred
  pixels' diameter with a central hole (the secondary's shadow), displaced from the star away from the optical
  axis, with :data:`GHOST_FRACTION` of its flux.

Only stars that bring more than :data:`MIN_FLUX_E` electrons are given these (a handful per CCD); each is a
stamp of array operations.
"""

from __future__ import annotations

import numpy as np

from . import camera, optics

SPIKE_FRACTION = 0.01
HALO_FRACTION = 0.02
GHOST_FRACTION = 0.001
MIN_FLUX_E = 2e6
"""Stars with less (about r = 16 in 90 s) have no visible spikes, halo or ghost."""
STAMP_RADIUS = 200
GHOST_RADIUS_PIX = (60.0, 25.0)
"""Outer and inner radius of the pupil ghost's annulus."""
GHOST_SHIFT = 0.08
"""The ghost's displacement from the star, as a fraction of the star's distance from the optical axis."""


def _stamp_grid() -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(-STAMP_RADIUS, STAMP_RADIUS + 1, dtype=np.float32)
    return g[None, :], g[:, None]


def star_extras(fwhm_pix: float) -> np.ndarray:
    """Spikes and halo of a star of unit flux centred in a (2R+1)^2 stamp (R = :data:`STAMP_RADIUS`)."""
    dx, dy = _stamp_grid()
    r2 = dx * dx + dy * dy
    sigma = fwhm_pix / 2.3548
    core = 2.0 * fwhm_pix
    arms = (np.exp(-0.5 * (dy / sigma) ** 2) + np.exp(-0.5 * (dx / sigma) ** 2)) / np.maximum(r2, core * core)
    arms /= arms.sum()
    halo = (1.0 + r2 / (4.0 * core) ** 2) ** -1.5
    halo /= halo.sum()
    return (SPIKE_FRACTION * arms + HALO_FRACTION * halo).astype(np.float32)


def ghost_stamp() -> np.ndarray:
    """The pupil ghost of unit flux, centred in a stamp of :data:`STAMP_RADIUS`: a flat annulus with soft edges."""
    dx, dy = _stamp_grid()
    r = np.sqrt(dx * dx + dy * dy)
    outer, inner = GHOST_RADIUS_PIX
    ring = np.clip(outer - r + 0.5, 0.0, 1.0) * np.clip(r - inner + 0.5, 0.0, 1.0)
    return (ring / ring.sum()).astype(np.float32)


def add_bright_star_optics(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux_e: np.ndarray, *,
                           fwhm_pix: float, ccd: camera.SimCcd) -> int:
    """Add the spikes, halo and ghost of each star brighter than :data:`MIN_FLUX_E` (pixel ``x``, ``y``,
    electrons ``flux_e``) to ``image`` in place; returns how many stars had them."""
    ny, nx = image.shape
    bright = np.flatnonzero((np.asarray(flux_e) > MIN_FLUX_E) & (x > -STAMP_RADIUS) & (x < nx + STAMP_RADIUS)
                            & (y > -STAMP_RADIUS) & (y < ny + STAMP_RADIUS))
    if bright.size == 0:
        return 0
    extras, ghost = star_extras(fwhm_pix), ghost_stamp()
    fx, fy = optics.pixel_to_focal(ccd, x[bright], y[bright])
    # the ghost's displacement away from the optical axis, in pixels of this CCD (rotation: a few tenths of a deg)
    t = np.deg2rad(ccd.true_rotation_deg)
    gx, gy = (GHOST_SHIFT * (np.cos(t) * fx + np.sin(t) * fy) / camera.PIXEL_SIZE_MM,
              GHOST_SHIFT * (-np.sin(t) * fx + np.cos(t) * fy) / camera.PIXEL_SIZE_MM)
    for k, (cx, cy, f) in enumerate(zip(x[bright], y[bright], flux_e[bright])):  # a handful of stars per CCD
        _paste(image, extras, cx, cy, f)
        _paste(image, ghost, cx + gx[k], cy + gy[k], f * GHOST_FRACTION)
    return int(bright.size)


def _paste(image: np.ndarray, stamp: np.ndarray, cx: float, cy: float, scale: float) -> None:
    """Add ``scale * stamp`` centred at the pixel nearest (cx, cy), clipped to the image."""
    r = stamp.shape[0] // 2
    ix, iy = int(round(cx)), int(round(cy))
    ny, nx = image.shape
    x0, x1, y0, y1 = max(ix - r, 0), min(ix + r + 1, nx), max(iy - r, 0), min(iy + r + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return
    image[y0:y1, x0:x1] += np.float32(scale) * stamp[y0 - iy + r:y1 - iy + r, x0 - ix + r:x1 - ix + r]
