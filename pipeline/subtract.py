"""Alard-Lupton image subtraction with DMTN-021 decorrelation.

A convolution kernel, a sum of Gaussians times polynomials whose coefficients vary as a polynomial over the
CCD (Alard 2000), and a differential background of the same spatial order, are fitted by linear least squares
on stamps around isolated stars so that ``kernel * sharper + background ~= blurrier``; the difference is then
decorrelated so that its noise is white again and its variance plane is rescaled to the measured noise.

This module is the stage (:func:`subtract`); the kernel and its fit are in :mod:`pipeline.kernel`, the
decorrelation, the difference's PSF and the variance's factors in :mod:`pipeline.decorrelation`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage

from pipeline.astrometry import pixel_scale_arcsec
from pipeline.convolution import border_bands, convolve_same
from pipeline.decorrelation import (
    decorrelation_kernel,
    difference_psf,
    kernel_sigma,
    model_error_variance,
    psf_scale_variance_factor,
)
from pipeline.errors import AlgorithmError
from pipeline.kernel import MatchingKernel, fit_kernel, gaussian_kernel
from pipeline.masks import UNUSABLE, MaskBit
from pipeline.psf import FWHM_PER_SIGMA, GaussianPsf, PixelPsf, Psf
from pipeline.types import CalibratedExposure, MaskedImage, WarpedTemplate

log = logging.getLogger(__name__)


class SubtractConfig(BaseModel):
    """Configuration of PSF matching and subtraction (defaults after LSST's AlardLuptonSubtractTask)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    basis_sigmas: tuple[float, ...] = Field((0.7, 1.5, 3.0), min_length=1, description="Gaussian widths of the "
                                            "basis, in units of the matching sigma (>= 1 pix).")
    basis_degrees: tuple[int, ...] = Field((4, 2, 2), min_length=1, description="Polynomial degree per Gaussian.")
    stamp_half_size: int = Field(12, ge=2, le=100, description="Half size of fitting stamps, pixels.")
    max_stamps: int = Field(250, ge=1, description="Most stars used in the kernel fit.")
    min_stamps: int = Field(5, ge=1, description="Fewest stars for a fitted kernel; fewer uses the analytic "
                                                 "Gaussian fallback (flagged).")
    kernel_clip_iterations: int = Field(3, ge=1, le=100, description="Most rounds of the kernel fit, each "
                                                                     "dropping the stamps with outlying chi^2.")
    kernel_clip_sigma: float = Field(3.0, gt=0, description="Stamps whose chi^2 is this many sigma above the "
                                                            "median are dropped from the kernel fit.")
    mask_grow_level: float = Field(0.05, gt=0, le=1.0, description="Cosmic-ray and interpolated pixels of the "
                                   "convolved image are grown by the kernel's core, where it is above this "
                                   "fraction of its peak.")
    spatial_order: int = Field(1, ge=0, le=2, description="Polynomial order of the kernel's and the differential "
                                                          "background's variation over the CCD.")
    min_stamps_per_spatial_term: int = Field(10, ge=1, description="Stamps needed per spatial polynomial term; "
                                                                   "with fewer the order is lowered (to 0 at the "
                                                                   "least).")
    do_decorrelation: bool = Field(True, description="Apply DMTN-021 decorrelation.")
    do_scale_variance: bool = Field(True, description="Rescale the variance plane to the measured noise of "
                                                      "PSF-weighted sums (matched-filter score), not per pixel.")
    do_model_error_variance: bool = Field(True, description="Add the subtraction's model error near bright "
                                                            "sources to the variance plane (see Notes of "
                                                            "``subtract``).")
    model_error_fraction_bounds: tuple[float, float] = Field(
        (0.005, 0.1), description="Bounds of the fitted fractional model error (residual flux per unit of "
                                  "matched-template flux).")
    model_error_max_stars: int = Field(200, ge=3, description="Most kernel stars the model error is fitted on.")
    astrometric_error_pix: float = Field(0.01, ge=0, le=10.0, description="Registration error assumed between "
                                                           "the images, "
                                                           "pixels: adds (error * gradient)^2 to the variance. "
                                                           "Its residual is a dipole whose PSF-weighted sum at a "
                                                           "source's centre vanishes, so a large value mostly "
                                                           "inflates PSF-flux errors on stars (0.03 gave pulls of "
                                                           "width ~0.4 for variable stars).")

    @model_validator(mode="after")
    def _check(self) -> SubtractConfig:
        if len(self.basis_degrees) != len(self.basis_sigmas):
            raise ValueError(f"basis_degrees needs one degree per basis sigma ({len(self.basis_sigmas)}), got "
                             f"{len(self.basis_degrees)}")
        if min(self.basis_sigmas) <= 0 or min(self.basis_degrees) < 0:
            raise ValueError("basis_sigmas must be positive and basis_degrees non-negative")
        lo, hi = self.model_error_fraction_bounds
        if not 0 <= lo <= hi:
            raise ValueError(f"model_error_fraction_bounds must be 0 <= low <= high, got {(lo, hi)}")
        return self


