"""FFT convolution of CCD-sized float32 images by small kernels, in blocks of rows on the pipeline's threads.

An image is cut into :data:`ROW_BLOCKS` blocks of rows, each read with a halo of the kernel's half-width above
and below and convolved on its own thread (overlap-save): the blocks' results are exact, the threads share no
transform, and the numbers do not depend on the number of threads. Each block's convolution is circular over
the smallest fast FFT size that holds it. Away from the image's border this equals a linear ``mode="same"``
convolution; within a kernel's half-width of the border, where a zero-padded convolution has only part of its
support, the kernel's reach wraps to the opposite side of the block instead. The pipeline flags that band EDGE
(or does not score it) in every image it convolves, so the two agree wherever a result is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import fft as sp_fft

from pipeline.threads import thread_map


def fft_shape(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """Smallest fast (5-smooth) FFT shape that holds an image of ``image_shape``."""
    return tuple(sp_fft.next_fast_len(int(n), real=True) for n in image_shape)


def border_bands(array: np.ndarray, width: int) -> tuple[np.ndarray, ...]:
    """Views of the four bands ``width`` pixels wide along the border of a 2-D array (none for ``width`` 0)."""
    if width <= 0:
        return ()
    return array[:width], array[-width:], array[:, :width], array[:, -width:]


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


def spectrum(image: np.ndarray) -> np.ndarray:
    """``rfft2`` of a float32 image at its :func:`fft_shape` (zero-padded)."""
    return sp_fft.rfft2(np.asarray(image, np.float32), s=fft_shape(image.shape))


def inverse(product: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`spectrum` (``product`` is overwritten), cut to ``shape``, float32."""
    full = sp_fft.irfft2(product, s=fft_shape(shape), overwrite_x=True)
    return full if full.shape == tuple(shape) else np.ascontiguousarray(full[:shape[0], :shape[1]])


ROW_BLOCKS = 2
"""Blocks of rows an image is cut into, whatever the number of threads: the results are the same, bit for bit,
with one thread or two (a re-run after a restart writes identical rows whatever ``pipeline_threads`` is)."""


