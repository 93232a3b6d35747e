"""DECam Community Pipeline (CP) InstCal products: image ``ooi``, weight ``oow``, mask ``ood``.

The CP writes one file per product, each with a primary header (the exposure's keywords) and one image
extension per CCD (found here by ``CCDNUM``, falling back on ``EXTNAME``/``DETPOS``), plain or fpack
(``.fits.fz``, a ``CompImageHDU``). The CP image is in ADU of the gain-normalised, flat-fielded CCD
(``AVSIG`` ~ sqrt(``AVSKY`` * gain) / gain), the weight is the inverse variance in ADU^-2, and the
data-quality mask holds CP *codes* (not bits) mapped to :class:`pipeline.masks.MaskBit` by
:data:`CP_DQ_CODES`. The WCS is TPV (``RA---TPV``); astropy/wcslib apply its PV polynomial (wcslib turns
it into a TAN projection with a sequent distortion, which is why ``wcs.wcs.ctype`` reads ``TAN``): the
PV terms shift positions by ~2.5 arcsec on a real N/S CCD, checked in
``tests/unit/streamer/decam/test_instcal_files.py``.

What the pipeline makes of one (:func:`instcal_electrons`, what ISR makes of a raw): the image times the
gain in electrons; the variance from the weight (sky and read noise: the CP's weight leaves out the sources'
own Poisson noise, added back from the image above its background) times the gain squared; the DQ codes as
mask bits, pixels at or above ``SATURATE`` SAT, the CP's cosmic rays interpolated (CR | INTRP) and the
cosmic rays it missed found as ISR finds them. :class:`InstCalInputs` carries a CCD to
:func:`pipeline.ccd.process_ccd` in place of a raw and its calibrations.

Every failure to read a usable product raises :class:`pipeline.errors.InputError` with
``stage="read_instcal"``; a header that cannot be converted (no gain, an absurd saturation level, no pixel
with weight) with ``stage="instcal"``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from pipeline.astrometry import CameraModel, tangent_plane
from pipeline.background import estimate_background
from pipeline.decam.header import CCD_HALF_DIAGONAL_DEG, read_exposure_info
from pipeline.errors import InputError
from pipeline.isr import IsrConfig, mask_cosmic_rays, neighbourhood_median
from pipeline.masks import UNUSABLE, MaskBit
from pipeline.reliability import ReliabilityModel
from pipeline.types import ExposureInfo, MaskedImage, TemplateTile

STAGE = "read_instcal"
CONVERT_STAGE = "instcal"
"""Where a CCD the reader accepted but the pipeline cannot convert is reported."""

INSTCAL_PROCTYPE = "instcal"
"""PROCTYPE of a CP InstCal product's primary header (lower case)."""

CP_DQ_CODES: dict[int, int] = {
    1: int(MaskBit.BAD),          # detector bad pixel (BPM)
    2: int(MaskBit.NO_DATA),      # no value
    3: int(MaskBit.SAT),          # saturated
    4: int(MaskBit.SAT),          # bleed trail
    5: int(MaskBit.CR),           # cosmic ray
    6: int(MaskBit.BAD),          # low weight
    7: int(MaskBit.SUSPECT),      # difference detection (transient in a multi-exposure median)
    8: int(MaskBit.BAD),          # long streak (satellite)
}
"""CP data-quality code (CP >= 3.5, as in legacypipe's ``remap_dq_cp_codes``) -> MaskBit bits."""


