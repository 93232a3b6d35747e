"""Cubic B-spline interpolation where the target grid is nearly a signed permutation of the source grid.

A DECam CCD sits on a sky tile transposed and flipped, at a pixel scale within a fraction of a percent: in a
block of a few hundred target pixels the integer part of a source coordinate minus the target index takes at
most two values. Five shifted slices of the coefficients per axis, with the four B-spline weights placed
according to that integer part, then give the same cubic spline as ``scipy.ndimage.map_coordinates(order=3,
prefilter=False)`` (to float32 rounding) in about half its time: 25 products of contiguous slices instead of 16
gathered taps per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BLOCK_COLS = 256
"""Target columns per block: the coordinate drift over a block must stay under one pixel."""


@dataclass(frozen=True)
class Orientation:
    """How the source's axes follow the target's: ``view`` is the coefficient array transposed and flipped so
    that its row and column coordinates grow with the target's row and column."""

    view: np.ndarray
    transposed: bool
    flip_rows: bool
    flip_cols: bool


def orientation(coeffs: np.ndarray, jacobian: np.ndarray, *, tolerance: float = 0.02) -> Orientation | None:
    """The :class:`Orientation` of a mapping whose mean Jacobian ``[[dy/dr, dy/dc], [dx/dr, dx/dc]]`` (source
    y, x against target row r, column c) is within ``tolerance`` of a signed permutation; None otherwise."""
    jac = np.asarray(jacobian, dtype=float)
    transposed = abs(jac[1, 0]) > abs(jac[0, 0])
    along = (jac[1, 0], jac[0, 1]) if transposed else (jac[0, 0], jac[1, 1])
    across = (jac[0, 0], jac[1, 1]) if transposed else (jac[1, 0], jac[0, 1])
    if max(abs(abs(a) - 1.0) for a in along) > tolerance or max(abs(a) for a in across) > tolerance:
        return None
    view = coeffs.T if transposed else coeffs
    flip_rows, flip_cols = along[0] < 0, along[1] < 0
    view = view[::-1 if flip_rows else 1, ::-1 if flip_cols else 1]
    return Orientation(view=view, transposed=transposed, flip_rows=flip_rows, flip_cols=flip_cols)


def _split(t: np.ndarray, flip: bool, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer part and fraction of the coordinate ``t`` on an axis of ``n`` pixels, or of ``n - 1 - t`` if
    ``flip``, both exact in float32 (the flipped coordinate itself would be rounded)."""
    if flip:
        up = np.ceil(t)
        return np.float32(n - 1) - up, up - t
    down = np.floor(t)
    return down, t - down


def _five_weights(f: np.ndarray, step: np.ndarray) -> list[np.ndarray]:
    """Weights of five consecutive taps: the cubic B-spline's four at the fraction ``f``, starting at the
    first tap where ``step`` is 0 and at the second where it is 1."""
    g = np.float32(1.0) - f
    w0 = g * g
    w0 *= g
    w0 *= np.float32(1 / 6)
    w3 = f * f
    w3 *= f
    w3 *= np.float32(1 / 6)
    # w1 = 2/3 - f^2 + f^3/2 = 2/3 - f^2 (1 - f/2); w2 = 1 - w0 - w1 - w3.
    w1 = np.float32(0.5) * f
    np.subtract(np.float32(1.0), w1, out=w1)
    w1 *= f
    w1 *= f
    np.subtract(np.float32(2 / 3), w1, out=w1)
    w2 = np.float32(1.0) - w0
    w2 -= w1
    w2 -= w3
    out = [w0 - w0 * step]
    for a, b in ((w1, w0), (w2, w1), (w3, w2)):
        mixed = b - a
        mixed *= step
        mixed += a
        out.append(mixed)
    out.append(w3 * step)
    return out


def _block(orient: Orientation, rho: np.ndarray, kappa: np.ndarray) -> np.ndarray | None:
    """The spline of ``orient.view`` at the source coordinates ``(rho, kappa)`` along the view's rows and
    columns (before the flips) of one target block, or None where the integer offsets take more than two values
    or the taps leave the array."""
    view = orient.view
    h, w = rho.shape
    int_r, frac_r = _split(rho, orient.flip_rows, view.shape[0])
    int_c, frac_c = _split(kappa, orient.flip_cols, view.shape[1])
    off_r = int_r - np.arange(h, dtype=np.float32)[:, None]
    off_c = int_c - np.arange(w, dtype=np.float32)[None, :]
    low_r, high_r = float(off_r.min()), float(off_r.max())
    low_c, high_c = float(off_c.min()), float(off_c.max())
    if high_r - low_r > 1 or high_c - low_c > 1:
        return None
    r0, c0 = int(low_r) - 1, int(low_c) - 1
    if r0 < 0 or c0 < 0 or r0 + h + 4 > view.shape[0] or c0 + w + 4 > view.shape[1]:
        return None
    w_r = _five_weights(frac_r, off_r - np.float32(low_r))
    w_c = _five_weights(frac_c, off_c - np.float32(low_c))
    out = np.zeros((h, w), np.float32)
    row = np.empty((h, w), np.float32)
    tmp = np.empty((h, w), np.float32)
    for j in range(5):
        np.multiply(w_c[0], view[r0 + j:r0 + j + h, c0:c0 + w], out=row)
        for i in range(1, 5):
            np.multiply(w_c[i], view[r0 + j:r0 + j + h, c0 + i:c0 + i + w], out=tmp)
            row += tmp
        row *= w_r[j]
        out += row
    return out


def cubic_at(coeffs: np.ndarray, orient: Orientation, ty: np.ndarray, tx: np.ndarray,
             wanted: np.ndarray) -> np.ndarray:
    """Cubic B-spline of the prefiltered ``coeffs`` at source coordinates ``(ty, tx)`` (float32, one target box
    of rows and columns), as ``map_coordinates(coeffs, [ty, tx], order=3, mode="nearest", prefilter=False)``,
    at least at the ``wanted`` pixels (others may be 0); the wanted pixels of blocks where the slices do not
    apply (edges, a steep drift) go to ``map_coordinates`` itself."""
    rho = tx if orient.transposed else ty
    kappa = ty if orient.transposed else tx
    out = np.zeros(ty.shape, np.float32)
    for c0 in range(0, ty.shape[1], BLOCK_COLS):
        cut = (slice(None), slice(c0, min(c0 + BLOCK_COLS, ty.shape[1])))
        want = wanted[cut]
        if not want.any():
            continue
        value = _block(orient, rho[cut], kappa[cut])
        if value is not None:
            out[cut] = value
            continue
        out[cut][want] = ndimage.map_coordinates(coeffs, np.stack([ty[cut][want], tx[cut][want]]), order=3,
                                                 mode="nearest", prefilter=False, output=np.float32)
    return out


__all__ = ["BLOCK_COLS", "Orientation", "orientation", "cubic_at"]
