"""Alard-Lupton image subtraction with DMTN-021 decorrelation.

A convolution kernel, a sum of Gaussians times polynomials whose coefficients vary as a polynomial over the
CCD (Alard 2000), and a differential background of the same spatial order, are fitted by linear least squares
on stamps around isolated stars so that ``kernel * sharper + background ~= blurrier``; the difference is then
decorrelated so that its noise is white again and its variance plane is rescaled to the measured noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clipped_stats
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage

from pipeline.convolution import (border_bands, convolve_same, fft_shape, in_row_blocks, inverse, kernel_fts, matched_filter,
                                  row_blocks, spectrum)
from pipeline.astrometry import pixel_scale_arcsec
from pipeline.errors import AlgorithmError
from pipeline.masks import MaskBit, UNUSABLE
from pipeline.measure import cut_stamps
from pipeline.psf import FWHM_PER_SIGMA, GaussianPsf, PixelPsf, Psf, unit_coordinates
from pipeline.threads import thread_map, worker_count
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
    def _check(self) -> "SubtractConfig":
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


def _basis(match_sigma: float, half: int, config: SubtractConfig) -> np.ndarray:
    """(n_basis, 2h+1, 2h+1) Gaussian-times-polynomial kernels; the first sums to 1, the rest to 0."""
    u = np.arange(-half, half + 1, dtype=float)
    xx, yy = np.meshgrid(u, u)
    kernels = []
    for width, degree in zip(config.basis_sigmas, config.basis_degrees):
        s = max(width * match_sigma, 0.5)
        g = np.exp(-0.5 * (xx**2 + yy**2) / s**2)
        for i in range(degree + 1):
            for j in range(degree + 1 - i):
                kernels.append(g * (xx / half) ** i * (yy / half) ** j)
    basis = np.array(kernels)
    sums = basis.sum(axis=(1, 2))
    first = basis[0] / sums[0]
    rest = basis[1:] - np.where(np.abs(sums[1:]) > 1e-12, sums[1:], 0.0)[:, None, None] * first[None]
    return np.concatenate([first[None], rest])


def _basis_convolved(stamps: np.ndarray, match_sigma: float, half: int, config: SubtractConfig) -> np.ndarray:
    """``fftconvolve(stamps, _basis(...), mode="valid")`` per stamp and basis kernel, (n, n_basis, p, p).

    Every raw basis kernel is separable (a Gaussian times x^i times y^j), so the stamps are convolved by
    1-D kernels along rows, then along columns; the normalisation of ``_basis`` (first kernel summing to 1,
    the others to 0) is the same linear combination applied to the convolved stamps.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    u = np.arange(-half, half + 1, dtype=float)
    m = u.size
    raw, sums = [], []
    for width, degree in zip(config.basis_sigmas, config.basis_degrees):
        s = max(width * match_sigma, 0.5)
        g = np.exp(-0.5 * u**2 / s**2)
        poly = np.array([g * (u / half) ** i for i in range(degree + 1)])  # (degree + 1, m)
        rows = sliding_window_view(stamps, m, axis=2) @ poly[:, ::-1].T  # (n, L, p, degree + 1) along x
        both = sliding_window_view(rows, m, axis=1) @ poly[:, ::-1].T  # (n, p, p, degree + 1 (x), degree + 1 (y))
        psum = poly.sum(axis=1)
        for i in range(degree + 1):
            for j in range(degree + 1 - i):
                raw.append(both[..., i, j])
                sums.append(psum[i] * psum[j])
    conv = np.stack(raw, axis=1)
    sums = np.asarray(sums)
    first = conv[:, 0] / sums[0]
    rest = conv[:, 1:] - np.where(np.abs(sums[1:]) > 1e-12, sums[1:], 0.0)[None, :, None, None] * first[:, None]
    return np.concatenate([first[:, None], rest], axis=1)


def _stamps(image: np.ndarray, x: np.ndarray, y: np.ndarray, half: int) -> np.ndarray:
    """Stamps around star positions that lie inside the image (see :func:`pipeline.measure.cut_stamps`)."""
    return cut_stamps(image, x, y, half, fill=image.dtype.type(0))[0]


def _gaussian_kernel(sigma: float, half: int) -> np.ndarray:
    u = np.arange(-half, half + 1, dtype=float)
    xx, yy = np.meshgrid(u, u)
    k = np.exp(-0.5 * (xx**2 + yy**2) / max(sigma, 0.3) ** 2)
    return k / k.sum()


