"""The generated alert encoder (streamer.alerts.encoder): byte-identical to fastavro on every path.

Records of every shape go through the shape-specialized encoders (one per record type, keys and value
types) and through the generic encoder (``max_shapes=0``); both must write exactly what
``fastavro.schemaless_writer`` writes, and ``serialize_framed`` exactly the Confluent header followed by it.
"""

from __future__ import annotations

import io
import random
import struct
from typing import Any

import fastavro
import numpy as np
import pytest

from pipeline.errors import InputError
from streamer.alerts.encoder import compile_encoder, varint_bytes, zigzag
from streamer.alerts.framing import frame
from streamer.alerts.schema import AlertSchema, sample_alert
from tests.helpers.avro_values import INT_EXTREMES, LONG_EXTREMES, STRINGS, record_types


@pytest.fixture(scope="module")
def schema() -> AlertSchema:
    return AlertSchema.latest()


@pytest.fixture(scope="module")
def generic_only(schema) -> AlertSchema:
    """The same schema with no shape compiled: every record goes through the generic encoder."""
    slow = AlertSchema()
    slow._encoder = compile_encoder(schema.definition, max_shapes=0)
    return slow


def _fastavro(schema: AlertSchema, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.definition, record)
    return buffer.getvalue()


def _value(t: Any, rng: random.Random, named: dict[str, Any], mode: str) -> Any:
    """A value of Avro type ``t``. ``mode``: "null" (every nullable field null), "set" (none null),
    "mixed" (nulls scattered), "extreme" (none null, boundary ints and odd strings)."""
    if isinstance(t, list):
        if "null" in t and (mode == "null" or mode == "mixed" and rng.random() < 0.5):
            return None
        return _value(next(x for x in t if x != "null"), rng, named, mode)
    if isinstance(t, str) and t in named:
        t = named[t]
    if isinstance(t, dict):
        if t["type"] == "record":
            return {f["name"]: _value(f["type"], rng, named, mode) for f in t["fields"]}
        if t["type"] == "array":
            return [_value(t["items"], rng, named, mode) for _ in range(rng.choice([0, 0, 1, 3]))]
        return _value(t["type"], rng, named, mode)  # logical types: the raw long
    extreme = mode == "extreme"
    return {
        "int": lambda: rng.choice(INT_EXTREMES) if extreme else rng.randint(-2**31, 2**31 - 1),
        "long": lambda: rng.choice(LONG_EXTREMES) if extreme else rng.randint(-2**63, 2**63 - 1),
        "float": lambda: rng.choice([0.0, -0.0, 1e-30, -3.4e38, float("inf")]) if extreme else rng.uniform(-1e6, 1e6),
        "double": lambda: rng.choice([0.0, 5e-324, -1e308, float("nan")]) if extreme else rng.uniform(-1e300, 1e300),
        "boolean": lambda: rng.random() < 0.5,
        "string": lambda: rng.choice(STRINGS),
        "bytes": lambda: rng.randbytes(rng.choice([0, 1, 127, 128, 20_000])),
        "null": lambda: None,
    }[t]()


def _sparse(record: dict[str, Any], rng: random.Random, parsed_record: dict[str, Any]) -> dict[str, Any]:
    """Drop the null fields that have a null default (so they are missing), shuffle the key order and
    add a key the schema does not know (writers ignore it)."""
    defaults = {f["name"] for f in parsed_record["fields"] if f.get("default", 0) is None}
    items = [(k, v) for k, v in record.items() if not (k in defaults and v is None and rng.random() < 0.8)]
    rng.shuffle(items)
    items.insert(rng.randrange(len(items) + 1), ("notInTheSchema", "ignored"))
    return dict(items)


