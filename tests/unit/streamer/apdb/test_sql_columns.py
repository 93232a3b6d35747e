"""The embedded APDB answers plain SQL by Rubin column name (sqlite3, pandas, astropy)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from streamer.apdb.sqlite_store import SqliteApdb
from tests.helpers.apdb_contract import make_objects, make_sources


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "apdb.sqlite"
    ids, ra, dec = np.array([1, 2, 3]), np.array([10.0, 10.001, 20.0]), np.array([-5.0, -5.0, 3.0])
    with SqliteApdb(p) as apdb:
        apdb.init_schema()
        apdb.store(visit=7, detector=4, dia_objects=make_objects(ids, ra, dec, validity=60000.0, n_sources=1),
                   dia_sources=make_sources(ids + 10, ids, ra, dec, np.full(3, 60000.0), visit=7, detector=4),
                   dia_forced_sources=make_sources(ids + 20, ids, ra, dec, np.full(3, 60000.0), visit=7,
                                                   detector=4, forced=True))
    return p


def test_sqlite3_selects_by_column_name(path):
    with SqliteApdb(path) as apdb:
        want = apdb.dump_tables()["DiaSource"]
    rows = sqlite3.connect(path).execute('SELECT diaSourceId, ra, dec, psfFlux, band FROM DiaSource '
                                         'WHERE ra < 15 ORDER BY diaSourceId').fetchall()
    assert [r[0] for r in rows] == [11, 12]
    for r, w in zip(rows, want[:2]):
        assert r[1:3] == (float(w["ra"]), float(w["dec"]))
        assert r[3] == pytest.approx(float(w["psfFlux"])) and r[4] == w["band"]
    objects = sqlite3.connect(path).execute('SELECT "diaObjectId", "nDiaSources" FROM DiaObjectLast '
                                            'ORDER BY 1').fetchall()
    assert [o[0] for o in objects] == [1, 2, 3]


def test_missing_float_is_null(path):
    with SqliteApdb(path) as apdb:
        src = apdb.dump_tables()["DiaSource"]
    nan_cols = [c for c in src.colnames if src[c].dtype.kind == "f" and np.isnan(src[c][0])]
    assert nan_cols
    value = sqlite3.connect(path).execute(f'SELECT "{nan_cols[0]}" FROM DiaSource WHERE diaSourceId = 11').fetchone()
    assert value == (None,)


def test_pandas_and_astropy_read(path):
    import pandas as pd  # a test dependency (pyproject [test]): missing, the test fails rather than skips
    from astropy.table import Table

    with sqlite3.connect(path) as conn:
        frame = pd.read_sql('SELECT diaForcedSourceId, diaObjectId, psfFlux FROM DiaForcedSource ORDER BY 1', conn)
    assert frame["diaForcedSourceId"].tolist() == [21, 22, 23]
    assert frame["diaObjectId"].dtype == np.int64
    table = Table.from_pandas(frame)
    assert table.colnames == ["diaForcedSourceId", "diaObjectId", "psfFlux"] and len(table) == 3


def test_scan_table_and_read_object(path):
    with SqliteApdb(path) as apdb:
        batches = list(apdb.scan_table("DiaSource", batch_rows=2))
        assert [len(b) for b in batches] == [2, 1]
        assert np.concatenate([b["diaSourceId"] for b in batches]).tolist() == [11, 12, 13]
        versions = apdb.read_object(2)
        assert versions["diaObjectId"].tolist() == [2] and len(apdb.read_object(99)) == 0


def test_packed_only_layout_still_opens(tmp_path):
    with SqliteApdb(tmp_path / "p.sqlite", columns=False) as apdb:
        apdb.init_schema()
        apdb.check_schema()
    cols = [r[1] for r in sqlite3.connect(tmp_path / "p.sqlite").execute("PRAGMA table_info(DiaSource)")]
    assert "psfFlux" not in cols and "packed" in cols
