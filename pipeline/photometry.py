"""Photometric calibration: a zero point against the reference catalog with outlier rejection."""

from __future__ import annotations

import numpy as np
from astropy.stats import sigma_clipped_stats

from pipeline.datarepo import NJY_AB_ZERO_POINT
from pipeline.errors import AlgorithmError


def fit_zero_point(instrumental_flux_e: np.ndarray, ref_mag: np.ndarray, *, min_stars: int = 5,
                   clip_sigma: float = 3.0) -> tuple[float, float, int]:
    """Zero point (AB magnitude of one electron) from matched stars.

    Parameters
    ----------
    instrumental_flux_e : numpy.ndarray
        Aperture-corrected fluxes of matched stars, electrons.
    ref_mag : numpy.ndarray
        Their reference AB magnitudes in the exposure's band.

    Returns
    -------
    zero_point, zero_point_err : float
        Sigma-clipped mean of ``ref_mag + 2.5 log10(flux)`` and its standard error.
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
    mean, median, std = sigma_clipped_stats(zp_each, sigma=clip_sigma, maxiters=5)
    kept = np.abs(zp_each - median) < clip_sigma * max(std, 1e-4)
    n_used = int(kept.sum())
    return float(np.mean(zp_each[kept])), float(std / np.sqrt(max(n_used, 1))), n_used


def njy_per_electron(zero_point: float) -> float:
    """Scale from electrons to nJy for a zero point (AB mag of 1 electron)."""
    return float(10.0 ** (0.4 * (NJY_AB_ZERO_POINT - zero_point)))
