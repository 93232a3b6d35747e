"""Reading raw DECam exposures: the primary header and one CCD extension, plain or fpack.

A raw exposure is a multi-extension FITS file (plain or fpack ``.fits.fz``) with an empty primary HDU and
one (4146, 2160) int16 BZERO=32768 extension per CCD, in no particular order: CCDs are found by their
``CCDNUM`` header keyword. Every failure to read a usable CCD raises :class:`pipeline.errors.InputError`
with ``stage="read_raw"``. Header translation is :mod:`pipeline.decam.header`'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from pipeline.decam.camera import RAW_SHAPE
from pipeline.decam.header import STAGE, amp_geometry, read_exposure_info
from pipeline.errors import InputError
from pipeline.types import RawCcd


def _open(path) -> fits.HDUList:
    p = Path(path)
    if not p.exists():
        raise InputError(f"raw file {p} does not exist", stage=STAGE)
    if not p.is_file():
        raise InputError(f"raw path {p} is not a file", stage=STAGE)
    try:
        return fits.open(p, memmap=True, lazy_load_hdus=True, mode="readonly", do_not_scale_image_data=True)
    except Exception as exc:  # noqa: BLE001 - astropy raises many types on garbage
        raise InputError(f"{p} is not a readable FITS file: {exc}", stage=STAGE) from exc


def _ext_ccdnum(hdu) -> int | None:
    v = hdu.header.get("CCDNUM")
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def list_ccds(path) -> list[int]:
    """CCDNUMs of the image extensions of a raw file, in file order."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        hdul = _open(path)
        try:
            out = []
            for hdu in hdul[1:]:
                n = _ext_ccdnum(hdu)
                if n is not None:
                    out.append(n)
            return out
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: corrupt FITS structure: {exc}", stage=STAGE) from exc
        finally:
            hdul.close()


def read_raw_ccd(path, ccdnum: int) -> RawCcd:
    """Read one CCD (found by its CCDNUM header keyword) of a raw DECam exposure, plain or fpack.

    Returns float32 ADU pixels (4146, 2160) in file orientation, BZERO applied. Only the requested
    extension's data is read (memory-mapped / lazily decompressed).

    Raises
    ------
    HeaderError
        A header that cannot describe a science exposure (:func:`pipeline.decam.header.check_science_header`,
        :func:`pipeline.decam.header.check_amp_geometry`), checked before the pixels are read.
    InputError
        Missing file; not FITS, truncated or corrupt; INSTRUME not DECam; CCD absent; wrong shape; data all
        NaN or constant (garbled).
    """
    ccdnum = int(ccdnum)
    with warnings.catch_warnings():
        # astropy only warns on truncation; make it an error
        warnings.simplefilter("error", AstropyUserWarning)
        hdul = _open(path)
        try:
            info, target = _exposure_and_extension(hdul, path, ccdnum)
            header = target.header.copy()
            shape = (header.get("NAXIS2"), header.get("NAXIS1"))
            if shape != RAW_SHAPE:
                raise InputError(f"{path}: CCD {ccdnum} has shape {shape}, expected {RAW_SHAPE}", stage=STAGE)
            amp_geometry(header)  # section keywords checked before the pixels are read
            pixels = _scaled_pixels(target, header, path, ccdnum)
        finally:
            hdul.close()
    _check_pixels(pixels, path, ccdnum)
    detpos = str(header.get("DETPOS", header.get("EXTNAME", ""))).strip()
    return RawCcd(ccdnum=ccdnum, detpos=detpos, pixels=pixels, header=header, info=info)


def _exposure_and_extension(hdul: fits.HDUList, path, ccdnum: int):
    """The exposure facts of the primary header (checked) and the extension of CCD ``ccdnum``."""
    try:
        info = read_exposure_info(hdul[0].header)
        target = next((hdu for hdu in hdul[1:] if _ext_ccdnum(hdu) == ccdnum), None)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: corrupt or truncated FITS: {exc}", stage=STAGE) from exc
    if target is None:
        raise InputError(f"{path}: no extension with CCDNUM = {ccdnum}", stage=STAGE)
    return info, target


def _scaled_pixels(hdu, header: fits.Header, path, ccdnum: int) -> np.ndarray:
    """The extension's pixels as float32 ADU, BSCALE and BZERO applied (scaling is off to allow memory maps)."""
    try:
        data = hdu.data
        if data is None:
            raise InputError(f"{path}: CCD {ccdnum} extension has no data", stage=STAGE)
        bscale = float(header.get("BSCALE", 1.0))
        bzero = float(header.get("BZERO", 0.0))
        pixels = np.array(data, dtype=np.float32)  # copy out of the memmap
        if bscale != 1.0:
            pixels *= np.float32(bscale)
        if bzero != 0.0:
            pixels += np.float32(bzero)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot read CCD {ccdnum} data (truncated or corrupt): {exc}",
                         stage=STAGE) from exc
    return pixels


def _check_pixels(pixels: np.ndarray, path, ccdnum: int) -> None:
    """Refuse pixels of the wrong shape, all NaN, or constant (garbled)."""
    if pixels.shape != RAW_SHAPE:
        raise InputError(f"{path}: CCD {ccdnum} has shape {pixels.shape}, expected {RAW_SHAPE}", stage=STAGE)
    if not np.isfinite(pixels).any():
        raise InputError(f"{path}: CCD {ccdnum} data are all NaN", stage=STAGE)
    sample = pixels[::37, ::29]
    if np.nanmax(sample) == np.nanmin(sample):
        raise InputError(f"{path}: CCD {ccdnum} data are constant (garbled)", stage=STAGE)


def read_primary_header(path) -> fits.Header:
    """The primary header of a raw file (InputError if unreadable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        hdul = _open(path)
        try:
            return hdul[0].header.copy()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: corrupt FITS: {exc}", stage=STAGE) from exc
        finally:
            hdul.close()


__all__ = ["list_ccds", "read_primary_header", "read_raw_ccd"]
