"""Vectorised rendering of point sources, galaxies and cosmic rays onto an image (no loops over pixels).

Point sources use a Moffat PSF (``beta``, by default ``MOFFAT_BETA``), elliptical when given an ellipticity
(``e1``, ``e2``: the distortion of the second moments, area-preserving), sampled at pixel centres and
normalised so that each stamp holds the analytic fraction of flux inside its radius. Stamps are added with
``np.bincount`` on flattened indices, in groups of equal stamp size.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

MOFFAT_BETA = 3.5
_RADII = (8, 16, 32, 64, 128, 256)


def moffat_alpha(fwhm_pix, beta: float = MOFFAT_BETA):
    return fwhm_pix / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_wing(radius: float, fwhm_pix: float, beta: float = MOFFAT_BETA) -> float:
    """Fraction of a (circular) Moffat's flux outside a circle of ``radius`` pixels."""
    a = moffat_alpha(fwhm_pix, beta)
    return float((1.0 + (radius / a) ** 2) ** (1.0 - beta))


def moffat_r2(dx, dy, e1=0.0, e2=0.0):
    """Squared elliptical radius ``d^T M^-1 d`` of offsets (dx, dy), with ``M = [[1 + e1, e2], [e2, 1 - e1]] /
    sqrt(1 - e1^2 - e2^2)`` (unit determinant: the profile keeps its area and FWHM, as a geometric mean)."""
    norm = 1.0 / np.sqrt(1.0 - np.square(e1) - np.square(e2))
    return ((1.0 - e1) * dx * dx - 2.0 * e2 * dx * dy + (1.0 + e1) * dy * dy) * norm


def psf_stamp(fwhm_pix: float, radius: int, dx: float = 0.0, dy: float = 0.0, *, beta: float = MOFFAT_BETA,
              e1: float = 0.0, e2: float = 0.0) -> np.ndarray:
    """A (2R+1, 2R+1) Moffat stamp centred at (R+dx, R+dy), summing to 1 - wing(R)."""
    g = np.arange(-radius, radius + 1, dtype=float)
    a = moffat_alpha(fwhm_pix, beta)
    r2 = moffat_r2(g[None, :] - dx, g[:, None] - dy, e1, e2)
    s = (1.0 + r2 / a**2) ** (-beta)
    return s * ((1.0 - moffat_wing(radius, fwhm_pix, beta)) / s.sum())


def noise_equivalent_area(fwhm_pix: float, beta: float = MOFFAT_BETA) -> float:
    """1 / sum(p^2) of the pixelised PSF (pixels)."""
    p = psf_stamp(fwhm_pix, max(16, int(6 * fwhm_pix)), beta=beta)
    p = p / p.sum()
    return float(1.0 / np.sum(p**2))


def _add_stamps(image: np.ndarray, x: np.ndarray, y: np.ndarray, stamps: np.ndarray, radius: int) -> None:
    """Add stamps (n, 2R+1, 2R+1) whose centre pixels are round(x), round(y) into image (in place)."""
    ny, nx = image.shape
    ix0 = np.rint(x).astype(np.int64)
    iy0 = np.rint(y).astype(np.int64)
    g = np.arange(-radius, radius + 1)
    ix = ix0[:, None, None] + g[None, None, :]
    iy = iy0[:, None, None] + g[None, :, None]
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    if not ok.any():
        return
    flat = (iy * nx + ix)[ok]
    add = np.bincount(flat, weights=stamps[ok], minlength=ny * nx)
    image += add.reshape(ny, nx).astype(image.dtype, copy=False)


def _radius_for(flux: np.ndarray, fwhm_pix: float, floor_value: float, beta: float) -> np.ndarray:
    a = moffat_alpha(fwhm_pix, beta)
    norm = (beta - 1.0) / (np.pi * a * a)
    ratio = np.maximum(flux * norm / floor_value, 1.0)
    need = a * np.sqrt(np.maximum(ratio ** (1.0 / beta) - 1.0, 0.0))
    return np.maximum(need, 4.0 * fwhm_pix)


