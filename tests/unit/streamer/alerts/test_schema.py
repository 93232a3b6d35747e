"""Tests of streamer.alerts.schema and streamer.alerts.framing: schema, encoder equivalence with fastavro,
framing, keys, headers."""

from __future__ import annotations

import io
import random

import fastavro
import pytest
from lsst.alert.packet import Schema

from pipeline.errors import InputError
from streamer.alerts.framing import alert_headers, alert_key, frame, headers_dict, now_mjd_tai, unframe
from streamer.alerts.schema import AlertSchema, sample_alert


@pytest.fixture(scope="module")
def schema() -> AlertSchema:
    return AlertSchema.latest()


def _random_value(t, rng: random.Random, named: dict, fill: float):
    """A random value for Avro type ``t`` (parsed form); nullable fields are filled with probability ``fill``."""
    if isinstance(t, list):
        if "null" in t and rng.random() > fill:
            return None
        return _random_value(next(x for x in t if x != "null"), rng, named, fill)
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "record":
            named[t["name"]] = t
            return {f["name"]: _random_value(f["type"], rng, named, fill) for f in t["fields"]}
        if kind == "array":
            return [_random_value(t["items"], rng, named, fill) for _ in range(rng.randint(0, 3))]
        return _random_value(kind, rng, named, fill)  # logical types: write the raw long
    if t in named:
        return _random_value(named[t], rng, named, fill)
    return {
        "int": lambda: rng.randint(-2**31, 2**31 - 1),
        "long": lambda: rng.randint(-2**63, 2**63 - 1),
        "float": lambda: rng.uniform(-1e6, 1e6),
        "double": lambda: rng.uniform(-1e300, 1e300),
        "boolean": lambda: rng.random() < 0.5,
        "string": lambda: "".join(rng.choice("abcé✓") for _ in range(rng.randint(0, 12))),
        "bytes": lambda: rng.randbytes(rng.randint(0, 50)),
        "null": lambda: None,
    }[t]()


def _fastavro_bytes(schema: AlertSchema, rec) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema.definition, rec)
    return buf.getvalue()


def test_schema_is_latest(schema):
    assert schema.schema_id == 1101 == Schema.from_file().get_schema_id()
    assert schema.version == "11.1"


def test_sample_alert_validates_and_round_trips(schema):
    alert = sample_alert(dia_object_id=42, visit=7, detector=3)
    schema.validate(alert)
    assert Schema.from_file().validate(alert)
    assert len(alert["prvDiaSources"]) == 10 and len(alert["cutoutScience"]) == 20_000
    back = schema.deserialize(schema.serialize_framed(alert))
    # float32 fields come back as the nearest float32, so compare the bytes of a second serialization.
    assert schema.serialize(back) == schema.serialize(alert)
    assert back["diaObject"]["diaObjectId"] == 42 and back["cutoutScience"] == alert["cutoutScience"]
    assert back["diaSource"]["visit"] == 7 and back["diaSource"]["ra"] == alert["diaSource"]["ra"]
    # Readable by lsst.alert.packet directly.
    lsst = Schema.from_file()
    _, body = unframe(schema.serialize_framed(alert))
    assert lsst.deserialize(body)["diaObject"]["diaObjectId"] == 42


@pytest.mark.parametrize("fill", [0.0, 0.5, 1.0])
def test_generated_encoder_matches_fastavro(schema, fill):
    rng = random.Random(int(fill * 10) + 1)
    for _ in range(30):
        rec = _random_value(schema.definition, rng, {}, fill)
        assert schema.serialize(rec) == _fastavro_bytes(schema, rec)
    alert = sample_alert()
    assert schema.serialize(alert) == _fastavro_bytes(schema, alert) == Schema.from_file().serialize(alert)


def test_fastavro_fallback_gives_same_bytes():
    slow = AlertSchema(use_generated_encoder=False)
    fast = AlertSchema.latest()
    alert = sample_alert(n_prv_dia_sources=2)
    assert slow.serialize(alert) == fast.serialize(alert)


