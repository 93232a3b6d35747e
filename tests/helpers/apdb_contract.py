"""The APDB contract: checks every store must pass, and synthetic catalogs to feed them.

The store test files (``tests/unit/streamer/apdb/test_stores.py``, ``tests/integration/test_apdb_cassandra.py``)
run every function of :data:`CONTRACT` against a fixture ``apdb``: a store whose schema has been initialised on an
empty database. Kept in the package (as ``lsst.dax.apdb`` keeps its test mix-ins) so any new store can run them.
Needs pytest.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from pipeline.errors import InputError
from streamer.apdb.base import Apdb, SkyRegion
from streamer.apdb.columns import TABLES, empty_table
from streamer.apdb.sky import angular_distance_deg
from streamer.apdb.table_rows import tables_equal

VISIT_MJD = 60500.0


def make_objects(ids, ra, dec, validity=VISIT_MJD - 1, n_sources=1) -> Table:
    """DiaObjects with every column; nullable floats NaN except a few set."""
    n = len(ids)
    cols = {}
    for c in TABLES["DiaObject"].columns:
        if c.is_float:
            cols[c.name] = np.full(n, np.nan, c.dtype)
        else:
            cols[c.name] = np.zeros(n, c.dtype)
    cols["diaObjectId"] = np.asarray(ids, np.int64)
    cols["ra"] = np.asarray(ra, float) % 360.0
    cols["dec"] = np.asarray(dec, float)
    cols["validityStartMjdTai"] = np.broadcast_to(np.asarray(validity, float), (n,)).copy()
    cols["g_psfFluxMean"] = np.linspace(1.0, 2.0, n).astype(np.float32)
    cols["nDiaSources"] = np.full(n, n_sources, np.int32)
    return Table(cols)


def make_sources(ids, object_ids, ra, dec, mjd, visit=1, detector=5, forced=False) -> Table:
    """DiaSources (or DiaForcedSources) with every required column and a few nullable ones."""
    kind = "DiaForcedSource" if forced else "DiaSource"
    n = len(ids)
    t = Table({c.name: np.full(n, np.nan if c.nullable else 0.0, c.dtype) if c.is_float
               else np.zeros(n, "U1" if c.avro_type == "string" else c.dtype) for c in TABLES[kind].columns})
    t[TABLES[kind].primary_key[0]] = np.asarray(ids, np.int64)
    t["diaObjectId"] = np.asarray(object_ids, np.int64)
    t["ra"], t["dec"] = np.asarray(ra, float) % 360.0, np.asarray(dec, float)
    t["midpointMjdTai"] = np.broadcast_to(np.asarray(mjd, float), (n,)).copy()
    t["visit"], t["detector"] = visit, detector
    t["psfFlux"] = np.arange(n, dtype=np.float32)
    t["band"] = "g"
    if not forced:
        t["reliabilityVersion"] = np.ma.masked_all(n, dtype="U8")
        t["isNegative"] = np.ma.array(np.arange(n) % 2 == 0, mask=np.arange(n) % 3 == 0)
    return t


def _store(apdb: Apdb, objects: Table, sources: Table | None = None, forced: Table | None = None,
           visit: int = 1, detector: int = 5) -> None:
    apdb.store(visit=visit, detector=detector, dia_objects=objects,
               dia_sources=sources if sources is not None else empty_table("DiaSource"),
               dia_forced_sources=forced if forced is not None else empty_table("DiaForcedSource"))


def _field(ra0: float, dec0: float, n: int, radius: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    th = rng.uniform(0, 2 * np.pi, n)
    dec = dec0 + r * np.sin(th)
    ra = (ra0 + r * np.cos(th) / np.cos(np.radians(dec))) % 360.0
    return ra, dec


def check_init_twice_is_safe(apdb: Apdb) -> None:
    _store(apdb, make_objects([1], [10.0], [-30.0]))
    apdb.init_schema()
    apdb.check_schema()
    assert len(apdb.dump_tables()["DiaObjectLast"]) == 1


def check_version_mismatch_refuses(apdb) -> None:
    apdb._write_metadata("schema_version", "99.0.0")
    with pytest.raises(InputError, match="99.0.0"):
        apdb.check_schema()
    with pytest.raises(InputError, match="schema version"):
        apdb.init_schema()


def check_region_and_history(apdb: Apdb) -> None:
    ra0, dec0, radius = 150.0, -20.0, 0.2
    ra, dec = _field(ra0, dec0, 400, 0.4, seed=1)
    ids = np.arange(1000, 1400)
    inside = angular_distance_deg(ra, dec, ra0, dec0) <= radius
    objects = make_objects(ids, ra, dec, validity=VISIT_MJD - 400)
    # one source per object at each of: 400 d before (too old), 365 d (edge, kept), 10 d, 0 d (this visit)
    offsets = np.array([400.0, 365.0, 10.0, 0.0])
    src_obj = np.repeat(ids, len(offsets))
    src_mjd = VISIT_MJD - np.tile(offsets, len(ids))
    src_ra, src_dec = np.repeat(ra, len(offsets)), np.repeat(dec, len(offsets))
    sources = make_sources(np.arange(len(src_obj)) + 10**6, src_obj, src_ra, src_dec, src_mjd)
    forced = make_sources(np.arange(len(src_obj)) + 2 * 10**6, src_obj, src_ra, src_dec, src_mjd, forced=True)
    _store(apdb, objects, sources, forced)

    data = apdb.read_region(SkyRegion(ra0, dec0, radius), VISIT_MJD)
    assert sorted(data.dia_objects["diaObjectId"]) == sorted(ids[inside])
    assert data.dia_objects.colnames == TABLES["DiaObjectLast"].names
    for table in (data.dia_sources, data.dia_forced_sources):
        assert set(table["diaObjectId"]) == set(ids[inside])
        mjd = np.asarray(table["midpointMjdTai"])
        assert np.all(mjd >= VISIT_MJD - 365.0) and np.all(mjd < VISIT_MJD)
        assert len(table) == 2 * inside.sum()
    assert data.dia_sources.colnames == TABLES["DiaSource"].names
    assert data.dia_sources["reliabilityVersion"].mask.all()
    assert np.isnan(data.dia_sources["snr"]).all()
    # the same catalog written and read back
    assert tables_equal(data.dia_objects, objects[np.argsort(ids)][inside[np.argsort(ids)]])


def check_empty_region(apdb: Apdb) -> None:
    data = apdb.read_region(SkyRegion(10.0, 10.0, 0.2), VISIT_MJD)
    assert len(data.dia_objects) == 0 and len(data.dia_sources) == 0 and len(data.dia_forced_sources) == 0
    assert data.dia_sources.colnames == TABLES["DiaSource"].names


def check_store_twice_identical(apdb) -> None:
    ra, dec = _field(33.0, 5.0, 50, 0.2, seed=2)
    ids = np.arange(1, 51)
    objects = make_objects(ids, ra, dec)
    sources = make_sources(ids + 100, ids, ra, dec, VISIT_MJD)
    forced = make_sources(ids + 200, ids, ra, dec, VISIT_MJD, forced=True)
    _store(apdb, objects, sources, forced)
    first = apdb.dump_tables()
    _store(apdb, objects, sources, forced)
    second = apdb.dump_tables()
    assert set(first) == set(second)
    for name in first:
        assert tables_equal(first[name], second[name]), name
    assert len(first["DiaSource"]) == 50
    assert apdb.is_stored(1, 5) and not apdb.is_stored(1, 6)


def check_last_holds_latest(apdb) -> None:
    v1 = make_objects([7], [200.0], [10.0], validity=VISIT_MJD - 1)
    v2 = make_objects([7], [200.00001], [10.0], validity=VISIT_MJD, n_sources=2)
    _store(apdb, v1, visit=1)
    _store(apdb, v2, visit=2)
    _store(apdb, v1, visit=1)  # a late replay of the older visit must not win
    dump = apdb.dump_tables()
    assert len(dump["DiaObject"]) == 2
    last = dump["DiaObjectLast"]
    assert len(last) == 1 and last["validityStartMjdTai"][0] == VISIT_MJD and last["nDiaSources"][0] == 2
    data = apdb.read_region(SkyRegion(200.0, 10.0, 0.01), VISIT_MJD + 1)
    assert list(data.dia_objects["nDiaSources"]) == [2]


def check_moving_object_single_last_row(apdb) -> None:
    """An object whose newer version moved (e.g. across a partition boundary) keeps one DiaObjectLast row."""
    v1 = make_objects([8], [120.0], [0.0], validity=VISIT_MJD - 1)
    v2 = make_objects([8], [120.5], [0.0], validity=VISIT_MJD)
    _store(apdb, v1, visit=1)
    _store(apdb, v2, visit=2)
    assert len(apdb.dump_tables()["DiaObjectLast"]) == 1
    assert len(apdb.read_region(SkyRegion(120.0, 0.0, 0.1), VISIT_MJD + 1).dia_objects) == 0
    assert len(apdb.read_region(SkyRegion(120.5, 0.0, 0.1), VISIT_MJD + 1).dia_objects) == 1


def check_read_as_of_visit(apdb) -> None:
    """Re-processing a visit after later visits were stored reads what the first processing read.

    An object is returned in its latest version with ``validityStartMjdTai`` before the visit; objects first
    seen at or after the visit, and newer versions, are invisible; history stops before the visit.
    """
    t1, t2, t3 = VISIT_MJD - 2, VISIT_MJD - 1, VISIT_MJD
    region = SkyRegion(200.0, 10.0, 0.05)
    v1 = make_objects([7], [200.0], [10.0], validity=t1)
    v2 = make_objects([7], [200.000001], [10.0], validity=t2, n_sources=2)
    v3 = make_objects([7], [200.000002], [10.0], validity=t3, n_sources=3)
    born_later = make_objects([9], [200.001], [10.0], validity=t3)
    for visit, (objects, t) in enumerate([(v1, t1), (v2, t2), (v3, t3), (born_later, t3)], start=1):
        ids = np.asarray(objects["diaObjectId"])
        _store(apdb, objects, make_sources(ids * 100 + visit, ids, objects["ra"], objects["dec"], t),
               make_sources(ids * 100 + visit, ids, objects["ra"], objects["dec"], t, forced=True),
               visit=visit)
    before = apdb.read_region(region, t1)
    assert len(before.dia_objects) == 0 and len(before.dia_sources) == 0
    mid = apdb.read_region(region, t2)
    assert list(mid.dia_objects["diaObjectId"]) == [7]
    assert tables_equal(mid.dia_objects, v1)
    assert list(mid.dia_sources["diaSourceId"]) == [701] and list(mid.dia_forced_sources["diaForcedSourceId"]) == [701]
    late = apdb.read_region(region, t3)
    assert list(late.dia_objects["diaObjectId"]) == [7] and list(late.dia_objects["nDiaSources"]) == [2]
    assert list(late.dia_sources["diaSourceId"]) == [701, 702]
    after = apdb.read_region(region, t3 + 1)
    assert list(after.dia_objects["diaObjectId"]) == [7, 9] and list(after.dia_objects["nDiaSources"]) == [3, 1]
    assert len(after.dia_sources) == 4


def _assert_same_region_data(a, b) -> None:
    for name in ("dia_objects", "dia_sources", "dia_forced_sources"):
        assert tables_equal(getattr(a, name), getattr(b, name)), name


def _assert_same_catalogs(a: dict[str, Table], b: dict[str, Table]) -> None:
    """Every table of two ``dump_tables`` equal, but the metadata (which records the compaction)."""
    assert set(a) == set(b)
    for name in set(a) - {"ApdbMetadata"}:
        assert tables_equal(a[name], b[name]), name


def check_compaction_keeps_contents(apdb) -> None:
    """``compact_history`` changes no table content and no read, also after a replay of a compacted visit."""
    ra, dec = _field(70.0, -10.0, 60, 0.1, seed=3)
    ids = np.arange(1, 61)
    region = SkyRegion(70.0, -10.0, 0.1)
    # eight CCD-visits of the same field: six in finished 30-day buckets, two in the bucket of VISIT_MJD
    days = [-200.0, -190.0, -150.0, -95.0, -70.0, -64.0, -2.0, -1.0]
    for visit, day in enumerate(days, start=1):
        t = VISIT_MJD + day
        _store(apdb, make_objects(ids, ra, dec, validity=t, n_sources=visit),
               make_sources(ids * 100 + visit, ids, ra, dec, t),
               make_sources(ids * 100 + visit, ids, ra, dec, t, forced=True), visit=visit)
    before_read, before_dump = apdb.read_region(region, VISIT_MJD), apdb.dump_tables()
    assert len(before_read.dia_sources) == 60 * len(days)

    counts = apdb.compact_history(VISIT_MJD - 30.0)
    _assert_same_region_data(apdb.read_region(region, VISIT_MJD), before_read)
    _assert_same_catalogs(apdb.dump_tables(), before_dump)
    # a replay of a compacted CCD-visit rewrites its rows: still one of each
    _store(apdb, make_objects(ids, ra, dec, validity=VISIT_MJD - 150.0, n_sources=3),
           make_sources(ids * 100 + 3, ids, ra, dec, VISIT_MJD - 150.0),
           make_sources(ids * 100 + 3, ids, ra, dec, VISIT_MJD - 150.0, forced=True), visit=3)
    _assert_same_region_data(apdb.read_region(region, VISIT_MJD), before_read)
    _assert_same_catalogs(apdb.dump_tables(), before_dump)
    # a run only does the buckets that ended since the last run; everything=True redoes the replayed one
    assert apdb.compact_history(VISIT_MJD - 30.0)["DiaSource"] == 0
    again = apdb.compact_history(VISIT_MJD - 30.0, everything=True)
    _assert_same_catalogs(apdb.dump_tables(), before_dump)
    _assert_same_region_data(apdb.read_region(region, VISIT_MJD), before_read)
    assert again["DiaSource"] <= counts["DiaSource"]
    assert apdb.compact_history(VISIT_MJD - 30.0, everything=True)["DiaSource"] == 0


def check_ra_wrap(apdb: Apdb) -> None:
    ra = np.array([359.95, 359.85, 0.05, 0.15, 0.5, 359.5])
    dec = np.zeros(6)
    ids = np.arange(11, 17)
    sources = make_sources(ids + 50, ids, ra, dec, VISIT_MJD - 1)
    _store(apdb, make_objects(ids, ra, dec), sources)
    data = apdb.read_region(SkyRegion(0.0, 0.0, 0.2), VISIT_MJD)
    assert sorted(data.dia_objects["diaObjectId"]) == [11, 12, 13, 14]
    assert sorted(data.dia_sources["diaObjectId"]) == [11, 12, 13, 14]
    data = apdb.read_region(SkyRegion(359.97, 0.0, 0.15), VISIT_MJD)
    assert sorted(data.dia_objects["diaObjectId"]) == [11, 12, 13]


def check_near_pole(apdb: Apdb) -> None:
    ra = np.array([0.0, 90.0, 180.0, 270.0, 45.0])
    dec = np.array([89.95, 89.95, 89.95, 89.95, 89.5])
    ids = np.arange(21, 26)
    _store(apdb, make_objects(ids, ra, dec))
    data = apdb.read_region(SkyRegion(0.0, 90.0, 0.1), VISIT_MJD)
    assert sorted(data.dia_objects["diaObjectId"]) == [21, 22, 23, 24]


def check_missing_required_column(apdb: Apdb) -> None:
    objects = make_objects([1], [1.0], [1.0])
    objects.remove_column("ra")
    with pytest.raises(InputError, match="ra"):
        _store(apdb, objects)


def check_record_provenance(apdb: Apdb) -> None:
    apdb.record_provenance("provenance:0123", "blink_version: 0.1.0\n")
    apdb.record_provenance("provenance:0123", "blink_version: 0.1.1\n")  # a key recorded again is replaced
    metadata = dict(apdb.dump_tables()["ApdbMetadata"].iterrows("name", "value"))
    assert metadata["provenance:0123"] == "blink_version: 0.1.1\n"
    apdb.check_schema()


CONTRACT = [
    check_init_twice_is_safe,
    check_version_mismatch_refuses,
    check_region_and_history,
    check_empty_region,
    check_store_twice_identical,
    check_last_holds_latest,
    check_moving_object_single_last_row,
    check_read_as_of_visit,
    check_compaction_keeps_contents,
    check_ra_wrap,
    check_near_pole,
    check_missing_required_column,
    check_record_provenance,
]
"""Every contract check, for ``pytest.mark.parametrize``."""