@dataclass(frozen=True)
class InstCalCcd:
    """One CCD of a CP InstCal exposure.

    Attributes
    ----------
    masked : MaskedImage
        (ny, nx) float32 image (CP ADU, sky not subtracted), int32 MaskBit mask, float32 variance (ADU^2;
        ``inf`` where the weight is 0, with NO_DATA set).
    wcs : astropy.wcs.WCS
        The CP TPV WCS of the extension (0-based through ``pixel_to_world``).
    info : ExposureInfo
        From the primary header.
    ccdnum : int
    detpos : str
    header : astropy.io.fits.Header
        The image extension header (FWHM in pixels, SATURATE, GAINA/B, AVSKY, AVSIG...).
    primary : astropy.io.fits.Header
        The primary header (exposure keywords; MAGZERO).
    """

    masked: MaskedImage
    wcs: WCS
    info: ExposureInfo
    ccdnum: int
    detpos: str
    header: fits.Header
    primary: fits.Header = dataclasses.field(default_factory=fits.Header)

    @property
    def saturation_adu(self) -> float:
        """SATURATE of the extension (ADU), ``inf`` when absent."""
        return float(self.header.get("SATURATE", np.inf))

    @property
    def fwhm_pix(self) -> float:
        """CP median FWHM (pixels), NaN when absent."""
        return float(self.header.get("FWHM", np.nan))

    @property
    def gain(self) -> float:
        """Electrons per CP ADU: the mean of GAINA and GAINB (the CP image is flat-fielded, one gain across
        both amplifiers; ``AVSIG`` ~ sqrt(``AVSKY`` * gain) / gain), else ARAWGAIN.

        Raises
        ------
        InputError
            No positive, finite gain in the header.
        """
        h = self.header
        gains = [h.get(k) for k in ("GAINA", "GAINB")]
        values = [g for g in gains if g is not None] or [h.get("ARAWGAIN")]
        try:
            gain = float(np.mean([float(g) for g in values if g is not None]))
        except (TypeError, ValueError) as err:
            raise InputError(f"CCD {self.ccdnum}: gain keywords {values} are not numbers", stage=CONVERT_STAGE) from err
        if not (np.isfinite(gain) and 0.0 < gain < 100.0):
            raise InputError(f"CCD {self.ccdnum}: no usable gain (GAINA/GAINB/ARAWGAIN = {values})",
                             stage=CONVERT_STAGE)
        return gain

    @property
    def cp_zero_point(self) -> float:
        """The CP's zero point as an AB magnitude of 1 electron (``MAGZERO`` is one of 1 ADU in the exposure:
        MAGZERO + 2.5 log10(gain)); NaN when the header has none."""
        for h in (self.header, self.primary):
            if h.get("MAGZERO") is not None:
                return float(h["MAGZERO"]) + 2.5 * float(np.log10(self.gain))
        return float("nan")


def remap_dq(dq: np.ndarray) -> np.ndarray:
    """CP data-quality codes (int, (ny, nx)) -> int32 MaskBit plane; unknown non-zero codes become BAD."""
    dq = np.asarray(dq)
    lut = np.full(16, int(MaskBit.BAD), dtype=np.int32)
    lut[0] = 0
    for code, bits in CP_DQ_CODES.items():
        lut[code] = bits
    codes = np.clip(dq.astype(np.int64), 0, 15)
    return lut[codes]


def check_instcal_primary(primary: fits.Header, *, name: str = "InstCal") -> None:
    """Refuse a primary header that is not a CP InstCal product's (``PROCTYPE``, when present, is ``InstCal``:
    a raw named as an InstCal image is refused before its pixels are read).

    Raises
    ------
    InputError
        ``stage="read_instcal"``.
    """
    proctype = str(primary.get("PROCTYPE", INSTCAL_PROCTYPE)).strip().lower()
    if proctype != INSTCAL_PROCTYPE:
        raise InputError(f"{name}: PROCTYPE = {primary.get('PROCTYPE')!r}, not a CP InstCal product", stage=STAGE)


