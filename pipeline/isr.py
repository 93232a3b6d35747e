"""Instrument signature removal for one DECam CCD, per amplifier and vectorised.

Overscan (serial per row with outlier rejection, then parallel per column) -> trim and assemble the
(4096, 2048) CCD -> bias -> crosstalk between the two amplifiers -> gain to electrons -> linearity ->
flat -> saturation, bleed and defect masks -> variance (Poisson plus read noise) -> cosmic rays (masked
and interpolated).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from pipeline.decam.camera import decam_reference_dir
from pipeline.decam.raw import amp_geometry
from pipeline.errors import InputError
from pipeline.masks import MaskBit
from pipeline.types import MaskedImage, RawCcd

log = logging.getLogger(__name__)

CCD_SHAPE = (4096, 2048)


class IsrConfig(BaseModel):
    """Configuration of ISR."""

    model_config = ConfigDict(frozen=True)
    overscan_skip_columns: int = Field(3, description="Overscan columns next to the data skipped (CTI).")
    overscan_clip_sigma: float = Field(3.0, description="Outlier rejection of overscan pixels in a row.")
    overscan_smooth_rows: int = Field(9, description="Running-median length of the per-row overscan.")
    do_parallel_overscan: bool = Field(True, description="Subtract the per-column parallel overscan.")
    do_crosstalk: bool = Field(False, description="Correct intra-CCD crosstalk with the given coefficients.")
    crosstalk_a_from_b: float | None = Field(None, description="Fraction of amp B's signal seen in amp A; None "
                                                                "reads it from the DECam crosstalk table.")
    crosstalk_b_from_a: float | None = Field(None, description="Fraction of amp A's signal seen in amp B; None "
                                                                "reads it from the DECam crosstalk table.")
    linearity_coeff: float = Field(0.0, description="Quadratic linearity term c: e_true = e (1 + c e).")
    saturation_grow_pix: int = Field(1, description="Saturation masks are grown by this many pixels.")
    suspect_fraction: float = Field(0.9, description="Pixels above this fraction of saturation are SUSPECT.")
    do_cosmic_rays: bool = Field(True, description="Detect, mask and interpolate cosmic rays.")
    cr_threshold_sigma: float = Field(5.0, description="Cosmic-ray seed threshold above the local sky.")
    cr_sharpness: float = Field(1.6, description="Least Laplacian-to-peak ratio of a CR pixel (stars at "
                                                  "DECam seeing stay near or below 1.1).")
    cr_grow_sigma: float = Field(2.5, description="Neighbours of CR pixels above this are masked too.")
    cr_grow_rounds: int = Field(4, description="Rounds of one-pixel growth of the CR mask.")


def _overscan_per_row(raw: np.ndarray, rows: slice, cols: slice, config: IsrConfig) -> np.ndarray:
    """Robust per-row overscan level: clipped mean across columns, then a running median across rows."""
    block = raw[rows, cols][:, config.overscan_skip_columns:-1 or None].astype(np.float64)
    median = np.median(block, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(block - median), axis=1, keepdims=True)
    good = np.abs(block - median) <= config.overscan_clip_sigma * np.maximum(mad, 0.5)
    level = np.sum(np.where(good, block, 0.0), axis=1) / np.maximum(good.sum(axis=1), 1)
    return ndimage.median_filter(level, size=config.overscan_smooth_rows, mode="nearest")


def assemble_overscan_corrected(raw_ccd: RawCcd, config: IsrConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Overscan-correct each amplifier and assemble the trimmed CCD.

    Returns
    -------
    image : numpy.ndarray
        (4096, 2048) float32 ADU.
    amp_index : numpy.ndarray
        (4096, 2048) int8, 0 for amp A pixels and 1 for amp B.
    amps : dict
        Amplifier geometry by name (see :func:`pipeline.decam.raw.amp_geometry`).
    """
    raw = raw_ccd.pixels
    amps = amp_geometry(raw_ccd.header)
    image = np.empty(CCD_SHAPE, dtype=np.float32)
    amp_index = np.empty(CCD_SHAPE, dtype=np.int8)
    for k, (name, amp) in enumerate(sorted(amps.items())):
        data_rows, data_cols = amp.data
        serial = _overscan_per_row(raw, data_rows, amp.overscan[1], config)
        data = raw[data_rows, data_cols].astype(np.float32) - serial[:, None].astype(np.float32)
        if config.do_parallel_overscan:
            par_rows, _ = amp.parallel_overscan
            p_rows = raw[par_rows, data_cols].astype(np.float32)
            p_serial = _overscan_per_row(raw, par_rows, amp.overscan[1], config)
            p = p_rows - p_serial[:, None].astype(np.float32)
            column_level = np.median(p, axis=0)
            data -= ndimage.median_filter(column_level, size=15, mode="nearest").astype(np.float32)[None, :]
        if amp.flip_y:
            data = data[::-1]
        if amp.flip_x:
            data = data[:, ::-1]
        image[amp.ccd] = data
        amp_index[amp.ccd] = k
    return image, amp_index, amps


