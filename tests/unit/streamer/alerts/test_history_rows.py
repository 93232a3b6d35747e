"""Vectorized Avro encoding of APDB rows (streamer.alerts.history_rows): byte-identical to fastavro, row by row, and
alerts built from it serialize exactly as alerts built from record dicts."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pytest
from astropy.table import Table

from pipeline.errors import InputError
from streamer.alerts.history_rows import EncodedRecords, encode_rows, encoded_history, record_full_name
from streamer.alerts.schema import AlertSchema, sample_alert
from streamer.apdb.columns import TABLES
from streamer.apdb.table_rows import rows_to_table, table_to_records
from tests.helpers.avro_values import INT_EXTREMES, LONG_EXTREMES, STRINGS, record_types


@pytest.fixture(scope="module")
def schema() -> AlertSchema:
    return AlertSchema.latest()


def _random_table(kind: str, n: int, rng: np.random.Generator) -> Table:
    """Rows with every kind of value: nulls (NaN or masked) in a third of the nullable cells, integer
    extremes (every varint length), non-ASCII strings, infinities."""
    table = Table()
    for c in TABLES[kind].columns:
        nulls = (rng.random(n) < 0.3) if c.nullable else np.zeros(n, bool)
        if c.avro_type in ("float", "double"):
            values = rng.normal(0, 1e3, n).astype(c.dtype)
            values[rng.random(n) < 0.05] = np.inf
            values[nulls] = np.nan
            table[c.name] = values
            continue
        if c.avro_type in ("int", "long"):
            extremes = np.array(LONG_EXTREMES if c.avro_type == "long" else INT_EXTREMES, dtype=c.dtype)
            values = np.where(rng.random(n) < 0.5, rng.integers(-100, 100, n),
                              extremes[rng.integers(0, len(extremes), n)])
            values = values.astype(c.dtype)
        elif c.avro_type == "boolean":
            values = rng.random(n) < 0.5
        else:
            values = np.array(STRINGS)[rng.integers(0, len(STRINGS), n)]
        table[c.name] = np.ma.MaskedArray(values, mask=nulls)
    return table


@pytest.mark.parametrize("kind", ["DiaSource", "DiaForcedSource", "DiaObject"])
def test_rows_encode_exactly_as_fastavro(kind, schema):
    rng = np.random.default_rng(11)
    table = _random_table(kind, 400, rng)
    parsed = record_types(schema.definition)[record_full_name(TABLES[kind])]
    order = rng.permutation(len(table))[:300]
    for rows in (None, order):
        body, offsets = encode_rows(kind, table, rows)
        picked = table if rows is None else table[rows]
        records = table_to_records(kind, picked)
        assert len(offsets) == len(records) + 1 and offsets[-1] == len(body)
        for i, record in enumerate(records):
            expected = io.BytesIO()
            fastavro.schemaless_writer(expected, parsed, record)
            assert body[offsets[i]:offsets[i + 1]].tobytes() == expected.getvalue(), (kind, i)


def test_ascii_and_non_ascii_strings_take_the_same_bytes():
    table = _random_table("DiaForcedSource", 50, np.random.default_rng(3))
    string_columns = [c.name for c in TABLES["DiaForcedSource"].columns if c.avro_type == "string"]
    assert string_columns
    ascii_only = table.copy()
    for name in string_columns:
        ascii_only[name] = np.ma.MaskedArray(np.full(50, "band"), mask=table[name].mask)
    for t in (table, ascii_only):
        body, offsets = encode_rows("DiaForcedSource", t)
        records = table_to_records("DiaForcedSource", t)
        decoded = [fastavro.schemaless_reader(io.BytesIO(body[offsets[i]:offsets[i + 1]].tobytes()),
                                              record_types(AlertSchema.latest().definition)[
                                                  record_full_name(TABLES["DiaForcedSource"])], None)
                   for i in range(len(records))]
        for got, want in zip(decoded, records):
            assert {k: got[k] for k in string_columns} == {k: want[k] for k in string_columns}


def test_missing_required_value_is_an_input_error():
    table = _random_table("DiaSource", 5, np.random.default_rng(1))
    table["diaSourceId"] = np.ma.MaskedArray(table["diaSourceId"], mask=[False, True, False, False, False])
    with pytest.raises(InputError, match="diaSourceId"):
        encode_rows("DiaSource", table)


def _history_table(n_objects: int, n_per_object: int) -> tuple[Table, list[dict]]:
    """DiaSource history of sample alerts, shuffled, with distinct times (and one exact tie)."""
    alerts = [sample_alert(dia_object_id=10 + i, dia_source_id=1_000 + 100 * i, n_prv_dia_sources=n_per_object)
              for i in range(n_objects)]
    names = TABLES["DiaSource"].names
    rows = [tuple(r.get(n) for n in names) for a in alerts for r in a["prvDiaSources"]]
    table = rows_to_table("DiaSource", names, rows)
    rng = np.random.default_rng(5)
    table["midpointMjdTai"] = 60_000 + rng.permutation(len(table)) * 0.01
    table["midpointMjdTai"][1] = table["midpointMjdTai"][0]  # a tie: table order decides
    return table[rng.permutation(len(table))], alerts


def test_encoded_history_serializes_as_dict_history(schema):
    table, alerts = _history_table(n_objects=12, n_per_object=9)
    before = float(np.median(table["midpointMjdTai"]))
    encoded = encoded_history("DiaSource", table, before)
    # the reference: rows before the visit, per object, stable-sorted by time, as dicts
    mjd = np.asarray(table["midpointMjdTai"])
    earlier = table[mjd < before]
    earlier = earlier[np.argsort(np.asarray(earlier["midpointMjdTai"]), kind="stable")]
    expected: dict[int, list[dict]] = {}
    for record in table_to_records("DiaSource", earlier):
        expected.setdefault(record["diaObjectId"], []).append(record)
    assert set(encoded) == set(expected)
    for alert in alerts:
        object_id = alert["diaSource"]["diaObjectId"]
        if object_id not in expected:
            continue
        fast = {**alert, "prvDiaSources": encoded[object_id]}
        plain = {**alert, "prvDiaSources": expected[object_id]}
        assert isinstance(fast["prvDiaSources"], EncodedRecords)
        assert len(fast["prvDiaSources"]) == len(expected[object_id])
        assert schema.serialize_framed(fast) == schema.serialize_framed(plain)
        assert list(encoded[object_id]) == expected[object_id]  # a sequence of the same dicts, decoded lazily
        schema.validate(fast)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema.definition, fast)  # fastavro sees a sequence of dicts
        assert buffer.getvalue() == schema.serialize(plain)


def test_encoded_records_of_another_record_type_are_re_encoded(schema):
    """Bytes are copied only into an array of the record type they were encoded as."""
    table, alerts = _history_table(n_objects=1, n_per_object=3)
    encoded = encoded_history("DiaSource", table, np.inf)[10]
    mislabelled = EncodedRecords("lsst.v0_1.diaSource", b"garbage", encoded, 0, len(encoded))
    plain = {**alerts[0], "prvDiaSources": list(encoded)}
    assert schema.serialize({**alerts[0], "prvDiaSources": mislabelled}) == schema.serialize(plain)


def test_no_history_gives_no_groups():
    table, _ = _history_table(n_objects=2, n_per_object=2)
    assert encoded_history("DiaSource", table, 0.0) == {}
    assert encoded_history("DiaSource", table[:0], 1e9) == {}
