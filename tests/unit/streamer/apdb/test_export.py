"""``blink apdb export``: APDB tables to Parquet with the Rubin names and types, whole, by time or by sky region."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord

from pipeline.errors import InputError
from streamer.apdb.base import SkyRegion
from streamer.apdb.columns import TABLES
from streamer.apdb.export import ExportSelection, arrow_schema, export_apdb
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.cli import main
from tests.helpers.inspect_apdb import VISIT_MJDS, fill_three_visits

ARROW = {"long": pa.int64(), "int": pa.int32(), "float": pa.float32(), "double": pa.float64(),
         "boolean": pa.bool_(), "string": pa.string()}


@pytest.fixture
def apdb_path(tmp_path):
    """Three visits of the same 40 objects (a new DiaObject version, a DiaSource and a DiaForcedSource each)."""
    path = tmp_path / "apdb.sqlite"
    with SqliteApdb(path) as apdb:
        apdb.init_schema()
        fill_three_visits(apdb)
    return path


def _read(path):
    return pq.read_table(path)


def test_schema_has_rubin_names_types_and_nullability(apdb_path, tmp_path):
    with SqliteApdb(apdb_path) as apdb:
        written = export_apdb(apdb, tmp_path / "out")
    assert [w.table for w in written] == ["DiaObject", "DiaSource", "DiaForcedSource"]
    for w in written:
        schema = pq.read_schema(w.path)
        spec = TABLES[w.table]
        assert schema.names == spec.names
        for c in spec.columns:
            field = schema.field(c.name)
            assert field.type == ARROW[c.avro_type], c.name
            assert field.nullable == c.nullable, c.name
        assert schema.metadata[b"apdb_table"] == w.table.encode()
        assert pq.read_schema(w.path).equals(arrow_schema(w.table), check_metadata=True)


def test_whole_export_has_every_row_and_value(apdb_path, tmp_path):
    with SqliteApdb(apdb_path) as apdb:
        written = export_apdb(apdb, tmp_path / "out", batch_rows=7)  # several batches per table
        counts = {name: apdb.count_rows(name) for name in ("DiaObject", "DiaSource", "DiaForcedSource")}
        dumped = apdb.dump_tables()
    assert counts == {"DiaObject": 120, "DiaSource": 120, "DiaForcedSource": 120}
    for w in written:
        table = _read(w.path)
        assert w.n_rows == w.n_scanned == table.num_rows == counts[w.table]
        want = dumped[w.table]
        key = TABLES[w.table].primary_key
        order = np.lexsort([table.column(k).to_numpy() for k in reversed(key)])
        assert np.array_equal(table.column("ra").to_numpy()[order], np.asarray(want["ra"]))
        assert np.array_equal(table.column(key[0]).to_numpy()[order], np.asarray(want[key[0]]))
    sources = _read(tmp_path / "out" / "DiaSource.parquet")
    # a nullable float left NaN in the APDB is a Parquet null; a masked boolean too; a set one is kept
    assert sources.column("psfFluxErr").null_count == sources.num_rows
    assert sources.column("psfFlux").null_count == 0
    is_negative = sources.column("isNegative")
    assert 0 < is_negative.null_count < sources.num_rows
    assert sources.column("reliabilityVersion").null_count == sources.num_rows
    assert set(sources.column("band").to_pylist()) == {"g"}


def test_time_range_is_half_open_on_each_tables_time(apdb_path, tmp_path):
    lo, hi = VISIT_MJDS[1], VISIT_MJDS[2]
    with SqliteApdb(apdb_path) as apdb:
        export_apdb(apdb, tmp_path / "out", selection=ExportSelection(mjd_min_tai=lo, mjd_max_tai=hi))
    for name, column in (("DiaSource", "midpointMjdTai"), ("DiaForcedSource", "midpointMjdTai"),
                         ("DiaObject", "validityStartMjdTai")):
        times = _read(tmp_path / "out" / f"{name}.parquet").column(column).to_numpy()
        assert times.size == 40 and np.all(times == VISIT_MJDS[1]), name


def test_sky_region_selects_rows_inside_the_circle(apdb_path, tmp_path):
    region = SkyRegion(10.1, -5.1, 0.25)
    with SqliteApdb(apdb_path) as apdb:
        written = export_apdb(apdb, tmp_path / "out", selection=ExportSelection(region=region))
        every = apdb.dump_tables()
    centre = SkyCoord(region.ra_deg, region.dec_deg, unit="deg")
    for w in written:
        table = every[w.table]
        inside = SkyCoord(np.asarray(table["ra"]), np.asarray(table["dec"]), unit="deg").separation(centre).deg \
            <= region.radius_deg
        key = TABLES[w.table].primary_key[0]
        got = sorted(_read(w.path).column(key).to_pylist())
        assert 0 < len(got) < len(table)
        assert got == sorted(np.asarray(table[key])[inside].tolist())
        assert w.n_scanned == len(table)


def test_bad_selections_are_refused():
    with pytest.raises(InputError, match="empty time range"):
        ExportSelection(mjd_min_tai=2.0, mjd_max_tai=1.0)
    with pytest.raises(InputError, match="radius_deg"):
        ExportSelection(region=SkyRegion(1.0, 2.0, 0.0))


def test_cli_exports_a_region_and_a_time_range(apdb_path, tmp_path):
    out = tmp_path / "cli"
    url = f"sqlite:///{apdb_path}"
    assert main(["apdb", "export", str(out), "--apdb", url, "--mjd-min", str(VISIT_MJDS[0]), "--mjd-max",
                 str(VISIT_MJDS[1]), "--tables", "DiaSource", "DiaObjectLast"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["DiaObjectLast.parquet", "DiaSource.parquet"]
    assert _read(out / "DiaSource.parquet").num_rows == 40
    # DiaObjectLast holds the latest versions, all made at the third visit: none in the first visit's range
    assert _read(out / "DiaObjectLast.parquet").num_rows == 0
    assert main(["apdb", "export", str(out), "--apdb", url, "--ra", "10"]) == 2
    assert main(["apdb", "export", str(out), "--apdb", url, "--ra", "10", "--dec", "-5", "--radius-deg", "2"]) == 0
    assert _read(out / "DiaForcedSource.parquet").num_rows == 120