def run_isr(raw_ccd: RawCcd, bias: np.ndarray, flat: np.ndarray, defects: np.ndarray | None = None,
            config: IsrConfig = IsrConfig()) -> MaskedImage:
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
    image, amp_index, amps = assemble_overscan_corrected(raw_ccd, config)
    # Saturation is judged on the raw ADU of each amplifier.
    ordered = [amps[n] for n in sorted(amps)]
    saturation = np.array([a.saturation for a in ordered], dtype=np.float32)[amp_index]
    gain = np.array([a.gain for a in ordered], dtype=np.float32)[amp_index]
    read_noise = np.array([a.read_noise for a in ordered], dtype=np.float32)[amp_index]
    raw_assembled = np.empty(CCD_SHAPE, dtype=np.float32)
    for amp in ordered:
        data = raw[amp.data]
        if amp.flip_y:
            data = data[::-1]
        if amp.flip_x:
            data = data[:, ::-1]
        raw_assembled[amp.ccd] = data
    mask = np.zeros(CCD_SHAPE, dtype=np.int32)
    nonfinite = ~np.isfinite(image)
    saturated = (raw_assembled >= saturation) | nonfinite
    if config.saturation_grow_pix > 0 and saturated.any():
        saturated = ndimage.binary_dilation(saturated, iterations=config.saturation_grow_pix)
    mask[saturated] |= int(MaskBit.SAT)
    mask[(raw_assembled >= config.suspect_fraction * saturation) & ~saturated] |= int(MaskBit.SUSPECT)
    if defects is not None:
        mask[defects] |= int(MaskBit.BAD)
    bad_flat = ~np.isfinite(flat) | (flat <= 0.05)
    mask[bad_flat] |= int(MaskBit.BAD)
    mask[nonfinite] |= int(MaskBit.NO_DATA)
    image = np.where(nonfinite, 0.0, image - bias).astype(np.float32)
    if config.do_crosstalk:
        table_a, table_b = intra_ccd_crosstalk(raw_ccd.ccdnum)
        a_from_b = table_a if config.crosstalk_a_from_b is None else config.crosstalk_a_from_b
        b_from_a = table_b if config.crosstalk_b_from_a is None else config.crosstalk_b_from_a
        image = correct_crosstalk(image, amps, a_from_b=a_from_b, b_from_a=b_from_a)
    electrons = image * gain
    if config.linearity_coeff:
        electrons = electrons * (1.0 + config.linearity_coeff * electrons)
    variance = np.clip(electrons, 0, None) + read_noise**2
    safe_flat = np.where(bad_flat, 1.0, flat).astype(np.float32)
    electrons = (electrons / safe_flat).astype(np.float32)
    variance = (variance / safe_flat**2).astype(np.float32)
    if (mask & int(MaskBit.SAT)).all():
        log.warning("CCD %d is saturated everywhere", raw_ccd.ccdnum)
    if config.do_cosmic_rays:
        electrons, mask = mask_cosmic_rays(electrons, variance, mask, config)
    # Defects and saturated pixels are interpolated for a clean picture but stay masked.
    return MaskedImage(image=electrons, mask=mask, variance=variance)


@functools.cache
def _crosstalk_table() -> dict[tuple[int, str, int, str], float]:
    """Linear coefficients of ``camera/DECam_xtalk_20130606.txt``: (victim ccd, amp, source ccd, amp) -> x."""
    path = decam_reference_dir() / "camera" / "DECam_xtalk_20130606.txt"
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputError(f"crosstalk table {path} unreadable: {err}", stage="isr") from err
    table = {}
    for line in lines:
        words = line.split()
        if len(words) < 3 or line.lstrip().startswith("#"):
            continue
        victim, source = words[0], words[1]
        table[(int(victim[3:-1]), victim[-1], int(source[3:-1]), source[-1])] = float(words[2])
    return table


