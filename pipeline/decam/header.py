"""DECam header translation: amplifier geometry, trim sections, exposure facts, the rough WCS, a CCD's footprint.

Pure: every function takes an :class:`astropy.io.fits.Header` (as the shell read it) and returns numbers,
slices or types. The one place that knows DECam's keywords; failures raise
:class:`pipeline.errors.InputError` with ``stage="read_raw"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from pipeline.decam.camera import CCD_SHAPE, RAW_SHAPE
from pipeline.errors import HeaderError, InputError
from pipeline.types import ExposureInfo

STAGE = "read_raw"
WCS_STAGE = "calibrate"
"""Where an unusable header WCS is reported (it is first needed to calibrate)."""

CHECK_STAGE = "check_header"
"""Where a header that cannot describe a science exposure is reported (before any pixel is read)."""

SCIENCE_OBSTYPES = frozenset({"object", "standard"})
"""OBSTYPE values of science exposures (DECam's ``zero``, ``dark``, ``dome flat``, ``focus``... are not)."""

MAX_EXPOSURE_TIME_S = 3600.0
"""Longest plausible DECam exposure; a longer EXPTIME is a corrupt header."""

DECAM_FIRST_MJD = 56170.0
"""2012-09-01, before DECam's first light: an earlier MJD-OBS is a corrupt header (1970 is a typical one)."""
DECAM_LAST_MJD = 88069.0
"""2100-01-01: a later MJD-OBS is a corrupt header."""

MAX_DATE_OBS_DISAGREEMENT_S = 1.0
"""DATE-OBS and MJD-OBS state the same instant; beyond this they contradict each other."""

MAX_EVENT_TIME_OFFSET_S = 60.0
"""An exposure-ready event's midpoint and the header's (MJD-OBS + EXPTIME/2) may differ by this much (time
scales and rounding); more means the event and the file describe different exposures."""

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
    check_amp_geometry(out)
    return out


def _span(section: tuple[slice, slice]) -> tuple[int, int]:
    return section[0].stop - section[0].start, section[1].stop - section[1].start


def _fits(section: tuple[slice, slice], shape: tuple[int, int]) -> bool:
    return all(0 <= axis.start < axis.stop <= size for axis, size in zip(section, shape))


def check_amp_geometry(amps: dict[str, AmpGeometry], raw_shape: tuple[int, int] = RAW_SHAPE) -> None:
    """Refuse section keywords that do not fit the arrays, and absurd amplifier electronics.

    Every raw section (DATASEC, BIASSEC, POSTSEC, PRESEC) must lie inside the ``raw_shape`` array, every
    CCDSEC inside the trimmed CCD, each DATASEC must be the size of its CCDSEC, and the amplifiers' CCDSECs
    must tile the CCD; GAIN and SATURAT must be positive and RDNOISE not negative.

    Raises
    ------
    HeaderError
        Naming the amplifier, the keyword and its value.
    """
    for name, amp in amps.items():
        for keyword, section in (("DATASEC", amp.data), ("BIASSEC", amp.overscan),
                                 ("POSTSEC", amp.parallel_overscan), ("PRESEC", amp.prescan)):
            if not _fits(section, raw_shape):
                raise _header_fault(f"{keyword}{name} = {section} does not fit the {raw_shape} raw array")
        if not _fits(amp.ccd, CCD_SHAPE):
            raise _header_fault(f"CCDSEC{name} = {amp.ccd} does not fit the {CCD_SHAPE} CCD")
        if _span(amp.data) != _span(amp.ccd):
            raise _header_fault(f"DATASEC{name} ({_span(amp.data)}) and CCDSEC{name} ({_span(amp.ccd)}) differ in size")
        if not (np.isfinite(amp.gain) and amp.gain > 0):
            raise _header_fault(f"GAIN{name} = {amp.gain!r}: gain not positive")
        if not (np.isfinite(amp.saturation) and amp.saturation > 0):
            raise _header_fault(f"SATURAT{name} = {amp.saturation!r}: saturation not positive")
        if not (np.isfinite(amp.read_noise) and amp.read_noise >= 0):
            raise _header_fault(f"RDNOISE{name} = {amp.read_noise!r}: read noise negative")
    areas = sum(int(np.prod(_span(amp.ccd))) for amp in amps.values())
    overlaps = any(_overlap(a.ccd, b.ccd) for i, a in enumerate(amps.values()) for b in list(amps.values())[i + 1:])
    if overlaps or areas != CCD_SHAPE[0] * CCD_SHAPE[1]:
        raise _header_fault(f"the amplifiers' CCDSECs ({', '.join(f'{n}: {a.ccd}' for n, a in amps.items())}) "
                            "do not tile the CCD")


def _overlap(first: tuple[slice, slice], second: tuple[slice, slice]) -> bool:
    return all(a.start < b.stop and b.start < a.stop for a, b in zip(first, second))


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
    check_science_header(h, exptime_s=exptime, mjd_obs=mjd_obs, dec_deg=dec)
    return ExposureInfo(expnum=expnum, mjd_mid_tai=mjd_obs + exptime / 2.0 / 86400.0, band=band,
                        exptime_s=exptime, airmass=airmass, ra_deg=ra, dec_deg=dec)


def _header_fault(message: str) -> HeaderError:
    return HeaderError(message, stage=CHECK_STAGE)


def check_science_header(primary_header: fits.Header, *, exptime_s: float, mjd_obs: float, dec_deg: float) -> None:
    """Refuse a primary header that cannot describe a science exposure (before any pixel is read).

    Raises
    ------
    HeaderError
        OBSTYPE not a science type; EXPTIME not positive, not finite or longer than
        :data:`MAX_EXPOSURE_TIME_S`; MJD-OBS outside DECam's life; DATE-OBS contradicting MJD-OBS; a
        declination beyond the poles.
    """
    h = primary_header
    obstype = str(h.get("OBSTYPE", "object")).strip().lower()
    if obstype not in SCIENCE_OBSTYPES:
        raise _header_fault(f"OBSTYPE = {h.get('OBSTYPE')!r} is not a science exposure "
                            f"({', '.join(sorted(SCIENCE_OBSTYPES))})")
    if not np.isfinite(exptime_s) or exptime_s <= 0.0:
        raise _header_fault(f"EXPTIME = {exptime_s!r}: exposure time not positive")
    if exptime_s > MAX_EXPOSURE_TIME_S:
        raise _header_fault(f"EXPTIME = {exptime_s!r} s: longer than any DECam exposure ({MAX_EXPOSURE_TIME_S:g} s)")
    if not np.isfinite(mjd_obs) or not DECAM_FIRST_MJD <= mjd_obs <= DECAM_LAST_MJD:
        raise _header_fault(f"MJD-OBS = {mjd_obs!r}: outside DECam's life (MJD {DECAM_FIRST_MJD:g} to "
                            f"{DECAM_LAST_MJD:g})")
    if "DATE-OBS" in h:
        try:
            date_mjd = float(Time(str(h["DATE-OBS"]).strip(), format="isot", scale="utc").mjd)
        except ValueError as exc:
            raise _header_fault(f"DATE-OBS = {h['DATE-OBS']!r} is not an ISO time") from exc
        if abs(date_mjd - mjd_obs) * 86400.0 > MAX_DATE_OBS_DISAGREEMENT_S:
            raise _header_fault(f"DATE-OBS = {h['DATE-OBS']!r} and MJD-OBS = {mjd_obs!r} disagree by "
                                f"{abs(date_mjd - mjd_obs) * 86400.0:.0f} s")
    if not -90.0 <= dec_deg <= 90.0:
        raise _header_fault(f"DEC = {h.get('DEC', h.get('TELDEC'))!r}: declination beyond the poles")


def check_against_event(info: ExposureInfo, *, exposure_id: int, band: str, midpoint_mjd_tai: float) -> None:
    """Refuse a raw whose header describes another exposure than the exposure-ready event that names it.

    Raises
    ------
    HeaderError
        EXPNUM not the event's exposure id, FILTER not the event's band, or midpoints further apart than
        :data:`MAX_EVENT_TIME_OFFSET_S`.
    """
    if int(info.expnum) != int(exposure_id):
        raise _header_fault(f"EXPNUM = {info.expnum} but the event is for exposure {exposure_id}")
    if band and info.band != band:
        raise _header_fault(f"FILTER band {info.band!r} but the event says {band!r}")
    offset_s = abs(float(info.mjd_mid_tai) - float(midpoint_mjd_tai)) * 86400.0
    if not offset_s <= MAX_EVENT_TIME_OFFSET_S:
        raise _header_fault(f"the header's midpoint (MJD {info.mjd_mid_tai:.6f}) is {offset_s:.0f} s from the "
                            f"event's (MJD {midpoint_mjd_tai:.6f}); at most {MAX_EVENT_TIME_OFFSET_S:g} s")



# ------------------------------------------------------------------------------------------ WCS
def header_wcs(raw_header) -> WCS:
    """Rough WCS of the trimmed, assembled CCD from the raw extension header."""
    try:
        wcs = WCS(raw_header, relax=True, fix=False)
    except Exception as err:  # astropy raises several unrelated types for broken WCS keywords
        raise InputError(f"raw header WCS unusable: {err}", stage=WCS_STAGE) from err
    if not wcs.has_celestial:
        raise InputError("raw header has no celestial WCS", stage=WCS_STAGE)
    wcs = wcs.celestial
    # The raw header WCS refers to raw-file pixels; shift it to the trimmed, assembled CCD.
    x_offset, y_offset = trim_offset(raw_header)
    wcs.wcs.crpix = wcs.wcs.crpix - np.array([x_offset, y_offset])
    return wcs


def trim_offset(raw_header) -> tuple[int, int]:
    """(x, y) pixel offset of the trimmed CCD inside the raw file, from DATASEC (or LTV1/LTV2)."""
    if "LTV1" in raw_header and "LTV2" in raw_header:
        return -int(raw_header["LTV1"]) if raw_header["LTV1"] < 0 else int(raw_header["LTV1"]), \
            -int(raw_header["LTV2"]) if raw_header["LTV2"] < 0 else int(raw_header["LTV2"])
    sec = str(raw_header.get("DATASEC", "[1:2048,1:4096]")).strip("[]")
    xs, ys = sec.split(",")
    return int(xs.split(":")[0]) - 1, int(ys.split(":")[0]) - 1


CCD_HALF_DIAGONAL_DEG = 0.17
"""Half the diagonal of a DECam CCD (2048 x 4096 pixels at 0.263 arcsec)."""


def ccd_footprint(raw_header: fits.Header, margin_deg: float = 0.02) -> tuple[float, float, float]:
    """Centre and radius (deg) of a CCD's sky footprint plus a margin, from its header WCS."""
    wcs = header_wcs(raw_header)
    ny, nx = CCD_SHAPE
    ra, dec = wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    return float(ra[0]), float(dec[0]), CCD_HALF_DIAGONAL_DEG + margin_deg


__all__ = ["AmpGeometry", "CCD_HALF_DIAGONAL_DEG", "amp_geometry", "ccd_footprint", "header_wcs", "parse_section",
           "read_exposure_info", "section_bounds", "trim_offset", "trim_slices"]
