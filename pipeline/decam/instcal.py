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

Every failure raises :class:`pipeline.errors.InputError` with ``stage="read_instcal"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from pipeline.decam.header import read_exposure_info
from pipeline.errors import InputError
from pipeline.masks import MaskBit
from pipeline.types import ExposureInfo, MaskedImage

STAGE = "read_instcal"

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
    """

    masked: MaskedImage
    wcs: WCS
    info: ExposureInfo
    ccdnum: int
    detpos: str
    header: fits.Header

    @property
    def saturation_adu(self) -> float:
        """SATURATE of the extension (ADU), ``inf`` when absent."""
        return float(self.header.get("SATURATE", np.inf))

    @property
    def fwhm_pix(self) -> float:
        """CP median FWHM (pixels), NaN when absent."""
        return float(self.header.get("FWHM", np.nan))


def remap_dq(dq: np.ndarray) -> np.ndarray:
    """CP data-quality codes (int, (ny, nx)) -> int32 MaskBit plane; unknown non-zero codes become BAD."""
    dq = np.asarray(dq)
    lut = np.full(16, int(MaskBit.BAD), dtype=np.int32)
    lut[0] = 0
    for code, bits in CP_DQ_CODES.items():
        lut[code] = bits
    codes = np.clip(dq.astype(np.int64), 0, 15)
    return lut[codes]


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
                      header=header)


__all__ = ["CP_DQ_CODES", "InstCalCcd", "instcal_ccd_from_planes", "remap_dq"]
