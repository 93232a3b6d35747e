"""The APDB contract on a real Cassandra (``ops/up.sh`` starts one on 127.0.0.1:9042).

``BLINK_CASSANDRA_HOSTS`` (``host[,host...][:port]``) overrides the server. When it cannot be reached the
tests are skipped, unless ``BLINK_REQUIRE_SERVERS=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid

import cassandra  # noqa: F401  (a core dependency: a missing driver must fail)
import numpy as np
import pytest

from pipeline.errors import InputError, TransientError
from streamer.apdb.base import Apdb, SkyRegion
from streamer.apdb.cassandra import CassandraApdb
from streamer.apdb.table_rows import tables_equal
from tests.helpers.apdb_contract import CONTRACT, VISIT_MJD, make_objects, make_sources
from tests.helpers.servers import unavailable

pytestmark = pytest.mark.integration


def _server() -> tuple[list[str], int]:
    spec = os.environ.get("BLINK_CASSANDRA_HOSTS", "127.0.0.1:9042")
    hosts, _, port = spec.rpartition(":") if ":" in spec else (spec, "", "9042")
    return hosts.split(","), int(port or 9042)


@pytest.fixture(scope="session")
def keyspace():
    """A unique keyspace for this session, dropped at the end."""
    hosts, port = _server()
    name = f"blink_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = CassandraApdb(hosts, port, keyspace=name, consistency="ONE", connect_timeout_s=5.0)
    except TransientError as exc:
        unavailable(f"Cassandra not reachable at {hosts}:{port} (start it with ops/up.sh): {exc}")
    yield admin, hosts, port, name
    admin.drop_keyspace()
    admin.close()


_counter = iter(range(10**6))


@pytest.fixture
def apdb(keyspace):
    """A store on a fresh keyspace (one per test, all dropped at session end)."""
    admin, hosts, port, base = keyspace
    name = f"{base}_{next(_counter)}"
    store = CassandraApdb(hosts, port, keyspace=name, consistency="ONE", connect_timeout_s=5.0)
    store.init_schema()
    yield store
    store.drop_keyspace()
    store.close()


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__.removeprefix("check_"))
def test_contract(apdb, check):
    check(apdb)


def test_is_apdb(apdb):
    assert isinstance(apdb, Apdb)


def test_partitioning_mismatch_refuses(apdb):
    other = CassandraApdb(_server()[0], _server()[1], keyspace=apdb.keyspace, nside=256, consistency="ONE")
    try:
        with pytest.raises(InputError, match="nside"):
            other.check_schema()
    finally:
        other.close()


def test_a_client_without_nside_uses_the_keyspaces(apdb):
    """nside is chosen when a keyspace is created; a client that does not ask for one reads and writes with
    the keyspace's."""
    hosts, port = _server()
    coarse = CassandraApdb(hosts, port, keyspace=f"{apdb.keyspace}_n256", nside=256, consistency="ONE")
    try:
        coarse.init_schema()
        ra, dec, ids = np.full(4, 40.0), np.full(4, -5.0), np.arange(1, 5)
        coarse.store(visit=1, detector=1, dia_objects=make_objects(ids, ra, dec),
                     dia_sources=make_sources(ids + 10, ids, ra, dec, VISIT_MJD - 1.0),
                     dia_forced_sources=make_sources(ids + 10, ids, ra, dec, VISIT_MJD - 1.0, forced=True))
        plain = CassandraApdb(hosts, port, keyspace=coarse.keyspace, consistency="ONE")
        try:
            plain.check_schema()
            assert plain.nside == 256
            data = plain.read_region(SkyRegion(40.0, -5.0, 0.01), VISIT_MJD)
            assert len(data.dia_objects) == 4 and len(data.dia_sources) == 4
        finally:
            plain.close()
    finally:
        coarse.drop_keyspace()
        coarse.close()


