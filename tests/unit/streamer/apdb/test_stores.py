"""The APDB contract on the SQLite store, plus the column spec and sky helpers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from streamer.apdb import open_apdb
from streamer.apdb.base import Apdb
from streamer.apdb.columns import TABLES, empty_table
from streamer.apdb.sky import ang2pix_nested, angular_distance_deg, cover_disc, pix2ang_nested
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.apdb.table_rows import rows_to_table, table_to_rows, tables_equal
from tests.helpers.apdb_contract import CONTRACT, VISIT_MJD, make_sources


@pytest.fixture
def apdb(tmp_path):
    store = SqliteApdb(tmp_path / "apdb.sqlite")
    store.init_schema()
    yield store
    store.close()


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__.removeprefix("check_"))
def test_contract(apdb, check):
    check(apdb)


def test_is_apdb(apdb):
    assert isinstance(apdb, Apdb)


def test_uninitialised_refuses(tmp_path):
    store = SqliteApdb(tmp_path / "new.sqlite")
    with pytest.raises(InputError, match="init_schema"):
        store.check_schema()
    store.close()


def test_open_apdb_sqlite(tmp_path):
    store = open_apdb(f"sqlite:///{tmp_path}/x.sqlite")
    assert isinstance(store, SqliteApdb)
    store.init_schema()
    store.check_schema()
    store.close()
    with pytest.raises(ValueError, match="scheme"):
        open_apdb("mysql://x")


def test_columns_follow_alert_schema():
    assert TABLES["DiaObject"].names[:2] == ["diaObjectId", "validityStartMjdTai"]
    assert len(TABLES["DiaSource"].columns) == 102
    spec = TABLES["DiaSource"]
    assert spec.column("diaObjectId").nullable and spec.column("diaObjectId").dtype == np.int64
    assert spec.column("x").dtype == np.float32 and not spec.column("x").nullable
    assert spec.column("band").cql_type == "text"


def test_rows_round_trip_keeps_nulls():
    t = make_sources([1, 2, 3], [4, 5, 6], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], 60000.0)
    t["snr"][1] = 5.0
    names, rows = table_to_rows("DiaSource", t)
    assert rows[0][names.index("snr")] is None and rows[1][names.index("snr")] == 5.0
    assert rows[0][names.index("isNegative")] is None
    back = rows_to_table("DiaSource", names, rows)
    assert tables_equal(back, t)
    assert len(empty_table("diaForcedSource")) == 0


def test_ang2pix_matches_astropy_healpix():
    import astropy.units as u
    import astropy_healpix as healpix  # test dependency: the cross-check must run

    rng = np.random.default_rng(3)
    ra = rng.uniform(0, 360, 20000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 20000)))
    for nside in (1, 64, 256, 1024):
        hp = healpix.HEALPix(nside, order="nested")
        np.testing.assert_array_equal(ang2pix_nested(nside, ra, dec), hp.lonlat_to_healpix(ra * u.deg, dec * u.deg))
        pix = rng.integers(0, 12 * nside * nside, 1000)
        lon, lat = hp.healpix_to_lonlat(pix)
        r, d = pix2ang_nested(nside, pix)
        assert np.max(angular_distance_deg(r, d, lon.deg, lat.deg)) < 1e-9


@pytest.mark.parametrize("ra0,dec0", [(10.0, -30.0), (0.01, 0.0), (359.99, 41.8), (0.0, 89.95), (45.0, -89.9)])
def test_cover_disc_covers(ra0, dec0):
    nside, radius = 256, 0.25
    rng = np.random.default_rng(4)
    r = radius * np.sqrt(rng.uniform(0, 1, 20000))
    th = rng.uniform(0, 2 * np.pi, 20000)
    # points exactly inside the disc, via the tangent-plane offset formula
    d0 = np.radians(dec0)
    rr = np.radians(r)
    dec = np.arcsin(np.sin(d0) * np.cos(rr) + np.cos(d0) * np.sin(rr) * np.cos(th))
    ra = np.radians(ra0) + np.arctan2(np.sin(th) * np.sin(rr) * np.cos(d0), np.cos(rr) - np.sin(d0) * np.sin(dec))
    pix = ang2pix_nested(nside, np.degrees(ra), np.degrees(dec))
    cover = cover_disc(nside, ra0, dec0, radius)
    assert np.isin(pix, cover).all()
    assert len(cover) < 60


def test_cql_file_matches_column_spec():
    from streamer.apdb.cql_schema import CQL_PATH, load_cql, render_cql

    assert CQL_PATH.read_text() == render_cql(), "regenerate: python -m streamer.apdb.cql_schema > schemas/apdb.cql"
    stmts = load_cql("ks_test", "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    assert stmts[0].startswith("CREATE KEYSPACE IF NOT EXISTS ks_test")
    assert all(s.startswith("CREATE") and "${" not in s for s in stmts)
    assert sum('"DiaSource"' in s for s in stmts) == 1
    with pytest.raises(ValueError):
        load_cql("bad;name", "{}")


def test_open_apdb_cassandra_url(monkeypatch):
    import streamer.apdb.cassandra as cs

    captured = {}
    monkeypatch.setattr(cs, "CassandraApdb", lambda **kw: captured.update(kw) or "store")
    assert open_apdb("cassandra://u:p@h1,h2:9043/ks?consistency=ONE&replication_factor=3&ssl=1") == "store"
    assert captured == {"hosts": ["h1", "h2"], "port": 9043, "keyspace": "ks", "username": "u", "password": "p",
                        "consistency": "ONE", "replication_factor": 3, "ssl": True}
    captured.clear()
    open_apdb("cassandra://10.0.0.1/blink")
    assert captured == {"hosts": ["10.0.0.1"], "keyspace": "blink"}


def test_drop_repeated_keys_keeps_last_of_each_key():
    """Rows read twice (a compacted blob and a replayed CCD-visit blob) come back once, the later copy kept."""
    from streamer.apdb.packed import drop_repeated_keys, pack_table, sort_packed

    t = make_sources([5, 3, 5, 9, 3], [1, 1, 1, 2, 1], [1.0] * 5, [2.0] * 5, VISIT_MJD)
    t["psfFlux"] = np.array([50, 30, 51, 90, 31], np.float32)  # the copies differ, to see which is kept
    out = drop_repeated_keys("DiaSource", sort_packed("DiaSource", pack_table("DiaSource", t)))
    assert out["diaSourceId"].tolist() == [3, 5, 9]
    assert out["psfFlux"].tolist() == [31, 51, 90]


def test_cli_apdb_compact_on_sqlite_has_nothing_to_do(tmp_path, capfd):
    from streamer.cli import main

    url = f"sqlite:///{tmp_path / 'apdb.sqlite'}"
    assert main(["apdb", "init", "--apdb", url]) == 0
    assert main(["apdb", "compact", "--apdb", url, "--before", "61000"]) == 0
    assert "DiaSource 0, DiaSource_rows_merged 0" in capfd.readouterr().err
