"""Reading DECam Community Pipeline (CP) InstCal products: image ``ooi``, weight ``oow``, mask ``ood``.

The CP writes one file per product, each with a primary header (the exposure's keywords) and one image
extension per CCD (found here by ``CCDNUM``, falling back on ``EXTNAME``/``DETPOS``), plain or fpack
(``.fits.fz``, a ``CompImageHDU``). The CP image is in ADU of the gain-normalised, flat-fielded CCD
(``AVSIG`` ~ sqrt(``AVSKY`` * gain) / gain), the weight is the inverse variance in ADU^-2, and the
data-quality mask holds CP *codes* (not bits) mapped to :class:`pipeline.masks.MaskBit` by
:data:`CP_DQ_CODES`. The WCS is TPV (``RA---TPV``); astropy/wcslib apply its PV polynomial (wcslib turns
it into a TAN projection with a sequent distortion, which is why ``wcs.wcs.ctype`` reads ``TAN``): the
PV terms shift positions by ~2.5 arcsec on a real N/S CCD, checked in ``tests/unit/test_real_cutouts.py``.

Every failure raises :class:`pipeline.errors.InputError` with ``stage="read_instcal"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from pipeline.errors import InputError
from pipeline.masks import MaskBit
from pipeline.types import ExposureInfo, MaskedImage

from .raw import read_exposure_info

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


def _find_hdu(hdul: fits.HDUList, ccd, path) -> fits.hdu.base.ExtensionHDU:
    """The extension of ``ccd`` (an int CCDNUM or a DETPOS/EXTNAME string); the only one if ``ccd`` is None."""
    exts = [h for h in hdul[1:] if getattr(h, "is_image", True) and h.header.get("NAXIS", 0) == 2]
    if ccd is None:
        if len(exts) != 1:
            raise InputError(f"{path}: {len(exts)} image extensions; name the CCD", stage=STAGE)
        return exts[0]
    for h in exts:
        if isinstance(ccd, (int, np.integer)):
            v = h.header.get("CCDNUM")
            if v is not None and int(v) == int(ccd):
                return h
        elif str(h.header.get("DETPOS", h.header.get("EXTNAME", ""))).strip() == str(ccd).strip():
            return h
    raise InputError(f"{path}: no extension for CCD {ccd!r}", stage=STAGE)


def _read_plane(path, ccd, dtype) -> tuple[np.ndarray, fits.Header, fits.Header]:
    """Pixels, extension header and primary header of one CCD of one CP product file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"InstCal file {p} does not exist", stage=STAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            with fits.open(p, memmap=False, mode="readonly") as hdul:
                hdu = _find_hdu(hdul, ccd, p)
                data = hdu.data
                if data is None:
                    raise InputError(f"{p}: CCD {ccd!r} has no data", stage=STAGE)
                return np.array(data, dtype=dtype), hdu.header.copy(), hdul[0].header.copy()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - astropy raises many types on garbage
            raise InputError(f"{p}: not a readable FITS file: {exc}", stage=STAGE) from exc


def instcal_paths(image_path) -> tuple[Path, Path, Path]:
    """The ``ooi``, ``oow`` and ``ood`` files of a CP exposure from the path of any one of them."""
    p = Path(image_path)
    name = p.name
    for tag in ("_ooi_", "_oow_", "_ood_"):
        if tag in name:
            return tuple(p.with_name(name.replace(tag, t)) for t in ("_ooi_", "_oow_", "_ood_"))  # type: ignore[return-value]
    raise InputError(f"{p.name} is not a CP InstCal name (no _ooi_/_oow_/_ood_)", stage=STAGE)


def read_instcal_ccd(image_path, ccd=None, *, weight_path=None, mask_path=None) -> InstCalCcd:
    """Read one CCD of a CP InstCal exposure (image, weight -> variance, DQ mask -> MaskBit, TPV WCS).

    Parameters
    ----------
    image_path : str or Path
        The ``ooi`` file (plain FITS or fpack).
    ccd : int or str, optional
        CCDNUM (int) or DETPOS (str, e.g. ``'S4'``); may be omitted when the file holds one CCD.
    weight_path, mask_path : str or Path, optional
        The ``oow`` and ``ood`` files; by default found by name next to ``image_path``.

    Returns
    -------
    InstCalCcd

    Raises
    ------
    InputError
        Missing, truncated or corrupt file; CCD absent; planes of different shapes; image all NaN; not
        DECam.
    """
    ooi = Path(image_path)
    if weight_path is None or mask_path is None:
        _, default_w, default_d = instcal_paths(ooi)
    oow = Path(weight_path) if weight_path is not None else default_w
    ood = Path(mask_path) if mask_path is not None else default_d
    image, header, primary = _read_plane(ooi, ccd, np.float32)
    weight, _, _ = _read_plane(oow, ccd, np.float32)
    dq, _, _ = _read_plane(ood, ccd, np.int32)
    if not (image.shape == weight.shape == dq.shape):
        raise InputError(f"{ooi.name}: image {image.shape}, weight {weight.shape} and mask {dq.shape} differ",
                         stage=STAGE)
    if not np.isfinite(image).any():
        raise InputError(f"{ooi.name}: image is all NaN", stage=STAGE)
    try:
        info = read_exposure_info(primary)
    except InputError as exc:
        raise InputError(f"{ooi.name}: {exc}", stage=STAGE) from exc
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
            raise InputError(f"{ooi.name}: unusable WCS: {exc}", stage=STAGE) from exc
    if not wcs.has_celestial:
        raise InputError(f"{ooi.name}: no celestial WCS", stage=STAGE)
    ccdnum = header.get("CCDNUM")
    detpos = str(header.get("DETPOS", header.get("EXTNAME", ""))).strip()
    return InstCalCcd(masked=MaskedImage(image=image, mask=mask.astype(np.int32), variance=variance),
                      wcs=wcs, info=info, ccdnum=int(ccdnum) if ccdnum is not None else -1, detpos=detpos,
                      header=header)


__all__ = ["CP_DQ_CODES", "InstCalCcd", "instcal_paths", "read_instcal_ccd", "remap_dq"]
