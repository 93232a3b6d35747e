"""The Alard-Lupton matching kernel: its basis, the star stamps it is fitted on, and the fit.

A convolution kernel, a sum of Gaussians times polynomials whose coefficients vary as a polynomial over the
CCD (Alard 2000), and a differential background of the same spatial order, are fitted by linear least squares
on stamps around isolated stars so that ``kernel * sharper + background ~= blurrier``
(:func:`fit_kernel`); :class:`MatchingKernel` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.stats import sigma_clipped_stats

from pipeline.convolution import fft_shape, in_row_blocks, inverse, kernel_fts, row_blocks, spectrum
from pipeline.errors import AlgorithmError
from pipeline.masks import UNUSABLE
from pipeline.measure import cut_stamps
from pipeline.psf import unit_coordinates
from pipeline.threads import thread_map, worker_count
from pipeline.types import MaskedImage

if TYPE_CHECKING:
    from pipeline.subtract import SubtractConfig


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


def star_stamps(image: np.ndarray, x: np.ndarray, y: np.ndarray, half: int) -> np.ndarray:
    """Stamps around star positions that lie inside the image (see :func:`pipeline.measure.cut_stamps`)."""
    return cut_stamps(image, x, y, half, fill=image.dtype.type(0))[0]


def gaussian_kernel(sigma: float, half: int) -> np.ndarray:
    """A normalised circular Gaussian kernel, (2h+1, 2h+1), of ``sigma`` (0.3 pixel at the least)."""
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
    def constant(cls, kernel: np.ndarray, background: float, shape: tuple[int, int]) -> MatchingKernel:
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
    sharp_st = star_stamps(sharp.image, x, y, half_s + half_k).astype(float)
    target = star_stamps(blurry.image, x, y, half_s).astype(float)
    var = (star_stamps(blurry.variance, x, y, half_s) + star_stamps(sharp.variance, x, y, half_s)).astype(float)
    bad = ((star_stamps(blurry.mask, x, y, half_s) | star_stamps(sharp.mask, x, y, half_s)) & int(UNUSABLE)) != 0
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



__all__ = ["MatchingKernel", "fit_kernel", "gaussian_kernel", "spatial_terms", "star_stamps"]
