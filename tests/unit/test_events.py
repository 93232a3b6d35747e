"""Tests of streamer.events.records: Avro round trips, the bad-event corpus, fan-out and work keys."""

from __future__ import annotations

import dataclasses
import io
import math

import fastavro
import pytest

from pipeline.errors import InputError
from streamer.events.records import (
    DECAM_SCIENCE_DETECTORS,
    CcdWork,
    ExposureReady,
    decode_event,
    decode_work,
    encode_event,
    encode_work,
    event_from_record,
    event_to_record,
    fan_out,
    read_event_file,
    resolve_raw_path,
    sky_cell,
    work_key,
    write_event_file,
)


def make_event(**changes) -> ExposureReady:
    ev = ExposureReady(
        event_id="DECam-00123456",
        instrument="DECam",
        exposure_id=123456,
        raw_path="raw/2024-01-01/c4d_240101_000000_ori.fits.fz",
        band="r",
        midpoint_mjd_tai=60310.1,
        shutter_close_mjd_tai=60310.1005,
        ra=150.1,
        dec=2.2,
        detectors=(1, 5, 62),
        replay=False,
    )
    return dataclasses.replace(ev, **changes)


def test_event_round_trip():
    ev = make_event()
    assert decode_event(encode_event(ev)) == ev
    ev2 = make_event(detectors=None, replay=True)
    assert decode_event(encode_event(ev2)) == ev2


def test_event_record_uses_avro_names():
    rec = event_to_record(make_event())
    assert rec["exposureId"] == 123456 and rec["rawPath"].startswith("raw/") and rec["detectors"] == [1, 5, 62]


def test_event_file_round_trip_and_deterministic(tmp_path):
    ev = make_event()
    p = write_event_file(tmp_path / "a.avro", ev)
    first = p.read_bytes()
    assert read_event_file(p) == ev
    assert decode_event(first) == ev  # decode_event also accepts the container form
    write_event_file(p, ev)
    assert p.read_bytes() == first


def _raises(data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        decode_event(data)
    assert info.value.stage == "decode_event"


GOOD = encode_event(make_event())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (GOOD[:10], "truncated|not valid Avro"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "trailing"),
        (b"\xff" * 64, "not valid Avro|truncated"),
        (bytes(range(256)), "not valid Avro|truncated"),
        (b"Obj\x01garbage", "not a valid exposureReady Avro file"),
    ],
)
def test_garbage_bytes_raise_input_error(data, match):
    _raises(data, match)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"instrument": "HSC"}, "only 'DECam'"),
        ({"raw_path": "/etc/passwd"}, "absolute"),
        ({"raw_path": "../../etc/passwd"}, r"'\.\.'"),
        ({"raw_path": "raw/../../secret.fits"}, r"'\.\.'"),
        ({"raw_path": "~/x.fits"}, "absolute"),
        ({"raw_path": ""}, "empty"),
        ({"raw_path": "a\\..\\b"}, "backslash"),
        ({"exposure_id": -1}, "negative"),
        ({"midpoint_mjd_tai": math.nan}, "midpointMjdTai is not finite"),
        ({"shutter_close_mjd_tai": math.inf}, "shutterCloseMjdTai is not finite"),
        ({"ra": 400.0}, "outside"),
        ({"dec": -91.0}, "outside"),
        ({"band": "q"}, "band"),
        ({"event_id": " "}, "eventId is empty"),
        ({"detectors": (1, 1)}, "duplicates"),
        ({"detectors": (0,)}, "not a DECam science CCDNUM"),
        ({"detectors": (63,)}, "not a DECam science CCDNUM"),
    ],
)
def test_bad_events_raise_input_error(changes, match):
    _raises(encode_event(make_event(**changes)), match)


def test_wrong_writer_schema_is_rejected():
    # A producer that sends exposureId as a string: the bytes no longer parse as our schema.
    other = fastavro.parse_schema({
        "type": "record", "name": "x", "fields": [
            {"name": "eventId", "type": "string"}, {"name": "instrument", "type": "string"},
            {"name": "exposureId", "type": "string"},
        ],
    })
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, other, {"eventId": "e", "instrument": "DECam", "exposureId": "123"})
    with pytest.raises(InputError):
        decode_event(buf.getvalue())


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"exposureId": "123"}, "exposureId has type str"),
        ({"ra": "10"}, "ra has type str"),
        ({"replay": 1}, "replay has type int"),
        ({"exposureId": True}, "must not be a boolean"),
        ({"detectors": "1,2"}, "detectors must be null or a list"),
    ],
)
def test_wrong_types_in_record(changes, match):
    rec = event_to_record(make_event()) | changes
    with pytest.raises(InputError, match=match):
        event_from_record(rec)


def test_missing_field_in_record():
    rec = event_to_record(make_event())
    del rec["rawPath"]
    with pytest.raises(InputError, match="missing field"):
        event_from_record(rec)


def test_encode_wrong_type_raises_input_error():
    with pytest.raises(InputError, match="cannot encode"):
        encode_event(make_event(exposure_id="x"))


def test_resolve_raw_path_stays_in_root(tmp_path):
    root = tmp_path / "root"
    (root / "raw").mkdir(parents=True)
    assert resolve_raw_path(root, make_event(raw_path="raw/x.fits")) == (root / "raw/x.fits").resolve()
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(InputError, match="outside the data root"):
        resolve_raw_path(root, make_event(raw_path="escape/x.fits"))


def test_work_round_trip_and_checks():
    ev = make_event()
    w = CcdWork(ev, 5)
    assert decode_work(encode_work(w)) == w
    with pytest.raises(InputError, match="not in the event's detectors"):
        decode_work(encode_work(CcdWork(ev, 7)))
    with pytest.raises(InputError, match="CCDNUM"):
        decode_work(encode_work(CcdWork(make_event(detectors=None), 99)))
    with pytest.raises(InputError):
        decode_work(b"\x01\x02")


def test_fan_out():
    assert [w.detector for w in fan_out(make_event())] == [1, 5, 62]
    all_ccds = fan_out(make_event(detectors=None))
    assert [w.detector for w in all_ccds] == list(DECAM_SCIENCE_DETECTORS)
    assert len(all_ccds) == 62


def test_sky_cell_is_healpix_nested():
    # Known HEALPix nside=1 NESTED faces.
    assert sky_cell(0.0, 90.0, 1) == 0
    assert sky_cell(0.0, 0.0, 1) == 4
    assert sky_cell(0.0, -90.0, 1) == 8
    # Every cell of nside 4 is reached, and only those.
    cells = {sky_cell(ra, dec, 4) for ra in range(0, 360, 2) for dec in range(-89, 90, 2)}
    assert cells == set(range(12 * 16))


def test_work_key():
    ev = make_event()
    k = work_key(ev, 5)
    assert k.startswith("sky-") and k.endswith("-ccd-05")
    # A small dither keeps the same key; another CCD of the same exposure gets another key.
    assert work_key(make_event(ra=150.15, dec=2.25), 5) == k
    assert work_key(ev, 6) != k
    # A pointing far away gets another cell.
    assert work_key(make_event(ra=300.0, dec=-40.0), 5) != k