def row_blocks(shape: tuple[int, int], halo: int) -> list[tuple[slice, slice]]:
    """:data:`ROW_BLOCKS` blocks of rows of an image of ``shape`` (fewer for a short image): (rows read, with
    ``halo`` rows above and below where the image has them; rows written)."""
    ny = shape[0]
    n_blocks = max(1, min(ROW_BLOCKS, ny // max(4 * halo, 64)))
    edges = np.linspace(0, ny, n_blocks + 1).astype(int)
    return [(slice(max(a - halo, 0), min(b + halo, ny)), slice(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def kernel_fts(kernels: Sequence[np.ndarray], blocks: list[tuple[slice, slice]], nx: int
               ) -> dict[tuple[int, int], list[np.ndarray]]:
    """:func:`kernel_ft` of each kernel at the FFT shape of each distinct block (usually one), computed once in
    the calling thread (with scipy.fft's workers) for all the blocks' threads to share."""
    shapes = {fft_shape((read.stop - read.start, nx)) for read, _ in blocks}
    return {shape: [kernel_ft(k, shape) for k in kernels] for shape in shapes}


def in_row_blocks(function: Callable[[slice], Sequence[np.ndarray]], blocks: list[tuple[slice, slice]],
                  shape: tuple[int, int], n_outputs: int) -> list[np.ndarray]:
    """Run ``function`` on blocks of rows on :func:`~pipeline.threads.thread_map`'s threads and assemble its
    outputs.

    Parameters
    ----------
    function : callable
        ``function(rows)`` returns ``n_outputs`` float32 arrays for the image rows ``rows`` (a slice, the
        block and its halo), each of shape ``(rows.stop - rows.start, nx)``.
    blocks : list of (slice, slice)
        From :func:`row_blocks`, with a halo of at least the half-height of every kernel ``function`` uses.
    shape : tuple of int
        (ny, nx) of the whole image.
    n_outputs : int

    Returns
    -------
    list of numpy.ndarray
        ``n_outputs`` float32 (ny, nx) arrays.
    """
    outputs = [np.empty(shape, np.float32) for _ in range(n_outputs)]

    def run(block: tuple[slice, slice]) -> None:
        read, write = block
        for output, result in zip(outputs, function(read)):
            output[write] = result[write.start - read.start:write.stop - read.start]

    thread_map(run, blocks)
    return outputs


def convolve_same(image: np.ndarray, kernel: np.ndarray, *, exclude: np.ndarray | None = None) -> np.ndarray:
    """``image`` convolved by ``kernel``, float32, same shape, by circular FFTs in blocks of rows.

    Equals ``scipy.signal.convolve(image, kernel, mode="same")`` (float32 round-off, about 1e-7 of the image's
    largest absolute values) except within the kernel's half-width of the border, which wraps (see the module
    docstring).

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) image.
    kernel : numpy.ndarray
        (kh, kw) kernel, centred on pixel ((kh - 1) // 2, (kw - 1) // 2).
    exclude : numpy.ndarray, optional
        (ny, nx) bool: pixels taken as 0 (in the blocks' threads; ``image`` is not changed).

    Returns
    -------
    numpy.ndarray
        (ny, nx) float32.
    """
    blocks = row_blocks(image.shape, kernel.shape[0] // 2 + 1)
    kfts = kernel_fts([kernel], blocks, image.shape[1])

    def block(rows: slice) -> list[np.ndarray]:
        part = image[rows] if exclude is None else np.where(exclude[rows], np.float32(0.0), image[rows])
        product = spectrum(part)
        product *= kfts[fft_shape(part.shape)][0]
        return [inverse(product, part.shape)]

    return in_row_blocks(block, blocks, image.shape, 1)[0]


def matched_filter(image: np.ndarray, variance: np.ndarray, bad: np.ndarray, kernel: np.ndarray, *,
                   with_coverage: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The sums behind the matched-filter significance of a point source at every pixel.

    ``numerator = D * P``, ``noise2 = V * P^2`` and ``coverage = W * P``, with ``P`` the flipped ``kernel``, ``W``
    the usable pixels and ``D``, ``V`` the image and variance set to 0 where unusable: the significance is
    ``numerator / sqrt(noise2)``. Unusable pixels carry no weight. A border band of the kernel's half-width
    is not scored (coverage 0 there), so the circular convolutions equal zero-padded ones wherever the
    coverage is not 0.

    Parameters
    ----------
    image, variance : numpy.ndarray
        (ny, nx) image and its variance.
    bad : numpy.ndarray
        (ny, nx) bool, unusable pixels.
    kernel : numpy.ndarray
        (kh, kw) PSF kernel.
    with_coverage : bool
        False: no coverage plane (one FFT round trip less; None in its place), for a caller that needs the
        coverage at a few pixels only (:func:`coverage_at`).

    Returns
    -------
    numerator, noise2, coverage : numpy.ndarray
        (ny, nx) float32 each.
    """
    band = max(kernel.shape) // 2
    flipped = np.ascontiguousarray(np.asarray(kernel, np.float32)[::-1, ::-1])
    blocks = row_blocks(image.shape, band + 1)
    kfts = kernel_fts([flipped, flipped**2], blocks, image.shape[1])

    def block(rows: slice) -> list[np.ndarray]:
        usable = ~np.asarray(bad[rows], bool)
        shape = usable.shape
        kft, kft2 = kfts[fft_shape(shape)]
        sums = []
        planes = [(np.where(usable, image[rows], np.float32(0.0)), kft),
                  (np.where(usable, variance[rows], np.float32(0.0)), kft2)]
        if with_coverage:
            planes.append((usable.astype(np.float32), kft))
        for plane, kernel_transform in planes:
            product = spectrum(plane)
            product *= kernel_transform
            sums.append(inverse(product, shape))
        return sums

    if not with_coverage:
        numerator, noise2 = in_row_blocks(block, blocks, image.shape, 2)
        return numerator, noise2, None
    numerator, noise2, coverage = in_row_blocks(block, blocks, image.shape, 3)
    for edge in border_bands(coverage, band):
        edge[...] = 0.0
    return numerator, noise2, coverage


def coverage_at(bad: np.ndarray, kernel: np.ndarray, iy: np.ndarray, ix: np.ndarray, *, chunk: int = 4096
                ) -> np.ndarray:
    """:func:`matched_filter`'s coverage (the usable pixels' share of ``kernel``) at the pixels (iy, ix) only,
    by direct sums over each pixel's kernel footprint (float64; the FFT plane's values to float32 round-off),
    0 in the unscored border band.

    Parameters
    ----------
    bad : numpy.ndarray
        (ny, nx) bool, unusable pixels.
    kernel : numpy.ndarray
        (kh, kw) PSF kernel, odd sizes.
    iy, ix : numpy.ndarray
        (n,) integer pixel indices.
    chunk : int
        Pixels summed at a time (memory: ``chunk * kh * kw`` bytes).

    Returns
    -------
    numpy.ndarray
        (n,) float64.
    """
    ny, nx = bad.shape
    kh, kw = kernel.shape
    band = max(kernel.shape) // 2
    iy, ix = np.asarray(iy, np.intp), np.asarray(ix, np.intp)
    out = np.zeros(iy.size)
    inner = np.flatnonzero((iy >= band) & (iy < ny - band) & (ix >= band) & (ix < nx - band))
    # The FFT product convolves the usable plane with the flipped kernel: a correlation with the kernel.
    dy, dx = np.arange(kh) - kh // 2, np.arange(kw) - kw // 2
    weights = np.asarray(kernel, float).ravel()
    for start in range(0, inner.size, chunk):
        sel = inner[start:start + chunk]
        window = bad[iy[sel, None, None] + dy[None, :, None], ix[sel, None, None] + dx[None, None, :]]
        out[sel] = (~window).reshape(sel.size, -1) @ weights
    return out


__all__ = ["ROW_BLOCKS", "border_bands", "fft_shape", "kernel_ft", "kernel_fts", "spectrum", "inverse", "row_blocks",
           "in_row_blocks", "convolve_same", "matched_filter", "coverage_at"]
