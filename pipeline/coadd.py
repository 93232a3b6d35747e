"""Template coadds: warp calibrated CCDs onto a sky tile and combine them with outlier rejection.

As Rubin's ``makeDirectWarp`` and ``assembleCoadd`` (CompareWarp) do, in two steps:

1. :func:`warp_to_tile` resamples one calibrated CCD (nJy) onto the part of a tile it covers
   (:func:`pipeline.template.resample`), with its PSF model evaluated at the tile's PSF nodes and resampled to
   the tile's pixel frame through the local Jacobian of the mapping.
2. :func:`add_to_coadd` combines warps into a tile. Each input has one weight, the inverse of its median
   variance (as Rubin weights visits), so that the coadd's PSF is the same weighted combination of the inputs'
   PSFs everywhere: ``image = sum(w_i I_i) / sum(w_i)``, ``variance = sum(w_i^2 V_i) / sum(w_i)^2``, and at
   every PSF node ``psf = sum(w_i psf_i) / sum(w_i)`` over the inputs that cover it.

Outliers (transients, asteroids, cosmic rays and satellite trails the ISR did not flag: all of them excess
light in one input) are found on PSF-matched copies of the warps: each is smoothed by a Gaussian to the worst
input's seeing, the median of the smoothed stack is the reference, and a pixel is rejected from an input when
its smoothed residual is above ``reject_nsigma`` times that input's robust residual scatter plus
``reject_model_fraction`` of the brightest reference value within a FWHM (Gaussian matching leaves PSF
mismatch at stars, core and wings alike); the rejected area is grown by ``reject_grow_fwhm`` FWHMs. Only
excesses are rejected: a dimmer input (a variable at minimum) is not an artifact. Pixels
whose mask has an unusable bit (:data:`pipeline.masks.UNUSABLE`) never enter. Where fewer than
``min_inputs_to_reject`` inputs overlap nothing can be rejected and the plain weighted mean is kept.

A tile that already holds inputs (an incremental build) is one more member of the reference stack, and its
sums are extended: ``weight`` holds ``sum(w_i)`` per pixel, so the sums are ``image * weight`` and
``variance * weight^2``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from astropy.table import Table, vstack
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from pipeline.astrometry import pixel_scale_arcsec
from pipeline.masks import UNUSABLE, MaskBit
from pipeline.psf import FWHM_PER_SIGMA, psf_image_fwhm
from pipeline.skymap import SkyMapConfig, SkyTile
from pipeline.template import TemplateConfig, resample
from pipeline.types import CalibratedExposure, MaskedImage
from schemas.datarepo import NJY_AB_ZERO_POINT

INPUT_COLUMNS = ("visit", "ccdnum", "band", "mjd_tai", "weight", "seeing_arcsec", "zero_point", "n_pixels")
"""Columns of a coadd's provenance table (one row per input CCD-visit)."""