@dataclass(frozen=True)
class SubtractionResult:
    """Outputs of the subtraction.

    Attributes
    ----------
    difference : MaskedImage
        Decorrelated difference (science minus matched template; positive = brighter now), nJy.
    matched_template : MaskedImage
        The template as it was subtracted (convolved when the template was the sharper image).
    kernel : numpy.ndarray
        The fitted matching kernel at the centre of the CCD.
    convolved_science : bool
        True when the science image was the sharper one and was convolved.
    psf_sigma_pix : float
        Gaussian sigma of the difference image's PSF.
    kernel_fallback : bool
        True when too few stars forced the analytic Gaussian kernel.
    variance_scale : float
        Factor applied to the predicted variance to match the measured noise.
    n_stamps : int
    model_error_fraction : float
        Fractional model error added to the variance near bright sources (0 when switched off).
    difference_psf : PixelPsf or None
        PSF model of the difference image (the science PSF convolved with the decorrelation kernel, or with
        the matching kernel when the science image was convolved); None without a science PSF model.
    kernel_model : MatchingKernel or None
        The spatially varying kernel and differential background as fitted (or the fallback).
    """

    difference: MaskedImage
    matched_template: MaskedImage
    kernel: np.ndarray
    convolved_science: bool
    psf_sigma_pix: float
    kernel_fallback: bool
    variance_scale: float
    n_stamps: int
    difference_psf: PixelPsf | None = None
    model_error_fraction: float = 0.0
    kernel_model: MatchingKernel | None = None

    @property
    def psf(self) -> Psf:
        """The difference image's PSF: ``difference_psf``, or a Gaussian of ``psf_sigma_pix`` without one."""
        if self.difference_psf is not None:
            return self.difference_psf
        return GaussianPsf((self.psf_sigma_pix, 0.0, 0.0))


def matching_sigmas(exposure: CalibratedExposure, template: WarpedTemplate) -> tuple[float, float]:
    """Gaussian PSF sigmas, in science pixels, of the science image (its model at the CCD centre) and of the
    template (its FWHM over the science WCS's pixel scale): what :func:`subtract_images` compares."""
    ny, nx = exposure.masked.image.shape
    science_sigma = float(exposure.psf_model.sigma_at((nx - 1) / 2, (ny - 1) / 2))
    template_sigma = template.psf_fwhm_arcsec / pixel_scale_arcsec(exposure.wcs) / FWHM_PER_SIGMA
    return science_sigma, template_sigma


def subtract(exposure: CalibratedExposure, template: WarpedTemplate, star_x: np.ndarray, star_y: np.ndarray, *,
             config: SubtractConfig = SubtractConfig()) -> SubtractionResult:
    """The subtraction stage: PSF-match and subtract the warped template from the calibrated exposure.

    Parameters
    ----------
    exposure : CalibratedExposure
        The science image, its WCS and PSF model.
    template : WarpedTemplate
        The template on the science grid and its PSF FWHM.
    star_x, star_y : numpy.ndarray
        Positions of isolated stars for the kernel fit, 0-based pixels (brightest first: the fit uses the
        first ``config.max_stamps`` inside the CCD).
    config : SubtractConfig

    Returns
    -------
    SubtractionResult
        With the difference image's PSF model (the science PSF through the kernels applied to it).
    """
    science_sigma, template_sigma = matching_sigmas(exposure, template)
    return subtract_images(exposure.masked, template.masked, star_x, star_y, science_sigma_pix=science_sigma,
                           template_sigma_pix=template_sigma, config=config, science_psf=exposure.psf_model)


