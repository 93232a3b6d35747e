"""Reading raw DECam exposures: the primary header, one CCD extension, its amplifier geometry.

A raw exposure is a multi-extension FITS file (plain or fpack ``.fits.fz``) with an empty primary HDU and
one (4146, 2160) int16 BZERO=32768 extension per CCD, in no particular order: CCDs are found by their
``CCDNUM`` header keyword. Every failure to read a usable CCD raises :class:`pipeline.errors.InputError`
with ``stage="read_raw"``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from pipeline.errors import InputError
from pipeline.types import ExposureInfo, RawCcd

from .camera import CCD_SHAPE, RAW_SHAPE

STAGE = "read_raw"

_SECTION_RE = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


def section_bounds(section: str) -> tuple[int, int, int, int]:
    """The four 1-based numbers ``x1, x2, y1, y2`` of a FITS section ``'[x1:x2,y1:y2]'`` (order kept)."""
    m = _SECTION_RE.match(str(section))
    if not m:
        raise InputError(f"malformed FITS section {section!r}", stage=STAGE)
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    return x1, x2, y1, y2


def parse_section(section: str) -> tuple[slice, slice]:
    """``'[57:1080,51:4146]'`` -> ``(slice(50, 4146), slice(56, 1080))``: numpy ``[y, x]`` slices, 0-based.

    Reversed ranges (e.g. AMPSEC ``'[2048:1025,4096:1]'``) give the same ascending slices; use
    :func:`section_bounds` to see the direction.
    """
    x1, x2, y1, y2 = section_bounds(section)
    return slice(min(y1, y2) - 1, max(y1, y2)), slice(min(x1, x2) - 1, max(x1, x2))


@dataclass(frozen=True)
class AmpGeometry:
    """Where one amplifier's pixels are in the raw array and in the trimmed CCD.

    All slices are numpy ``(slice_y, slice_x)`` 0-based, ``data``, ``overscan`` (serial, BIASSEC),
    ``parallel_overscan`` (POSTSEC, file rows 1..50) and ``prescan`` index the raw (4146, 2160) array;
    ``ccd`` indexes the trimmed (4096, 2048) CCD. ``flip_x``/``flip_y``: whether the data must be reversed
    to go from file to CCD orientation (False for DECam raws: the file is already in CCD orientation).
    ``readout_reversed_x``: the amplifier reads its rows from high to low x (AMPSEC reversed), i.e. the
    serial register's first pixel is at the high-x edge of its half (amp on the right).
    """

    name: str
    data: tuple[slice, slice]
    overscan: tuple[slice, slice]
    parallel_overscan: tuple[slice, slice]
    prescan: tuple[slice, slice]
    ccd: tuple[slice, slice]
    flip_x: bool
    flip_y: bool
    readout_reversed_x: bool
    gain: float
    read_noise: float
    saturation: float


def amp_geometry(header: fits.Header) -> dict[str, AmpGeometry]:
    """Geometry and electronics of amplifiers ``'A'`` and ``'B'`` from a raw CCD extension header.

    Uses DATASEC<a>, BIASSEC<a>, POSTSEC<a>, PRESEC<a>, CCDSEC<a>, AMPSEC<a>, GAIN<a>, RDNOISE<a>, SATURAT<a>.
    Note that which amplifier is on the left differs between CCDs (S CCDs: B left; N CCDs: A left): always
    go through this function rather than assuming.
    """
    out = {}
    for a in ("A", "B"):
        try:
            dx1, dx2, dy1, dy2 = section_bounds(header[f"DATASEC{a}"])
            cx1, cx2, cy1, cy2 = section_bounds(header[f"CCDSEC{a}"])
            ax1, ax2, _, _ = section_bounds(header.get(f"AMPSEC{a}", header[f"CCDSEC{a}"]))
            geom = AmpGeometry(
                name=a,
                data=parse_section(header[f"DATASEC{a}"]),
                overscan=parse_section(header[f"BIASSEC{a}"]),
                parallel_overscan=parse_section(header[f"POSTSEC{a}"]),
                prescan=parse_section(header[f"PRESEC{a}"]),
                ccd=parse_section(header[f"CCDSEC{a}"]),
                flip_x=(dx2 - dx1) * (cx2 - cx1) < 0,
                flip_y=(dy2 - dy1) * (cy2 - cy1) < 0,
                readout_reversed_x=ax1 > ax2,
                gain=float(header[f"GAIN{a}"]),
                read_noise=float(header[f"RDNOISE{a}"]),
                saturation=float(header[f"SATURAT{a}"]),
            )
        except KeyError as exc:
            raise InputError(f"raw CCD header lacks amplifier keyword {exc}", stage=STAGE) from exc
        out[a] = geom
    return out


def trim_slices(header: fits.Header) -> tuple[slice, slice]:
    """Slices of the raw array giving the trimmed CCD (TRIMSEC, usually ``[50:4146, 56:2104]``)."""
    return parse_section(header.get("TRIMSEC", header.get("DATASEC", "[57:2104,51:4146]")))


# ------------------------------------------------------------------------------------------ headers
def _sexagesimal(value, *, hours: bool) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(Angle(str(value).strip(), unit="hourangle" if hours else "deg").deg)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot parse {'RA' if hours else 'DEC'} value {value!r}", stage=STAGE) from exc


def read_exposure_info(primary_header: fits.Header) -> ExposureInfo:
    """Translate a DECam primary header into :class:`ExposureInfo`.

    band = first word of FILTER; midpoint = MJD-OBS + EXPTIME/2 (MJD-OBS is the shutter opening, taken as
    TAI); RA/DEC are the sexagesimal target coordinates (falling back on TELRA/TELDEC).
    """
    h = primary_header
    try:
        if str(h.get("INSTRUME", "")).strip().lower() != "decam":
            raise InputError(f"INSTRUME is {h.get('INSTRUME')!r}, not DECam", stage=STAGE)
        expnum = int(h["EXPNUM"])
        exptime = float(h["EXPTIME"])
        mjd_obs = float(h["MJD-OBS"])
        band = str(h["FILTER"]).split()[0] if str(h["FILTER"]).strip() else ""
        ra = _sexagesimal(h["RA"] if "RA" in h else h["TELRA"], hours=True)
        dec = _sexagesimal(h["DEC"] if "DEC" in h else h["TELDEC"], hours=False)
        airmass = float(h.get("AIRMASS", np.nan))
    except KeyError as exc:
        raise InputError(f"primary header lacks keyword {exc}", stage=STAGE) from exc
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"bad primary header value: {exc}", stage=STAGE) from exc
    if not band:
        raise InputError("FILTER keyword is empty", stage=STAGE)
    return ExposureInfo(expnum=expnum, mjd_mid_tai=mjd_obs + exptime / 2.0 / 86400.0, band=band,
                        exptime_s=exptime, airmass=airmass, ra_deg=ra, dec_deg=dec)


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
            try:
                primary = hdul[0].header
                info = read_exposure_info(primary)
                target = None
                for hdu in hdul[1:]:
                    if _ext_ccdnum(hdu) == ccdnum:
                        target = hdu
                        break
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"{path}: corrupt or truncated FITS: {exc}", stage=STAGE) from exc
            if target is None:
                raise InputError(f"{path}: no extension with CCDNUM = {ccdnum}", stage=STAGE)
            header = target.header.copy()
            try:
                data = target.data
                if data is None:
                    raise InputError(f"{path}: CCD {ccdnum} extension has no data", stage=STAGE)
                # scaling was disabled to allow memory mapping: apply BSCALE/BZERO here
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
        finally:
            hdul.close()
    if pixels.shape != RAW_SHAPE:
        raise InputError(f"{path}: CCD {ccdnum} has shape {pixels.shape}, expected {RAW_SHAPE}", stage=STAGE)
    finite = np.isfinite(pixels)
    if not finite.any():
        raise InputError(f"{path}: CCD {ccdnum} data are all NaN", stage=STAGE)
    sample = pixels[::37, ::29]
    if np.nanmax(sample) == np.nanmin(sample):
        raise InputError(f"{path}: CCD {ccdnum} data are constant (garbled)", stage=STAGE)
    detpos = str(header.get("DETPOS", header.get("EXTNAME", ""))).strip()
    return RawCcd(ccdnum=ccdnum, detpos=detpos, pixels=pixels, header=header, info=info)


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


__all__ = ["AmpGeometry", "CCD_SHAPE", "RAW_SHAPE", "amp_geometry", "list_ccds", "parse_section",
           "read_exposure_info", "read_primary_header", "read_raw_ccd", "section_bounds", "trim_slices"]
