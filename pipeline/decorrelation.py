"""DMTN-021 decorrelation of a difference image, its PSF, and the factors that make its variance plane right.

After the convolution by the matching kernel the difference's noise is correlated; the decorrelation kernel
(:func:`decorrelation_kernel`) whitens it again. The difference's PSF is the science PSF through the kernels
applied to the science side (:func:`difference_psf`); the variance plane is rescaled to the measured noise
of PSF-weighted sums (:func:`psf_scale_variance_factor`) and given the subtraction's model error near bright
sources (:func:`model_error_variance`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from astropy.stats import sigma_clipped_stats

from pipeline.convolution import in_row_blocks, matched_filter, row_blocks
from pipeline.kernel import gaussian_kernel, star_stamps
from pipeline.masks import UNUSABLE, MaskBit
from pipeline.psf import PixelPsf, Psf

if TYPE_CHECKING:
    from pipeline.subtract import SubtractConfig


def decorrelation_kernel(kernel: np.ndarray, var_conv: float, var_other: float, size: int = 64) -> np.ndarray:
    """DMTN-021 after-convolution decorrelation kernel, in real space, for a convolved image of mean
    variance ``var_conv`` (before convolution) subtracted from one of variance ``var_other``."""
    padded = np.zeros((size, size))
    h = kernel.shape[0] // 2
    c = size // 2
    padded[c - h:c + h + 1, c - h:c + h + 1] = kernel
    kft = np.fft.fft2(np.fft.ifftshift(padded))
    phi = np.sqrt((var_other + var_conv) / (var_other + np.abs(kft) ** 2 * var_conv))
    decor = np.fft.fftshift(np.real(np.fft.ifft2(phi)))
    hd = 12
    decor = decor[c - hd:c + hd + 1, c - hd:c + hd + 1]
    return decor / decor.sum()


def kernel_sigma(kernel: np.ndarray) -> float:
    """Gaussian sigma of ``kernel`` from its second moment about the centre, pixels."""
    h = kernel.shape[0] // 2
    u = np.arange(-h, h + 1)
    xx, yy = np.meshgrid(u, u)
    total = kernel.sum()
    return float(np.sqrt(max(np.sum(kernel * (xx**2 + yy**2)) / total / 2.0, 0.0)))


def psf_scale_variance_factor(diff: np.ndarray, variance: np.ndarray, mask: np.ndarray, science_mask: np.ndarray,
                              *, diff_psf: PixelPsf | None, psf_sigma: float, max_pixels: int = 1_000_000) -> float:
    """Factor on the predicted variance that makes the noise of PSF-weighted sums (the matched-filter score
    and PSF fluxes) what it predicts.

    The difference's noise is not white (a warped template, an imperfect decorrelation), so the per-pixel
    scatter misjudges the noise of a PSF fit: the factor is the sigma-clipped variance of the matched-filter
    score ``(D * P) / sqrt(V * P^2)`` over clean pixels of a central region of the CCD (at most
    ``max_pixels``), not that of ``D / sqrt(V)``.
    """
    ny, nx = diff.shape
    rows = int(min(ny, max(1, max_pixels // max(nx, 1))))
    y0 = (ny - rows) // 2
    sl = slice(y0, y0 + rows)
    # DETECTED from the science mask only: the difference's own (kernel-grown) footprints are not excluded.
    bad = ((mask[sl] & int(UNUSABLE | MaskBit.EDGE)) != 0) | ((science_mask[sl] & int(MaskBit.DETECTED)) != 0) \
        | ~(variance[sl] > 0)
    if (~bad).sum() < 1000:
        return 1.0
    half = int(np.clip(np.ceil(3 * psf_sigma), 2, 15))
    if diff_psf is not None:
        kernel = np.asarray(diff_psf.kernel((nx - 1) / 2, (ny - 1) / 2, half), float)
    else:
        kernel = gaussian_kernel(psf_sigma, half)
    kernel = kernel / kernel.sum()
    numerator, noise2, coverage = matched_filter(diff[sl], variance[sl], bad, kernel)
    # Only positions whose whole PSF footprint is clean: no masked pixel and no star inside the kernel.
    ok = (coverage > 0.999) & (noise2 > 0)
    if ok.sum() < 1000:
        return 1.0
    score = numerator[ok] / np.sqrt(noise2[ok])
    score = score[:: max(1, score.size // 400000)]
    _, _, std = sigma_clipped_stats(score, sigma=3, maxiters=5)
    return float(std**2) if np.isfinite(std) and std > 0 else 1.0


def model_error_variance(diff: np.ndarray, variance: np.ndarray, mask: np.ndarray, static: np.ndarray, *,
                         star_x: np.ndarray, star_y: np.ndarray, config: SubtractConfig
                         ) -> tuple[float, np.ndarray]:
    """Variance of the subtraction's model error: ``(f * S)^2 + (a * |grad S|)^2`` with S the matched
    template (the static sky as subtracted), ``a`` the assumed registration error and ``f`` fitted on the
    kernel stars as the median fractional excess of the residuals over the noise variance."""
    static = np.asarray(static, np.float32)
    grad2 = _gradient_squared(static)
    a2 = np.float32(config.astrometric_error_pix**2)
    lo, hi = config.model_error_fraction_bounds
    frac = lo
    ny, nx = diff.shape
    h = 3
    x, y = np.asarray(star_x, float), np.asarray(star_y, float)
    inside = (x > h) & (x < nx - 1 - h) & (y > h) & (y < ny - 1 - h)
    if inside.sum() >= 3:
        x, y = x[inside][:config.model_error_max_stars], y[inside][:config.model_error_max_stars]
        d = star_stamps(diff, x, y, h).astype(float)
        v = star_stamps(variance, x, y, h).astype(float)
        s = star_stamps(static, x, y, h).astype(float)
        g = star_stamps(grad2, x, y, h).astype(float)
        ok = ((star_stamps(mask, x, y, h) & int(UNUSABLE)) == 0).all(axis=(1, 2))
        if ok.sum() >= 3:
            excess = np.sum(d**2 - v - a2 * g, axis=(1, 2))[ok]
            power = np.sum(s**2, axis=(1, 2))[ok]
            f2 = np.median(excess / np.maximum(power, 1e-30))
            frac = float(np.clip(np.sqrt(max(f2, 0.0)), lo, hi))
    f2 = np.float32(frac**2)

    def block(rows: slice) -> list[np.ndarray]:
        part = np.multiply(static[rows], f2)
        part *= static[rows]
        part += a2 * grad2[rows]
        return [part]

    return frac, in_row_blocks(block, row_blocks(static.shape, 0), static.shape, 1)[0]


def _gradient_squared(image: np.ndarray) -> np.ndarray:
    """``|grad image|^2`` (float32, ``numpy.gradient``'s differences), in blocks of rows on the pipeline's threads."""

    def block(rows: slice) -> list[np.ndarray]:
        gy, gx = np.gradient(image[rows])
        gx *= gx
        gy *= gy
        gx += gy
        return [gx]

    return in_row_blocks(block, row_blocks(image.shape, 1), image.shape, 1)[0]


def difference_psf(science_psf: Psf | None, shape: tuple[int, int],
                   matching: np.ndarray | None, decorrelation: np.ndarray | None) -> PixelPsf | None:
    """The difference image's PSF: the science PSF convolved with the kernels applied to the science side."""
    if science_psf is None:
        return None
    if isinstance(science_psf, PixelPsf):
        psf = science_psf
    else:
        ny, nx = shape
        sigma = float(science_psf.sigma_at((nx - 1) / 2, (ny - 1) / 2))
        psf = PixelPsf(images=science_psf.kernel(0, 0, int(np.clip(np.ceil(5 * sigma), 8, 27)))[None], shape=shape)
    for k in (matching, decorrelation):
        if k is not None:
            psf = psf.convolved(k / k.sum())
    return psf


__all__ = ["decorrelation_kernel", "difference_psf", "kernel_sigma", "model_error_variance",
           "psf_scale_variance_factor"]
