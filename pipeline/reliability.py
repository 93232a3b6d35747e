"""Real/bogus reliability of DiaSources: a small CNN on the science, template and difference stamps.

Rubin scores each DIASource with a CNN on its three stamps (``RBTransiNetTask``, 3 x 51 x 51); ZTF's braai
does the same. Here a central crop of ``2 * stamp_half_size + 1`` pixels of each plane (the science image,
the template as subtracted and the decorrelated difference) is divided by its noise (the square root of the
stamp's median variance) and compressed by ``arcsinh(z / asinh_softening)``, so that the network sees
significance, not flux, on any night; pixels off the image or without data are 0. Beside the stamps the
network reads a few measured features (:data:`FEATURES`: the PSF fit's quality, the shape against the PSF,
pixel flags, dipole-ness, SNR and flux ratios), standardised. The network itself is :mod:`pipeline.cnn`
(numpy, vectorised); its weights, the stamp recipe and the feature scaling are a :class:`ReliabilityModel`,
which the shell reads from the package data (:mod:`streamer.reliability_model`) and passes in the CCD's
inputs, as it does the camera tables. ``bench/train_reliability.py`` trains it (PyTorch, the ``train``
extra) on simulated nights no test uses and evaluates it on others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from pipeline.cnn import ConvNet
from pipeline.masks import MaskBit
from pipeline.measure import cut_stamps
from pipeline.types import MaskedImage

MODEL_VERSION = "cnn-1"
"""The model the package ships (``pipeline/data/reliability/<version>.npz``), reported as reliabilityVersion."""

DEFAULT_MIN_RELIABILITY = 0.76
"""The distribution threshold chosen for :data:`MODEL_VERSION` from its held-out curves (recorded in its file as
``min_reliability``; see ``bench/README.md``): the default of the ``min_reliability`` setting."""

FEATURES = ("log_abs_snr", "log_chi2_per_pix", "log_size_ratio", "flagged", "is_dipole", "is_negative",
            "template_ratio", "science_ratio", "aperture_ratio")
"""Measured features a model may read beside the stamps (:func:`features`)."""

PLANES = ("science", "template", "difference")
"""The stamps' planes, in the order of the network's input channels."""


class ReliabilityConfig(BaseModel):
    """The reliability stage: whether DiaSources are scored (by the model in the CCD's inputs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    do_score: bool = Field(True, description="Score each DiaSource with the inputs' reliability model; False: "
                                             "reliability NaN and reliabilityVersion empty.")