class CoaddConfig(BaseModel):
    """How template tiles are built (``blink templates build``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    skymap: SkyMapConfig = SkyMapConfig()
    warp: TemplateConfig = TemplateConfig(min_coverage=0.0)
    reject_nsigma: float = Field(5.0, gt=0, le=100.0, description="Rejection threshold, in robust residual "
                                                                  "scatters of the PSF-matched input.")
    reject_model_fraction: float = Field(0.2, ge=0, le=10.0, description="Extra allowance for PSF mismatch, "
                                                                         "as a fraction of the brightest "
                                                                         "reference value within a FWHM.")
    reject_grow_fwhm: float = Field(1.0, ge=0, le=10.0, description="Growth of the rejected area, in FWHMs "
                                                                    "of the worst input.")
    min_inputs_to_reject: int = Field(3, ge=2, le=1000, description="Least overlapping inputs for rejection.")
    psf_node_spacing_pix: int = Field(400, ge=16, le=20000, description="Spacing of the PSF model's nodes.")
    psf_half_size_pix: int = Field(15, ge=3, le=60, description="Half size of the PSF node images.")
    max_seeing_arcsec: float | None = Field(None, gt=0, le=20.0, description="Leave out inputs with worse "
                                                                             "seeing (None: keep all).")
    min_zero_point: float | None = Field(None, description="Leave out inputs shallower than this zero point "
                                                           "(AB mag of 1 e-; None: keep all).")


@dataclass(frozen=True)
class TileWarp:
    """One calibrated CCD resampled onto the part of a tile it covers.

    Attributes
    ----------
    visit, ccdnum : int
    band : str
    mjd_tai, seeing_arcsec, zero_point : float
    rows, cols : slice
        The box of tile pixels.
    masked : MaskedImage
        Image (nJy per tile pixel), variance and mask on the box (NO_DATA outside the CCD).
    weight : float
        The input's weight, 1 / its median variance (nJy^-2).
    psf_nodes : numpy.ndarray
        Indices of the tile's PSF nodes the CCD covers.
    psf_images : numpy.ndarray
        (m, n, n) the CCD's PSF at those nodes, in the tile's pixel frame, each summing to 1.
    """

    visit: int
    ccdnum: int
    band: str
    mjd_tai: float
    seeing_arcsec: float
    zero_point: float
    rows: slice
    cols: slice
    masked: MaskedImage
    weight: float
    psf_nodes: np.ndarray
    psf_images: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """Pixels of the box that may enter the coadd."""
        return ((self.masked.mask & int(UNUSABLE)) == 0) & np.isfinite(self.masked.image) \
            & np.isfinite(self.masked.variance)


@dataclass(frozen=True)
class CoaddTile:
    """A template tile as it is built: the weighted sums, normalised, and its provenance.

    Attributes
    ----------
    tile : SkyTile
    band : str
    image, variance : numpy.ndarray
        Weighted mean (nJy per pixel) and its variance; 0 where no input.
    mask : numpy.ndarray
        int32 MaskBit: NO_DATA where no input.
    weight : numpy.ndarray
        float32 sum of the input weights per pixel.
    coverage : numpy.ndarray
        int16 number of inputs per pixel.
    psf_images : numpy.ndarray
        (k, n, n) weighted mean PSF at each node (zeros at nodes no input reached).
    psf_x, psf_y : numpy.ndarray
        (k,) node positions, 0-based tile pixels.
    psf_weight : numpy.ndarray
        (k,) sum of the weights of the inputs that cover each node.
    inputs : astropy.table.Table
        One row per input CCD-visit (:data:`INPUT_COLUMNS`).
    """

    tile: SkyTile
    band: str
    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    coverage: np.ndarray
    psf_images: np.ndarray
    psf_x: np.ndarray
    psf_y: np.ndarray
    psf_weight: np.ndarray
    inputs: Table

    def normalised_psf(self) -> np.ndarray:
        """The PSF images, float32 (zeros at nodes without inputs)."""
        return self.psf_images.astype(np.float32)

    def psf_fwhm_arcsec(self) -> np.ndarray:
        """(k,) FWHM of the PSF at each node (NaN at nodes without inputs)."""
        fwhm = np.full(self.psf_weight.shape, np.nan)
        used = self.psf_weight > 0
        if used.any():
            fwhm[used] = psf_image_fwhm(self.psf_images[used]) * pixel_scale_arcsec(self.tile.wcs)
        return fwhm

    def depth_mag(self) -> np.ndarray:
        """(k,) 5-sigma point-source AB depth at each node, from the variance around it and the PSF's
        noise-equivalent area (NaN at nodes without inputs)."""
        ny, nx = self.variance.shape
        iy = np.clip(np.rint(self.psf_y).astype(int), 0, ny - 1)
        ix = np.clip(np.rint(self.psf_x).astype(int), 0, nx - 1)
        var = _local_median(self.variance, iy, ix, 4)
        nea = 1.0 / np.maximum(np.sum(self.psf_images.astype(float) ** 2, axis=(1, 2)), 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = NJY_AB_ZERO_POINT - 2.5 * np.log10(5.0 * np.sqrt(var * nea))
        return np.where((self.psf_weight > 0) & (var > 0), depth, np.nan)


def _local_median(plane: np.ndarray, iy: np.ndarray, ix: np.ndarray, half: int) -> np.ndarray:
    """Median of the positive values of ``plane`` in a (2 half + 1) box around each (iy, ix)."""
    ny, nx = plane.shape
    offsets = np.arange(-half, half + 1)
    yy = np.clip(iy[:, None, None] + offsets[None, :, None], 0, ny - 1)
    xx = np.clip(ix[:, None, None] + offsets[None, None, :], 0, nx - 1)
    values = np.where(plane[yy, xx] > 0, plane[yy, xx], np.nan).reshape(iy.size, -1)
    if not values.size:
        return np.zeros(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nodes outside the data: all NaN, 0 below
        return np.nan_to_num(np.nanmedian(values, axis=1), nan=0.0)


def psf_nodes(sky_tile: SkyTile, spacing_pix: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the tile's PSF nodes: a square grid of ``spacing_pix``, centred on the tile."""
    ny, nx = sky_tile.shape
    gx = (nx - 1) / 2.0 + spacing_pix * np.arange(-((nx // 2) // spacing_pix), (nx // 2) // spacing_pix + 1)
    gy = (ny - 1) / 2.0 + spacing_pix * np.arange(-((ny // 2) // spacing_pix), (ny // 2) // spacing_pix + 1)
    x, y = np.meshgrid(gx, gy)
    return x.ravel(), y.ravel()


def empty_coadd(sky_tile: SkyTile, band: str, *, config: CoaddConfig = CoaddConfig()) -> CoaddTile:
    """A tile with no input yet."""
    shape = sky_tile.shape
    x, y = psf_nodes(sky_tile, config.psf_node_spacing_pix)
    n = 2 * config.psf_half_size_pix + 1
    inputs = Table(names=INPUT_COLUMNS, dtype=(np.int64, np.int16, "U2", float, float, float, float, np.int64))
    return CoaddTile(tile=sky_tile, band=band, image=np.zeros(shape, np.float32),
                     variance=np.zeros(shape, np.float32), mask=np.full(shape, int(MaskBit.NO_DATA), np.int32),
                     weight=np.zeros(shape, np.float32), coverage=np.zeros(shape, np.int16),
                     psf_images=np.zeros((x.size, n, n), np.float64), psf_x=x, psf_y=y,
                     psf_weight=np.zeros(x.size), inputs=inputs)


def _box_in_tile(exposure: CalibratedExposure, sky_tile: SkyTile, margin: int = 8) -> tuple[slice, slice] | None:
    """The tile pixels a CCD may cover (its edges mapped through both WCSs), or None."""
    ny, nx = exposure.masked.image.shape
    t = np.linspace(0.0, 1.0, 17)
    ex = np.concatenate([t * (nx - 1), np.full(t.size, nx - 1.0), t[::-1] * (nx - 1), np.zeros(t.size)])
    ey = np.concatenate([np.zeros(t.size), t * (ny - 1), np.full(t.size, ny - 1.0), t[::-1] * (ny - 1)])
    ra, dec = exposure.wcs.all_pix2world(ex, ey, 0)
    tx, ty = sky_tile.wcs.all_world2pix(ra, dec, 0)
    th, tw = sky_tile.shape
    x0, x1 = max(0, int(np.floor(tx.min())) - margin), min(tw, int(np.ceil(tx.max())) + margin + 1)
    y0, y1 = max(0, int(np.floor(ty.min())) - margin), min(th, int(np.ceil(ty.max())) + margin + 1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return slice(y0, y1), slice(x0, x1)


@dataclass(frozen=True)
class _CcdImage:
    """A calibrated CCD as a :class:`pipeline.template.WarpSource`."""

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    wcs: object


def warp_to_tile(exposure: CalibratedExposure, sky_tile: SkyTile, *, config: CoaddConfig = CoaddConfig()
                 ) -> TileWarp | None:
    """Resample a calibrated CCD onto the part of a tile it covers, with its PSF at the tile's nodes.

    Returns
    -------
    TileWarp or None
        None when the CCD does not reach the tile, or leaves no usable pixel on it.
    """
    box = _box_in_tile(exposure, sky_tile)
    if box is None:
        return None
    rows, cols = box
    sub_wcs = sky_tile.wcs[rows, cols]
    # Unusable pixels (defects, cosmic rays, saturation) hold finite but meaningless values: as NaN the warp
    # leaves every tile pixel whose interpolation touches them to the other inputs, instead of ringing a hot
    # column's spline into its neighbours.
    unusable = (exposure.masked.mask & int(UNUSABLE)) != 0
    image = np.where(unusable, np.float32(np.nan), exposure.masked.image)
    source = _CcdImage(image, exposure.masked.variance, exposure.masked.mask, exposure.wcs)
    warped, filled = resample([source], sub_wcs, (rows.stop - rows.start, cols.stop - cols.start),
                              config=config.warp)
    if not filled[0]:
        return None
    good = ((warped.mask & int(UNUSABLE)) == 0) & (warped.variance > 0)
    if not good.any():
        return None
    weight = 1.0 / float(np.median(warped.variance[good]))
    nodes, images = _node_psfs(exposure, sky_tile, box, config=config)
    scale = pixel_scale_arcsec(exposure.wcs)
    return TileWarp(visit=exposure.info.expnum, ccdnum=exposure.ccdnum, band=exposure.info.band,
                    mjd_tai=exposure.info.mjd_mid_tai, seeing_arcsec=float(exposure.psf_fwhm_pix * scale),
                    zero_point=float(exposure.zero_point), rows=rows, cols=cols, masked=warped, weight=weight,
                    psf_nodes=nodes, psf_images=images)


def _node_psfs(exposure: CalibratedExposure, sky_tile: SkyTile, box: tuple[slice, slice], *,
               config: CoaddConfig) -> tuple[np.ndarray, np.ndarray]:
    """The CCD's PSF at the tile nodes it covers, resampled to the tile frame: (node indices, images)."""
    x, y = psf_nodes(sky_tile, config.psf_node_spacing_pix)
    rows, cols = box
    ny, nx = exposure.masked.image.shape
    half = config.psf_half_size_pix
    ra, dec = sky_tile.wcs.all_pix2world(x, y, 0)
    cx, cy = exposure.wcs.all_world2pix(ra, dec, 0)
    # Nodes inside the box take the CCD's PSF at the nearest CCD pixel; a box between nodes (a CCD's sliver in
    # the tile) takes the node nearest its centre, so every covered tile has a PSF model.
    nodes = np.flatnonzero((x >= cols.start) & (x < cols.stop) & (y >= rows.start) & (y < rows.stop))
    if nodes.size == 0:
        centre_x, centre_y = (cols.start + cols.stop - 1) / 2.0, (rows.start + rows.stop - 1) / 2.0
        nodes = np.array([int(np.argmin((x - centre_x) ** 2 + (y - centre_y) ** 2))])
    cx = np.clip(cx, half, nx - 1 - half)
    cy = np.clip(cy, half, ny - 1 - half)
    # Jacobian d(ccd pixel) / d(tile pixel) at each node, by central differences through both WCSs.
    step = 2.0
    jac = np.empty((nodes.size, 2, 2))
    for axis, (dx, dy) in enumerate(((step, 0.0), (0.0, step))):
        plus = exposure.wcs.all_world2pix(*sky_tile.wcs.all_pix2world(x[nodes] + dx, y[nodes] + dy, 0), 0)
        minus = exposure.wcs.all_world2pix(*sky_tile.wcs.all_pix2world(x[nodes] - dx, y[nodes] - dy, 0), 0)
        jac[:, 0, axis] = (plus[1] - minus[1]) / (2 * step)  # d ccd_y / d tile_(x, y)
        jac[:, 1, axis] = (plus[0] - minus[0]) / (2 * step)  # d ccd_x / d tile_(x, y)
    stamps = exposure.psf_model.stamps(np.rint(cx[nodes]), np.rint(cy[nodes]), half)
    centre = np.array([half, half], float)
    images = np.empty_like(stamps)
    for k in range(nodes.size):  # one small affine resampling per node (tens per CCD)
        # ndimage works in (row, column): output (ty, tx) samples input J @ (ty, tx) about the centre.
        matrix = np.array([[jac[k, 0, 1], jac[k, 0, 0]], [jac[k, 1, 1], jac[k, 1, 0]]])
        images[k] = ndimage.affine_transform(stamps[k], matrix, offset=centre - matrix @ centre, order=3,
                                             mode="constant", cval=0.0)
    images /= images.sum(axis=(1, 2), keepdims=True)
    return nodes, images


def _psf_matched(warp: TileWarp, sigma_pix: float) -> np.ndarray:
    """The warp's image smoothed by a Gaussian of ``sigma_pix`` over its usable pixels (NaN elsewhere)."""
    usable = warp.usable
    image = np.where(usable, warp.masked.image, 0.0).astype(np.float32)
    if sigma_pix > 0.1:
        norm = ndimage.gaussian_filter(usable.astype(np.float32), sigma_pix, mode="constant")
        image = ndimage.gaussian_filter(image, sigma_pix, mode="constant")
        with np.errstate(divide="ignore", invalid="ignore"):
            image = image / norm
    return np.where(usable, image, np.nan).astype(np.float32)


def _stack_median(stack: np.ndarray) -> np.ndarray:
    """Median along axis 0 over the finite values (NaN where none): sorted once, NaNs last."""
    ordered = np.sort(stack, axis=0)
    count = np.isfinite(stack).sum(axis=0)
    lo = np.take_along_axis(ordered, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    hi = np.take_along_axis(ordered, (count // 2)[None], axis=0)[0] if stack.shape[0] > 1 else lo
    hi = np.where(count > 1, hi, lo)
    return np.where(count > 0, 0.5 * (lo + hi), np.nan).astype(np.float32)


_STRIPE_ROWS = 256
"""Tile rows per step of the reference median (bounds the stack's memory)."""


def rejected_pixels(warps: list[TileWarp], coadd: CoaddTile, *, config: CoaddConfig = CoaddConfig()
                    ) -> list[np.ndarray]:
    """For each warp, the pixels of its box rejected as outliers (see the module's description)."""
    if not warps:
        return []
    scale = pixel_scale_arcsec(coadd.tile.wcs)
    sigmas = [w.seeing_arcsec / scale / FWHM_PER_SIGMA for w in warps]
    existing = coadd.psf_weight > 0
    coadd_sigma = float(np.nanmedian(coadd.psf_fwhm_arcsec()[existing])) / scale / FWHM_PER_SIGMA \
        if existing.any() else 0.0
    worst = max(sigmas + [coadd_sigma])
    matched = [_psf_matched(w, np.sqrt(max(worst**2 - s**2, 0.0))) for w, s in zip(warps, sigmas)]
    # Everything happens in the box the new inputs cover, in its own coordinates.
    y0, x0 = min(w.rows.start for w in warps), min(w.cols.start for w in warps)
    region = (slice(y0, max(w.rows.stop for w in warps)), slice(x0, max(w.cols.stop for w in warps)))
    shape = (region[0].stop - y0, region[1].stop - x0)

    def local(rows: slice, cols: slice) -> tuple[slice, slice]:
        return slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0)

    members = [(*local(w.rows, w.cols), m) for w, m in zip(warps, matched)]
    weight_old = np.minimum(coadd.coverage[region], 2)
    if weight_old.any():
        old = replace(warps[0], rows=slice(0, shape[0]), cols=slice(0, shape[1]),
                      masked=MaskedImage(coadd.image[region], coadd.mask[region], coadd.variance[region]))
        members.append((old.rows, old.cols, _psf_matched(old, np.sqrt(max(worst**2 - coadd_sigma**2, 0.0)))))
    reference, enough = _reference(members, weight_old, shape, config.min_inputs_to_reject)
    grow = int(np.ceil(config.reject_grow_fwhm * worst * FWHM_PER_SIGMA))
    # The PSF mismatch left by Gaussian matching scales with the brightest reference value within a FWHM
    # (a star's wings differ as much as its core), not with the value at the pixel.
    reach = 2 * int(np.ceil(worst * FWHM_PER_SIGMA)) + 1
    envelope = ndimage.maximum_filter(np.abs(np.nan_to_num(reference, nan=0.0)), size=reach)
    structure = ndimage.generate_binary_structure(2, 1)
    rejected = []
    for warp, image in zip(warps, matched):
        box = local(warp.rows, warp.cols)
        residual = image - reference[box]
        judged = enough[box] & np.isfinite(residual)
        bad = np.zeros(residual.shape, bool)
        if judged.any():
            values = residual[judged]
            scatter = 1.4826 * float(np.median(np.abs(values - np.median(values))))
            limit = config.reject_nsigma * scatter + config.reject_model_fraction * envelope[box]
            bad = judged & (residual > limit)
            if grow and bad.any():
                bad = ndimage.binary_dilation(bad, structure, iterations=grow)
        rejected.append(bad)
    return rejected


def _reference(members: list[tuple[slice, slice, np.ndarray]], weight_old: np.ndarray, shape: tuple[int, int],
               min_members: int) -> tuple[np.ndarray, np.ndarray]:
    """The median of the PSF-matched members over the tile, stripe by stripe, and where it may judge.

    The last member is the existing coadd when ``weight_old`` (its inputs per pixel, at most 2) is not all 0:
    it counts for that many members.
    """
    reference = np.full(shape, np.nan, np.float32)
    enough = np.zeros(shape, bool)
    has_old = bool(weight_old.any())
    for r0 in range(0, shape[0], _STRIPE_ROWS):
        r1 = min(r0 + _STRIPE_ROWS, shape[0])
        here = [(rows, cols, image) for rows, cols, image in members if rows.start < r1 and rows.stop > r0]
        if not here:
            continue
        stack = np.full((len(here), r1 - r0, shape[1]), np.nan, np.float32)
        for k, (rows, cols, image) in enumerate(here):
            a, b = max(rows.start, r0), min(rows.stop, r1)
            stack[k, a - r0:b - r0, cols] = image[a - rows.start:b - rows.start]
        count = np.isfinite(stack).sum(axis=0)
        if has_old:
            old_here = np.isfinite(stack[-1]) if here[-1] is members[-1] else np.zeros(count.shape, bool)
            count = count - old_here + np.where(old_here, weight_old[r0:r1], 0)
        enough[r0:r1] = count >= min_members
        if enough[r0:r1].any():
            reference[r0:r1] = _stack_median(stack)
    return reference, enough


def add_to_coadd(coadd: CoaddTile, warps: list[TileWarp], *, config: CoaddConfig = CoaddConfig()) -> CoaddTile:
    """Add warps of one tile to its coadd, rejecting outliers (see the module's description).

    Parameters
    ----------
    coadd : CoaddTile
        The tile so far (:func:`empty_coadd` for a new one).
    warps : list of TileWarp
        New inputs of this tile, each once (inputs already in ``coadd.inputs`` must be left out).
    config : CoaddConfig

    Returns
    -------
    CoaddTile
        The tile with the inputs added.
    """
    if not warps:
        return coadd
    rejected = rejected_pixels(warps, coadd, config=config)
    # Only the box the new inputs cover changes: the sums are made there, in float64.
    region = (slice(min(w.rows.start for w in warps), max(w.rows.stop for w in warps)),
              slice(min(w.cols.start for w in warps), max(w.cols.stop for w in warps)))
    weight = coadd.weight[region].astype(np.float64)
    sum_image = coadd.image[region] * weight
    sum_variance = coadd.variance[region] * weight**2
    coverage = coadd.coverage.copy()
    psf_sum = coadd.psf_images * coadd.psf_weight[:, None, None]
    psf_weight = coadd.psf_weight.copy()
    rows_out = []
    for warp, bad in zip(warps, rejected):
        box = (slice(warp.rows.start - region[0].start, warp.rows.stop - region[0].start),
               slice(warp.cols.start - region[1].start, warp.cols.stop - region[1].start))
        use = warp.usable & ~bad
        w = warp.weight
        sum_image[box] += np.where(use, w * warp.masked.image, 0.0)
        sum_variance[box] += np.where(use, w * w * warp.masked.variance, 0.0)
        weight[box] += np.where(use, w, 0.0)
        coverage[warp.rows, warp.cols] += use.astype(np.int16)
        psf_sum[warp.psf_nodes] += w * warp.psf_images
        psf_weight[warp.psf_nodes] += w
        rows_out.append((warp.visit, warp.ccdnum, warp.band, warp.mjd_tai, w, warp.seeing_arcsec,
                         warp.zero_point, int(use.sum())))
    has = weight > 0
    safe = np.where(has, weight, 1.0)
    image, variance, mask = coadd.image.copy(), coadd.variance.copy(), coadd.mask.copy()
    new_weight = coadd.weight.copy()
    image[region] = np.where(has, sum_image / safe, 0.0)
    variance[region] = np.where(has, sum_variance / safe**2, 0.0)
    mask[region] = np.where(has, 0, int(MaskBit.NO_DATA))
    new_weight[region] = weight
    psf_images = np.where(psf_weight[:, None, None] > 0,
                          psf_sum / np.where(psf_weight > 0, psf_weight, 1.0)[:, None, None], 0.0)
    added = Table(rows=rows_out, names=INPUT_COLUMNS, dtype=coadd.inputs.dtype)
    inputs = vstack([coadd.inputs, added]) if len(coadd.inputs) else added
    return replace(coadd, image=image, variance=variance, mask=mask, weight=new_weight, coverage=coverage,
                   psf_images=psf_images, psf_weight=psf_weight, inputs=inputs)


def selected(exposure: CalibratedExposure, config: CoaddConfig) -> bool:
    """Whether a calibrated input passes the seeing and depth cuts of ``config``."""
    seeing = exposure.psf_fwhm_pix * pixel_scale_arcsec(exposure.wcs)
    if config.max_seeing_arcsec is not None and not seeing <= config.max_seeing_arcsec:
        return False
    return config.min_zero_point is None or exposure.zero_point >= config.min_zero_point