def test_same_results_as_sqlite(apdb, tmp_path):
    from streamer.apdb.sqlite_store import SqliteApdb

    rng = np.random.default_rng(9)
    n = 300
    ra = 0.2 * rng.standard_normal(n) % 360.0
    dec = 0.2 * rng.standard_normal(n)
    ids = np.arange(1, n + 1)
    mjd = VISIT_MJD - rng.uniform(0, 500, n)
    lite = SqliteApdb(tmp_path / "a.sqlite")
    lite.init_schema()
    for store in (apdb, lite):
        store.store(visit=3, detector=1, dia_objects=make_objects(ids, ra, dec),
                    dia_sources=make_sources(ids + 10**5, ids, ra, dec, mjd),
                    dia_forced_sources=make_sources(ids + 10**6, ids, ra, dec, mjd, forced=True))
    a, b = apdb.read_region(SkyRegion(0.0, 0.0, 0.3), VISIT_MJD), lite.read_region(SkyRegion(0.0, 0.0, 0.3), VISIT_MJD)
    for name in ("dia_objects", "dia_sources", "dia_forced_sources"):
        assert len(getattr(a, name)) > 0
        assert tables_equal(getattr(a, name), getattr(b, name)), name
    da, db = apdb.dump_tables(), lite.dump_tables()
    for name in ("DiaObject", "DiaObjectLast", "DiaSource", "DiaForcedSource", "ApdbVisitDetector"):
        assert tables_equal(da[name], db[name]), name
    lite.close()


def test_unreachable_raises_transient():
    with pytest.raises(TransientError, match="unavailable after"):
        CassandraApdb(["127.0.0.1"], 1, connect_timeout_s=1.0)


def _ccd(seed: int = 5):
    rng = np.random.default_rng(seed)
    n = 60
    ra, dec = 80.0 + 0.1 * rng.standard_normal(n), 20.0 + 0.1 * rng.standard_normal(n)
    ids = np.arange(1, n + 1)
    return dict(dia_objects=make_objects(ids, ra, dec), dia_sources=make_sources(ids + 10**5, ids, ra, dec, VISIT_MJD),
                dia_forced_sources=make_sources(ids + 10**6, ids, ra, dec, VISIT_MJD, forced=True))


