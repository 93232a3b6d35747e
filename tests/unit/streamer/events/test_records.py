"""Tests of streamer.events: Avro round trips, event files, the bad-event corpus, fan-out and work keys."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import fastavro
import fastavro.schema
import numpy as np
import pytest

from pipeline.errors import InputError
from streamer.apdb.sky import ang2pix_nested
from streamer.events.fan_out import fan_out, sky_cell, work_key, work_partition
from streamer.events.files import read_event_file, write_event_file
from streamer.events.records import (
    DECAM_SCIENCE_DETECTORS,
    CcdWork,
    decode_event,
    decode_work,
    encode_event,
    encode_work,
    event_from_record,
    event_to_record,
)
from tests.helpers.events import make_event


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


def test_event_file_with_a_given_sync_marker(tmp_path):
    # The simulator's event files: its own marker; the same bytes in every process (whatever PYTHONHASHSEED).
    ev = make_event()
    marker = np.random.default_rng([7, ev.exposure_id]).bytes(16)
    p = write_event_file(tmp_path / "sim.avro", ev, sync_marker=marker)
    assert read_event_file(p) == ev
    assert write_event_file(tmp_path / "again.avro", ev, sync_marker=marker).read_bytes() == p.read_bytes()
    code = ("import sys; from streamer.events.files import write_event_file; "
            "from tests.helpers.events import make_event; "
            f"write_event_file(sys.argv[1], make_event(), sync_marker={marker!r})")
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}.avro"
        subprocess.run([sys.executable, "-c", code, str(out)], env={**os.environ, "PYTHONHASHSEED": seed},
                       cwd=Path(__file__).resolve().parents[4], check=True)
        assert out.read_bytes() == p.read_bytes()
    with pytest.raises(ValueError, match="16 bytes"):
        write_event_file(tmp_path / "bad.avro", ev, sync_marker=b"short")


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
        (GOOD[:-2], "truncated"),  # GOOD[:-1] is a whole message of the first schema version (no product)
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


def _former_sky_cell(ra_deg: float, dec_deg: float, nside: int) -> int:
    """The scalar ang2pix_nest that made work keys before the APDB's pixelization did (the reference)."""
    def spread(v: int) -> int:
        return sum(((v >> bit) & 1) << (2 * bit) for bit in range(16))

    z = math.sin(math.radians(dec_deg))
    za = abs(z)
    tt = (math.radians(ra_deg % 360.0) / (0.5 * math.pi)) % 4.0
    if za <= 2.0 / 3.0:
        temp1, temp2 = nside * (0.5 + tt), nside * z * 0.75
        jp, jm = int(temp1 - temp2), int(temp1 + temp2)
        ifp, ifm = jp // nside, jm // nside
        face = (ifp | 4) if ifp == ifm else (ifp if ifp < ifm else ifm + 8)
        ix, iy = jm & (nside - 1), nside - (jp & (nside - 1)) - 1
    else:
        ntt = min(3, int(tt))
        tp = tt - ntt
        tmp = nside * math.sqrt(3.0 * (1.0 - za))
        jp, jm = min(int(tp * tmp), nside - 1), min(int((1.0 - tp) * tmp), nside - 1)
        face, ix, iy = (ntt, nside - jm - 1, nside - jp - 1) if z >= 0 else (ntt + 8, jp, jm)
    return face * nside * nside + spread(ix) + (spread(iy) << 1)


@pytest.mark.parametrize("nside", [16, 64])
def test_sky_cell_keeps_the_former_work_key_cells(nside):
    # Work keys decide partitions: the cells must not move. Random sky, a 1-degree grid, and the usual
    # boresight precision (1e-4 degrees) around the HEALPix polar-cap boundary.
    rng = np.random.default_rng(nside)
    ra = np.concatenate([rng.uniform(0, 360, 20_000), np.repeat(np.arange(0.0, 360.0), 181),
                         rng.uniform(0, 360, 2_000)])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 20_000))),
                          np.tile(np.arange(-90.0, 91.0), 360),
                          np.round(np.degrees(np.arcsin(2 / 3)) * rng.choice([-1, 1], 2_000)
                                   + rng.uniform(-1e-3, 1e-3, 2_000), 4)])
    former = [_former_sky_cell(r, d, nside) for r, d in zip(ra.tolist(), dec.tolist())]
    assert ang2pix_nested(nside, ra, dec).tolist() == former
    assert [sky_cell(r, d, nside) for r, d in zip(ra[::97].tolist(), dec[::97].tolist())] == former[::97]


def test_work_key():
    ev = make_event()
    k = work_key(ev, 5)
    assert k.startswith("sky-") and k.endswith("-ccd-05")
    # A small dither keeps the same key; another CCD of the same exposure gets another key.
    assert work_key(make_event(ra=150.15, dec=2.25), 5) == k
    assert work_key(ev, 6) != k
    # A pointing far away gets another cell.
    assert work_key(make_event(ra=300.0, dec=-40.0), 5) != k


@pytest.mark.parametrize("n_partitions", [1, 2, 8, 45, 62, 64, 100, 128])
def test_work_partition_spreads_an_exposure_evenly_and_keeps_a_ccd_in_place(n_partitions):
    ev = make_event(detectors=None)
    parts = [work_partition(ev, w.detector, n_partitions) for w in fan_out(ev)]
    assert all(0 <= p < n_partitions for p in parts)
    counts = np.bincount(parts, minlength=n_partitions)
    assert counts.max() - counts.min() <= 1  # 62 CCDs: 62 // n or one more on each partition (at most one)
    # Two workers owning either half (offset by the sky cell) or every other partition get 31 +- 1 CCDs each.
    if n_partitions % 2 == 0:
        start = sky_cell(ev.ra, ev.dec) % n_partitions
        half = np.roll(counts, -start)[: n_partitions // 2].sum()
        assert abs(int(counts[: n_partitions // 2].sum()) - 31) <= 1
        assert abs(int(half) - 31) <= 1
        assert abs(int(counts[::2].sum()) - 31) <= 1
    # A block of neighbouring CCDs (the focal plane's centre) is spread too: at most one more than its share
    # on a partition.
    block = [work_partition(ev, d, n_partitions) for d in range(22, 37)]
    assert np.bincount(block).max() <= -(-15 // n_partitions) + 1
    # The same CCD of a dithered revisit (same sky cell) goes to the same partition, as its key does.
    again = make_event(ra=150.15, dec=2.25, detectors=None)
    assert [work_partition(again, w.detector, n_partitions) for w in fan_out(again)] == parts