def add_point_sources(image: np.ndarray, x, y, flux, fwhm_pix: float, *, floor_value: float = 0.2,
                      batch: int = 4096, beta: float = MOFFAT_BETA, shape=None) -> None:
    """Add point sources (0-based pixel centres, total fluxes in image units) with a Moffat PSF, in place.

    ``floor_value``: stamps extend until the profile drops below this (image units), capped at 256 px.
    ``shape``: optional per-source ``(fwhm_pix, e1, e2)`` arrays (a PSF that changes across the image);
    ``fwhm_pix`` then only sizes the stamps.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    flux = np.asarray(flux, dtype=float)
    ny, nx = image.shape
    if shape is None:
        shape = (np.full(x.size, fwhm_pix), np.zeros(x.size), np.zeros(x.size))
    fwhm, e1, e2 = (np.broadcast_to(np.asarray(v, dtype=float), x.shape) for v in shape)
    keep = (flux > 0) & np.isfinite(x) & np.isfinite(y)
    need = _radius_for(flux, float(np.max(fwhm, initial=fwhm_pix)), floor_value, beta)
    radii = np.array(_RADII)
    ridx = np.minimum(np.searchsorted(radii, need), len(radii) - 1)
    for k, radius in enumerate(radii):
        sel = keep & (ridx == k) & (x > -radius) & (x < nx + radius) & (y > -radius) & (y < ny + radius)
        idx = np.nonzero(sel)[0]
        if idx.size == 0:
            continue
        per = max(1, min(batch, int(4e6 // (2 * radius + 1) ** 2)))
        g = np.arange(-radius, radius + 1, dtype=float)
        for s in range(0, idx.size, per):
            j = idx[s:s + per]
            dx = (g[None, None, :] - (x[j] - np.rint(x[j]))[:, None, None])
            dy = (g[None, :, None] - (y[j] - np.rint(y[j]))[:, None, None])
            a = moffat_alpha(fwhm[j], beta)[:, None, None]
            r2 = moffat_r2(dx, dy, e1[j][:, None, None], e2[j][:, None, None])
            st = (1.0 + r2 / (a * a)) ** (-beta)
            wing = 1.0 - (1.0 + (radius / a[:, 0, 0]) ** 2) ** (1.0 - beta)
            st *= (flux[j] * wing / st.sum(axis=(1, 2)))[:, None, None]
            _add_stamps(image, x[j], y[j], st, radius)


def sersic_b(n):
    """The Sersic ``b_n`` that makes ``r_eff`` the half-light radius (Ciotti & Bertin 1999's expansion)."""
    n = np.asarray(n, dtype=float)
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def add_galaxies(image: np.ndarray, x, y, flux, *, r_eff_arcsec, q, pa_deg, jac: np.ndarray, fwhm_pix: float,
                 radius: int = 48, beta: float = MOFFAT_BETA, e1: float = 0.0, e2: float = 0.0,
                 bulge_frac=None, bulge_r_eff_arcsec=None) -> None:
    """Add PSF-convolved elliptical galaxies, in place: an exponential disk (Sersic n = 1) of ``r_eff_arcsec``
    and, with ``bulge_frac`` (bulge-to-total flux) and ``bulge_r_eff_arcsec``, a de Vaucouleurs bulge (n = 4)
    of the same axis ratio and angle (the PSF: a Moffat of ``fwhm_pix``, ``beta``, ``e1``, ``e2``, the same for
    every galaxy).

    ``jac``: 2x2 arcsec-per-pixel matrix giving (east, north) offsets from pixel offsets; ``pa_deg``: position
    angle of the major axis, East of North; ``q``: axis ratio. Each galaxy's stamp sums to its flux (minus the
    PSF wing beyond ``radius``); profiles are sampled at 4 points per pixel (a bulge's cusp inside its
    central pixel is smoothed; the stamp's flux is exact).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ny, nx = image.shape
    sel = np.nonzero((x > -radius) & (x < nx + radius) & (y > -radius) & (y < ny + radius)
                     & (np.asarray(flux) > 0))[0]
    if sel.size == 0:
        return
    n = 2 * radius + 1
    kern = psf_stamp(fwhm_pix, radius, beta=beta, e1=e1, e2=e2)
    kern_f = sfft.rfft2(sfft.ifftshift(kern))
    g = np.arange(-radius, radius + 1, dtype=float)
    bt = np.zeros(x.size) if bulge_frac is None else np.asarray(bulge_frac, dtype=float)
    per = max(1, int(3e6 // (n * n * 4)))
    for s in range(0, sel.size, per):
        j = sel[s:s + per]
        dx = (x[j] - np.rint(x[j]))[:, None, None]
        dy = (y[j] - np.rint(y[j]))[:, None, None]
        pa = np.deg2rad(np.asarray(pa_deg)[j])[:, None, None]
        qq = np.asarray(q)[j][:, None, None]

        def profile(r_eff, sersic_n: float, sub=(-0.25, 0.25)) -> np.ndarray:
            out = np.zeros((j.size, n, n))
            for sx in sub:
                for sy in sub:
                    px = g[None, None, :] + sx - dx
                    py = g[None, :, None] + sy - dy
                    e = jac[0, 0] * px + jac[0, 1] * py
                    nn = jac[1, 0] * px + jac[1, 1] * py
                    # major axis along PA (east of north): unit vector (sin pa, cos pa) in (east, north)
                    u = e * np.sin(pa) + nn * np.cos(pa)
                    v = -e * np.cos(pa) + nn * np.sin(pa)
                    r = np.sqrt(u * u + (v / qq) ** 2) / r_eff
                    root = r if sersic_n == 1.0 else np.sqrt(np.sqrt(r))   # r ** (1 / n), n = 1 or 4
                    out += np.exp(-sersic_b(sersic_n) * (root - 1.0))
            return out / out.sum(axis=(1, 2), keepdims=True)

        prof = profile(np.asarray(r_eff_arcsec)[j][:, None, None], 1.0)
        with_bulge = bt[j] > 0
        if with_bulge.any():
            f = bt[j][:, None, None]
            bulge = profile(np.maximum(np.asarray(bulge_r_eff_arcsec)[j], 0.02)[:, None, None], 4.0)
            prof = (1.0 - f) * prof + f * bulge
        conv = sfft.irfft2(sfft.rfft2(prof, axes=(1, 2)) * kern_f[None], s=(n, n), axes=(1, 2))
        conv *= np.asarray(flux, dtype=float)[j][:, None, None]
        _add_stamps(image, x[j], y[j], conv, radius)


def cosmic_rays(shape: tuple[int, int], n: int, rng: np.random.Generator) -> np.ndarray:
    """Electron deposit image (float32) of ``n`` cosmic rays: points and sharp straight tracks."""
    ny, nx = shape
    out = np.zeros(ny * nx, dtype=np.float64)
    if n <= 0:
        return out.reshape(shape).astype(np.float32)
    x0 = rng.uniform(0, nx, n)
    y0 = rng.uniform(0, ny, n)
    length = np.where(rng.random(n) < 0.3, 0.0, rng.exponential(8.0, n) + 1.0)
    length = np.minimum(length, 60.0)
    ang = rng.uniform(0, np.pi, n)
    dedx = rng.uniform(400.0, 4000.0, n)  # electrons per pixel of track
    nstep = (np.ceil(length / 0.25).astype(int) + 1)
    owner = np.repeat(np.arange(n), nstep)
    start = np.cumsum(nstep) - nstep
    t = (np.arange(owner.size) - start[owner]) / np.maximum(nstep[owner] - 1, 1)
    px = x0[owner] + (t - 0.5) * length[owner] * np.cos(ang[owner])
    py = y0[owner] + (t - 0.5) * length[owner] * np.sin(ang[owner])
    w = dedx[owner] * np.maximum(length[owner], 1.0) / nstep[owner]
    ix = np.floor(px).astype(np.int64)
    iy = np.floor(py).astype(np.int64)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    out += np.bincount((iy * nx + ix)[ok], weights=w[ok], minlength=ny * nx)
    return out.reshape(shape).astype(np.float32)


def bleed(image: np.ndarray, full_well: np.ndarray) -> np.ndarray:
    """Clip at the full well (per column) and spill the excess charge up and down the columns, in place.

    ``full_well``: per-column full well (nx,). Returns the boolean mask of saturated pixels.
    """
    over = image > full_well[None, :]
    if not over.any():
        return over
    cols = np.nonzero(over.any(axis=0))[0]
    ny = image.shape[0]
    for c in cols:  # loop over saturated columns only (a few dozen), each handled with array ops
        col = image[:, c]
        fw = full_well[c]
        excess = float(np.sum(col[col > fw] - fw))
        rows = np.nonzero(col > fw)[0]
        col[rows] = fw
        extra = int(excess // fw)
        lo, hi = rows.min(), rows.max()
        up = extra // 2
        down = extra - up
        col[hi + 1:min(ny, hi + 1 + up)] = fw
        col[max(0, lo - down):lo] = fw
        over[:, c] = col >= fw
    return over
