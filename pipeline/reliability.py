"""Real/bogus reliability of DiaSources.

Version ``heuristic-1``: a logistic score on measured features (PSF-fit quality, shape against the PSF,
pixel flags, dipole-ness, SNR). A classifier trained on the simulator's truth replaces it when trained
weights are supplied (same features, learned coefficients).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

RELIABILITY_VERSION = "heuristic-1"

FEATURES = ("chi2_per_pix", "size_ratio", "abs_snr", "flagged", "is_dipole", "is_negative")


class ReliabilityConfig(BaseModel):
    """Weights of the logistic reliability model (intercept first, then one per feature)."""

    model_config = ConfigDict(frozen=True)
    weights: tuple[float, ...] = Field((3.0, -1.2, -2.5, 0.05, -2.0, -1.5, -0.5),
                                       description="Intercept, then weights of FEATURES.")
    version: str = Field(RELIABILITY_VERSION, description="Reported as reliabilityVersion.")
    threshold: float = Field(0.5, description="Default cut: DiaSources below it are likely bogus.")


def features(dia_sources: Table) -> np.ndarray:
    """(n, len(FEATURES)) feature matrix."""
    n = len(dia_sources)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    chi2 = np.asarray(dia_sources["psfChi2"], float) / np.maximum(np.asarray(dia_sources["psfNdata"], float), 1)
    size = (np.asarray(dia_sources["ixx"], float) + np.asarray(dia_sources["iyy"], float))
    size_psf = (np.asarray(dia_sources["ixxPSF"], float) + np.asarray(dia_sources["iyyPSF"], float))
    ratio = np.abs(np.log(np.clip(size / np.where(size_psf > 0, size_psf, 1.0), 1e-3, 1e3)))
    flagged = (np.asarray(dia_sources["pixelFlags_saturated"]) | np.asarray(dia_sources["pixelFlags_bad"])
               | np.asarray(dia_sources["pixelFlags_cr"]) | np.asarray(dia_sources["pixelFlags_nodata"]))
    return np.column_stack([
        np.nan_to_num(np.clip(chi2, 0, 50), nan=50.0),
        np.nan_to_num(ratio, nan=5.0),
        np.clip(np.nan_to_num(np.abs(np.asarray(dia_sources["snr"], float))), 0, 100),
        flagged.astype(float),
        np.asarray(dia_sources["isDipole"], float),
        np.asarray(dia_sources["isNegative"], float),
    ])


def score(dia_sources: Table, config: ReliabilityConfig = ReliabilityConfig()) -> np.ndarray:
    """Reliability in [0, 1] of each DiaSource."""
    x = features(dia_sources)
    w = np.asarray(config.weights)
    logit = w[0] + x @ w[1:]
    return 1.0 / (1.0 + np.exp(-logit))
