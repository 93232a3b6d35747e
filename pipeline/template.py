"""Template preparation: warp the deep-coadd sky tiles that overlap a CCD onto the science pixel grid."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field
from scipy import fft as sp_fft
from scipy import ndimage

from pipeline.errors import NoWorkError
from pipeline.masks import MaskBit
from pipeline.types import MaskedImage, TemplateTile

log = logging.getLogger(__name__)


class TemplateConfig(BaseModel):
    """Configuration of the template warp."""

    model_config = ConfigDict(frozen=True)
    grid_step_pix: int = Field(64, description="Spacing of the exactly-transformed coordinate grid; the "
                                               "mapping is interpolated bilinearly in between.")
    spline_order: int = Field(3, description="Order of the spline interpolation of the image (3 = cubic).")
    min_coverage: float = Field(0.02, description="Least fraction of the CCD covered by the template.")


def _coarse_grid(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    return gy, gx


def _upsample(coarse: np.ndarray, gy: np.ndarray, gx: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Bilinear interpolation of a coarse-grid map onto the full-resolution pixels of a box."""
    fy = np.interp(np.arange(rows.start, rows.stop), gy, np.arange(gy.size))
    fx = np.interp(np.arange(cols.start, cols.stop), gx, np.arange(gx.size))
    # Separable: along x on the coarse rows, then along y (as map_coordinates(order=1), far cheaper).
    iy0 = np.clip(np.floor(fy).astype(np.intp), 0, max(gy.size - 2, 0))
    ix0 = np.clip(np.floor(fx).astype(np.intp), 0, max(gx.size - 2, 0))
    wy, wx = fy - iy0, fx - ix0
    iy1, ix1 = np.minimum(iy0 + 1, gy.size - 1), np.minimum(ix0 + 1, gx.size - 1)
    along_x = coarse[:, ix0] * (1.0 - wx) + coarse[:, ix1] * wx
    out = along_x[iy0] * (1.0 - wy)[:, None]
    out += along_x[iy1] * wy[:, None]
    return out


_NPAD = 12
"""Edge padding before spline prefiltering, as ``scipy.ndimage.map_coordinates(mode="nearest")`` does."""


def _workers() -> int:
    """Threads for the interpolation: scipy.fft's worker setting (``scipy.fft.set_workers``), default 1."""
    return max(1, int(sp_fft.get_workers()))


