"""Template preparation: warp the deep-coadd sky tiles that overlap a CCD onto the science pixel grid."""

from __future__ import annotations

import logging

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field
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


def _coordinate_map(sci_wcs: WCS, tile_wcs: WCS, shape: tuple[int, int], step: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile pixel coordinates of every science pixel and the pixel-area ratio (science / tile).

    The exact WCS transform is evaluated on a coarse grid and interpolated, which is exact to far below a
    milli-pixel for smooth distortions.
    """
    ny, nx = shape
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    mx, my = np.meshgrid(gx, gy)
    ra, dec = sci_wcs.all_pix2world(mx, my, 0)
    tx, ty = tile_wcs.all_world2pix(ra, dec, 0)
    # Jacobian of (tile x, y) with respect to (science x, y) on the coarse grid: area ratio.
    dtx_dy, dtx_dx = np.gradient(tx, gy, gx)
    dty_dy, dty_dx = np.gradient(ty, gy, gx)
    area_ratio = np.abs(dtx_dx * dty_dy - dtx_dy * dty_dx)
    fy = np.interp(np.arange(ny), gy, np.arange(gy.size))
    fx = np.interp(np.arange(nx), gx, np.arange(gx.size))
    iy, ix = np.meshgrid(fy, fx, indexing="ij")
    coords = np.stack([iy, ix])
    full_tx = ndimage.map_coordinates(tx, coords, order=1)
    full_ty = ndimage.map_coordinates(ty, coords, order=1)
    full_area = ndimage.map_coordinates(area_ratio, coords, order=1)
    return full_tx, full_ty, full_area


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
    for tile in tiles:
        tx, ty = None, None
        tx, ty, area = _coordinate_map(sci_wcs, tile.wcs, shape, config.grid_step_pix)
        th, tw = tile.image.shape
        inside = (tx >= 1) & (tx <= tw - 2) & (ty >= 1) & (ty <= th - 2) & ~covered
        if not inside.any():
            continue
        coords = np.stack([ty[inside], tx[inside]])
        tile_image = np.nan_to_num(tile.image, nan=0.0)
        warped = ndimage.map_coordinates(tile_image, coords, order=config.spline_order, mode="nearest")
        warped_var = ndimage.map_coordinates(tile.variance, coords, order=1, mode="nearest")
        warped_mask = ndimage.map_coordinates(tile.mask, coords, order=0, mode="nearest")
        bad_src = ~np.isfinite(tile.image) | ~np.isfinite(tile.variance)
        if bad_src.any():
            hit = ndimage.map_coordinates(bad_src.astype(np.float32), coords, order=1) > 0
            warped_mask = np.where(hit, warped_mask | int(MaskBit.NO_DATA), warped_mask)
        image[inside] = warped * area[inside]
        variance[inside] = warped_var * area[inside] ** 2
        mask[inside] = warped_mask
        covered |= inside
        fwhm_weighted += tile.psf_fwhm_arcsec * inside.sum()
        n_cov += int(inside.sum())
    coverage = n_cov / (nx * ny)
    if coverage < config.min_coverage:
        raise NoWorkError(f"template covers {coverage:.1%} of the CCD", stage="template")
    log.debug("template coverage %.1f%% from %d tiles", 100 * coverage, len(tiles))
    return MaskedImage(image=image, mask=mask, variance=variance), fwhm_weighted / n_cov
