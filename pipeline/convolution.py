"""FFT convolution of CCD-sized float32 images by small kernels.

The convolutions are circular over the smallest fast FFT size that holds the image (2048 x 4096 for a DECam
CCD: no padding at all). Away from the border they equal a linear ``mode="same"`` convolution; within a
kernel's half-width of the border, where a zero-padded convolution has only part of its support, the kernel's
reach wraps to the opposite border instead. The pipeline flags that band EDGE (or zeroes it) in every image
it convolves, so the two agree wherever a result is used.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sp_fft

from pipeline.threads import thread_map


def fft_shape(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """Smallest fast (5-smooth) FFT shape that holds an image of ``image_shape``."""
    return tuple(sp_fft.next_fast_len(int(n), real=True) for n in image_shape)


def kernel_ft(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real-to-complex FFT (complex64) of a small kernel centred on pixel (0, 0) of a ``shape`` array.

    The kernel's centre is pixel ``((kh - 1) // 2, (kw - 1) // 2)``; it wraps around the array's edges so that
    the product with an image's transform convolves in place (no shift). Only the kernel's few rows are
    transformed along x, then the columns along y (half the work of a full ``rfft2``).
    """
    kernel = np.asarray(kernel, np.float32)
    kh, kw = kernel.shape
    rows_at = (np.arange(kh) - (kh - 1) // 2) % shape[0]
    cols_at = (np.arange(kw) - (kw - 1) // 2) % shape[1]
    block = np.zeros((kh, shape[1]), np.float32)
    block[:, cols_at] = kernel
    columns = np.zeros((shape[0], shape[1] // 2 + 1), np.complex64)
    columns[rows_at] = sp_fft.rfft(block, axis=1)
    return sp_fft.fft(columns, axis=0, overwrite_x=True)


def convolve_same(image: np.ndarray, kernel: np.ndarray, kft: np.ndarray | None = None) -> np.ndarray:
    """``image`` convolved by ``kernel``, float32, same shape, by one circular FFT pass.

    Equals ``scipy.signal.convolve(image, kernel, mode="same")`` (float32 round-off, about 1e-7 of the image's
    largest absolute values) except within the kernel's half-width of the border, which wraps (see the module
    docstring). The transforms use ``scipy.fft``'s default number of workers (``scipy.fft.set_workers``).

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) image.
    kernel : numpy.ndarray
        (kh, kw) kernel, centred on pixel ((kh - 1) // 2, (kw - 1) // 2).
    kft : numpy.ndarray, optional
        ``kernel_ft(kernel, fft_shape(image.shape))``, for several images convolved by one kernel.

    Returns
    -------
    numpy.ndarray
        (ny, nx) float32.
    """
    ny, nx = image.shape
    shape = fft_shape(image.shape)
    if kft is None:
        kft = kernel_ft(kernel, shape)
    spectrum = sp_fft.rfft2(np.asarray(image, np.float32), s=shape)
    spectrum *= kft
    full = sp_fft.irfft2(spectrum, s=shape, overwrite_x=True)
    return full if full.shape == (ny, nx) else np.ascontiguousarray(full[:ny, :nx])


def matched_filter(image: np.ndarray, variance: np.ndarray, bad: np.ndarray, kernel: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sums behind the matched-filter significance of a point source at every pixel.

    ``numerator = D * P``, ``noise2 = V * P^2`` and ``coverage = W * P``, with ``P`` the flipped ``kernel``, ``W``
    the usable pixels and ``D``, ``V`` the image and variance set to 0 where unusable: the significance is
    ``numerator / sqrt(noise2)``. Unusable pixels and a border band of the kernel's half-width carry no
    weight, so the circular convolutions equal zero-padded ones. The three convolutions run side by side on
    :func:`~pipeline.threads.thread_map`'s threads.

    Parameters
    ----------
    image, variance : numpy.ndarray
        (ny, nx) image and its variance.
    bad : numpy.ndarray
        (ny, nx) bool, unusable pixels.
    kernel : numpy.ndarray
        (kh, kw) PSF kernel.

    Returns
    -------
    numerator, noise2, coverage : numpy.ndarray
        (ny, nx) float32 each.
    """
    band = max(kernel.shape) // 2
    usable = ~np.asarray(bad, bool)
    usable[:band] = usable[-band:] = False
    usable[:, :band] = usable[:, -band:] = False
    flipped = np.ascontiguousarray(np.asarray(kernel, np.float32)[::-1, ::-1])
    kft = kernel_ft(flipped, fft_shape(image.shape))
    tasks = [(np.where(usable, image, np.float32(0.0)), flipped, kft),
             (np.where(usable, variance, np.float32(0.0)), flipped**2, None),
             (usable.astype(np.float32), flipped, kft)]
    numerator, noise2, coverage = thread_map(lambda task: convolve_same(*task), tasks)
    return numerator, noise2, coverage


__all__ = ["fft_shape", "kernel_ft", "convolve_same", "matched_filter"]