def _interpolate(image: np.ndarray, variance: np.ndarray, coords: np.ndarray, order: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``map_coordinates(image, coords, order=order, mode="nearest")`` and the same of the variance with
    order 1, in float32; the spline prefilter runs once, then the points are interpolated in chunks on
    ``_workers()`` threads (ndimage releases the GIL). Identical to the single calls."""
    n = coords.shape[1]
    warped = np.empty(n, np.float32)
    warped_var = np.empty(n, np.float32)
    if order > 1:
        padded = np.pad(image, _NPAD, mode="edge")
        source, shift = ndimage.spline_filter(padded, order, output=np.float64, mode="nearest"), float(_NPAD)
    else:
        source, shift = image, 0.0
    workers = _workers()
    bounds = np.linspace(0, n, 2 * workers + 1 if workers > 1 else 2).astype(int)

    def run(i: int) -> None:
        a, b = bounds[i], bounds[i + 1]
        if b <= a:
            return
        chunk = np.ascontiguousarray(coords[:, a:b])
        ndimage.map_coordinates(source, chunk + shift if shift else chunk, output=warped[a:b], order=order,
                                mode="nearest", prefilter=False)
        ndimage.map_coordinates(variance, chunk, output=warped_var[a:b], order=1, mode="nearest")

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, range(bounds.size - 1)))
    else:
        run(0)
    return warped, warped_var


def warp_template(tiles: list[TemplateTile], sci_wcs: WCS, shape: tuple[int, int],
                  config: TemplateConfig = TemplateConfig()) -> tuple[MaskedImage, float]:
    """Warp template tiles to the science CCD's WCS.

    Parameters
    ----------
    tiles : list of TemplateTile
        Tiles overlapping the CCD (nJy per tile pixel).
    sci_wcs : WCS
        Fitted science WCS.
    shape : tuple
        (ny, nx) science shape.

    Returns
    -------
    template : MaskedImage
        Image (nJy per science pixel), variance and mask on the science grid; pixels no tile covers are
        0 with NO_DATA set.
    psf_fwhm_arcsec : float
        Coverage-weighted template PSF FWHM.

    Raises
    ------
    NoWorkError
        No tile covers at least ``min_coverage`` of the CCD.
    """
    ny, nx = shape
    image = np.zeros(shape, dtype=np.float32)
    variance = np.zeros(shape, dtype=np.float32)
    mask = np.full(shape, int(MaskBit.NO_DATA), dtype=np.int32)
    covered = np.zeros(shape, dtype=bool)
    fwhm_weighted, n_cov = 0.0, 0
    gy, gx = _coarse_grid(shape, config.grid_step_pix)
    mx, my = np.meshgrid(gx, gy)
    sky_ra, sky_dec = sci_wcs.all_pix2world(mx, my, 0)
    for tile in tiles:
        th, tw = tile.image.shape
        ctx, cty = tile.wcs.all_world2pix(sky_ra, sky_dec, 0)
        coarse_in = (ctx >= -config.grid_step_pix) & (ctx <= tw + config.grid_step_pix) \
            & (cty >= -config.grid_step_pix) & (cty <= th + config.grid_step_pix)
        if not coarse_in.any():
            continue
        rows_in, cols_in = np.nonzero(coarse_in)
        rows = slice(int(gy[max(rows_in.min() - 1, 0)]), int(gy[min(rows_in.max() + 1, gy.size - 1)]) + 1)
        cols = slice(int(gx[max(cols_in.min() - 1, 0)]), int(gx[min(cols_in.max() + 1, gx.size - 1)]) + 1)
        # Shrink the box to the part earlier tiles left uncovered (only those pixels can be filled).
        free = ~covered[rows, cols]
        free_rows, free_cols = np.flatnonzero(free.any(axis=1)), np.flatnonzero(free.any(axis=0))
        if free_rows.size == 0:
            continue
        rows = slice(rows.start + int(free_rows[0]), rows.start + int(free_rows[-1]) + 1)
        cols = slice(cols.start + int(free_cols[0]), cols.start + int(free_cols[-1]) + 1)
        tx = _upsample(ctx, gy, gx, rows, cols)
        ty = _upsample(cty, gy, gx, rows, cols)
        inside = (tx >= 1) & (tx <= tw - 2) & (ty >= 1) & (ty <= th - 2) & ~covered[rows, cols]
        if not inside.any():
            continue
        # Jacobian of (tile x, y) with respect to (science x, y): the pixel-area ratio.
        dtx_dy, dtx_dx = np.gradient(ctx, gy, gx)
        dty_dy, dty_dx = np.gradient(cty, gy, gx)
        area = _upsample(np.abs(dtx_dx * dty_dy - dtx_dy * dty_dx), gy, gx, rows, cols)[inside]
        # Interpolate from the part of the tile that is needed only (spline prefiltering is global).
        x0, x1 = int(max(np.floor(tx[inside].min()) - 4, 0)), int(min(np.ceil(tx[inside].max()) + 5, tw))
        y0, y1 = int(max(np.floor(ty[inside].min()) - 4, 0)), int(min(np.ceil(ty[inside].max()) + 5, th))
        coords = np.empty((2, int(np.count_nonzero(inside))))
        np.subtract(ty[inside], y0, out=coords[0])
        np.subtract(tx[inside], x0, out=coords[1])
        sub = (slice(y0, y1), slice(x0, x1))
        tile_image = np.nan_to_num(tile.image[sub], nan=0.0)
        warped, warped_var = _interpolate(tile_image, tile.variance[sub], coords, config.spline_order)
        # Nearest neighbour (as map_coordinates(order=0, mode="nearest"): index floor(c + 0.5), clipped).
        my = np.clip(np.floor(coords[0] + 0.5).astype(np.intp), 0, y1 - y0 - 1)
        mx = np.clip(np.floor(coords[1] + 0.5).astype(np.intp), 0, x1 - x0 - 1)
        warped_mask = tile.mask[sub][my, mx]
        bad_src = ~np.isfinite(tile.image[sub]) | ~np.isfinite(tile.variance[sub])
        if bad_src.any():
            hit = ndimage.map_coordinates(bad_src.astype(np.float32), coords, order=1) > 0
            warped_mask = np.where(hit, warped_mask | int(MaskBit.NO_DATA), warped_mask)
        box_image, box_var, box_mask = image[rows, cols], variance[rows, cols], mask[rows, cols]
        box_image[inside] = warped * area
        box_var[inside] = warped_var * area**2
        box_mask[inside] = warped_mask
        covered[rows, cols] |= inside
        fwhm_weighted += tile.psf_fwhm_arcsec * inside.sum()
        n_cov += int(inside.sum())
    coverage = n_cov / (nx * ny)
    if coverage < config.min_coverage:
        raise NoWorkError(f"template covers {coverage:.1%} of the CCD", stage="template")
    log.debug("template coverage %.1f%% from %d tiles", 100 * coverage, len(tiles))
    return MaskedImage(image=image, mask=mask, variance=variance), fwhm_weighted / n_cov
