"""PSF models: an empirical pixel PSF stacked from stars (the default) and a Gaussian (a fallback).

:class:`PixelPsf` is measured from the selected stars: their stamps are shifted to a common sub-pixel centre
by a Fourier phase ramp (vectorised over stars), normalised by their PSF flux and combined by a clipped
mean, optionally with a linear variation across the CCD. It is evaluated, vectorised, as normalised stamps
at any set of sub-pixel positions, and can be convolved with a kernel (the PSF of a difference image).
:class:`GaussianPsf` keeps the same interface; :class:`Psf` is that interface, what the stages ask of a PSF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import signal
from scipy.special import erf

from pipeline.errors import AlgorithmError

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def unit_coordinates(x: np.ndarray | float, y: np.ndarray | float, shape: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions scaled to [-1, 1] over an image of ``shape`` (ny, nx): the variables of the spatial
    polynomials of the PSF model and of the matching kernel."""
    ny, nx = shape
    return 2.0 * np.asarray(x, float) / max(nx - 1, 1) - 1.0, 2.0 * np.asarray(y, float) / max(ny - 1, 1) - 1.0


class Psf(Protocol):
    """A PSF model as the stages use it (:class:`PixelPsf` and :class:`GaussianPsf` are two).

    Positions are 0-based CCD pixels (pixel centres at integers); stamps and kernels are odd, square,
    ``2 * half_size + 1`` on a side.
    """

    @property
    def flux_scale(self) -> float:
        """Aperture correction of PSF-fit fluxes (multiplies them to total fluxes; 1 for an analytic model)."""
        ...

    def sigma_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Effective Gaussian sigma (pixels) at ``x``, ``y``."""
        ...

    def fwhm_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """FWHM (pixels) at ``x``, ``y``."""
        ...

    def stamps(self, x: np.ndarray, y: np.ndarray, half_size: int) -> np.ndarray:
        """(n, 2h+1, 2h+1) normalised PSF stamps centred on the pixels nearest to (x, y)."""
        ...

    def kernel(self, x: float, y: float, half_size: int) -> np.ndarray:
        """A normalised, centred (2h+1, 2h+1) PSF image at (x, y), for convolution."""
        ...


def _phase_ramp(n: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """(k, n, n) Fourier factors that shift an (n, n) image by (+dx, +dy) pixels."""
    freq = np.fft.fftfreq(n)
    ramp_x = np.exp(-2j * np.pi * freq[None, :] * np.asarray(dx, float)[:, None])
    ramp_y = np.exp(-2j * np.pi * freq[None, :] * np.asarray(dy, float)[:, None])
    return ramp_y[:, :, None] * ramp_x[:, None, :]


def fourier_shift(images: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Shift each of (k, n, n) images by (+dx_k, +dy_k) pixels (band-limited interpolation)."""
    n = images.shape[-1]
    ft = np.fft.fft2(images, axes=(-2, -1))
    return np.real(np.fft.ifft2(ft * _phase_ramp(n, dx, dy), axes=(-2, -1)))


