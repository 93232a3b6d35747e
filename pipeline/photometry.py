"""Photometric calibration: a zero point against the reference catalog with outlier rejection."""

from __future__ import annotations

import numpy as np
from astropy.stats import sigma_clipped_stats

from pipeline.errors import AlgorithmError
from schemas.datarepo import NJY_AB_ZERO_POINT


def fit_zero_point(instrumental_flux_e: np.ndarray, ref_mag: np.ndarray, *,
                   instrumental_flux_err_e: np.ndarray | None = None, ref_mag_err: np.ndarray | None = None,
                   min_stars: int = 5, clip_sigma: float = 3.0,
                   mag_error_floor: float = 0.003) -> tuple[float, float, int]:
    """Zero point (AB magnitude of one electron) from matched stars.

    Parameters
    ----------
    instrumental_flux_e : numpy.ndarray
        Aperture-corrected fluxes of matched stars, electrons.
    ref_mag : numpy.ndarray
        Their reference AB magnitudes in the exposure's band.
    instrumental_flux_err_e : numpy.ndarray, optional
        Flux errors: stars are then weighted by ``1 / (sigma_mag^2 + mag_error_floor^2)``, so that bright
        stars count most without any one star dominating; equal weights without them.
    ref_mag_err : numpy.ndarray, optional
        Errors of the reference magnitudes (a colour-transformed catalog's), added to ``sigma_mag`` in the
        weights.

    Returns
    -------
    zero_point, zero_point_err : float
        Sigma-clipped weighted mean of ``ref_mag + 2.5 log10(flux)`` and its standard error.
    n_used : int
        Stars kept after clipping.

    Raises
    ------
    AlgorithmError
        Fewer than ``min_stars`` usable stars.
    """
    good = np.isfinite(instrumental_flux_e) & (instrumental_flux_e > 0) & np.isfinite(ref_mag)
    if good.sum() < min_stars:
        raise AlgorithmError(f"zero point needs {min_stars} stars, got {int(good.sum())}", stage="photometry")
    zp_each = ref_mag[good] + 2.5 * np.log10(instrumental_flux_e[good])
    if instrumental_flux_err_e is None:
        weight = np.ones_like(zp_each)
    else:
        sigma_mag = 1.0857 * np.asarray(instrumental_flux_err_e, float)[good] / instrumental_flux_e[good]
        ref_var = 0.0 if ref_mag_err is None else np.nan_to_num(np.asarray(ref_mag_err, float)[good], nan=1.0) ** 2
        weight = 1.0 / (np.nan_to_num(sigma_mag, nan=1.0) ** 2 + ref_var + mag_error_floor**2)
    mean, median, std = sigma_clipped_stats(zp_each, sigma=clip_sigma, maxiters=5)
    kept = np.abs(zp_each - median) < clip_sigma * max(std, 1e-4)
    n_used = int(kept.sum())
    zero_point = float(np.average(zp_each[kept], weights=weight[kept]))
    n_effective = weight[kept].sum() ** 2 / np.sum(weight[kept] ** 2)
    return zero_point, float(std / np.sqrt(max(n_effective, 1.0))), n_used


def njy_per_electron(zero_point: float) -> float:
    """Scale from electrons to nJy for a zero point (AB mag of 1 electron)."""
    return float(10.0 ** (0.4 * (NJY_AB_ZERO_POINT - zero_point)))
