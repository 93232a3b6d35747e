"""Instrument signature removal for one DECam CCD, per amplifier and vectorised.

Overscan (serial per row with outlier rejection, then parallel per column) -> trim and assemble the
(4096, 2048) CCD -> bias -> crosstalk between the two amplifiers -> gain to electrons -> linearity ->
flat -> saturation, bleed and defect masks -> variance (Poisson plus read noise) -> cosmic rays (masked
and interpolated).
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from pipeline.decam.camera import CCD_SHAPE
from pipeline.decam.header import AmpGeometry, amp_geometry
from pipeline.errors import InputError
from pipeline.masks import MaskBit
from pipeline.types import MaskedImage, RawCcd

log = logging.getLogger(__name__)


class IsrConfig(BaseModel):
    """Configuration of ISR."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    overscan_skip_columns: int = Field(3, ge=0, le=100, description="Overscan columns next to the data skipped "
                                                                    "(CTI).")
    overscan_clip_sigma: float = Field(3.0, gt=0, description="Outlier rejection of overscan pixels in a row.")
    overscan_smooth_rows: int = Field(9, ge=1, le=4096, description="Running-median length of the per-row "
                                                                    "overscan.")
    do_parallel_overscan: bool = Field(True, description="Subtract the per-column parallel overscan.")
    parallel_overscan_smooth_columns: int = Field(15, ge=1, le=2048, description="Running-median length of the "
                                                  "per-column parallel overscan.")
    do_crosstalk: bool = Field(True, description="Correct intra-CCD crosstalk with the given coefficients.")
    crosstalk_a_from_b: float | None = Field(None, description="Fraction of amp B's signal seen in amp A; None "
                                                                "takes the instrument's (run_isr's crosstalk).")
    crosstalk_b_from_a: float | None = Field(None, description="Fraction of amp A's signal seen in amp B; None "
                                                                "takes the instrument's (run_isr's crosstalk).")
    linearity_coeff: float = Field(0.0, ge=-1e-4, le=1e-4, description="Quadratic linearity term c: e_true = "
                                                                        "e (1 + c e), per electron.")
    min_flat: float = Field(0.05, ge=0, lt=1.0, description="Pixels whose flat is this or lower are BAD.")
    saturation_grow_pix: int = Field(1, ge=0, le=100, description="Saturation masks are grown by this many "
                                                                  "pixels.")
    suspect_fraction: float = Field(0.9, gt=0, le=1.0, description="Pixels above this fraction of saturation "
                                                                   "are SUSPECT.")
    do_cosmic_rays: bool = Field(True, description="Detect, mask and interpolate cosmic rays.")
    cr_threshold_sigma: float = Field(5.0, gt=0, description="Cosmic-ray seed threshold above the local sky.")
    cr_sharpness: float = Field(1.6, gt=0, description="Least Laplacian-to-peak ratio of a CR pixel (stars at "
                                                       "DECam seeing stay near or below 1.1).")
    cr_grow_sigma: float = Field(2.5, gt=0, description="Neighbours of CR pixels above this are masked too.")
    cr_grow_rounds: int = Field(4, ge=0, le=100, description="Rounds of one-pixel growth of the CR mask.")


def _overscan_per_row(raw: np.ndarray, rows: slice, cols: slice, config: IsrConfig) -> np.ndarray:
    """Robust per-row overscan level: clipped mean across columns, then a running median across rows."""
    block = raw[rows, cols][:, config.overscan_skip_columns:-1 or None].astype(np.float64)
    median = np.median(block, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(block - median), axis=1, keepdims=True)
    good = np.abs(block - median) <= config.overscan_clip_sigma * np.maximum(mad, 0.5)
    level = np.sum(np.where(good, block, 0.0), axis=1) / np.maximum(good.sum(axis=1), 1)
    return ndimage.median_filter(level, size=config.overscan_smooth_rows, mode="nearest")


def _oriented(data: np.ndarray, amp: AmpGeometry) -> np.ndarray:
    """A view of an amplifier's data section in CCD orientation."""
    if amp.flip_y:
        data = data[::-1]
    if amp.flip_x:
        data = data[:, ::-1]
    return data