def spatial_terms(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Polynomial terms ``xn**i * yn**j`` (``i + j <= order``; xn, yn in [-1, 1] over the image) at points.

    Returns
    -------
    numpy.ndarray
        (n_terms, *x.shape); the first term is 1.
    """
    xn, yn = unit_coordinates(x, y, shape)
    return np.array([xn**i * yn**j for i, j in _term_powers(order)])


def _term_powers(order: int) -> list[tuple[int, int]]:
    return [(i, d - i) for d in range(order + 1) for i in range(d, -1, -1)]


@dataclass(frozen=True)
class MatchingKernel:
    """A spatially varying convolution kernel and differential background.

    ``K(u, v; x, y) = sum_j P_j(x, y) K_j(u, v)`` and ``B(x, y) = sum_j P_j(x, y) b_j``, with ``P_j`` the
    terms of :func:`spatial_terms` over an image of ``shape``.

    Attributes
    ----------
    components : numpy.ndarray
        (n_terms, 2h+1, 2h+1) kernel images ``K_j``.
    background : numpy.ndarray
        (n_terms,) background coefficients ``b_j``.
    order : int
        Spatial polynomial order.
    shape : tuple of int
        (ny, nx) of the image the polynomial spans.
    """

    components: np.ndarray
    background: np.ndarray
    order: int
    shape: tuple[int, int]

    @classmethod
    def constant(cls, kernel: np.ndarray, background: float, shape: tuple[int, int]) -> "MatchingKernel":
        """A kernel and background that do not vary."""
        return cls(np.asarray(kernel, float)[None], np.array([float(background)]), 0, shape)

    def at(self, x: float, y: float) -> np.ndarray:
        """The kernel image at pixel (x, y)."""
        terms = spatial_terms(np.array(x), np.array(y), self.shape, self.order)
        return np.tensordot(terms, self.components, axes=1)

    def background_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The differential background at pixels (x, y)."""
        return np.tensordot(self.background, spatial_terms(x, y, self.shape, self.order), axes=1)

    def convolve(self, image: np.ndarray, *, exclude: np.ndarray | None = None) -> np.ndarray:
        """``image`` convolved by the varying kernel plus the background (float32, same shape).

        In blocks of rows on the pipeline's threads (:func:`~pipeline.convolution.in_row_blocks`): per block, one
        forward FFT, and one kernel product and inverse FFT per spatial term. Circular within a kernel's
        half-width of the border (see :mod:`pipeline.convolution`). ``exclude`` (bool, optional): pixels taken as
        0 (in the blocks' threads; ``image`` is not changed).
        """
        ny, nx = image.shape
        xn, yn = (c.astype(np.float32) for c in unit_coordinates(np.arange(nx), np.arange(ny), image.shape))
        powers = _term_powers(self.order)

        blocks = row_blocks(image.shape, self.components.shape[1] // 2 + 1)
        kfts = kernel_fts(self.components, blocks, nx)

        def block(rows: slice) -> list[np.ndarray]:
            part = image[rows] if exclude is None else np.where(exclude[rows], np.float32(0.0), image[rows])
            forward = spectrum(part)
            out = None
            for (i, j), component_ft, b in zip(powers, kfts[fft_shape(part.shape)], self.background):
                # P_t(x, y) * (K_t conv image + b_t): the term's share of the convolved image and the background.
                term = inverse(forward * component_ft, part.shape)
                term += np.float32(b)
                if j:
                    term *= (yn[rows] ** j)[:, None]
                if i:
                    term *= (xn**i)[None, :]
                out = term if out is None else np.add(out, term, out=out)
            return [out]

        return in_row_blocks(block, blocks, image.shape, 1)[0]


def fit_kernel(sharp: MaskedImage, blurry: MaskedImage, x: np.ndarray, y: np.ndarray, match_sigma: float, *,
               config: SubtractConfig) -> tuple[MatchingKernel, int]:
    """Fit a spatially varying kernel and background so that ``kernel * sharp + bg ~= blurry`` on star stamps.

    The design of one stamp is the sharp stamp convolved by each basis kernel (plus a constant for the
    background), times each spatial term at the star; its normal equations are summed per stamp first
    (``(n_basis + 1)^2`` numbers each), so the fit costs little more than a constant kernel's. Stamps whose
    chi^2 is an outlier are dropped and the fit repeated (``kernel_clip_iterations`` rounds at most).

    Returns
    -------
    kernel : MatchingKernel
        Kernel components and background coefficients; the spatial order is ``config.spatial_order``, lowered
        while there are fewer than ``min_stamps_per_spatial_term`` stamps per term.
    n_stamps : int
        Stamps kept after clipping.
    """
    half_k = int(np.clip(np.ceil(3.5 * max(config.basis_sigmas) * match_sigma / 2), 5, 15))
    half_s = config.stamp_half_size
    ny, nx = sharp.image.shape
    edge = half_s + half_k + 1
    inside = (x > edge) & (x < nx - edge) & (y > edge) & (y < ny - edge)
    x, y = x[inside][: config.max_stamps], y[inside][: config.max_stamps]
    if x.size == 0:
        raise AlgorithmError("no star stamp inside the CCD", stage="subtract")
    sharp_st = _stamps(sharp.image, x, y, half_s + half_k).astype(float)
    target = _stamps(blurry.image, x, y, half_s).astype(float)
    var = (_stamps(blurry.variance, x, y, half_s) + _stamps(sharp.variance, x, y, half_s)).astype(float)
    bad = ((_stamps(blurry.mask, x, y, half_s) | _stamps(sharp.mask, x, y, half_s)) & int(UNUSABLE)) != 0
    weights = np.where(bad | ~np.isfinite(var) | (var <= 0), 0.0, 1.0 / np.where(var > 0, var, 1.0))
    basis = _basis(match_sigma, half_k, config)
    # The stamps' convolutions by the basis, in chunks of stamps on the pipeline's threads.
    chunks = [c for c in np.array_split(np.arange(x.size), worker_count()) if c.size]
    conv = np.concatenate(thread_map(lambda c: _basis_convolved(sharp_st[c], match_sigma, half_k, config), chunks))
    n_basis = basis.shape[0]
    design = np.concatenate([conv, np.ones((x.size, 1) + target.shape[1:])], axis=1)
    design = design.reshape(x.size, n_basis + 1, -1)  # (stamp, basis + background, pixel)
    w = weights.reshape(x.size, -1)
    t = target.reshape(x.size, -1)
    weighted = design * w[:, None, :]
    stamp_normal = np.einsum("sap,sbp->sab", weighted, design, optimize=True)
    stamp_rhs = np.einsum("sap,sp->sa", weighted, t, optimize=True)
    order = config.spatial_order
    while order > 0 and x.size < config.min_stamps_per_spatial_term * len(_term_powers(order)):
        order -= 1
    terms = spatial_terms(x, y, (ny, nx), order).T  # (stamp, term)
    n_terms = terms.shape[1]
    keep = np.ones(x.size, dtype=bool)
    for _ in range(config.kernel_clip_iterations):
        tk = terms[keep]
        normal = np.einsum("sj,sk,sab->jakb", tk, tk, stamp_normal[keep], optimize=True)
        normal = normal.reshape(n_terms * (n_basis + 1), -1)
        rhs = np.einsum("sj,sa->ja", tk, stamp_rhs[keep], optimize=True).reshape(-1)
        coeffs = np.linalg.lstsq(normal, rhs, rcond=None)[0].reshape(n_terms, n_basis + 1)
        model = np.einsum("sj,ja,sap->sp", terms, coeffs, design, optimize=True)
        chi2 = np.sum((t - model) ** 2 * w, axis=1) / np.maximum((w > 0).sum(axis=1), 1)
        _, med, std = sigma_clipped_stats(chi2[keep], sigma=config.kernel_clip_sigma)
        new_keep = chi2 < med + config.kernel_clip_sigma * max(std, 0.1 * med)
        if new_keep.sum() < config.min_stamps or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    components = np.tensordot(coeffs[:, :n_basis], basis, axes=1)
    return MatchingKernel(components, coeffs[:, n_basis].copy(), order, (ny, nx)), int(keep.sum())


def _decorrelation_kernel(kernel: np.ndarray, var_conv: float, var_other: float, size: int = 64) -> np.ndarray:
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


def _kernel_sigma(kernel: np.ndarray) -> float:
    h = kernel.shape[0] // 2
    u = np.arange(-h, h + 1)
    xx, yy = np.meshgrid(u, u)
    total = kernel.sum()
    return float(np.sqrt(max(np.sum(kernel * (xx**2 + yy**2)) / total / 2.0, 0.0)))


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
    fallback = False
    shape = science.image.shape
    try:
        kernel_model, n_stamps = fit_kernel(sharp, blurry, star_x, star_y, match_sigma, config=config)
        if n_stamps < config.min_stamps:
            raise AlgorithmError(f"only {n_stamps} stamps", stage="subtract")
    except AlgorithmError as err:
        log.warning("kernel fit failed (%s); using the analytic Gaussian kernel", err)
        kernel_model = MatchingKernel.constant(
            _gaussian_kernel(match_sigma, int(np.clip(np.ceil(4 * match_sigma), 3, 15))), 0.0, shape)
        n_stamps, fallback = 0, True
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
        decor = _decorrelation_kernel(kernel, sci_var_mean, tmpl_var_mean)
        matched = MaskedImage(image=template.image, mask=template.mask, variance=template.variance)
        psf_sigma = np.sqrt(template_sigma_pix**2)
        static = template.image
    else:
        diff = blurry.image - convolved
        decor = _decorrelation_kernel(kernel, tmpl_var_mean, sci_var_mean)
        matched = MaskedImage(image=convolved, mask=conv_mask, variance=convolved_var)
        psf_sigma = science_sigma_pix
        static = convolved
    mask = (science.mask | conv_mask | template.mask) if convolve_science else (science.mask | conv_mask)
    # Unusable pixels carry no signal into the decorrelation; missing data (no template, NaN) grows by the
    # decorrelation kernel's reach, and the CCD border the convolutions cannot reach is flagged EDGE.
    unusable = (mask & int(UNUSABLE)) != 0
    diff = np.where(unusable, np.float32(0.0), diff)
    reach = half + (decor.shape[0] // 2 if config.do_decorrelation else 0)
    no_data = (mask & int(MaskBit.NO_DATA)) != 0
    if config.do_decorrelation and no_data.any():
        grown = ndimage.maximum_filter(no_data.view(np.uint8), size=decor.shape[0]) > 0
        mask = np.where(grown, mask | int(MaskBit.NO_DATA), mask)
    mask = _flag_border(mask.astype(np.int32), reach)
    if config.do_decorrelation:
        diff = convolve_same(diff, decor)
        psf_sigma = float(np.sqrt(psf_sigma**2 + _kernel_sigma(decor) ** 2))
    # Predicted variance: the science variance (sky and source Poisson noise) plus the template's. After
    # DMTN-021 decorrelation the difference's noise is white with the variance of the two images before the
    # convolution (s_s + s_t); without it, the convolved image contributes its convolved variance (K^2 * s).
    if config.do_decorrelation:
        variance = (science.variance + template.variance).astype(np.float32)
    elif convolve_science:
        variance = (convolved_var + template.variance).astype(np.float32)
    else:
        variance = (science.variance + convolved_var).astype(np.float32)
    diff_psf = _difference_psf(science_psf, science.image.shape, kernel if convolve_science else None,
                               decor if config.do_decorrelation else None)
    if diff_psf is not None:
        psf_sigma = float(diff_psf.sigma_at((science.image.shape[1] - 1) / 2, (science.image.shape[0] - 1) / 2))
    scale = 1.0
    if config.do_scale_variance:
        # Sources as detected on the science image (not grown by the kernel: in crowded fields the grown
        # footprints would leave few clean positions).
        scale = _psf_scale_variance_factor(diff, variance, mask, science.mask, diff_psf=diff_psf, psf_sigma=psf_sigma)
        variance = variance * np.float32(scale)
    model_error = 0.0
    if config.do_model_error_variance:
        model_error, error_var = _model_error_variance(diff, variance, mask, static, star_x=star_x, star_y=star_y,
                                                       config=config)
        variance += error_var
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


def _psf_scale_variance_factor(diff: np.ndarray, variance: np.ndarray, mask: np.ndarray, science_mask: np.ndarray,
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
        kernel = _gaussian_kernel(psf_sigma, half)
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


def _model_error_variance(diff: np.ndarray, variance: np.ndarray, mask: np.ndarray, static: np.ndarray, *,
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
        d = _stamps(diff, x, y, h).astype(float)
        v = _stamps(variance, x, y, h).astype(float)
        s = _stamps(static, x, y, h).astype(float)
        g = _stamps(grad2, x, y, h).astype(float)
        ok = ((_stamps(mask, x, y, h) & int(UNUSABLE)) == 0).all(axis=(1, 2))
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


def _difference_psf(science_psf: Psf | None, shape: tuple[int, int],
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


def _mean_variance(image: MaskedImage, stride: int = 97) -> float:
    """Median variance of the usable pixels, from every ``stride``-th pixel."""
    variance = np.ravel(image.variance)[::stride]
    good = ((np.ravel(image.mask)[::stride] & int(UNUSABLE)) == 0) & np.isfinite(variance) & (variance > 0)
    return float(np.median(variance[good])) if good.any() else 1.0


__all__ = ["SubtractConfig", "SubtractionResult", "MatchingKernel", "spatial_terms", "subtract", "subtract_images",
           "matching_sigmas", "fit_kernel", "FWHM_PER_SIGMA"]
