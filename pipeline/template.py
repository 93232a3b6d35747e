"""Template preparation: warp the deep-coadd sky tiles that overlap a CCD onto the science pixel grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from pipeline.astrometry import pixel_scale_arcsec
from pipeline.errors import NoWorkError
from pipeline.masks import MaskBit
from pipeline.psf import psf_image_fwhm
from pipeline.spline_eval import Orientation, cubic_at, orientation
from pipeline.threads import thread_map, worker_count
from pipeline.types import MaskedImage, TemplateTile, WarpedTemplate

log = logging.getLogger(__name__)


class TemplateConfig(BaseModel):
    """Configuration of the template warp."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    grid_step_pix: int = Field(64, ge=1, le=4096, description="Spacing of the exactly-transformed coordinate "
                                                              "grid; the mapping is interpolated bilinearly in "
                                                              "between.")
    spline_order: int = Field(3, ge=0, le=5, description="Order of the spline interpolation of the image "
                                                         "(3 = cubic).")
    min_coverage: float = Field(0.02, ge=0, le=1.0, description="Least fraction of the CCD covered by the "
                                                                "template.")


def _coarse_grid(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    return gy, gx


def _upsample(coarse: np.ndarray, gy: np.ndarray, gx: np.ndarray, rows: slice, cols: slice, *,
              out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear interpolation of a coarse-grid map onto the full-resolution pixels of a box, float32
    (into ``out`` if given)."""
    fy = np.interp(np.arange(rows.start, rows.stop), gy, np.arange(gy.size))
    fx = np.interp(np.arange(cols.start, cols.stop), gx, np.arange(gx.size))
    # Separable: along x on the coarse rows, then along y (as map_coordinates(order=1), far cheaper).
    iy0 = np.clip(np.floor(fy).astype(np.intp), 0, max(gy.size - 2, 0))
    ix0 = np.clip(np.floor(fx).astype(np.intp), 0, max(gx.size - 2, 0))
    wy, wx = (fy - iy0).astype(np.float32), fx - ix0
    iy1, ix1 = np.minimum(iy0 + 1, gy.size - 1), np.minimum(ix0 + 1, gx.size - 1)
    needed = np.unique(np.concatenate([iy0, iy1]))  # the few coarse rows a box of rows spans
    along_x = (coarse[needed][:, ix0] * (1.0 - wx) + coarse[needed][:, ix1] * wx).astype(np.float32)
    if out is None:
        out = np.empty((iy0.size, ix0.size), np.float32)
    # Rows between the same two coarse rows share their difference: one product and one sum a pixel.
    cuts = np.flatnonzero(np.diff(iy0)) + 1
    for r0, r1 in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [iy0.size]])):
        a0, a1 = along_x[np.searchsorted(needed, [iy0[r0], iy1[r0]])]
        np.multiply(wy[r0:r1, None], a1 - a0, out=out[r0:r1])
        out[r0:r1] += a0
    return out


_NPAD = 12
"""Edge padding before spline prefiltering, as ``scipy.ndimage.map_coordinates(mode="nearest")`` does."""
_STRIPE_ROWS = 128
"""Rows of the science grid warped per task: small enough for the stripe's coordinates to stay in cache."""


def _prefiltered(image: np.ndarray, order: int, *, finite: bool = False) -> tuple[np.ndarray, float]:
    """Float32 spline coefficients of ``image`` (edge-padded, as ``map_coordinates(mode="nearest")`` pads; NaN
    taken as 0, unless the caller knows the image is ``finite``) and the shift to add to coordinates; the image
    itself for ``order <= 1``. The two separable passes run on :func:`~pipeline.threads.thread_map`'s threads,
    in blocks of rows and then of columns."""
    if order <= 1:
        return (image if finite else np.nan_to_num(image, nan=0.0)), 0.0
    coeffs = np.pad(image, _NPAD, mode="edge")
    if not finite:
        np.nan_to_num(coeffs, copy=False, nan=0.0)
    blocks = max(1, worker_count())
    for axis in (1, 0):
        edges = np.linspace(0, coeffs.shape[1 - axis], blocks + 1).astype(int)
        cuts = [(slice(a, b), slice(None)) if axis == 1 else (slice(None), slice(a, b))
                for a, b in zip(edges[:-1], edges[1:])]
        thread_map(lambda cut: ndimage.spline_filter1d(coeffs[cut], order, axis=axis, output=coeffs[cut],
                                                       mode="nearest"), cuts)
    return coeffs, float(_NPAD)


def _coarse_box(coarse_in: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> tuple[slice, slice]:
    """Science-pixel box spanned by the coarse-grid cells next to the coarse points where a tile lands."""
    rows_in, cols_in = np.nonzero(coarse_in)
    rows = slice(int(gy[max(rows_in.min() - 1, 0)]), int(gy[min(rows_in.max() + 1, gy.size - 1)]) + 1)
    cols = slice(int(gx[max(cols_in.min() - 1, 0)]), int(gx[min(cols_in.max() + 1, gx.size - 1)]) + 1)
    return rows, cols


def _grid_span(values: np.ndarray, g: np.ndarray, box: slice) -> slice:
    """Index range of the coarse grid ``g`` that brackets the science pixels of ``box``."""
    i0 = max(int(np.searchsorted(g, box.start, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(g, box.stop - 1, side="left")), g.size - 1)
    return slice(i0, i1 + 1)


class WarpSource(Protocol):
    """An image on the sky that can be warped: a template tile, or a calibrated CCD going into a coadd."""

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: WCS


def resample(sources: Sequence[WarpSource], wcs: WCS, shape: tuple[int, int], *,
             config: TemplateConfig = TemplateConfig()) -> tuple[MaskedImage, list[int]]:
    """Warp images onto the pixel grid of ``wcs``: a pixel takes the first source that covers it with data.

    The source-to-target mapping is evaluated exactly on a coarse grid and bilinearly in between. Each source
    is spline-prefiltered once over the part the grid needs, then warped in stripes of rows on
    :func:`~pipeline.threads.thread_map`'s threads (its interpolation touches no non-finite source pixel). The
    image is interpolated with a spline of ``spline_order``, the variance and the mask by nearest neighbour,
    and image and variance are scaled by the pixel-area ratio (values are fluxes per pixel).

    Parameters
    ----------
    sources : sequence of WarpSource
        Images with their WCS (flux per source pixel).
    wcs : WCS
        Target WCS.
    shape : tuple
        (ny, nx) target shape.
    config : TemplateConfig

    Returns
    -------
    warped : MaskedImage
        Image (flux per target pixel), variance and mask; pixels no source covers are 0 with NO_DATA set.
    filled : list of int
        Pixels each source filled.
    """
    image = np.zeros(shape, dtype=np.float32)
    variance = np.zeros(shape, dtype=np.float32)
    mask = np.full(shape, int(MaskBit.NO_DATA), dtype=np.int32)
    covered = np.zeros(shape, dtype=bool)
    gy, gx = _coarse_grid(shape, config.grid_step_pix)
    mx, my = np.meshgrid(gx, gy)
    sky_ra, sky_dec = wcs.all_pix2world(mx, my, 0)
    filled = [_warp_tile(source, sky_ra, sky_dec, grid=(gy, gx), image=image, variance=variance, mask=mask,
                         covered=covered, config=config) or 0 for source in sources]
    return MaskedImage(image=image, mask=mask, variance=variance), filled


def warp_template(tiles: list[TemplateTile], sci_wcs: WCS, shape: tuple[int, int], *,
                  config: TemplateConfig = TemplateConfig()) -> WarpedTemplate:
    """Warp template tiles to the science CCD's WCS (:func:`resample`) and take their PSF from the tiles'
    PSF models.

    Parameters
    ----------
    tiles : list of TemplateTile
        Tiles overlapping the CCD (nJy per tile pixel), each with its PSF model.
    sci_wcs : WCS
        Fitted science WCS.
    shape : tuple
        (ny, nx) science shape.
    config : TemplateConfig

    Returns
    -------
    WarpedTemplate
        Image (nJy per science pixel), variance and mask on the science grid (pixels no tile covers with
        data are 0 with NO_DATA set), and the template's PSF: the coverage-weighted mean of the tiles' PSF
        model images at the nodes nearest the CCD's centre, and its FWHM.

    Raises
    ------
    NoWorkError
        No tile covers at least ``min_coverage`` of the CCD.
    """
    ny, nx = shape
    warped, filled = resample(tiles, sci_wcs, shape, config=config)
    n_cov = sum(filled)
    coverage = n_cov / (nx * ny)
    if coverage < config.min_coverage:
        raise NoWorkError(f"template covers {coverage:.1%} of the CCD", stage="template")
    log.debug("template coverage %.1f%% from %d tiles", 100 * coverage, len(tiles))
    centre_ra, centre_dec = sci_wcs.all_pix2world((nx - 1) / 2.0, (ny - 1) / 2.0, 0)
    used = [(tile, n) for tile, n in zip(tiles, filled) if n]
    size = max(tile.psf.images.shape[-1] for tile, _ in used)
    psf_image = np.zeros((size, size))
    for tile, n in used:
        tx, ty = tile.wcs.all_world2pix(centre_ra, centre_dec, 0)
        image = tile.psf.image_near(float(tx), float(ty))
        pad = (size - image.shape[-1]) // 2
        psf_image += n * np.pad(image, pad)
    psf_image /= psf_image.sum()
    fwhm_arcsec = float(psf_image_fwhm(psf_image[None])[0]) * pixel_scale_arcsec(used[0][0].wcs)
    return WarpedTemplate(masked=warped, psf_fwhm_arcsec=fwhm_arcsec, psf_image=psf_image.astype(np.float32))


def _tile_box(ctx: np.ndarray, cty: np.ndarray, covered: np.ndarray, *, grid: tuple[np.ndarray, np.ndarray],
              step: int, tile_shape: tuple[int, int]) -> tuple[slice, slice, tuple[int, int, int, int]] | None:
    """The science rows and columns a tile can fill and the part of the tile they need, ``(y0, y1, x0, x1)``.

    ``ctx, cty`` are the tile coordinates of the coarse grid ``grid`` (of spacing ``step``); None when the
    tile does not reach the CCD, the part it reaches is already ``covered``, or it needs under 4 tile pixels.
    """
    th, tw = tile_shape
    gy, gx = grid
    coarse_in = (ctx >= -step) & (ctx <= tw + step) & (cty >= -step) & (cty <= th + step)
    if not coarse_in.any():
        return None
    rows, cols = _coarse_box(coarse_in, gy, gx)
    # Shrink the box to the part earlier tiles left uncovered (only those pixels can be filled).
    free = ~covered[rows, cols]
    free_rows, free_cols = np.flatnonzero(free.any(axis=1)), np.flatnonzero(free.any(axis=0))
    if free_rows.size == 0:
        return None
    rows = slice(rows.start + int(free_rows[0]), rows.start + int(free_rows[-1]) + 1)
    cols = slice(cols.start + int(free_cols[0]), cols.start + int(free_cols[-1]) + 1)
    # Bilinear values lie between the coarse values around them: the coarse cells over the box bound
    # the tile pixels it needs, and only that part of the tile is prefiltered.
    span = (_grid_span(ctx, gy, rows), _grid_span(ctx, gx, cols))
    x0 = int(np.clip(np.floor(ctx[span].min()) - 4, 0, tw))
    x1 = int(np.clip(np.ceil(ctx[span].max()) + 5, 0, tw))
    y0 = int(np.clip(np.floor(cty[span].min()) - 4, 0, th))
    y1 = int(np.clip(np.ceil(cty[span].max()) + 5, 0, th))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return rows, cols, (y0, y1, x0, x1)


def _store(planes: tuple[np.ndarray, ...], values: tuple[np.ndarray, ...], covered: np.ndarray,
           inside: np.ndarray) -> None:
    """Write warped ``values`` into the ``inside`` pixels of ``planes`` (views of one box), marking them
    ``covered``; the values are the inside pixels' only (compressed) unless every pixel is inside."""
    whole = values[0].shape == inside.shape
    for plane, value in zip(planes, values):
        if whole:
            plane[...] = value
        else:
            plane[inside] = value
    covered |= inside


def _jacobian(ctx: np.ndarray, cty: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> tuple[np.ndarray, list]:
    """The pixel-area ratio on the coarse grid (the determinant of the Jacobian of tile x, y with respect to
    science x, y) and the mean Jacobian ``[[dty/dy, dty/dx], [dtx/dy, dtx/dx]]``."""
    dtx_dy, dtx_dx = np.gradient(ctx, gy, gx)
    dty_dy, dty_dx = np.gradient(cty, gy, gx)
    area = np.abs(dtx_dx * dty_dy - dtx_dy * dty_dx)
    mean = [[float(np.mean(dty_dy)), float(np.mean(dty_dx))], [float(np.mean(dtx_dy)), float(np.mean(dtx_dx))]]
    return area, mean


def _interpolate(source: np.ndarray, orient: Orientation | None, coords: np.ndarray, inside: np.ndarray,
                 order: int) -> np.ndarray:
    """The spline of ``source`` at ``coords`` (2, rows, cols): at every pixel if all are ``inside``, else at
    the inside ones only (compressed). Near-permutation mappings use :func:`~pipeline.spline_eval.cubic_at`
    (whole blocks from shifted slices, cheaper even with the outside pixels); others ``map_coordinates`` on
    the inside pixels (a pixel's value does not depend on the others')."""
    partial = not inside.all()
    if orient is not None:
        warped = cubic_at(source, orient, coords[0], coords[1], inside)
        return warped[inside] if partial else warped
    return ndimage.map_coordinates(source, coords[:, inside] if partial else coords, order=order, mode="nearest",
                                   prefilter=False, output=np.float32)


def _warp_tile(tile: WarpSource, sky_ra: np.ndarray, sky_dec: np.ndarray, *, grid: tuple[np.ndarray, np.ndarray],
               image: np.ndarray, variance: np.ndarray, mask: np.ndarray, covered: np.ndarray,
               config: TemplateConfig) -> int | None:
    """Warp one tile into the science pixels it covers first (``image``, ``variance``, ``mask`` and
    ``covered`` are filled in place) and return how many it filled; None when the tile has nothing to give.

    ``sky_ra, sky_dec`` are the sky coordinates of the science coarse grid ``grid``.
    """
    gy, gx = grid
    step = config.grid_step_pix
    th, tw = tile.image.shape
    ctx, cty = tile.wcs.all_world2pix(sky_ra, sky_dec, 0)
    box = _tile_box(ctx, cty, covered, grid=grid, step=step, tile_shape=(th, tw))
    if box is None:
        return None
    rows, cols, (y0, y1, x0, x1) = box
    sub = (slice(y0, y1), slice(x0, x1))
    tile_image = np.asarray(tile.image[sub], dtype=np.float32)  # native order: only this part is read
    tile_var = np.asarray(tile.variance[sub], dtype=np.float32)
    tile_mask = np.asarray(tile.mask[sub], dtype=np.int32)
    bad_image = ~np.isfinite(tile_image)
    source, shift = _prefiltered(tile_image, config.spline_order, finite=not bad_image.any())
    bad_src = bad_image | ~np.isfinite(tile_var)
    # A pixel's linear neighbours lie within the 3 x 3 around its nearest one: the grown mask, sampled at the
    # nearest pixel, flags every pixel whose interpolation touches missing data (a superset, at no warp's cost).
    bad_src = ndimage.maximum_filter(bad_src, size=3) if bad_src.any() else None
    area_coarse, jacobian = _jacobian(ctx, cty, gy, gx)
    orient = orientation(source, jacobian) if config.spline_order == 3 else None

    # Tile coordinates relative to the prefiltered box (float32: 0.0005 pixel at 4096), and the bounds of
    # the tile's interior in them.
    local_x, local_y = ctx - (x0 - shift), cty - (y0 - shift)
    lo_x, hi_x = 1 - x0 + shift, tw - 2 - x0 + shift
    lo_y, hi_y = 1 - y0 + shift, th - 2 - y0 + shift

    def warp_stripe(r0: int, r1: int) -> int:
        stripe = slice(r0, r1)
        coords = np.empty((2, r1 - r0, cols.stop - cols.start), np.float32)
        ty = _upsample(local_y, gy, gx, stripe, cols, out=coords[0])
        tx = _upsample(local_x, gy, gx, stripe, cols, out=coords[1])
        inside = (tx >= lo_x) & (tx <= hi_x) & (ty >= lo_y) & (ty <= hi_y) & ~covered[stripe, cols]
        # Nearest neighbour (as map_coordinates(order=0, mode="nearest"): index floor(c + 0.5), clipped)
        # for the mask and the variance (smooth on the scale of a pixel; a quarter of the linear warp's time).
        iy = np.clip(np.floor(ty + np.float32(0.5 - shift)).astype(np.intp), 0, y1 - y0 - 1)
        ix = np.clip(np.floor(tx + np.float32(0.5 - shift)).astype(np.intp), 0, x1 - x0 - 1)
        nearest = iy * (x1 - x0) + ix
        if bad_src is not None:
            # Pixels whose interpolation touches missing tile data are left to the next tiles.
            inside &= ~np.take(bad_src, nearest)
        n_in = int(np.count_nonzero(inside))
        if n_in == 0:
            return 0
        area = _upsample(area_coarse, gy, gx, stripe, cols)
        warped = _interpolate(source, orient, coords, inside, config.spline_order)
        if n_in < inside.size:
            nearest, area = nearest[inside], area[inside]
        warped_var = np.take(tile_var, nearest)
        warped_mask = np.take(tile_mask, nearest)
        warped *= area
        area *= area
        warped_var *= area
        box = (stripe, cols)
        _store((image[box], variance[box], mask[box]), (warped, warped_var, warped_mask), covered[box], inside)
        return n_in

    starts = range(rows.start, rows.stop, _STRIPE_ROWS)
    tasks = [(r0, min(r0 + _STRIPE_ROWS, rows.stop)) for r0 in starts]
    return sum(thread_map(lambda t: warp_stripe(*t), tasks))