def _assemble(raw_ccd: RawCcd, config: IsrConfig) -> tuple[np.ndarray, dict[str, AmpGeometry]]:
    """Overscan-corrected, trimmed (4096, 2048) float32 CCD in ADU, and the amplifier geometry."""
    raw = raw_ccd.pixels
    amps = amp_geometry(raw_ccd.header)
    image = np.empty(CCD_SHAPE, dtype=np.float32)
    for name, amp in sorted(amps.items()):
        data_rows, data_cols = amp.data
        serial = _overscan_per_row(raw, data_rows, amp.overscan[1], config).astype(np.float32)
        out = _oriented(image[amp.ccd], amp)          # a view: written in place, no assembly copy
        np.subtract(raw[data_rows, data_cols], serial[:, None], out=out, dtype=np.float32)
        if config.do_parallel_overscan:
            par_rows, _ = amp.parallel_overscan
            p_serial = _overscan_per_row(raw, par_rows, amp.overscan[1], config).astype(np.float32)
            p = np.subtract(raw[par_rows, data_cols], p_serial[:, None], dtype=np.float32)
            column_level = np.median(p, axis=0)
            out -= ndimage.median_filter(column_level, size=config.parallel_overscan_smooth_columns,
                                         mode="nearest").astype(np.float32)[None, :]
    return image, amps