def _measure_fwhm(images: np.ndarray) -> np.ndarray:
    """FWHM (pixels) of (k, n, n) centred, peaked PSF images from their half-maximum radius.

    The central pixel is the peak (images are centred on a pixel centre). The half-maximum radius comes
    from a weighted quadratic fit of value against radius over the pixels between 25% and 75% of the peak,
    vectorised over images.
    """
    k, n, _ = images.shape
    c = n // 2
    u = np.arange(n) - c
    r = np.hypot(u[None, :], u[:, None]).ravel()
    peak = images[:, c, c]
    v = images.reshape(k, -1) / peak[:, None]
    w = ((v > 0.2) & (v < 0.8)).astype(float)
    design = np.stack([np.ones_like(r), r, r**2], axis=1)
    normal = np.einsum("kp,pi,pj->kij", w, design, design)
    rhs = np.einsum("kp,pi,kp->ki", w, design, v)
    ok = np.linalg.det(normal) > 1e-9
    coeffs = np.zeros((k, 3))
    if ok.any():
        coeffs[ok] = np.linalg.solve(normal[ok], rhs[ok][..., None])[..., 0]
    a0, a1, a2 = coeffs[:, 0] - 0.5, coeffs[:, 1], coeffs[:, 2]
    disc = np.sqrt(np.clip(a1**2 - 4 * a2 * a0, 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        # The root on the falling side of the quadratic; a linear fit when the curvature vanishes.
        root = np.where(np.abs(a2) > 1e-9, (-a1 - disc) / (2 * np.where(np.abs(a2) > 1e-9, a2, 1.0)),
                        -a0 / np.where(a1 != 0, a1, np.nan))
        alt = np.where(np.abs(a2) > 1e-9, (-a1 + disc) / (2 * np.where(np.abs(a2) > 1e-9, a2, 1.0)), np.nan)
    # Pick the root inside the fitted range of radii.
    rmin = np.min(np.where(w > 0, r[None, :], np.inf), axis=1)
    rmax = np.max(np.where(w > 0, r[None, :], -np.inf), axis=1)
    in_range = (root >= rmin - 1) & (root <= rmax + 1)
    half = np.where(in_range, root, alt)
    return np.where(ok, 2.0 * half, np.nan)


def psf_image_fwhm(images: np.ndarray) -> np.ndarray:
    """FWHM (pixels) of (k, n, n) centred PSF images, from their half-maximum radius."""
    return _measure_fwhm(np.asarray(images, dtype=float))


@dataclass(frozen=True)
class PixelPsf:
    """An empirical pixel PSF: ``P(x, y) = sum_k f_k(x, y) * images[k]`` with f = (1, xn, yn).

    ``xn``, ``yn`` are positions scaled to [-1, 1] over the CCD. Images are sampled at pixel centres, centred
    on the central pixel of an odd (n, n) grid, and the constant term sums to 1 (the total flux up to the
    stamp's truncation radius, which is chosen to hold all but a few per mil of the wings).

    Attributes
    ----------
    images : numpy.ndarray
        (n_terms, n, n) model components; n_terms is 1 (constant) or 3 (linear).
    shape : tuple of int
        (ny, nx) of the CCD, for the position scaling.
    flux_scale : float
        Aperture correction of PSF fluxes: multiplies a PSF fit's flux so that bright stars' PSF fluxes equal
        their total (large-aperture) fluxes, whatever small error the model's profile has.
    """

    images: np.ndarray
    shape: tuple[int, int]
    flux_scale: float = 1.0

    @property
    def half_size(self) -> int:
        """Half size of the model images, pixels."""
        return self.images.shape[-1] // 2

    def _terms(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xn, yn = unit_coordinates(x, y, self.shape)
        terms = np.stack([np.ones_like(xn), xn, yn], axis=-1)
        return terms[..., : self.images.shape[0]]

    def image_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """(k, n, n) centred model images at positions ``x``, ``y`` (pixels)."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        return np.tensordot(self._terms(x, y), self.images, axes=1)

    def fwhm_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """FWHM (pixels) of the model at positions ``x``, ``y``, measured from its half-maximum radius."""
        scalar = np.ndim(x) == 0 and np.ndim(y) == 0
        fwhm = _measure_fwhm(self.image_at(x, y))
        return np.asarray(fwhm[0] if scalar else fwhm)

    def sigma_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Effective Gaussian sigma (FWHM / 2.355, pixels) at ``x``, ``y``, for sizing kernels and stamps."""
        return np.asarray(self.fwhm_at(x, y) / FWHM_PER_SIGMA)

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
            (n, 2h+1, 2h+1) PSF values; stamp[k, j, i] covers pixel (round(y_k) + j - h, round(x_k) + i - h).
            A stamp as large as the model sums to about 1.
        """
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        n_model = self.images.shape[-1]
        if x.size == 0:
            return np.zeros((0, 2 * half_size + 1, 2 * half_size + 1))
        coeff_ft = np.fft.fft2(self.images, axes=(-2, -1))
        ft = np.tensordot(self._terms(x, y), coeff_ft, axes=1)
        shifted = np.real(np.fft.ifft2(ft * _phase_ramp(n_model, x - np.rint(x), y - np.rint(y)), axes=(-2, -1)))
        return _crop_or_pad(shifted, half_size)

    def kernel(self, x: float, y: float, half_size: int) -> np.ndarray:
        """A normalised, centred PSF image at (x, y), for convolution."""
        stamp = _crop_or_pad(self.image_at(x, y), half_size)[0]
        return stamp / stamp.sum()

    def convolved(self, kernel: np.ndarray) -> PixelPsf:
        """This PSF convolved with a (normalised, centred, odd-sized) kernel: e.g. a difference image's PSF."""
        conv = signal.fftconvolve(self.images, np.asarray(kernel, float)[None], mode="same", axes=(1, 2))
        return PixelPsf(images=conv, shape=self.shape, flux_scale=self.flux_scale)


def _crop_or_pad(images: np.ndarray, half_size: int) -> np.ndarray:
    """Centre-crop or zero-pad (k, n, n) images to (k, 2h+1, 2h+1)."""
    h_model = images.shape[-1] // 2
    if half_size <= h_model:
        s = slice(h_model - half_size, h_model + half_size + 1)
        return images[:, s, s]
    pad = half_size - h_model
    return np.pad(images, ((0, 0), (pad, pad), (pad, pad)))


def build_pixel_psf(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, mask: np.ndarray | None = None,
                    half_size: int | None = None, fwhm_guess_pix: float | None = None, spatial_order: int = 0,
                    n_iter: int = 2, clip_sigma: float = 3.0, stamp_cache: StarStampCache | None = None
                    ) -> PixelPsf:
    """Stack star stamps into an empirical pixel PSF.

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) background-subtracted image.
    x, y : numpy.ndarray
        (n,) star centroids, 0-based pixels.
    mask : numpy.ndarray, optional
        (ny, nx) boolean, True where a pixel must not be used (saturated, bad, other sources' cores).
    half_size : int, optional
        Half size of the model; by default ``ceil(3.3 * FWHM)`` clipped to [12, 27], which holds all but
        ~0.3% of a beta = 3.5 Moffat.
    fwhm_guess_pix : float, optional
        A first FWHM estimate (for the default half size); by default measured from the stars.
    spatial_order : int
        0 for a constant PSF, 1 for a linear variation (used only with at least 20 stars).
    n_iter : int
        Normalisation iterations (each re-measures the stars' PSF fluxes with the current model).
    clip_sigma : float
        Per-pixel clipping of outlying stamps (neighbours, cosmic rays), in robust sigma.
    stamp_cache : StarStampCache, optional
        Keeps the stars' centred stamps for another build from the same ``image`` and ``mask`` (a rebuild
        from a subset of the stars cuts and shifts nothing again).

    Returns
    -------
    PixelPsf

    Raises
    ------
    AlgorithmError
        Fewer than 3 stars inside the image.
    """
    ny, nx = image.shape
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if fwhm_guess_pix is None:
        probe = build_pixel_psf(image, x, y, mask=mask, half_size=12, fwhm_guess_pix=1.0, spatial_order=0,
                                n_iter=1, clip_sigma=clip_sigma)
        fwhm_guess_pix = float(probe.fwhm_at((nx - 1) / 2, (ny - 1) / 2))
        if not np.isfinite(fwhm_guess_pix):
            fwhm_guess_pix = 4.0
    if half_size is None:
        half_size = int(np.clip(np.ceil(3.3 * fwhm_guess_pix), 12, 27))
    h = half_size + 2  # a margin for the sub-pixel shift
    inside = (x >= h) & (x < nx - h) & (y >= h) & (y < ny - h)
    x, y = x[inside], y[inside]
    if x.size < 3:
        raise AlgorithmError(f"PSF model needs at least 3 stars inside the CCD, got {x.size}", stage="psf")
    cache = StarStampCache() if stamp_cache is None else stamp_cache
    shifted, weight = cache.stamps(image, x, y, mask=mask, half=h)
    c = half_size
    u = np.arange(-c, c + 1)
    r = np.hypot(u[None, :], u[:, None])
    # First normalisation: flux in a circle of radius 2.5 FWHM (the same for all stars, then rescaled).
    core = r <= min(2.5 * fwhm_guess_pix, c)
    flux = np.sum(np.where(weight, shifted, 0.0) * core, axis=(1, 2))
    # Stars are weighted by their SNR^2 (sky-limited noise from the stamp's outer ring), capped so that no
    # few stars dominate.
    noise = _outer_ring_noise(shifted, weight, r, c)
    use_linear = spatial_order >= 1 and x.size >= 20
    terms = np.column_stack([np.ones_like(x), *unit_coordinates(x, y, (ny, nx))])
    terms = terms[:, :3 if use_linear else 1]
    model_images = None
    for it in range(max(n_iter, 1) + 1):
        good = flux > 0
        norm = shifted / np.where(good, flux, 1.0)[:, None, None]
        snr2 = np.where(good, flux / noise, 0.0) ** 2
        star_w = np.minimum(snr2, 5.0 * np.median(snr2[good]) if good.any() else 1.0)
        w = _clipped_weights(norm, (weight & good[:, None, None]).astype(float), terms, model_images,
                             clip_sigma=clip_sigma)
        model_images = _fitted_model_images(norm, w * star_w[:, None, None], terms, r=r,
                                            r_core=2.0 * fwhm_guess_pix)
        if it == max(n_iter, 1):
            break
        # Re-measure each star's flux by a PSF fit over its usable pixels.
        predicted = np.tensordot(terms, model_images, axes=1)
        wp = weight * core
        flux = np.sum(wp * predicted * shifted, axis=(1, 2)) / np.maximum(np.sum(wp * predicted**2, axis=(1, 2)),
                                                                         1e-30)
    model_images = _recentre(model_images)
    return PixelPsf(images=model_images, shape=(ny, nx))


@dataclass
class StarStampCache:
    """Stars' centred stamps (the first step of :func:`build_pixel_psf`) kept between builds from one image
    and mask, by stamp size and star position: a rebuild from a subset of the stars (those out of a
    neighbour's halo) takes its stamps from here. Valid for one image and mask only."""

    _by_half: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def stamps(self, image: np.ndarray, x: np.ndarray, y: np.ndarray, *, mask: np.ndarray | None, half: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_centred_star_stamps` of the stars at (x, y), from the cache when all of them are in it."""
        key = np.asarray(x, float) + 1j * np.asarray(y, float)  # complex numbers sort by (x, y)
        entry = self._by_half.get(half)
        if entry is not None:
            sorted_keys, order, shifted, weight = entry
            pos = np.minimum(np.searchsorted(sorted_keys, key), len(sorted_keys) - 1)
            if np.array_equal(sorted_keys[pos], key):
                return shifted[order[pos]], weight[order[pos]]
        shifted, weight = _centred_star_stamps(image, x, y, mask=mask, half=half)
        order = np.argsort(key, kind="stable")
        self._by_half[half] = (key[order], order, shifted, weight)
        return shifted, weight


def _centred_star_stamps(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, mask: np.ndarray | None,
                         half: int) -> tuple[np.ndarray, np.ndarray]:
    """Stamps of ``half - 2`` half size around the stars, each shifted onto its central pixel, and their
    usable pixels (True where the shifted mask of ``mask`` stays under 0.05)."""
    off = np.arange(-half, half + 1)
    iy = np.rint(y).astype(int)[:, None, None] + off[None, :, None]
    ix = np.rint(x).astype(int)[:, None, None] + off[None, None, :]
    # A star near the edge: its stamp's pixels outside the image count as masked.
    outside = (iy < 0) | (iy >= image.shape[0]) | (ix < 0) | (ix >= image.shape[1])
    iy, ix = np.clip(iy, 0, image.shape[0] - 1), np.clip(ix, 0, image.shape[1] - 1)
    stamps = image[iy, ix].astype(float)
    bad = outside if mask is None else np.asarray(mask)[iy, ix].astype(bool) | outside
    stamps = np.where(bad, 0.0, stamps)
    # Shift each star onto the central pixel; masked pixels are shifted too (as weights) and dropped.
    shifted = fourier_shift(stamps, np.rint(x) - x, np.rint(y) - y)[:, 2:-2, 2:-2]
    weight = fourier_shift(bad.astype(float), np.rint(x) - x, np.rint(y) - y)[:, 2:-2, 2:-2] < 0.05
    return shifted, weight


def nanmedian_first_axis(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=0)`` (the same numbers, NaN where a column has no finite value), by one
    sort along the first axis instead of numpy's per-column loop for NaN-holding data."""
    values = np.sort(values, axis=0)  # NaNs sort last
    count = np.sum(~np.isnan(values), axis=0)
    lo = np.take_along_axis(values, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    hi = np.take_along_axis(values, (count // 2)[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, (lo + hi) / 2, np.nan)


def _outer_ring_noise(shifted: np.ndarray, weight: np.ndarray, r: np.ndarray, c: int) -> np.ndarray:
    """Per-stamp sky noise: the robust (MAD) scatter of the usable pixels within 3 pixels of the stamp's
    edge at radius ``c`` (the median over the stamps where it is not finite or not positive)."""
    ring = (r > c - 3) & (r <= c)
    # Only the ring's pixels: (pixels, stars), reduced along the pixels.
    ring_vals = np.where(weight[:, ring], shifted[:, ring], np.nan).T
    noise = 1.4826 * nanmedian_first_axis(np.abs(ring_vals - nanmedian_first_axis(ring_vals)[None]))
    return np.where(np.isfinite(noise) & (noise > 0), noise, np.nanmedian(noise))


def _clipped_weights(norm: np.ndarray, w: np.ndarray, terms: np.ndarray, model_images: np.ndarray | None, *,
                     clip_sigma: float) -> np.ndarray:
    """The pixel weights ``w`` with each stamp's pixels more than ``clip_sigma`` robust sigma off set to 0:
    off the current model (``model_images`` at the stars' ``terms``), or off the stamps' median without one."""
    if model_images is not None:
        predicted = np.tensordot(terms, model_images, axes=1)
        resid = norm - predicted
        mad = 1.4826 * np.median(np.abs(np.where(w > 0, resid, np.nan)), axis=0)
        mad = np.nan_to_num(mad, nan=np.inf)
        return w * (np.abs(resid) <= clip_sigma * np.maximum(mad, 1e-12)[None])
    med = nanmedian_first_axis(np.where(w > 0, norm, np.nan))
    mad = 1.4826 * nanmedian_first_axis(np.abs(np.where(w > 0, norm - med, np.nan)))
    return w * (np.abs(norm - np.nan_to_num(med)) <= clip_sigma * np.maximum(np.nan_to_num(mad, nan=np.inf),
                                                                             1e-12))


def _fitted_model_images(norm: np.ndarray, w: np.ndarray, terms: np.ndarray, *, r: np.ndarray,
                         r_core: float) -> np.ndarray:
    """The model's images (one per spatial term): a per-pixel weighted least-squares fit of the normalised
    stamps ``norm`` on the stars' spatial ``terms``, with robust wings beyond ``r_core``, normalised (the
    first image sums to 1, the others to 0)."""
    n_stars = w.shape[0]
    c = norm.shape[-1] // 2
    n_terms = terms.shape[1]
    w_flat = w.reshape(n_stars, -1)
    # Per-pixel normal equations as two matrix products over the stars (BLAS), not a 3-operand einsum.
    normal = (w_flat.T @ (terms[:, :, None] * terms[:, None, :]).reshape(n_stars, -1)).reshape(-1, n_terms, n_terms)
    rhs = (w_flat * norm.reshape(n_stars, -1)).T @ terms
    normal += 1e-12 * np.eye(terms.shape[1])[None]
    coeffs = np.linalg.solve(normal, rhs[..., None])[..., 0]
    model_images = coeffs.T.reshape(terms.shape[1], 2 * c + 1, 2 * c + 1)
    model_images = _robust_wings(model_images, r, r_core)
    total = model_images[0].sum()
    model_images = model_images / total
    model_images[1:] -= model_images[1:].sum(axis=(1, 2))[:, None, None] * model_images[0][None]
    return model_images


def _robust_wings(images: np.ndarray, r: np.ndarray, r_core: float) -> np.ndarray:
    """Replace the model beyond ``r_core`` by its azimuthal median profile (1-pixel annuli).

    The wings of a stack are noisy and carry neighbours' light; the median over an annulus is robust to
    both. Spatial terms are set to zero there.
    """
    out = images.copy()
    outer = r > r_core
    if not outer.any():
        return out
    bins = np.floor(r).astype(int)
    n_bins = bins.max() + 1
    # Median per annulus, vectorised: sort values by (bin, value) and pick each bin's middle element.
    flat_bins, flat_vals = bins.ravel(), images[0].ravel()
    order = np.lexsort((flat_vals, flat_bins))
    counts = np.bincount(flat_bins, minlength=n_bins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lo = flat_vals[order][starts + np.maximum(counts - 1, 0) // 2]
    hi = flat_vals[order][starts + counts // 2]
    centres = np.bincount(flat_bins, weights=r.ravel(), minlength=n_bins) / np.maximum(counts, 1)
    profile = np.interp(r, centres, 0.5 * (lo + hi))
    out[0] = np.where(outer, profile, images[0])
    out[1:] = np.where(outer[None], 0.0, images[1:])
    return out


def _recentre(images: np.ndarray) -> np.ndarray:
    """Shift the model so that the constant term's core centroid is on the central pixel."""
    n = images.shape[-1]
    c = n // 2
    u = np.arange(n) - c
    core = np.hypot(u[None, :], u[:, None]) <= 3
    img = images[0] * core
    total = img.sum()
    if total <= 0:
        return images
    cx = float(np.sum(img * u[None, :]) / total)
    cy = float(np.sum(img * u[:, None]) / total)
    if abs(cx) < 1e-3 and abs(cy) < 1e-3:
        return images
    shifted = fourier_shift(images, np.full(images.shape[0], -cx), np.full(images.shape[0], -cy))
    return shifted


def psf_from_gaussian(sigma_pix: float, shape: tuple[int, int], *, half_size: int = 15) -> PixelPsf:
    """A :class:`PixelPsf` of a circular Gaussian (a fallback and for tests)."""
    stamp = GaussianPsf((float(sigma_pix), 0.0, 0.0)).kernel(0, 0, half_size)
    return PixelPsf(images=stamp[None], shape=shape)




@dataclass(frozen=True)
class GaussianPsf:
    """A circular Gaussian PSF with sigma = c0 + c1 * x + c2 * y (pixels, 0-based CCD coordinates).

    Attributes
    ----------
    coeffs : tuple of float
        (c0, c1, c2) of sigma in pixels.
    """

    coeffs: tuple[float, float, float]

    @property
    def flux_scale(self) -> float:
        """1: the analytic profile's PSF fluxes are total fluxes."""
        return 1.0

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