@dataclass(frozen=True, eq=False)
class ReliabilityModel:
    """A trained reliability model: the network and how its inputs are made.

    Attributes
    ----------
    version : str
        Reported as ``reliabilityVersion`` (1 to 8 characters).
    net : ConvNet
        Takes ``(n, 3, s, s)`` stamps (``s = 2 * stamp_half_size + 1``) and the standardised features.
    stamp_half_size : int
    asinh_softening : float
        Stamp pixels are ``arcsinh(value / sigma / asinh_softening)``.
    feature_names : tuple of str
        The :data:`FEATURES` the network reads, in its order.
    feature_mean, feature_std : numpy.ndarray
        Their standardisation (the training set's).
    min_reliability : float
        The distribution threshold chosen from this model's held-out curves.
    """

    version: str
    net: ConvNet
    stamp_half_size: int
    asinh_softening: float
    feature_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    min_reliability: float

    _META = ("version", "stamp_half_size", "asinh_softening", "feature_names", "feature_mean", "feature_std",
             "min_reliability")

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ReliabilityModel:
        """The model from its named arrays (an ``.npz`` file's contents: the network's, see :mod:`pipeline.cnn`,
        and ``version``, ``stamp_half_size``, ``asinh_softening``, ``feature_names``, ``feature_mean``,
        ``feature_std``, ``min_reliability``).

        Raises
        ------
        ValueError
            An array missing, an unknown feature, a version of more than 8 characters or shapes that do not fit.
        """
        missing = [k for k in cls._META if k not in arrays]
        if missing:
            raise ValueError(f"reliability model arrays lack {missing}")
        version = str(np.asarray(arrays["version"]))
        names = tuple(str(v) for v in np.atleast_1d(np.asarray(arrays["feature_names"])) if str(v))
        half = int(np.asarray(arrays["stamp_half_size"]))
        mean = np.asarray(arrays["feature_mean"], np.float32).reshape(-1)
        std = np.asarray(arrays["feature_std"], np.float32).reshape(-1)
        if not 1 <= len(version) <= 8:
            raise ValueError(f"reliability model version {version!r} must have 1 to 8 characters")
        if unknown := [n for n in names if n not in FEATURES]:
            raise ValueError(f"reliability model reads unknown features {unknown} (known: {FEATURES})")
        if mean.shape != (len(names),) or std.shape != (len(names),) or not np.all(std > 0):
            raise ValueError(f"feature_mean {mean.shape} and feature_std {std.shape} (> 0) must have one value per "
                             f"feature ({len(names)})")
        if half < 1:
            raise ValueError(f"stamp_half_size must be >= 1, got {half}")
        net = ConvNet.from_arrays(arrays, (len(PLANES), 2 * half + 1, 2 * half + 1))
        if net.n_side != len(names):
            raise ValueError(f"the network reads {net.n_side} side features, the model names {len(names)}")
        return cls(version, net, half, float(np.asarray(arrays["asinh_softening"])), names, mean, std,
                   float(np.asarray(arrays["min_reliability"])))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The named arrays :meth:`from_arrays` reads (what the training script saves)."""
        return {**self.net.to_arrays(), "version": np.asarray(self.version),
                "stamp_half_size": np.int64(self.stamp_half_size), "asinh_softening": np.float64(self.asinh_softening),
                "feature_names": np.asarray(self.feature_names), "feature_mean": self.feature_mean,
                "feature_std": self.feature_std, "min_reliability": np.float64(self.min_reliability)}


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


def candidate_stamps(science: MaskedImage, template: MaskedImage, difference: MaskedImage, x: np.ndarray,
                     y: np.ndarray, *, half_size: int, asinh_softening: float) -> np.ndarray:
    """The network's input stamps at positions: each plane's crop over its noise, arcsinh-compressed.

    Parameters
    ----------
    science, template, difference : MaskedImage
        The three images on the same pixel grid (nJy), in the order of :data:`PLANES`.
    x, y : numpy.ndarray
        ``(n,)`` positions, 0-based pixels (stamps are centred on the nearest pixel).
    half_size : int
    asinh_softening : float

    Returns
    -------
    numpy.ndarray
        ``(n, 3, 2 * half_size + 1, 2 * half_size + 1)`` float32; 0 off the image and where ``NO_DATA``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    side = 2 * half_size + 1
    out = np.zeros((x.size, len(PLANES), side, side), np.float32)
    if x.size == 0:
        return out
    for i, plane in enumerate((science, template, difference)):
        image, off = cut_stamps(plane.image, x, y, half_size)
        variance, _ = cut_stamps(plane.variance, x, y, half_size)
        mask, _ = cut_stamps(plane.mask, x, y, half_size, fill=0)
        bad = off | ((mask & int(MaskBit.NO_DATA)) != 0) | ~np.isfinite(image) | ~(variance > 0)
        good_var = np.where(bad, np.nan, variance).reshape(x.size, -1)
        with np.errstate(all="ignore"):
            sigma = np.sqrt(np.nanmedian(good_var, axis=1))
        sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, 1.0)[:, None, None]
        out[:, i] = np.arcsinh(np.where(bad, 0.0, image) / (sigma * asinh_softening))
    return out


def score(dia_sources: Table, science: MaskedImage, template: MaskedImage, difference: MaskedImage, *,
          model: ReliabilityModel) -> np.ndarray:
    """Reliability in [0, 1] of each DiaSource (at its ``x``, ``y``): the model's probability that it is real.

    Parameters
    ----------
    dia_sources : Table
        ``x``, ``y`` and the columns :func:`features` reads.
    science, template, difference : MaskedImage
        The calibrated science image, the template as subtracted, the difference.
    model : ReliabilityModel

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float32 (empty for an empty table).
    """
    if len(dia_sources) == 0:
        return np.zeros(0, np.float32)
    stamps = candidate_stamps(science, template, difference, np.asarray(dia_sources["x"], float),
                              np.asarray(dia_sources["y"], float), half_size=model.stamp_half_size,
                              asinh_softening=model.asinh_softening)
    side = model_features(dia_sources, model)
    logit = np.clip(model.net.logits(stamps, side), -50.0, 50.0)
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def model_features(dia_sources: Table, model: ReliabilityModel) -> np.ndarray:
    """The standardised features the model reads, ``(n, len(model.feature_names))`` float32."""
    columns = [FEATURES.index(name) for name in model.feature_names]
    return ((features(dia_sources)[:, columns] - model.feature_mean) / model.feature_std).astype(np.float32)


__all__ = ["DEFAULT_MIN_RELIABILITY", "FEATURES", "MODEL_VERSION", "PLANES", "ReliabilityConfig", "ReliabilityModel",
           "candidate_stamps", "features", "model_features", "score"]