def _flaky_concurrent(monkeypatch, fail_calls: set[int]):
    """Make the given calls (0-based) of execute_concurrent report a timeout for half their statements."""
    import cassandra.concurrent as cc
    from cassandra import OperationTimedOut

    real = cc.execute_concurrent
    calls = iter(range(10**6))

    def flaky(session, work, *args, **kwargs):
        work = list(work)
        k = next(calls)
        if k not in fail_calls:
            return real(session, work, *args, **kwargs)
        done = real(session, work[::2], *args, **kwargs)  # half applied, half "timed out"
        out = []
        for i in range(len(work)):
            out.append(done[i // 2] if i % 2 == 0 else (False, OperationTimedOut("injected")))
        return out

    monkeypatch.setattr(cc, "execute_concurrent", flaky)


def test_write_timeout_mid_ccd_is_retried(apdb, keyspace, monkeypatch):
    admin, hosts, port, base = keyspace
    clean = CassandraApdb(hosts, port, keyspace=f"{base}_clean", consistency="ONE")
    clean.init_schema()
    try:
        clean.store(visit=1, detector=2, **_ccd())
        _flaky_concurrent(monkeypatch, {0, 1, 2})
        apdb.store(visit=1, detector=2, **_ccd())
        monkeypatch.undo()
        a, b = apdb.dump_tables(), clean.dump_tables()
        for name in ("DiaObject", "DiaObjectLast", "DiaSource", "DiaForcedSource", "ApdbVisitDetector"):
            assert tables_equal(a[name], b[name]), name
    finally:
        clean.drop_keyspace()
        clean.close()


def test_persistent_write_failure_leaves_no_marker(apdb, monkeypatch):
    apdb.max_retries = 1
    _flaky_concurrent(monkeypatch, set(range(0, 10)))  # every try of the first writes fails
    with pytest.raises(TransientError, match="still failing"):
        apdb.store(visit=1, detector=2, **_ccd())
    monkeypatch.undo()
    assert not apdb.is_stored(1, 2)  # half-written, and it does not look complete
    apdb.max_retries = 5
    apdb.store(visit=1, detector=2, **_ccd())  # the redelivered work completes it
    assert apdb.is_stored(1, 2)
    assert len(apdb.dump_tables()["DiaSource"]) == 60


def test_store_killed_after_object_writes_is_completed_by_redelivery(apdb, keyspace, monkeypatch):
    """Objects that moved to another pixel, stored by a store that died half-way through its DiaObject and
    DiaObjectLast writes: the redelivered store leaves the tables as a clean store does (the version before
    this write's is found although some of this write's versions are stored, and its rows in the old pixels
    are deleted)."""
    admin, hosts, port, base = keyspace
    ids = np.arange(1, 41)
    ra, dec = np.full(40, 30.0) + 1e-4 * ids, np.full(40, 10.0)
    before = dict(dia_objects=make_objects(ids, ra, dec, validity=VISIT_MJD - 2.0),
                  dia_sources=make_sources(ids + 10**5, ids, ra, dec, VISIT_MJD - 2.0),
                  dia_forced_sources=make_sources(ids + 10**6, ids, ra, dec, VISIT_MJD - 2.0, forced=True))
    moved_dec = dec + 0.3  # two or three nside-512 pixels away
    after = dict(dia_objects=make_objects(ids, ra, moved_dec, validity=VISIT_MJD - 1.0, n_sources=2),
                 dia_sources=make_sources(ids + 2 * 10**5, ids, ra, moved_dec, VISIT_MJD - 1.0, visit=2),
                 dia_forced_sources=make_sources(ids + 2 * 10**6, ids, ra, moved_dec, VISIT_MJD - 1.0, visit=2,
                                                 forced=True))
    clean = CassandraApdb(hosts, port, keyspace=f"{base}_moved", consistency="ONE")
    clean.init_schema()
    try:
        for apdb_ in (clean, apdb):
            apdb_.store(visit=1, detector=1, **before)
        clean.store(visit=2, detector=1, **after)
        apdb.max_retries = 0
        _flaky_concurrent(monkeypatch, {1})  # the second round: half of its writes land, then the store dies
        with pytest.raises(TransientError):
            apdb.store(visit=2, detector=1, **after)
        monkeypatch.undo()
        apdb.max_retries = 5
        assert not apdb.is_stored(2, 1)
        stored = apdb.dump_tables()
        assert 0 < len(stored["DiaObject"]) - 40 < 40  # some of the new versions landed, not all
        apdb.store(visit=2, detector=1, **after)
        a, b = apdb.dump_tables(), clean.dump_tables()
        for name in ("DiaObject", "DiaObjectLast", "DiaSource", "DiaForcedSource", "ApdbVisitDetector"):
            assert tables_equal(a[name], b[name]), name
        assert len(a["DiaObjectLast"]) == 40 and np.allclose(a["DiaObjectLast"]["dec"], 10.3)
        region = apdb.read_region(SkyRegion(30.0, 10.0, 0.05), VISIT_MJD)
        assert len(region.dia_objects) == 0  # nothing left at the old place
    finally:
        clean.drop_keyspace()
        clean.close()


def test_unreachable_retries_with_backoff(caplog):
    import time

    t0 = time.monotonic()
    with caplog.at_level("WARNING"), pytest.raises(TransientError, match=r"unavailable after [2-9]\d* tries"):
        CassandraApdb(["127.0.0.1"], 19999, connect_timeout_s=2.0)
    assert time.monotonic() - t0 >= 1.0
    assert any("retrying in" in r.getMessage() for r in caplog.records)


def test_claims_on_cassandra(apdb):
    from streamer.apdb.ordering import CassandraWorkClaims

    claims = CassandraWorkClaims(apdb, poll_s=0.01)
    a, b = SkyRegion(10.0, 0.0, 0.2), SkyRegion(10.1, 0.0, 0.2)
    claims.register("early", a, 1.0)
    claims.register("late", b, 2.0)
    claims.wait_turn("early", a, 1.0, timeout_s=1)
    with pytest.raises(TransientError, match="earlier overlapping work"):
        claims.wait_turn("late", b, 2.0, timeout_s=0.2)
    claims.done("early")
    claims.wait_turn("late", b, 2.0, timeout_s=2)
    claims.done("late")


def test_batched_rows_split_into_chunks_and_restore_identically(apdb):
    """A CCD-visit's sources in one partition beyond ROWS_PER_BLOB are split over numbered blobs; storing the
    same CCD-visit again rewrites the same CQL rows (no duplicate, nothing lost)."""
    from streamer.apdb.cql_schema import ROWS_PER_BLOB

    n_obj, per_object = 30, (ROWS_PER_BLOB * 5) // 60  # 2,490 forced rows, nearly all in one pixel and bucket
    rng = np.random.default_rng(4)
    ids = np.arange(1, n_obj + 1)
    ra, dec = 10.0 + 1e-5 * rng.standard_normal(n_obj), -5.0 + 1e-5 * rng.standard_normal(n_obj)
    rep = np.repeat(ids, per_object)
    mjd = VISIT_MJD - 1.0 - rng.uniform(0, 20, len(rep))
    outputs = dict(dia_objects=make_objects(ids, ra, dec),
                   dia_sources=make_sources(ids + 10**5, ids, ra, dec, VISIT_MJD - 0.5 - rng.uniform(0, 1, n_obj)),
                   dia_forced_sources=make_sources(np.arange(len(rep)) + 10**6, rep, np.repeat(ra, per_object),
                                                   np.repeat(dec, per_object), mjd, forced=True))
    apdb.store(visit=7, detector=3, **outputs)
    chunks = apdb.execute(f'SELECT apdb_chunk FROM {apdb.table_name("DiaForcedSource")}')
    assert len(chunks) >= 3  # 2,490 rows: at least three blobs of at most ROWS_PER_BLOB
    first = apdb.dump_tables()
    assert len(first["DiaForcedSource"]) == len(rep) and len(first["DiaSource"]) == n_obj
    read = apdb.read_region(SkyRegion(10.0, -5.0, 0.01), VISIT_MJD)
    assert len(read.dia_forced_sources) == len(rep) and len(read.dia_sources) == n_obj
    apdb.store(visit=7, detector=3, **outputs)
    again = apdb.dump_tables()
    for name in ("DiaSource", "DiaForcedSource", "DiaObject", "DiaObjectLast"):
        assert tables_equal(first[name], again[name]), name
    assert sorted(apdb.execute(f'SELECT apdb_chunk FROM {apdb.table_name("DiaForcedSource")}')) == sorted(chunks)


def test_compaction_leaves_one_run_of_blobs_per_partition(apdb):
    """After ``compact_history`` a finished bucket's partition is one generation of compacted blobs (the
    CCD-visit rows merged and deleted), a big partition split over blobs of at most ROWS_PER_BLOB rows; the
    bucket still being written and the region read are untouched."""
    from streamer.apdb.cql_schema import COMPACTED_VISIT, ROWS_PER_BLOB

    ra, dec = np.full(40, 10.0), np.full(40, -5.0)  # one pixel
    ids = np.arange(1, 41)
    region = SkyRegion(10.0, -5.0, 0.01)
    for visit in range(1, 31):  # 30 CCD-visits, 40 sources each: 1,200 rows in one partition of an old bucket
        t = VISIT_MJD - 100.0 + 0.1 * visit
        apdb.store(visit=visit, detector=1, dia_objects=make_objects(ids, ra, dec, validity=t, n_sources=visit),
                   dia_sources=make_sources(ids * 100 + visit, ids, ra, dec, t),
                   dia_forced_sources=make_sources(ids * 100 + visit, ids, ra, dec, t, forced=True))
    t_new = VISIT_MJD - 1.0  # and one in the current bucket
    apdb.store(visit=99, detector=1, dia_objects=make_objects(ids, ra, dec, validity=t_new, n_sources=31),
               dia_sources=make_sources(ids * 100 + 99, ids, ra, dec, t_new),
               dia_forced_sources=make_sources(ids * 100 + 99, ids, ra, dec, t_new, forced=True))
    before = apdb.read_region(region, VISIT_MJD)
    counts = apdb.compact_history(VISIT_MJD - 30.0)
    assert counts == {"DiaSource": 1, "DiaSource_rows_merged": 30, "DiaForcedSource": 1,
                      "DiaForcedSource_rows_merged": 30}
    for table in ("DiaSource", "DiaForcedSource"):
        keys = sorted(apdb.execute(f"SELECT apdb_time_part, visit, detector, apdb_chunk FROM {apdb.table_name(table)}"))
        old, new = keys[0][0], keys[-1][0]
        assert [k[1:] for k in keys if k[0] == old] == [(COMPACTED_VISIT, 1, 0), (COMPACTED_VISIT, 1, 1)]
        assert [k[1:] for k in keys if k[0] == new] == [(99, 1, 0)]
    assert ROWS_PER_BLOB < 1200 <= 2 * ROWS_PER_BLOB
    after = apdb.read_region(region, VISIT_MJD)
    for name in ("dia_objects", "dia_sources", "dia_forced_sources"):
        assert tables_equal(getattr(before, name), getattr(after, name)), name
    assert len(after.dia_sources) == 31 * 40


def test_minor_upgrade_from_4_0(apdb):
    """A schema 4.0.0 keyspace (history tombstones kept 10 days) is brought to the current minor version by
    ``init_schema``; its data stays readable."""
    from streamer.apdb.base import APDB_SCHEMA_VERSION
    from streamer.apdb.cql_schema import HISTORY_GC_GRACE_S

    ra, dec, ids = np.full(3, 20.0), np.full(3, 1.0), np.arange(1, 4)
    apdb.store(visit=1, detector=1, dia_objects=make_objects(ids, ra, dec),
               dia_sources=make_sources(ids + 10, ids, ra, dec, VISIT_MJD - 1.0),
               dia_forced_sources=make_sources(ids + 10, ids, ra, dec, VISIT_MJD - 1.0, forced=True))
    for table in ("DiaSource", "DiaForcedSource"):
        apdb.execute(f"ALTER TABLE {apdb.table_name(table)} WITH gc_grace_seconds = 864000")
    apdb._write_metadata("schema_version", "4.0.0")

    def grace() -> dict[str, int]:
        rows = apdb.execute("SELECT table_name, gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = %s",
                             (apdb.keyspace,))
        return {t: g for t, g in rows if t in ("DiaSource", "DiaForcedSource")}

    assert set(grace().values()) == {864000}
    apdb.check_schema()  # same major version: readable before the upgrade
    apdb.init_schema()
    assert set(grace().values()) == {HISTORY_GC_GRACE_S}
    assert apdb._read_metadata()["schema_version"] == APDB_SCHEMA_VERSION
    assert len(apdb.read_region(SkyRegion(20.0, 1.0, 0.01), VISIT_MJD).dia_sources) == 3


def test_history_blobs_are_compressed_and_a_4_1_keyspace_keeps_raw_ones(apdb):
    """A new keyspace stores shuffled LZ4 history blobs in tables without sstable compression; a keyspace
    created before 4.2.0 (raw blobs) is upgraded by ``init_schema`` to record ``none`` and reads as before; a
    client asking for another codec than the keyspace's refuses."""
    from streamer.apdb.blob_codec import CODEC_METADATA_KEY

    def compression(store: CassandraApdb) -> dict[str, str]:
        rows = store.execute("SELECT compression FROM system_schema.tables WHERE keyspace_name = %s AND "
                              "table_name = 'DiaSource'", (store.keyspace,))
        return dict(rows[0][0])

    ra, dec, ids = np.full(40, 25.0), np.full(40, 3.0), np.arange(1, 41)
    data = dict(dia_objects=make_objects(ids, ra, dec),
                dia_sources=make_sources(ids + 100, ids, ra, dec, VISIT_MJD - 1.0),
                dia_forced_sources=make_sources(ids + 100, ids, ra, dec, VISIT_MJD - 1.0, forced=True))
    apdb.store(visit=1, detector=1, **data)
    assert apdb.blob_codec == "lz4-shuffle" == apdb._read_metadata()[CODEC_METADATA_KEY]
    assert compression(apdb).get("enabled") == "false"
    (blob,), = apdb.execute(f"SELECT apdb_rows FROM {apdb.table_name('DiaSource')}")
    assert len(blob) < 40 * 440 / 4  # mostly-null rows

    hosts, port = _server()
    raw = CassandraApdb(hosts, port, keyspace=f"{apdb.keyspace}_raw", consistency="ONE", blob_codec="none")
    try:
        raw.init_schema()
        assert "LZ4Compressor" in compression(raw)["class"]
        raw.store(visit=1, detector=1, **data)
        (blob,), = raw.execute(f"SELECT apdb_rows FROM {raw.table_name('DiaSource')}")
        assert len(blob) == 40 * 440
        raw.execute(f"DELETE FROM {raw.table_name('ApdbMetadata')} WHERE name = %s", (CODEC_METADATA_KEY,))
        raw._write_metadata("schema_version", "4.1.0")
        before = raw.dump_tables()
        old = CassandraApdb(hosts, port, keyspace=raw.keyspace, consistency="ONE")  # default codec
        try:
            old.check_schema()
            assert old.blob_codec == "none"  # no entry: written before 4.2.0
            old.init_schema()
            assert old._read_metadata()[CODEC_METADATA_KEY] == "none"
            assert len(old.read_region(SkyRegion(25.0, 3.0, 0.01), VISIT_MJD).dia_sources) == 40
            after = old.dump_tables()
            for name in ("DiaSource", "DiaForcedSource", "DiaObjectLast"):
                assert tables_equal(before[name], after[name]), name
        finally:
            old.close()
        other = CassandraApdb(hosts, port, keyspace=raw.keyspace, consistency="ONE", blob_codec="lz4-shuffle")
        try:
            with pytest.raises(InputError, match=CODEC_METADATA_KEY):
                other.check_schema()
        finally:
            other.close()
    finally:
        raw.drop_keyspace()
        raw.close()


def test_cli_apdb_compact(apdb, capfd):
    """``blink apdb compact --apdb URL --before MJD`` compacts the finished buckets of that keyspace."""
    from streamer.apdb.cql_schema import COMPACTED_VISIT
    from streamer.cli import main

    ra, dec, ids = np.full(5, 30.0), np.full(5, 2.0), np.arange(1, 6)
    for visit in (1, 2, 3):
        t = VISIT_MJD - 90.0 + visit
        apdb.store(visit=visit, detector=1, dia_objects=make_objects(ids, ra, dec, validity=t),
                   dia_sources=make_sources(ids * 10 + visit, ids, ra, dec, t),
                   dia_forced_sources=make_sources(ids * 10 + visit, ids, ra, dec, t, forced=True))
    hosts, port = apdb.hosts, apdb.port
    assert main(["apdb", "compact", "--apdb", f"cassandra://{hosts[0]}:{port}/{apdb.keyspace}",
                 "--before", str(VISIT_MJD)]) == 0
    assert "compacted the history before MJD 60500.00 TAI: DiaSource 1," in capfd.readouterr().err
    assert {v for (v,) in apdb.execute(f"SELECT visit FROM {apdb.table_name('DiaSource')}")} == {COMPACTED_VISIT}
    assert len(apdb.dump_tables()["DiaSource"]) == 15


def test_compaction_in_several_rounds(apdb, monkeypatch):
    """Partitions are compacted a round at a time (one per round here), in both tables, whatever the count."""
    import streamer.apdb.cassandra.compaction as store

    monkeypatch.setattr(store, "_COMPACT_PARTITIONS_PER_ROUND", 1)
    ra, dec, ids = np.array([40.0, 41.0, 42.0]), np.full(3, 3.0), np.arange(1, 4)  # three pixels
    for visit in (1, 2):
        t = VISIT_MJD - 90.0 + visit
        apdb.store(visit=visit, detector=1, dia_objects=make_objects(ids, ra, dec, validity=t),
                   dia_sources=make_sources(ids * 10 + visit, ids, ra, dec, t),
                   dia_forced_sources=make_sources(ids * 10 + visit, ids, ra, dec, t, forced=True))
    done = []
    counts = apdb.compact_history(VISIT_MJD, progress=lambda table, n, total: done.append((table, n, total)))
    assert counts == {"DiaSource": 3, "DiaSource_rows_merged": 6, "DiaForcedSource": 3,
                      "DiaForcedSource_rows_merged": 6}
    assert done == [(t, n, 3) for t in ("DiaSource", "DiaForcedSource") for n in (1, 2, 3)]


def test_ccd_timing_log(apdb):
    """The CCD timing table (streamer.apdb.ccd_timings) in a Cassandra keyspace: day partitions."""
    from tests.helpers.timing_log import check_timing_log

    check_timing_log(apdb)


def test_network_topology_keyspace_from_the_url(keyspace):
    """``?replication_datacenters=DC:N`` creates the keyspace with NetworkTopologyStrategy on the server's data
    centre, and the APDB works on it."""
    from streamer.apdb import open_apdb

    admin, hosts, port, base = keyspace
    datacenter = admin.execute("SELECT data_center FROM system.local")[0][0]
    name = f"{base}_nts"
    store = open_apdb(f"cassandra://{','.join(hosts)}:{port}/{name}?replication_datacenters={datacenter}:1"
                      "&consistency=LOCAL_QUORUM")
    try:
        store.init_schema()
        replication = admin.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                                    (name,))[0][0]
        assert replication["class"].endswith("NetworkTopologyStrategy") and replication[datacenter] == "1"
        ids = np.arange(1, 11)
        ra, dec = np.full(10, 10.0) + 1e-3 * ids, np.full(10, -5.0)
        store.store(visit=1, detector=1, dia_objects=make_objects(ids, ra, dec),
                    dia_sources=make_sources(ids + 100, ids, ra, dec, np.full(10, VISIT_MJD - 1.0)),
                    dia_forced_sources=make_sources(ids[:0], ids[:0], ra[:0], dec[:0], np.zeros(0), forced=True))
        assert len(store.read_region(SkyRegion(10.0, -5.0, 0.1), VISIT_MJD).dia_sources) == 10
    finally:
        store.drop_keyspace()
        store.close()
