"""PSF model: an elliptical-free Gaussian whose width varies linearly across the CCD.

The model is measured from the second moments of bright isolated stars and evaluated, vectorised, as
normalised pixel-integrated stamps at any set of sub-pixel positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from pipeline.errors import AlgorithmError

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class GaussianPsf:
    """A circular Gaussian PSF with sigma = c0 + c1 * x + c2 * y (pixels, 0-based CCD coordinates).

    Attributes
    ----------
    coeffs : tuple of float
        (c0, c1, c2) of sigma in pixels.
    """

    coeffs: tuple[float, float, float]

    def sigma_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Gaussian sigma (pixels) at positions ``x``, ``y``."""
        c0, c1, c2 = self.coeffs
        return np.asarray(c0 + c1 * np.asarray(x, dtype=float) + c2 * np.asarray(y, dtype=float))

    def fwhm_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """FWHM (pixels) at positions ``x``, ``y``."""
        return self.sigma_at(x, y) * FWHM_PER_SIGMA

    def stamps(self, x: np.ndarray, y: np.ndarray, half_size: int) -> np.ndarray:
        """Normalised PSF stamps centred on the pixels nearest to (x, y).

        Parameters
        ----------
        x, y : numpy.ndarray
            (n,) positions, pixels, 0-based, pixel centres at integers.
        half_size : int
            Stamps are (2 * half_size + 1) square.

        Returns
        -------
        numpy.ndarray
            (n, 2h+1, 2h+1) pixel-integrated PSF values; stamp[k, j, i] covers pixel
            (round(y_k) + j - h, round(x_k) + i - h). Each full stamp sums to about 1.
        """
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        sigma = self.sigma_at(x, y)
        offsets = np.arange(-half_size, half_size + 1, dtype=float)
        dx = np.rint(x)[:, None] + offsets[None, :] - x[:, None]
        dy = np.rint(y)[:, None] + offsets[None, :] - y[:, None]
        profile_x = _integrated_gaussian(dx, sigma[:, None])
        profile_y = _integrated_gaussian(dy, sigma[:, None])
        return profile_y[:, :, None] * profile_x[:, None, :]

    def kernel(self, x: float, y: float, half_size: int) -> np.ndarray:
        """A normalised, centred PSF image at (x, y), for convolution."""
        stamp = self.stamps(np.array([np.rint(x)]), np.array([np.rint(y)]), half_size)[0]
        return stamp / stamp.sum()


def _integrated_gaussian(offset: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Integral of a unit 1-D Gaussian over pixels [offset - 0.5, offset + 0.5]."""
    scale = 1.0 / (np.sqrt(2.0) * sigma)
    return 0.5 * (erf((offset + 0.5) * scale) - erf((offset - 0.5) * scale))


def fit_psf(x: np.ndarray, y: np.ndarray, sigma_pix: np.ndarray, *, spatial_order: int = 1) -> GaussianPsf:
    """Fit a spatially varying Gaussian width to per-star widths.

    Parameters
    ----------
    x, y : numpy.ndarray
        Star positions, pixels.
    sigma_pix : numpy.ndarray
        Per-star Gaussian sigma estimates, pixels.
    spatial_order : int
        0 for a constant width, 1 for a plane.

    Returns
    -------
    GaussianPsf

    Raises
    ------
    AlgorithmError
        Fewer than 3 usable stars.
    """
    good = np.isfinite(sigma_pix) & (sigma_pix > 0.3)
    if good.sum() < 3:
        raise AlgorithmError(f"PSF fit needs at least 3 stars, got {int(good.sum())}", stage="psf")
    x, y, s = x[good], y[good], sigma_pix[good]
    keep = np.ones(s.size, dtype=bool)
    coeffs = np.array([np.median(s), 0.0, 0.0])
    use_plane = spatial_order >= 1 and s.size >= 10
    for _ in range(3):
        if use_plane:
            design = np.column_stack([np.ones(keep.sum()), x[keep], y[keep]])
            coeffs, *_ = np.linalg.lstsq(design, s[keep], rcond=None)
        else:
            coeffs = np.array([np.median(s[keep]), 0.0, 0.0])
        resid = s - (coeffs[0] + coeffs[1] * x + coeffs[2] * y)
        mad = 1.4826 * np.median(np.abs(resid[keep] - np.median(resid[keep])))
        new_keep = np.abs(resid) < 3.0 * max(mad, 1e-3)
        if new_keep.sum() < 3 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return GaussianPsf(coeffs=(float(coeffs[0]), float(coeffs[1]), float(coeffs[2])))


def gaussian_sigma_from_moments(x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """Gaussian sigma from sep's windowed or isophotal second moments (mean of the two axes)."""
    return np.sqrt(np.clip(0.5 * (x2 + y2), 1e-6, None))