def _dilate_cross(flags: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_dilation(flags, iterations=n)`` (4-connected, zero border), restricted to the row
    bands and column ranges that hold set pixels, so the cost follows the flagged area, not the image's."""
    rows = np.flatnonzero(flags.any(axis=1))
    if rows.size == 0:
        return flags
    out = flags.copy()
    n, ny, nx = iterations, flags.shape[0], flags.shape[1]
    # Row bands: runs of flagged rows whose n-grown extents touch are merged (dilation cannot cross a gap
    # wider than 2n rows).
    breaks = np.flatnonzero(np.diff(rows) > 2 * n + 1)
    for first, last in zip(np.r_[rows[0], rows[breaks + 1]], np.r_[rows[breaks], rows[-1]]):
        r0, r1 = max(first - n, 0), min(last + n + 1, ny)
        cols = np.flatnonzero(flags[first:last + 1].any(axis=0))
        c0, c1 = max(cols[0] - n, 0), min(cols[-1] + n + 1, nx)
        out[r0:r1, c0:c1] = ndimage.binary_dilation(flags[r0:r1, c0:c1], iterations=n)
    return out


def run_isr(raw_ccd: RawCcd, bias: np.ndarray, flat: np.ndarray, defects: np.ndarray | None = None, *,
            config: IsrConfig = IsrConfig(), crosstalk: tuple[float, float] = (0.0, 0.0)) -> MaskedImage:
    """Remove the instrument signature of one raw CCD.

    Parameters
    ----------
    raw_ccd : RawCcd
        Raw pixels (ADU) and header.
    bias : numpy.ndarray
        (4096, 2048) master bias residual, ADU.
    flat : numpy.ndarray
        (4096, 2048) normalised master flat.
    defects : numpy.ndarray, optional
        (4096, 2048) boolean known defects.
    config : IsrConfig
    crosstalk : tuple of float
        The instrument's intra-CCD crosstalk ``(A from B, B from A)``
        (:attr:`pipeline.decam.camera.CcdInfo.crosstalk_a_from_b`); used when ``config.do_crosstalk`` and
        the config gives no coefficients of its own.

    Returns
    -------
    MaskedImage
        Image and variance in electrons (sky included), mask bits set.

    Raises
    ------
    InputError
        Calibration frames of the wrong shape or non-finite values, or a raw without usable pixels.
    """
    for name, frame in (("bias", bias), ("flat", flat)):
        if frame is None or frame.shape != CCD_SHAPE:
            raise InputError(f"master {name} has shape {getattr(frame, 'shape', None)}, expected {CCD_SHAPE}",
                             stage="isr")
    raw = raw_ccd.pixels
    image, amps = _assemble(raw_ccd, config)
    ordered = [amps[n] for n in sorted(amps)]
    nonfinite = ~np.isfinite(image)
    any_nonfinite = bool(nonfinite.any())
    saturated, suspect = _saturated_and_suspect(raw, ordered, nonfinite, any_nonfinite=any_nonfinite,
                                                config=config)
    mask = np.zeros(CCD_SHAPE, dtype=np.int32)
    np.bitwise_or(mask, np.int32(MaskBit.SAT), out=mask, where=saturated)
    suspect &= ~saturated
    np.bitwise_or(mask, np.int32(MaskBit.SUSPECT), out=mask, where=suspect)
    if defects is not None:
        np.bitwise_or(mask, np.int32(MaskBit.BAD), out=mask, where=np.asarray(defects, dtype=bool))
    bad_flat = flat <= config.min_flat
    bad_flat |= ~np.isfinite(flat)
    np.bitwise_or(mask, np.int32(MaskBit.BAD), out=mask, where=bad_flat)
    if any_nonfinite:
        np.bitwise_or(mask, np.int32(MaskBit.NO_DATA), out=mask, where=nonfinite)
    image -= bias
    if any_nonfinite:
        image[nonfinite] = 0.0
    if config.do_crosstalk:
        table_a, table_b = crosstalk
        a_from_b = table_a if config.crosstalk_a_from_b is None else config.crosstalk_a_from_b
        b_from_a = table_b if config.crosstalk_b_from_a is None else config.crosstalk_b_from_a
        image = correct_crosstalk(image, amps, a_from_b=a_from_b, b_from_a=b_from_a)
    electrons = image                        # private: converted in place
    safe_flat = np.where(bad_flat, np.float32(1.0), flat).astype(np.float32, copy=False)
    variance = _to_electrons(electrons, ordered, safe_flat, config=config)
    if saturated.all():
        log.warning("CCD %d is saturated everywhere", raw_ccd.ccdnum)
    if config.do_cosmic_rays:
        electrons, mask = mask_cosmic_rays(electrons, variance, mask, config=config)
    # Defects and saturated pixels are interpolated for a clean picture but stay masked.
    return MaskedImage(image=electrons, mask=mask, variance=variance)


def _saturated_and_suspect(raw: np.ndarray, ordered: list[AmpGeometry], nonfinite: np.ndarray, *,
                           any_nonfinite: bool, config: IsrConfig) -> tuple[np.ndarray, np.ndarray]:
    """Saturated pixels (non-finite ones included, grown by ``config.saturation_grow_pix``) and suspect ones
    (above ``config.suspect_fraction`` of saturation), in CCD orientation."""
    # Saturation is judged on the raw ADU of each amplifier (views in CCD orientation, no assembled copy).
    saturated = np.empty(CCD_SHAPE, dtype=bool)
    suspect = np.empty(CCD_SHAPE, dtype=bool)
    for amp in ordered:
        data = _oriented(raw[amp.data], amp)
        sat = np.float32(amp.saturation)
        np.greater_equal(data, sat, out=saturated[amp.ccd])
        np.greater_equal(data, np.float32(config.suspect_fraction) * sat, out=suspect[amp.ccd])
    if any_nonfinite:
        saturated |= nonfinite
    if config.saturation_grow_pix > 0:
        saturated = _dilate_cross(saturated, config.saturation_grow_pix)
    return saturated, suspect


def _to_electrons(electrons: np.ndarray, ordered: list[AmpGeometry], safe_flat: np.ndarray, *,
                  config: IsrConfig) -> np.ndarray:
    """Convert the bias-subtracted ADU image ``electrons`` in place to flat-fielded electrons (gain and
    linearity per amplifier) and return its variance (Poisson plus read noise, through the flat)."""
    variance = np.empty(CCD_SHAPE, dtype=np.float32)
    for amp in ordered:
        e, v, f = electrons[amp.ccd], variance[amp.ccd], safe_flat[amp.ccd]
        e *= np.float32(amp.gain)
        if config.linearity_coeff:
            e *= 1.0 + config.linearity_coeff * e
        np.clip(e, 0, None, out=v)
        v += np.float32(amp.read_noise) ** 2
        e /= f
        v /= f
        v /= f
    return variance


def correct_crosstalk(image: np.ndarray, amps: dict, *, a_from_b: float, b_from_a: float) -> np.ndarray:
    """Subtract the linear crosstalk between the two amplifiers of a CCD, in place.

    Parameters
    ----------
    image : numpy.ndarray
        (4096, 2048) assembled, overscan- and bias-subtracted CCD, ADU (float32); corrected in place.
    amps : dict
        Amplifier geometry (:func:`pipeline.decam.header.amp_geometry`).
    a_from_b, b_from_a : float
        Fraction of amp B's signal seen in amp A, and of A's in B.

    Returns
    -------
    numpy.ndarray
        ``image``, corrected.

    Notes
    -----
    The amplifiers read out from opposite sides, so a victim pixel sees the source pixel read at the same
    time: mirrored about the CCD's centre column. Each amplifier is corrected with the other's uncorrected
    signal (one half copied; about 15 ms per CCD).
    """
    a, b = amps["A"].ccd, amps["B"].ccd
    source_a = image[a].copy()
    ghost = np.empty_like(source_a)
    np.multiply(image[b][:, ::-1], np.float32(a_from_b), out=ghost)
    image[a] -= ghost
    np.multiply(source_a[:, ::-1], np.float32(b_from_a), out=ghost)
    image[b] -= ghost
    return image


def mask_cosmic_rays(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, *, config: IsrConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Find cosmic rays by their sharpness, mask them (CR) and interpolate over them (INTRP).

    A pixel is a CR seed when it stands ``cr_threshold_sigma`` above the median of its 5x5 neighbourhood
    and its discrete Laplacian is at least ``cr_sharpness`` times its height above the local sky (sharper
    than any PSF: a well-sampled star's ratio stays near 1);
    seeds grow into neighbours above ``cr_grow_sigma``. Only candidate pixels are examined in detail, so the
    cost is a few passes over the image.
    """
    iy, ix = _cr_candidates(image, variance, mask, config)
    if iy.size == 0:
        return image, mask
    local = neighbourhood_median(image, iy, ix, half=2, skip_nan=False)
    excess = image[iy, ix] - local
    seed = excess > config.cr_threshold_sigma * _sigma_at(variance, iy, ix)
    if not seed.any():
        return image, mask
    cr = np.zeros(image.shape, dtype=bool)
    cr[iy[seed], ix[seed]] = True
    # Grow into bright neighbours (tracks), judged against the local sky of each seed's neighbourhood.
    # One pixel at a time, so that a track is followed along its length.
    cy, cx = iy[seed], ix[seed]
    work = image.copy()                      # image with CR pixels blanked, kept up to date
    work[cy, cx] = np.nan
    front_y, front_x = cy, cx
    for _ in range(config.cr_grow_rounds):
        gy, gx = _cross_neighbours(cr, front_y, front_x)
        if gy.size == 0:
            break
        sky = neighbourhood_median(work, gy, gx, half=3)
        bright = image[gy, gx] - sky > config.cr_grow_sigma * _sigma_at(variance, gy, gx)
        if not bright.any():
            break
        front_y, front_x = gy[bright], gx[bright]
        cr[front_y, front_x] = True
        work[front_y, front_x] = np.nan
        cy, cx = np.concatenate([cy, front_y]), np.concatenate([cx, front_x])
    fill = neighbourhood_median(work, cy, cx, half=3)
    out = work                               # a private copy already: reuse it
    out[cy, cx] = np.where(np.isfinite(fill), fill, 0.0)
    mask = mask.copy()
    mask[cy, cx] |= int(MaskBit.CR | MaskBit.INTRP)
    log.debug("masked %d cosmic-ray pixels", cy.size)
    return out, mask


def _cross_neighbours(flags: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels 4-adjacent to ``(iy, ix)`` that are not set in ``flags``: ``binary_dilation(flags) & ~flags``
    restricted to the given pixels, at a cost proportional to their number rather than the image's."""
    ny, nx = flags.shape
    yy = (iy[:, None] + np.array([-1, 1, 0, 0])[None, :]).ravel()
    xx = (ix[:, None] + np.array([0, 0, -1, 1])[None, :]).ravel()
    ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    flat = np.unique(yy[ok].astype(np.int64) * nx + xx[ok])
    flat = flat[~flags.ravel()[flat]]
    return flat // nx, flat % nx


def _sigma_at(variance: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Per-pixel noise at the given pixels (the full-image sigma is never formed)."""
    return np.sqrt(np.clip(variance[iy, ix], 1e-6, None))


def _cr_candidates(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, config: IsrConfig,
                   block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Pixels sharp enough (Laplacian) and bright enough above the coarse sky to be cosmic-ray candidates.

    Evaluated in bands of ``block`` rows (one coarse-sky block high) so that every temporary stays in cache
    and the sky is a single broadcast row per band.
    """
    ny, nx = image.shape
    sky_blocks = _coarse_sky_blocks(image, block)
    by, bx = sky_blocks.shape
    bad = np.int32(MaskBit.SAT | MaskBit.BAD)
    thr, sharp = np.float32(config.cr_threshold_sigma), np.float32(config.cr_sharpness)
    ys, xs = [], []
    for r0 in range(0, ny, block):
        r1 = min(r0 + block, ny)
        b = min(r0 // block, by - 1) if by else 0
        row = np.repeat(sky_blocks[b], block) if by and bx else np.zeros(0, np.float32)
        sky = np.empty(nx, dtype=np.float32)
        sky[: row.size] = row
        sky[row.size:] = row[-1] if row.size else 0.0
        img = image[r0:r1]
        above_sky = img - sky[None, :]
        sigma = np.clip(variance[r0:r1], 1e-6, None)
        np.sqrt(sigma, out=sigma)
        sigma *= thr
        cand = above_sky > sigma
        lap = np.zeros_like(img)
        lo, hi = max(r0, 1), min(r1, ny - 1)
        if hi > lo:
            lap[lo - r0:hi - r0, 1:-1] = (4 * image[lo:hi, 1:-1] - image[lo - 1:hi - 1, 1:-1]
                                          - image[lo + 1:hi + 1, 1:-1] - image[lo:hi, :-2] - image[lo:hi, 2:])
        sigma *= sharp
        cand &= lap > sigma
        above_sky *= sharp
        cand &= lap > above_sky
        cand &= (mask[r0:r1] & bad) == 0
        y, x = np.nonzero(cand)
        if y.size:
            ys.append(y + r0)
            xs.append(x)
    if not ys:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    return _recheck_beside_defects(image, variance, mask, np.concatenate(ys), np.concatenate(xs),
                                   sky_blocks=sky_blocks, block=block, config=config)


def _recheck_beside_defects(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, iy: np.ndarray,
                            ix: np.ndarray, *, sky_blocks: np.ndarray, block: int, config: IsrConfig
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The candidates ``(iy, ix)`` that stay cosmic rays when a candidate beside a defect or saturated pixel
    has its Laplacian taken over its good neighbours only.

    A defect (a low bad column) or saturated neighbour corrupts a pixel's Laplacian: the wing of a star
    beside a bad column is not a cosmic ray.
    """
    bad = np.int32(MaskBit.SAT | MaskBit.BAD)
    thr, sharp = np.float32(config.cr_threshold_sigma), np.float32(config.cr_sharpness)
    ny, nx = image.shape
    dy, dx = np.array([-1, 1, 0, 0]), np.array([0, 0, -1, 1])
    yy = np.clip(iy[:, None] + dy, 0, ny - 1)
    xx = np.clip(ix[:, None] + dx, 0, nx - 1)
    off_edge = (iy[:, None] + dy < 0) | (iy[:, None] + dy >= ny) | (ix[:, None] + dx < 0) | (ix[:, None] + dx >= nx)
    nbad = ((mask[yy, xx] & bad) != 0) & ~off_edge
    hit = nbad.any(axis=1)
    if hit.any():
        c = image[iy[hit], ix[hit]]
        good = ~nbad[hit]
        n_good = good.sum(axis=1)
        diff = np.where(good, c[:, None] - image[yy[hit], xx[hit]], np.float32(0.0)).sum(axis=1)
        lap = (diff * np.float32(4) / np.maximum(n_good, 1)).astype(np.float32)
        sigma = np.sqrt(np.clip(variance[iy[hit], ix[hit]], 1e-6, None)) * thr * sharp
        above = (c - _sky_at(sky_blocks, iy[hit], ix[hit], block)) * sharp
        keep = np.ones(iy.size, dtype=bool)
        keep[hit] = (n_good >= 2) & (lap > sigma) & (lap > above)
        iy, ix = iy[keep], ix[keep]
    return iy, ix


def _sky_at(sky_blocks: np.ndarray, iy: np.ndarray, ix: np.ndarray, block: int) -> np.ndarray:
    """The coarse sky of :func:`_coarse_sky_blocks` at the given pixels."""
    by, bx = sky_blocks.shape
    return sky_blocks[np.minimum(iy // block, by - 1), np.minimum(ix // block, bx - 1)]


def _coarse_sky_blocks(image: np.ndarray, block: int = 64) -> np.ndarray:
    """Per-block median sky (subsampled 4x4 in each block), shape (ny // block, nx // block)."""
    ny, nx = image.shape
    by, bx = ny // block, nx // block
    core = image[: by * block, : bx * block].reshape(by, block, bx, block)
    return np.median(core[:, ::4, :, ::4].reshape(by, block // 4, bx, block // 4).transpose(0, 2, 1, 3)
                     .reshape(by, bx, -1), axis=2).astype(np.float32)


def neighbourhood_median(image: np.ndarray, iy: np.ndarray, ix: np.ndarray, *, half: int,
                          skip_nan: bool = True) -> np.ndarray:
    """Median of the (2h+1)^2 box around each pixel, excluding the pixel itself (and NaNs if asked)."""
    ny, nx = image.shape
    off = np.arange(-half, half + 1)
    yy = np.clip(iy[:, None, None] + off[None, :, None], 0, ny - 1)
    xx = np.clip(ix[:, None, None] + off[None, None, :], 0, nx - 1)
    boxes = image[yy, xx].reshape(iy.size, -1).astype(np.float64)
    centre = (2 * half + 1) ** 2 // 2
    boxes = np.delete(boxes, centre, axis=1)
    if not skip_nan:
        return np.median(boxes, axis=1)
    with np.errstate(all="ignore"):
        return np.nanmedian(boxes, axis=1)
