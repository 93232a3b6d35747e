"""``blink apdb export`` and ``blink lightcurve`` on a real Cassandra give what they give on SQLite, also after
the history is compacted (``ops/up.sh`` starts the server; skipped without it unless BLINK_REQUIRE_SERVERS=1)."""

from __future__ import annotations

import uuid

import pyarrow.parquet as pq
import pytest

from pipeline.errors import TransientError
from streamer.apdb.cassandra import CassandraApdb
from streamer.apdb.columns import TABLES
from streamer.apdb.export import ExportSelection, export_apdb
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.apdb.table_rows import tables_equal
from streamer.cli import main
from streamer.inspect.light_curve import read_object_history
from tests.helpers.inspect_apdb import N_OBJECTS, VISIT_MJDS, fill_three_visits
from tests.helpers.servers import unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stores(cassandra_hosts, tmp_path_factory):
    """The same three visits in a fresh Cassandra keyspace and in SQLite."""
    hosts, port = cassandra_hosts
    keyspace = f"blink_inspect_{uuid.uuid4().hex[:12]}"
    try:
        cassandra = CassandraApdb(hosts.split(","), port, keyspace=keyspace, consistency="ONE", connect_timeout_s=5.0)
    except TransientError as exc:
        unavailable(f"Cassandra not reachable at {hosts}:{port}: {exc}")
    sqlite = SqliteApdb(tmp_path_factory.mktemp("apdb") / "apdb.sqlite")
    for store in (cassandra, sqlite):
        store.init_schema()
        fill_three_visits(store)
    yield cassandra, sqlite, f"cassandra://{hosts}:{port}/{keyspace}"
    cassandra.drop_keyspace()
    cassandra.close()
    sqlite.close()


def _sorted(path, table: str):
    return pq.read_table(path).sort_by([(k, "ascending") for k in TABLES[table].primary_key])


def _same_exports(cassandra, sqlite, tmp_path, selection=None) -> dict[str, int]:
    a = export_apdb(cassandra, tmp_path / "cassandra", selection=selection, batch_rows=16)
    b = export_apdb(sqlite, tmp_path / "sqlite", selection=selection)
    for x, y in zip(a, b):
        assert x.table == y.table and x.n_rows == y.n_rows
        assert _sorted(x.path, x.table).equals(_sorted(y.path, y.table), check_metadata=True), x.table
    return {x.table: x.n_rows for x in a}


def test_export_from_cassandra_equals_sqlites(stores, tmp_path):
    cassandra, sqlite, url = stores
    every = 3 * N_OBJECTS
    assert _same_exports(cassandra, sqlite, tmp_path / "all") == dict.fromkeys(
        ("DiaObject", "DiaSource", "DiaForcedSource"), every)
    middle = ExportSelection(mjd_min_tai=VISIT_MJDS[1], mjd_max_tai=VISIT_MJDS[2])
    assert set(_same_exports(cassandra, sqlite, tmp_path / "time", middle).values()) == {N_OBJECTS}
    # compacted history buckets hold some rows twice for a while; the export holds each once
    counts = cassandra.compact_history(VISIT_MJDS[-1] + 400.0, everything=True)
    assert counts["DiaSource_rows_merged"] > 0 and counts["DiaForcedSource_rows_merged"] > 0
    assert set(_same_exports(cassandra, sqlite, tmp_path / "compacted").values()) == {every}
    out = tmp_path / "cli"
    assert main(["apdb", "export", str(out), "--apdb", url, "--tables", "DiaSource"]) == 0
    assert pq.read_table(out / "DiaSource.parquet").num_rows == every


def test_light_curve_history_from_cassandra_equals_sqlites(stores):
    cassandra, sqlite, _ = stores
    a, b = read_object_history(cassandra, 5), read_object_history(sqlite, 5)
    assert len(a.versions) == 3 and len(a.dia_sources) == 3 and len(a.dia_forced_sources) == 3
    for name in ("versions", "dia_sources", "dia_forced_sources"):
        assert tables_equal(getattr(a, name), getattr(b, name)), name