def _alerts(schema: AlertSchema, seed: int, mode: str, n: int, sparse: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    named = record_types(schema.definition)
    out = []
    for _ in range(n):
        alert = _value(schema.definition, rng, named, mode)
        if sparse:
            for key, rtype in (("diaSource", "lsst.v11_1.diaSource"), ("diaObject", "lsst.v11_1.diaObject")):
                if alert[key] is not None:
                    alert[key] = _sparse(alert[key], rng, named[rtype])
            alert["prvDiaSources"] = [_sparse(s, rng, named["lsst.v11_1.diaSource"])
                                      for s in alert["prvDiaSources"] or []] or alert["prvDiaSources"]
        out.append(alert)
    return out


def _check(schema: AlertSchema, generic_only: AlertSchema, alert: dict[str, Any]) -> None:
    expected = _fastavro(schema, alert)
    assert schema.serialize(alert) == expected
    assert schema.serialize_framed(alert) == frame(expected, schema.schema_id)
    assert generic_only.serialize(alert) == expected


@pytest.mark.parametrize("mode", ["null", "set", "mixed", "extreme"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_shape_encoders_match_fastavro(schema, generic_only, mode, sparse):
    for alert in _alerts(schema, seed=hash((mode, sparse)) % 1000, mode=mode, n=12, sparse=sparse):
        _check(schema, generic_only, alert)


def test_empty_and_null_arrays_and_realistic_alerts(schema, generic_only):
    alert = sample_alert(n_prv_dia_sources=3, cutout_nbytes=100)
    for prv in ([], None, alert["prvDiaSources"]):
        for forced in ([], None):
            _check(schema, generic_only, {**alert, "prvDiaSources": prv, "prvDiaForcedSources": forced})
    _check(schema, generic_only, {**alert, "diaObject": None, "cutoutScience": None, "cutoutTemplate": b""})


def test_one_record_type_with_changing_shapes(schema, generic_only):
    """The same keys with nulls moving around, other Python types (bool in a long, int in a double, numpy
    scalars) and other key orders each get their own shape and still write fastavro's bytes."""
    alert = sample_alert(n_prv_dia_sources=2, cutout_nbytes=10)
    source = alert["diaSource"]
    variants = [
        {**source, "psfFlux": None},
        {**source, "psfFlux": 12.5, "psfFluxErr": None, "snr": 3},  # int in a float field
        {**source, "visit": True, "detector": np.int64(7), "diaObjectId": np.int64(2**62 + 5)},
        {**source, "ra": np.float64(10.25), "psfFlux": np.float32(1.5), "isDipole": True},
        {**source, "diaObjectId": -2**63, "ssObjectId": 2**63 - 1, "band": "日本"},
        dict(reversed(list(source.items()))),
        {k: v for k, v in source.items() if k in ("diaSourceId", "visit", "detector", "midpointMjdTai", "ra",
                                                    "dec", "x", "y", "psfNdata", "trailNdata", "dipoleNdata",
                                                    "timeProcessedMjdTai", "bboxSize")},
    ]
    for variant in variants + variants:  # the second time from the shape caches
        # (in prvDiaSources, a union, fastavro would refuse the bool and the numpy ints: it validates unions)
        _check(schema, generic_only, {**alert, "diaSource": variant, "prvDiaSources": [source, source]})
        _check(schema, generic_only, {**alert, "diaSource": variant, "prvDiaSources": [variants[0], variants[1]]})


def test_shapes_are_compiled_and_bounded(schema):
    alert = sample_alert(n_prv_dia_sources=2, cutout_nbytes=10)
    bounded = AlertSchema()
    bounded._encoder = compile_encoder(schema.definition, max_shapes=2)
    caches = bounded._encoder.__globals__["_shapes_rec_lsst_v11_1_diaSource"]
    for k in range(5):
        record = {**alert, "diaSource": {**alert["diaSource"], "psfFlux": None if k % 2 else float(k),
                                         "snr": None if k > 1 else 1.0}}
        assert bounded.serialize(record) == _fastavro(schema, record)
    assert len(caches) == 2
    assert all(encoder is not caches.generic for encoder in caches.values())  # specialized, not generic
    # Past the limit the record type's entry point is the generic encoder.
    assert bounded._encoder.__globals__["rec_lsst_v11_1_diaSource"] is caches.generic
    assert bounded.serialize(alert) == _fastavro(schema, alert)
    # A shape missing a required field is not specialized: the generic encoder raises, naming it.
    broken = {k: v for k, v in alert["diaSource"].items() if k != "ra"}
    with pytest.raises(InputError, match="ra"):
        schema.serialize({**alert, "diaSource": broken})


@pytest.mark.parametrize(
    ("field", "value"),
    [("isDipole", 1), ("isDipole", "yes"), ("ra", "x"), ("ra", None), ("visit", 1.5), ("visit", None),
     ("diaObjectId", 2**63), ("diaObjectId", -2**63 - 1), ("band", b"r"), ("psfFlux", "x")],
)
def test_shape_encoders_reject_what_the_generic_encoder_rejects(schema, generic_only, field, value):
    alert = sample_alert(n_prv_dia_sources=1, cutout_nbytes=10)
    bad = {**alert, "diaSource": {**alert["diaSource"], field: value}}
    for encoder in (schema, generic_only):
        with pytest.raises(InputError, match="cannot serialize"):
            encoder.serialize(bad)


def test_zigzag_matches_the_reference_loop():
    def reference(n: int) -> bytes:
        return varint_bytes((n << 1) ^ (n >> 63))

    edges = [0, 2**13, 2**14, 2**27, 2**28, 2**41, 2**42, 2**62, 2**63]
    values = {e + d for e in edges for d in (-2, -1, 0, 1)} | {-e + d for e in edges for d in (-1, 0, 1)}
    rng = random.Random(5)
    values |= {rng.randint(-2**63, 2**63 - 1) >> rng.randrange(64) for _ in range(2000)}
    for n in sorted(v for v in values if -2**63 <= v < 2**63):
        assert zigzag(n) == reference(n), n
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, "long", n)
        assert zigzag(n) == buffer.getvalue()
    for n in (2**63, -2**63 - 1, 2**100, -2**100):
        with pytest.raises(OverflowError):
            zigzag(n)
    with pytest.raises(TypeError):
        zigzag(1.0)
    assert struct.unpack("<B", zigzag(-1)) == (1,)