def instcal_ccd_from_planes(image: np.ndarray, weight: np.ndarray, dq: np.ndarray, header: fits.Header,
                            primary: fits.Header, *, name: str = "InstCal") -> InstCalCcd:
    """One CCD of a CP InstCal exposure from its three planes and headers (as the shell read them).

    Parameters
    ----------
    image, weight, dq : numpy.ndarray
        (ny, nx) CP image (ADU), inverse-variance weight (ADU^-2) and data-quality codes.
    header, primary : astropy.io.fits.Header
        The image extension's header and the primary header.
    name : str
        What to call the product in messages (its file name).

    Raises
    ------
    InputError
        Planes of different shapes; image all NaN; not DECam; unusable WCS.
    """
    if not (image.shape == weight.shape == dq.shape):
        raise InputError(f"{name}: image {image.shape}, weight {weight.shape} and mask {dq.shape} differ",
                         stage=STAGE)
    if not np.isfinite(image).any():
        raise InputError(f"{name}: image is all NaN", stage=STAGE)
    sample = image[::37, ::29]
    if image.size > 100 and np.nanmax(sample) == np.nanmin(sample):
        raise InputError(f"{name}: image is constant (garbled)", stage=STAGE)
    check_instcal_primary(primary, name=name)
    try:
        info = read_exposure_info(primary)
    except InputError as exc:
        raise InputError(f"{name}: {exc}", stage=STAGE) from exc
    mask = remap_dq(dq)
    good_w = np.isfinite(weight) & (weight > 0)
    variance = np.where(good_w, 1.0 / np.where(good_w, weight, 1.0), np.inf).astype(np.float32)
    # the CP zeroes the weight of flagged pixels: NO_DATA only where no DQ code says why
    no_data = ~(good_w & np.isfinite(image)) & (mask == 0)
    mask |= np.where(no_data, int(MaskBit.NO_DATA), 0).astype(np.int32)
    image = np.where(np.isfinite(image), image, np.float32(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{name}: unusable WCS: {exc}", stage=STAGE) from exc
    if not wcs.has_celestial:
        raise InputError(f"{name}: no celestial WCS", stage=STAGE)
    ccdnum = header.get("CCDNUM")
    detpos = str(header.get("DETPOS", header.get("EXTNAME", ""))).strip()
    return InstCalCcd(masked=MaskedImage(image=image, mask=mask.astype(np.int32), variance=variance),
                      wcs=wcs, info=info, ccdnum=int(ccdnum) if ccdnum is not None else -1, detpos=detpos,
                      header=header, primary=primary)


@dataclass(frozen=True)
class InstCalInputs:
    """Everything the per-CCD pipeline needs for a CP InstCal CCD (what :class:`pipeline.types.CcdInputs` is
    for a raw): no calibration frames, the CP applied them.

    Attributes
    ----------
    instcal : InstCalCcd
    refcat : Table
        Reference stars overlapping the CCD (ref_id, ra, dec, <band>_mag).
    template_tiles : list of TemplateTile
    dia_objects, dia_sources, dia_forced_sources : Table
        APDB region data (see :class:`streamer.apdb.base.RegionData`).
    reliability_model : ReliabilityModel or None
        As :class:`pipeline.types.CcdInputs`'s.
    """

    instcal: InstCalCcd
    refcat: Table
    template_tiles: list[TemplateTile]
    dia_objects: Table
    dia_sources: Table
    dia_forced_sources: Table
    reliability_model: ReliabilityModel | None = None


def instcal_footprint(ccd: InstCalCcd, margin_deg: float = 0.02) -> tuple[float, float, float]:
    """Centre and radius (deg) of the CCD's sky footprint plus a margin, from its TPV WCS (as
    :func:`pipeline.decam.header.ccd_footprint` is for a raw)."""
    ny, nx = ccd.masked.image.shape
    ra, dec = ccd.wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    return float(ra[0]), float(dec[0]), CCD_HALF_DIAGONAL_DEG + margin_deg


def tpv_field_angles(wcs: WCS) -> CameraModel:
    """The CP's TPV WCS as a camera model: pixel -> gnomonic field angles (radians) about its reference point
    (the boresight), for :func:`pipeline.astrometry.fit_wcs` to fit only a low-order map on top of it."""
    tangent = tangent_plane(np.asarray(wcs.wcs.crval, float))

    def field_angles(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ra, dec = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        xi, eta = tangent.wcs_world2pix(ra, dec, 0)
        return np.radians(xi), np.radians(eta)

    return field_angles


def instcal_electrons(ccd: InstCalCcd, *, config: IsrConfig = IsrConfig()) -> MaskedImage:
    """The CP image as ISR's output: image and variance in electrons (sky included), MaskBit mask.

    Parameters
    ----------
    ccd : InstCalCcd
    config : IsrConfig
        ``suspect_fraction`` of ``SATURATE`` marks SUSPECT pixels; ``do_cosmic_rays`` and the ``cr_*`` options
        find the cosmic rays the CP missed (as :func:`pipeline.isr.run_isr`).

    Returns
    -------
    MaskedImage
        Image times the gain; variance = gain^2 / weight + (image - background) in electrons, at least a
        quarter of the sky's (the CP weight holds sky and read noise only); pixels without weight get the
        median sky variance (they are masked). The CP's CR pixels are interpolated (CR | INTRP).

    Raises
    ------
    InputError
        No usable gain, a SATURATE that is not a positive level, or no pixel with a positive weight
        (``stage="instcal"``).
    """
    gain = ccd.gain
    saturation = ccd.saturation_adu
    if np.isnan(saturation) or saturation <= 0:
        raise InputError(f"CCD {ccd.ccdnum}: SATURATE = {saturation!r} is not a saturation level",
                         stage=CONVERT_STAGE)
    m = ccd.masked
    weighted = np.isfinite(m.variance)
    if not weighted.any():
        raise InputError(f"CCD {ccd.ccdnum}: no pixel has a positive weight", stage=CONVERT_STAGE)
    mask = m.mask.astype(np.int32, copy=True)
    saturated = m.image >= np.float32(saturation)
    np.bitwise_or(mask, np.int32(MaskBit.SAT), out=mask, where=saturated)
    suspect = (m.image >= np.float32(config.suspect_fraction * saturation)) & ~saturated
    np.bitwise_or(mask, np.int32(MaskBit.SUSPECT), out=mask, where=suspect)
    image = m.image.astype(np.float32) * np.float32(gain)
    sky_variance = np.where(weighted, m.variance, np.float32(np.median(m.variance[weighted]))) \
        .astype(np.float32) * np.float32(gain**2)
    background, _ = estimate_background(image, mask)
    variance = np.maximum(sky_variance + (image - background), np.float32(0.25) * sky_variance)
    image = _interpolated_cp_cosmic_rays(image, mask)
    mask = np.where((mask & int(MaskBit.CR)) != 0, mask | int(MaskBit.INTRP), mask).astype(np.int32)
    if config.do_cosmic_rays:
        image, mask = mask_cosmic_rays(image, variance, mask, config=config)
    return MaskedImage(image=image, mask=mask, variance=variance.astype(np.float32))


def _interpolated_cp_cosmic_rays(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the pixels the CP flagged as cosmic rays replaced by the median of their usable
    neighbours (7x7), as ISR fills its own."""
    iy, ix = np.nonzero((mask & int(MaskBit.CR)) != 0)
    if iy.size == 0:
        return image
    work = np.where((mask & int(UNUSABLE)) != 0, np.float32(np.nan), image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all neighbours masked: filled with 0 below
        fill = neighbourhood_median(work, iy, ix, half=3)
    out = image.copy()
    out[iy, ix] = np.where(np.isfinite(fill), fill, np.float32(0.0))
    return out


__all__ = ["CONVERT_STAGE", "CP_DQ_CODES", "InstCalCcd", "InstCalInputs", "check_instcal_primary",
           "instcal_ccd_from_planes",
           "instcal_electrons", "instcal_footprint", "remap_dq", "tpv_field_angles"]
