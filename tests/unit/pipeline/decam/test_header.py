"""Headers are checked before pixels: a real DECam raw header passes; each fault an archive holds is a
:class:`pipeline.errors.HeaderError` (dead-letter reason ``bad_header``) naming the keyword."""

from __future__ import annotations

import functools

import pytest
import yaml
from astropy.io import fits

from pipeline.decam.header import MAX_EVENT_TIME_OFFSET_S, amp_geometry, check_against_event, read_exposure_info
from pipeline.errors import HeaderError, InputError
from tests.helpers.reference import DECAM_REFERENCE_DIR

REAL_RAW = DECAM_REFERENCE_DIR / "headers" / "fitsheader-decam-raw_dec050441_25.yaml"
"""A real raw's primary header and one CCD extension's header, one after the other (XTENSION starts the second)."""


@functools.cache
def _real_headers() -> tuple[dict, dict]:
    lines = [line for line in REAL_RAW.read_text().splitlines() if not line.startswith("#")]
    split = next(k for k, line in enumerate(lines) if line.startswith("XTENSION:"))
    primary = yaml.safe_load("\n".join(lines[:split]))
    extension = yaml.safe_load("\n".join(lines[split:]))
    extension["NAXIS1"], extension["NAXIS2"] = extension["ZNAXIS1"], extension["ZNAXIS2"]  # the image, not the table
    return primary, extension


def _header(cards: dict, **changes) -> fits.Header:
    header = fits.Header()
    for key, value in {**cards, **changes}.items():
        if value is None:
            continue
        if len(key) <= 8 and isinstance(value, (str, int, float, bool)) and len(str(value)) < 68:
            header[key] = value
    return header


def primary(**changes) -> fits.Header:
    """The real primary header with ``changes`` (None deletes a keyword)."""
    cards = dict(_real_headers()[0])
    for key, value in changes.items():
        cards.pop(key, None)
        if value is not None:
            cards[key] = value
    return _header(cards)


def extension(**changes) -> fits.Header:
    """The real CCD extension header with ``changes``."""
    return _header(dict(_real_headers()[1]), **changes)


def test_real_headers_pass():
    info = read_exposure_info(primary())
    assert info.expnum == 177764 and info.exptime_s == 30.0 and info.band == "g"
    amps = amp_geometry(extension())
    assert set(amps) == {"A", "B"}


@pytest.mark.parametrize("changes, keyword", [
    ({"EXPTIME": 0.0}, "EXPTIME"),
    ({"EXPTIME": -30.0}, "EXPTIME"),
    ({"EXPTIME": 86400.0}, "EXPTIME"),
    ({"MJD-OBS": 40587.0, "DATE-OBS": "1970-01-01T00:00:00"}, "MJD-OBS"),
    ({"MJD-OBS": 99999.0, "DATE-OBS": None}, "MJD-OBS"),
    ({"DATE-OBS": "2019-04-02T05:06:18"}, "DATE-OBS"),
    ({"DATE-OBS": "yesterday"}, "DATE-OBS"),
    ({"OBSTYPE": "zero"}, "OBSTYPE"),
    ({"OBSTYPE": "dome flat"}, "OBSTYPE"),
    ({"OBSTYPE": "dark"}, "OBSTYPE"),
    ({"DEC": 95.0, "TELDEC": None}, "DEC"),
])
def test_primary_faults_are_named(changes, keyword):
    with pytest.raises(HeaderError, match=keyword) as err:
        read_exposure_info(primary(**changes))
    assert err.value.reason == "bad_header" and err.value.stage == "check_header"


@pytest.mark.parametrize("changes, keyword", [
    ({"DATASECA": "[1081:2204,51:4146]"}, "DATASECA"),   # past the 2160 columns of the raw
    ({"BIASSECB": "[7:56,51:5000]"}, "BIASSECB"),        # past its 4146 rows
    ({"POSTSECA": "[0:1024,1:50]"}, "POSTSECA"),         # FITS sections start at 1
    ({"CCDSECA": "[1025:2560,1:4096]"}, "CCDSECA"),      # wider than the CCD
    ({"DATASECB": "[57:1000,51:4146]"}, "DATASECB"),     # not the size of its CCDSEC
    ({"CCDSECA": "[1:1024,1:4096]", "DATASECA": "[1081:2104,51:4146]"}, "tile"),  # both amps on one half
    ({"GAINA": 0.0}, "GAINA"),
    ({"SATURATB": -1.0}, "SATURATB"),
    ({"RDNOISEA": -7.0}, "RDNOISEA"),
])
def test_section_and_electronics_faults_are_named(changes, keyword):
    with pytest.raises(HeaderError, match=keyword):
        amp_geometry(extension(**changes))


def test_missing_amplifier_keyword_is_bad_input():
    cards = dict(_real_headers()[1])
    cards.pop("DATASECA")
    with pytest.raises(InputError, match="DATASECA"):
        amp_geometry(_header(cards))


def test_event_must_describe_the_same_exposure():
    info = read_exposure_info(primary())
    check_against_event(info, exposure_id=177764, band="g", midpoint_mjd_tai=info.mjd_mid_tai + 10 / 86400)
    with pytest.raises(HeaderError, match="EXPNUM"):
        check_against_event(info, exposure_id=177765, band="g", midpoint_mjd_tai=info.mjd_mid_tai)
    with pytest.raises(HeaderError, match="FILTER"):
        check_against_event(info, exposure_id=177764, band="r", midpoint_mjd_tai=info.mjd_mid_tai)
    late = info.mjd_mid_tai + 2 * MAX_EVENT_TIME_OFFSET_S / 86400
    with pytest.raises(HeaderError, match="midpoint"):
        check_against_event(info, exposure_id=177764, band="g", midpoint_mjd_tai=late)
