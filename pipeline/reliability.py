"""Real/bogus reliability of DiaSources: a logistic regression trained on the simulator's truth.

Version ``lr-2``: ``p = 1 / (1 + exp(-(w0 + sum_k w_k f_k)))`` on the features below, all computed from
diaSource columns (PSF-fit quality, shape against the PSF, pixel flags, dipole-ness, SNR and the flux ratios
science / difference and template / difference that separate residuals of static sources from new light).
The weights in ``ReliabilityConfig`` were learned by ``train_reliability`` on a simulated training night
(``bench/train_reliability.py``, another seed than the tests); ``train_reliability`` is Newton's method
(iteratively reweighted least squares) with a small L2 penalty, numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field, model_validator

RELIABILITY_VERSION = "lr-2"

FEATURES = ("log_abs_snr", "log_chi2_per_pix", "log_size_ratio", "flagged", "is_dipole", "is_negative",
            "template_ratio", "science_ratio", "aperture_ratio")
"""Feature names, in the order of the weights (after the intercept)."""

# Learned by bench/train_reliability.py (seed 101, 4 epochs x 2 small CCDs, 152 real and 106 bogus DiaSources,
# class-balanced, L2 0.01); held-out AUC 0.92-0.93. The threshold 0.6 was set on another night (seed 11):
# 0.7 bogus per CCD kept, every real DiaSource above SNR 10 kept.
_TRAINED_WEIGHTS = (0.03879, 4.859, -5.27, -1.188, -0.9324, -2.995, 0.3997, -0.008698, -0.1782, -3.639)


class ReliabilityConfig(BaseModel):
    """Weights of the logistic reliability model (intercept first, then one per feature of ``FEATURES``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    weights: tuple[float, ...] = Field(_TRAINED_WEIGHTS, description="Intercept, then weights of FEATURES.")
    version: str = Field(RELIABILITY_VERSION, min_length=1, max_length=8,
                         description="Reported as reliabilityVersion (<= 8 characters).")
    threshold: float = Field(0.6, ge=0, le=1.0, description="Default cut: DiaSources below it are likely bogus.")

    @model_validator(mode="after")
    def _check(self) -> ReliabilityConfig:
        if len(self.weights) != len(FEATURES) + 1:
            raise ValueError(f"weights needs {len(FEATURES) + 1} values (intercept + {FEATURES}), "
                             f"got {len(self.weights)}")
        if not np.all(np.isfinite(self.weights)):
            raise ValueError(f"weights must be finite, got {self.weights}")
        return self


def _col(table: Table, name: str, default: float = np.nan) -> np.ndarray:
    if name in table.colnames:
        return np.asarray(table[name], float)
    return np.full(len(table), default)


def features(dia_sources: Table) -> np.ndarray:
    """(n, len(FEATURES)) feature matrix from diaSource columns; every value finite.

    Notes
    -----
    - ``log_abs_snr``: log10 |psfFlux / psfFluxErr|, clipped to [0, 3].
    - ``log_chi2_per_pix``: log10 of the PSF-fit chi2 per pixel (1 for a good fit to a point source).
    - ``log_size_ratio``: |log| of the second-moment size over the PSF's.
    - ``template_ratio``: asinh(templateFlux / |psfFlux|): large on residuals of bright static sources.
    - ``science_ratio``: (scienceFlux - psfFlux) / |psfFlux| clipped to [-5, 5]: what the science image holds
      besides the difference flux (a static source's flux).
    - ``aperture_ratio``: apFlux / psfFlux clipped to [-3, 3] (1 for a point source).
    """
    n = len(dia_sources)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    flux = _col(dia_sources, "psfFlux")
    err = _col(dia_sources, "psfFluxErr")
    abs_flux = np.maximum(np.abs(np.nan_to_num(flux, nan=0.0)), 1e-3 * np.nan_to_num(err, nan=1.0) + 1e-6)
    snr = np.abs(flux / err)
    chi2 = _col(dia_sources, "psfChi2") / np.maximum(_col(dia_sources, "psfNdata", 1.0), 1.0)
    size = _col(dia_sources, "ixx") + _col(dia_sources, "iyy")
    size_psf = _col(dia_sources, "ixxPSF") + _col(dia_sources, "iyyPSF")
    ratio = np.abs(np.log(np.clip(size / np.where(size_psf > 0, size_psf, 1.0), 1e-3, 1e3)))
    flagged = np.zeros(n, bool)
    for name in ("pixelFlags_saturated", "pixelFlags_bad", "pixelFlags_cr", "pixelFlags_nodata"):
        if name in dia_sources.colnames:
            flagged |= np.asarray(dia_sources[name], bool)
    template_ratio = np.arcsinh(np.nan_to_num(_col(dia_sources, "templateFlux", 0.0), nan=0.0) / abs_flux)
    science_ratio = (np.nan_to_num(_col(dia_sources, "scienceFlux", 0.0), nan=0.0) - flux) / abs_flux
    aperture_ratio = _col(dia_sources, "apFlux") / np.where(flux != 0, flux, 1.0)
    return np.column_stack([
        np.clip(np.nan_to_num(np.log10(np.maximum(snr, 1e-3)), nan=0.0), 0.0, 3.0),
        np.clip(np.nan_to_num(np.log10(np.maximum(chi2, 1e-3)), nan=2.0), -1.0, 3.0),
        np.clip(np.nan_to_num(ratio, nan=5.0), 0.0, 5.0),
        flagged.astype(float),
        np.asarray(dia_sources["isDipole"], float) if "isDipole" in dia_sources.colnames else np.zeros(n),
        np.asarray(dia_sources["isNegative"], float) if "isNegative" in dia_sources.colnames else np.zeros(n),
        np.clip(template_ratio, -5.0, 8.0),
        np.clip(np.nan_to_num(science_ratio, nan=0.0), -5.0, 5.0),
        np.clip(np.nan_to_num(aperture_ratio, nan=0.0), -3.0, 3.0),
    ])


def score(dia_sources: Table, *, config: ReliabilityConfig = ReliabilityConfig()) -> np.ndarray:
    """Reliability in [0, 1] of each DiaSource (empty array for an empty table)."""
    x = features(dia_sources)
    w = np.asarray(config.weights, float)
    logit = np.clip(w[0] + x @ w[1:], -50.0, 50.0)
    return 1.0 / (1.0 + np.exp(-logit))


@dataclass(frozen=True)
class TrainingResult:
    """What ``train_reliability`` learned.

    Attributes
    ----------
    config : ReliabilityConfig
        The learned weights (on the raw features), ready to use.
    n_real, n_bogus : int
        Training examples of each class.
    train_auc : float
        Area under the ROC curve on the training set.
    n_iter : int
        Newton iterations run.
    """

    config: ReliabilityConfig
    n_real: int
    n_bogus: int
    train_auc: float
    n_iter: int


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count half); NaN with one class only."""
    scores = np.asarray(scores, float)
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def train_reliability(dia_sources: Table, is_real: np.ndarray, *, l2: float = 1e-2, max_iter: int = 100,
                      class_balance: bool = True, version: str = RELIABILITY_VERSION,
                      threshold: float = 0.5) -> TrainingResult:
    """Fit the logistic reliability model to DiaSources labelled real (matched to an injected variable source)
    or bogus.

    Parameters
    ----------
    dia_sources : Table
        DiaSources with the columns ``features`` reads.
    is_real : numpy.ndarray
        (n,) bool labels.
    l2 : float
        L2 penalty on the standardised weights (the intercept is not penalised).
    max_iter : int
        Most Newton iterations.
    class_balance : bool
        Weight the classes equally (the training set has more of one kind).

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        Labels of a single class, or a length mismatch.
    """
    x = features(dia_sources)
    y = np.asarray(is_real, bool)
    if y.shape != (x.shape[0],):
        raise ValueError(f"is_real has shape {y.shape}, expected ({x.shape[0]},)")
    n_real, n_bogus = int(y.sum()), int((~y).sum())
    if n_real == 0 or n_bogus == 0:
        raise ValueError(f"training needs both classes, got {n_real} real and {n_bogus} bogus")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    z = np.column_stack([np.ones(x.shape[0]), (x - mean) / std])
    sample_w = np.where(y, 0.5 / n_real, 0.5 / n_bogus) * y.size if class_balance else np.ones(y.size)
    penalty = np.full(z.shape[1], l2 * y.size)
    penalty[0] = 0.0
    beta = np.zeros(z.shape[1])
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -50, 50)))
        grad = z.T @ (sample_w * (p - y)) + penalty * beta
        hess = (z * (sample_w * p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    # Fold the standardisation into raw-feature weights.
    w = beta[1:] / std
    intercept = beta[0] - float(np.sum(w * mean))
    config = ReliabilityConfig(weights=tuple(float(v) for v in np.concatenate([[intercept], w])),
                               version=version, threshold=threshold)
    auc = roc_auc(score(dia_sources, config=config), y)
    return TrainingResult(config=config, n_real=n_real, n_bogus=n_bogus, train_auc=auc, n_iter=n_iter)


__all__ = ["FEATURES", "RELIABILITY_VERSION", "ReliabilityConfig", "TrainingResult", "features", "roc_auc",
           "score", "train_reliability"]
