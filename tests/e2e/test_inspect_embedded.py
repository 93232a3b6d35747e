"""A scientist inspects an embedded night: Parquet export, a light curve and the alerts, on the worker's real
outputs, checked against plain SQL on the APDB and the alert files read directly."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import fastavro
import matplotlib.pyplot as plt
import pyarrow.parquet as pq

from streamer.apdb.columns import TABLES
from streamer.cli import main


def test_export_light_curve_and_alerts_of_a_night(night_copy, tmp_path, capsys):
    root, out = str(night_copy), night_copy / "out"
    assert main(["run", "--root", root, "--strict"]) == 0
    sql = sqlite3.connect(out / "apdb.sqlite")
    # the README's walk-through query, as printed there, runs on the worker's APDB and answers in its columns
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    query = " ".join(re.search(r'"(SELECT diaSourceId.*?LIMIT 3)"', readme, re.S).group(1).split())
    cursor = sql.execute(query.replace("snr > 20", "snr > 5"))  # the small night's sources are fainter
    assert [c[0] for c in cursor.description] == ["diaSourceId", "diaObjectId", "band", "mjd", "psfFlux", "snr",
                                                   "reliability"]
    assert cursor.fetchall()

    assert main(["apdb", "export", str(tmp_path / "all"), "--root", root]) == 0
    for table in ("DiaObject", "DiaSource", "DiaForcedSource"):
        exported = pq.read_table(tmp_path / "all" / f"{table}.parquet")
        assert exported.schema.names == TABLES[table].names
        assert exported.num_rows == sql.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0, table
    # the first visit only: the same rows as SQL selects
    first, last = sql.execute("SELECT MIN(midpointMjdTai), MAX(midpointMjdTai) FROM DiaSource").fetchone()
    assert first < last
    assert main(["apdb", "export", str(tmp_path / "first"), "--root", root, "--mjd-min", str(first), "--mjd-max",
                 str(first + 1e-6), "--tables", "DiaSource"]) == 0
    want = sorted(r[0] for r in sql.execute("SELECT diaSourceId FROM DiaSource WHERE midpointMjdTai < ?",
                                            (first + 1e-6,)))
    assert sorted(pq.read_table(tmp_path / "first" / "DiaSource.parquet")["diaSourceId"].to_pylist()) == want

    dia_object_id, n = sql.execute("SELECT diaObjectId, COUNT(*) FROM DiaSource GROUP BY diaObjectId "
                                   "ORDER BY 2 DESC, 1 LIMIT 1").fetchone()
    assert n >= 2  # an object seen at both epochs
    capsys.readouterr()
    png = tmp_path / "curve.png"
    assert main(["lightcurve", str(dia_object_id), "--root", root, "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    for table, key in (("DiaSource", "diaSourceId"), ("DiaForcedSource", "diaForcedSourceId")):
        for (source_id,) in sql.execute(f"SELECT {key} FROM {table} WHERE diaObjectId = ?", (dia_object_id,)):
            assert str(source_id) in printed, (table, source_id)
    assert plt.imread(png).ndim == 3

    n_alerts = 0
    for path in sorted((out / "alerts").glob("*.avro")):
        with open(path, "rb") as fo:
            n_alerts += sum(1 for _ in fastavro.reader(fo))
    assert n_alerts > 0
    assert main(["alerts", "show", str(out / "alerts"), "--png-dir", str(tmp_path / "triplets")]) == 0
    assert f"{n_alerts} alert(s)" in capsys.readouterr().out
    pngs = sorted((tmp_path / "triplets").glob("*.png"))
    assert len(pngs) == n_alerts and all(plt.imread(p).shape[2] in (3, 4) for p in pngs)