def subtract_images(science: MaskedImage, template: MaskedImage, star_x: np.ndarray, star_y: np.ndarray, *,
                    science_sigma_pix: float, template_sigma_pix: float, config: SubtractConfig = SubtractConfig(),
                    science_psf: Psf | None = None) -> SubtractionResult:
    """PSF-match and subtract the template from the science image (the algorithm of :func:`subtract`, on
    images and PSF sizes).

    Parameters
    ----------
    science, template : MaskedImage
        Calibrated science and warped template on the same grid, nJy.
    star_x, star_y : numpy.ndarray
        Positions of isolated stars for the kernel fit, 0-based pixels.
    science_sigma_pix, template_sigma_pix : float
        Gaussian PSF sigma of each image in science pixels.
    config : SubtractConfig
    science_psf : Psf, optional
        Science PSF model; with it the result carries the difference image's PSF model.

    Returns
    -------
    SubtractionResult
    """
    science, template = _finite_inputs(science), _finite_inputs(template)
    convolve_science = template_sigma_pix > science_sigma_pix
    sharp, blurry = (science, template) if convolve_science else (template, science)
    sharp_sigma, blurry_sigma = sorted((science_sigma_pix, template_sigma_pix))
    match_sigma = float(np.sqrt(max(blurry_sigma**2 - sharp_sigma**2, 0.25)))
    shape = science.image.shape
    kernel_model, n_stamps, fallback = _fitted_or_fallback_kernel(sharp, blurry, star_x, star_y,
                                                                  match_sigma=match_sigma, shape=shape, config=config)
    # The kernel at the CCD centre stands for the whole CCD where a single kernel is needed: the variance's
    # convolution (the variance is smooth, and K^2 varies by a few per cent), the mask's growth, the
    # decorrelation and the difference PSF.
    kernel = kernel_model.at((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    no_data = (sharp.mask & int(MaskBit.NO_DATA)) != 0
    convolved = kernel_model.convolve(sharp.image, exclude=no_data)
    # The convolved image's variance (K^2 * s) is needed for a convolved template (the matched template's
    # variance) or without decorrelation; a convolved science image with decorrelation never uses it.
    need_convolved_var = not convolve_science or not config.do_decorrelation
    convolved_var = convolve_same(sharp.variance, kernel**2, exclude=no_data) if need_convolved_var else None
    half = kernel.shape[0] // 2
    # The circular convolution wraps within the kernel's reach of the border (pipeline.convolution).
    conv_mask = _flag_border(_grow_mask(sharp.mask, kernel, level=config.mask_grow_level), half)
    sci_var_mean, tmpl_var_mean = _mean_variance(science), _mean_variance(template)
    if convolve_science:
        diff = convolved - blurry.image
        decor = decorrelation_kernel(kernel, sci_var_mean, tmpl_var_mean)
        matched = MaskedImage(image=template.image, mask=template.mask, variance=template.variance)
        psf_sigma = np.sqrt(template_sigma_pix**2)
        static = template.image
    else:
        diff = blurry.image - convolved
        decor = decorrelation_kernel(kernel, tmpl_var_mean, sci_var_mean)
        matched = MaskedImage(image=convolved, mask=conv_mask, variance=convolved_var)
        psf_sigma = science_sigma_pix
        static = convolved
    mask = (science.mask | conv_mask | template.mask) if convolve_science else (science.mask | conv_mask)
    diff, mask = _decorrelated(diff, mask, decor, kernel_half=half, config=config)
    if config.do_decorrelation:
        psf_sigma = float(np.sqrt(psf_sigma**2 + kernel_sigma(decor) ** 2))
    variance = _predicted_variance(science, template, convolved_var, convolve_science=convolve_science,
                                   config=config)
    diff_psf = difference_psf(science_psf, science.image.shape, kernel if convolve_science else None,
                              decor if config.do_decorrelation else None)
    if diff_psf is not None:
        psf_sigma = float(diff_psf.sigma_at((science.image.shape[1] - 1) / 2, (science.image.shape[0] - 1) / 2))
    variance, scale, model_error = _corrected_variance(diff, variance, mask, static, science_mask=science.mask,
                                                       diff_psf=diff_psf, psf_sigma=psf_sigma, star_x=star_x,
                                                       star_y=star_y, config=config)
    bad = ~np.isfinite(diff)
    mask = np.where(bad, mask | int(MaskBit.NO_DATA), mask).astype(np.int32)
    diff = np.where(bad, 0.0, diff).astype(np.float32)
    log.debug("subtraction: kernel of spatial order %d from %d stamps, convolved %s, variance scale %.3f, "
              "model error %.3f", kernel_model.order, n_stamps, "science" if convolve_science else "template",
              scale, model_error)
    return SubtractionResult(difference=MaskedImage(image=diff, mask=mask, variance=variance),
                             matched_template=matched, kernel=kernel, convolved_science=convolve_science,
                             psf_sigma_pix=float(psf_sigma), kernel_fallback=fallback, variance_scale=scale,
                             n_stamps=n_stamps, difference_psf=diff_psf, model_error_fraction=model_error,
                             kernel_model=kernel_model)


def _fitted_or_fallback_kernel(sharp: MaskedImage, blurry: MaskedImage, star_x: np.ndarray, star_y: np.ndarray, *,
                               match_sigma: float, shape: tuple[int, int], config: SubtractConfig
                               ) -> tuple[MatchingKernel, int, bool]:
    """The fitted kernel (:func:`~pipeline.kernel.fit_kernel`), its number of stamps and False; or, when the
    fit fails or keeps fewer than ``config.min_stamps`` stamps, the analytic Gaussian of ``match_sigma``, 0
    and True."""
    fallback = False
    try:
        kernel_model, n_stamps = fit_kernel(sharp, blurry, star_x, star_y, match_sigma, config=config)
        if n_stamps < config.min_stamps:
            raise AlgorithmError(f"only {n_stamps} stamps", stage="subtract")
    except AlgorithmError as err:
        log.warning("kernel fit failed (%s); using the analytic Gaussian kernel", err)
        kernel_model = MatchingKernel.constant(
            gaussian_kernel(match_sigma, int(np.clip(np.ceil(4 * match_sigma), 3, 15))), 0.0, shape)
        n_stamps, fallback = 0, True
    return kernel_model, n_stamps, fallback


def _decorrelated(diff: np.ndarray, mask: np.ndarray, decor: np.ndarray, *, kernel_half: int,
                  config: SubtractConfig) -> tuple[np.ndarray, np.ndarray]:
    """The difference and its mask, decorrelated by ``decor`` (with ``config.do_decorrelation``).

    Unusable pixels carry no signal into the decorrelation; missing data (no template, NaN) grows by the
    decorrelation kernel's reach, and the CCD border the convolutions cannot reach (the matching kernel's
    half-width ``kernel_half``, plus the decorrelation kernel's) is flagged EDGE.
    """
    unusable = (mask & int(UNUSABLE)) != 0
    diff = np.where(unusable, np.float32(0.0), diff)
    reach = kernel_half + (decor.shape[0] // 2 if config.do_decorrelation else 0)
    no_data = (mask & int(MaskBit.NO_DATA)) != 0
    if config.do_decorrelation and no_data.any():
        grown = ndimage.maximum_filter(no_data.view(np.uint8), size=decor.shape[0]) > 0
        mask = np.where(grown, mask | int(MaskBit.NO_DATA), mask)
    mask = _flag_border(mask.astype(np.int32), reach)
    if config.do_decorrelation:
        diff = convolve_same(diff, decor)
    return diff, mask


def _predicted_variance(science: MaskedImage, template: MaskedImage, convolved_var: np.ndarray | None, *,
                        convolve_science: bool, config: SubtractConfig) -> np.ndarray:
    """Predicted variance of the difference (float32).

    The science variance (sky and source Poisson noise) plus the template's. After DMTN-021 decorrelation the
    difference's noise is white with the variance of the two images before the convolution (s_s + s_t);
    without it, the convolved image contributes its convolved variance (``convolved_var``, K^2 * s).
    """
    if config.do_decorrelation:
        return (science.variance + template.variance).astype(np.float32)
    if convolve_science:
        return (convolved_var + template.variance).astype(np.float32)
    return (science.variance + convolved_var).astype(np.float32)


def _corrected_variance(diff: np.ndarray, variance: np.ndarray, mask: np.ndarray, static: np.ndarray, *,
                        science_mask: np.ndarray, diff_psf: PixelPsf | None, psf_sigma: float,
                        star_x: np.ndarray, star_y: np.ndarray, config: SubtractConfig
                        ) -> tuple[np.ndarray, float, float]:
    """The predicted variance scaled to the measured noise of PSF-weighted sums (``config.do_scale_variance``)
    and given the model error near bright sources (``config.do_model_error_variance``).

    Returns
    -------
    variance : numpy.ndarray
    scale : float
        Factor applied (1 when switched off).
    model_error : float
        Fitted fractional model error (0 when switched off).
    """
    scale = 1.0
    if config.do_scale_variance:
        # Sources as detected on the science image (not grown by the kernel: in crowded fields the grown
        # footprints would leave few clean positions).
        scale = psf_scale_variance_factor(diff, variance, mask, science_mask, diff_psf=diff_psf, psf_sigma=psf_sigma)
        variance = variance * np.float32(scale)
    model_error = 0.0
    if config.do_model_error_variance:
        model_error, error_var = model_error_variance(diff, variance, mask, static, star_x=star_x, star_y=star_y,
                                                      config=config)
        variance += error_var
    return variance, scale, model_error


def _grow_mask(mask: np.ndarray, kernel: np.ndarray, level: float = 0.05) -> np.ndarray:
    """The mask of an image convolved by ``kernel``: each bit grown (OR, bit by bit, not the numerically
    largest mask value) over the kernel's box; cosmic rays (CR, INTRP: already interpolated over) only over
    the square reaching the kernel's pixels of at least ``level`` times its peak.

    Grown over the full kernel box (up to 31 pixels), a cosmic ray (CR is unusable) hid transients up to 15
    pixels away; a few kernel sigma out, an interpolated pixel contaminates the convolved image by a few per
    cent of its (already interpolated) value at most. Saturated, bad and missing pixels keep the full box:
    their residuals are not interpolated and make false DiaSources.
    """
    k = np.abs(np.asarray(kernel, float))
    h = k.shape[0] // 2
    yy, xx = np.nonzero(k >= level * k.max())
    core = int(max(np.abs(yy - h).max(), np.abs(xx - h).max())) if yy.size else 0
    out = np.array(mask, dtype=np.int32, copy=True)
    nonzero = mask != 0
    present = int(np.bitwise_or.reduce(mask[nonzero])) if nonzero.any() else 0
    for bit in MaskBit:
        if not present & int(bit):
            continue
        reach = core if bit in (MaskBit.CR, MaskBit.INTRP) else h
        if reach > 0:
            grown = ndimage.maximum_filter(((mask & int(bit)) != 0).astype(np.uint8), size=2 * reach + 1)
            out[grown > 0] |= int(bit)
    return out


def _flag_border(mask: np.ndarray, width: int) -> np.ndarray:
    """``mask`` (int32, changed in place and returned) with EDGE set on a border band ``width`` pixels wide."""
    for band in border_bands(mask, width):
        band |= np.int32(MaskBit.EDGE)
    return mask


def _finite_inputs(image: MaskedImage) -> MaskedImage:
    """The image with non-finite pixel values (or variances) set to 0 and flagged NO_DATA (a copy if any)."""
    bad = ~np.isfinite(image.image) | ~np.isfinite(image.variance)
    if not bad.any():
        return image
    return MaskedImage(image=np.where(bad, 0.0, image.image).astype(np.float32),
                       mask=np.where(bad, image.mask | int(MaskBit.NO_DATA), image.mask).astype(np.int32),
                       variance=np.where(bad, 0.0, image.variance).astype(np.float32))


def _mean_variance(image: MaskedImage, stride: int = 97) -> float:
    """Median variance of the usable pixels, from every ``stride``-th pixel."""
    variance = np.ravel(image.variance)[::stride]
    good = ((np.ravel(image.mask)[::stride] & int(UNUSABLE)) == 0) & np.isfinite(variance) & (variance > 0)
    return float(np.median(variance[good])) if good.any() else 1.0


__all__ = ["SubtractConfig", "SubtractionResult", "subtract", "subtract_images", "matching_sigmas"]