def test_serialize_rejects_bad_records(schema):
    alert = sample_alert()
    with pytest.raises(InputError, match="cannot serialize"):
        schema.serialize({**alert, "diaSourceId": "not a long"})
    broken = dict(alert)
    del broken["diaSource"]
    with pytest.raises(InputError, match="diaSource"):
        schema.serialize(broken)
    with pytest.raises(InputError, match="cannot serialize"):
        schema.serialize({**alert, "cutoutScience": "text, not bytes"})
    with pytest.raises(InputError, match="does not match schema 11.1"):
        schema.validate({**alert, "diaSourceId": "x"})
    checking = AlertSchema(validate_on_serialize=True)
    with pytest.raises(InputError):
        checking.serialize({**alert, "diaSource": {**alert["diaSource"], "ra": "x"}})


def test_frame_bytes_exact():
    assert frame(b"", 1101) == b"\x00\x00\x00\x04\x4d"
    assert frame(b"abc", 1101) == b"\x00\x00\x00\x04\x4dabc"
    assert unframe(b"\x00\x00\x00\x04\x4dabc") == (1101, b"abc")


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x01\x00\x00\x04\x4dabc", b"Obj\x01xxxx"])
def test_unframe_rejects(data):
    with pytest.raises(InputError):
        unframe(data)


def test_deserialize_other_version_and_unknown_id(schema):
    old = Schema.from_file(
        __import__("lsst.alert.packet", fromlist=["get_schema_path"]).get_schema_path(10, 0)
        + "/lsst.v10_0.alert.avsc"
    ) if _has_version(10, 0) else None
    if old is not None:
        rec = schema.deserialize(frame(old.serialize(_random_value(
            fastavro.parse_schema(old.definition), random.Random(3), {}, 0.0)), 1000))
        assert "diaSource" in rec
    with pytest.raises(InputError, match="unknown alert schema id"):
        schema.deserialize(frame(b"\x00", 9999))
    with pytest.raises(InputError, match="cannot decode"):
        schema.deserialize(frame(b"\x02", 1101))


def _has_version(major: int, minor: int) -> bool:
    from lsst.alert.packet import get_schema_path

    try:
        return bool(get_schema_path(major, minor))
    except Exception:  # noqa: BLE001 - older packages lack some versions
        return False


def test_alert_key():
    alert = sample_alert(dia_object_id=1234567890123)
    assert alert_key(alert) == b"1234567890123"
    no_obj = {**alert, "diaObject": None}
    assert alert_key(no_obj) == b"1234567890123"  # from diaSource.diaObjectId
    ss = {"diaSourceId": 5, "diaObject": None, "diaSource": {"diaObjectId": None, "ssObjectId": 77}}
    assert alert_key(ss) == b"ss-77"
    assert alert_key({"diaSourceId": 5, "diaSource": {}}) == b"src-5"
    with pytest.raises(InputError):
        alert_key({"diaSource": {}})


def test_alert_headers():
    h = alert_headers(shutter_close_mjd_tai=60310.5, replay=True, schema_id=1101, produced_mjd_tai=60310.5001)
    d = headers_dict(h)
    assert d == {
        "blink-produced-mjd": b"60310.500100000",
        "blink-shutter-close-mjd": b"60310.500000000",
        "blink-replay": b"1",
        "blink-schema-id": b"1101",
    }
    d2 = headers_dict(alert_headers(shutter_close_mjd_tai=1.0, replay=False, schema_id=1101))
    assert d2["blink-replay"] == b"0"
    assert abs(float(d2["blink-produced-mjd"]) - now_mjd_tai()) < 1.0 / 86400


def test_now_mjd_tai_plausible():
    # 2024-01-01T00:00:00 UTC is MJD 60310; the clock is later than that.
    assert now_mjd_tai() > 60310.0


def test_generated_encoder_matches_fastavro_on_realistic_alerts(schema):
    """The fast encoder writes exactly fastavro's bytes on realistic alerts (speed lives in bench/)."""
    import io

    import fastavro

    parsed = fastavro.parse_schema(schema.definition)
    for i in range(5):
        alert = sample_alert(dia_object_id=i + 1, dia_source_id=10_000 + i)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, alert)
        assert schema.serialize(alert) == buffer.getvalue()


def test_schema_text_does_not_depend_on_string_hashing():
    """The schema written into alert files is the same text in every process (whatever PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    code = ("import json; from streamer.alerts.schema import AlertSchema; "
            "print(json.dumps(AlertSchema.latest().definition))")
    texts = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                            capture_output=True, text=True, check=True).stdout for seed in ("1", "2", "3")}
    assert len(texts) == 1