def intra_ccd_crosstalk(ccdnum: int) -> tuple[float, float]:
    """(A from B, B from A): the fractions of one amplifier's signal seen in the other, DECam 2013 table.

    Raises
    ------
    InputError
        The table is missing.
    """
    table = _crosstalk_table()
    return table.get((ccdnum, "A", ccdnum, "B"), 0.0), table.get((ccdnum, "B", ccdnum, "A"), 0.0)


def correct_crosstalk(image: np.ndarray, amps: dict, *, a_from_b: float, b_from_a: float) -> np.ndarray:
    """Subtract the linear crosstalk between the two amplifiers of a CCD.

    Parameters
    ----------
    image : numpy.ndarray
        (4096, 2048) assembled, overscan- and bias-subtracted CCD, ADU.
    amps : dict
        Amplifier geometry (:func:`pipeline.decam.raw.amp_geometry`).
    a_from_b, b_from_a : float
        Fraction of amp B's signal seen in amp A, and of A's in B.

    Returns
    -------
    numpy.ndarray
        Corrected copy.

    Notes
    -----
    The amplifiers read out from opposite sides, so a victim pixel sees the source pixel read at the same
    time: mirrored about the CCD's centre column.
    """
    out = image.copy()
    a, b = amps["A"], amps["B"]
    out[a.ccd] -= np.float32(a_from_b) * image[b.ccd][:, ::-1]
    out[b.ccd] -= np.float32(b_from_a) * image[a.ccd][:, ::-1]
    return out


def mask_cosmic_rays(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, config: IsrConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Find cosmic rays by their sharpness, mask them (CR) and interpolate over them (INTRP).

    A pixel is a CR seed when it stands ``cr_threshold_sigma`` above the median of its 5x5 neighbourhood
    and its discrete Laplacian is at least ``cr_sharpness`` times its height above the local sky (sharper
    than any PSF: a well-sampled star's ratio stays near 1);
    seeds grow into neighbours above ``cr_grow_sigma``. Only candidate pixels are examined in detail, so the
    cost is a few passes over the image.
    """
    sigma = np.sqrt(np.clip(variance, 1e-6, None))
    lap = np.zeros_like(image)
    lap[1:-1, 1:-1] = 4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2] - image[1:-1, 2:]
    above_sky = image - _coarse_sky(image)
    candidates = lap > config.cr_threshold_sigma * sigma * config.cr_sharpness
    candidates &= lap > config.cr_sharpness * above_sky
    candidates &= above_sky > config.cr_threshold_sigma * sigma
    candidates &= (mask & int(MaskBit.SAT | MaskBit.BAD)) == 0
    iy, ix = np.nonzero(candidates)
    if iy.size == 0:
        return image, mask
    local = _neighbourhood_median(image, iy, ix, half=2, skip_nan=False)
    excess = image[iy, ix] - local
    seed = excess > config.cr_threshold_sigma * sigma[iy, ix]
    cr = np.zeros(image.shape, dtype=bool)
    cr[iy[seed], ix[seed]] = True
    if not cr.any():
        return image, mask
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
        sky = _neighbourhood_median(work, gy, gx, half=3)
        bright = image[gy, gx] - sky > config.cr_grow_sigma * sigma[gy, gx]
        if not bright.any():
            break
        front_y, front_x = gy[bright], gx[bright]
        cr[front_y, front_x] = True
        work[front_y, front_x] = np.nan
        cy, cx = np.concatenate([cy, front_y]), np.concatenate([cx, front_x])
    fill = _neighbourhood_median(work, cy, cx, half=3)
    out = work                               # a private copy already: reuse it
    out[cy, cx] = np.where(np.isfinite(fill), fill, 0.0)
    mask = mask.copy()
    mask[cr] |= int(MaskBit.CR | MaskBit.INTRP)
    log.debug("masked %d cosmic-ray pixels", int(cr.sum()))
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


def _coarse_sky(image: np.ndarray, block: int = 64) -> np.ndarray:
    """Per-block median sky, expanded back to full resolution (a cheap local background)."""
    ny, nx = image.shape
    by, bx = ny // block, nx // block
    core = image[: by * block, : bx * block].reshape(by, block, bx, block)
    med = np.median(core[:, ::4, :, ::4].reshape(by, block // 4, bx, block // 4).transpose(0, 2, 1, 3)
                    .reshape(by, bx, -1), axis=2)
    full = np.repeat(np.repeat(med, block, axis=0), block, axis=1)
    return np.pad(full, ((0, ny - full.shape[0]), (0, nx - full.shape[1])), mode="edge").astype(np.float32)


def _neighbourhood_median(image: np.ndarray, iy: np.ndarray, ix: np.ndarray, *, half: int,
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
