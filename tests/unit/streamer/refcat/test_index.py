"""``blink refcat``: Gaia-archive files -> HEALPix-partitioned catalog -> region reads, on the real Gaia
chunks of the reference cutouts and on a synthetic all-sky catalog; bad files are named InputErrors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, vstack

from pipeline.errors import InputError
from pipeline.refcat import GAIA_COLUMNS
from schemas import datarepo
from streamer.apdb.sky import angular_distance_deg
from streamer.cli import main
from streamer.refcat import build_index, read_gaia_file
from streamer.worker.inputs import DataRepository
from tests.helpers.reference import REFERENCE_DIR

REAL_GAIA_DIRS = sorted(Path(REFERENCE_DIR / "real-cutouts").glob("*/gaia"))


def _synthetic(n: int, seed: int = 1, first_id: int = 1) -> Table:
    """Gaia-archive rows in four 8-degree patches: across RA = 0, at the north pole, mid-south, one more."""
    rng = np.random.default_rng(seed)
    t = Table()
    t["source_id"] = np.arange(first_id, first_id + n, dtype=np.int64)
    centres = np.array([(0.0, 1.0), (200.0, 89.0), (120.0, -45.0), (300.0, -10.0)])[rng.integers(0, 4, n)]
    dec = np.clip(centres[:, 1] + rng.uniform(-4.0, 4.0, n), -90.0, 90.0)
    t["ra"] = (centres[:, 0] + rng.uniform(-4.0, 4.0, n) / np.maximum(np.cos(np.radians(dec)), 0.05)) % 360.0
    t["dec"] = dec
    for name in GAIA_COLUMNS[3:]:
        t[name] = rng.uniform(0.1, 1.0, n).astype(np.float32)
    t["ref_epoch"] = np.full(n, 2016.0)
    t["phot_g_mean_mag"] = rng.uniform(12.0, 21.0, n).astype(np.float32)
    t["extra_column"] = np.zeros(n)
    return t


def _write(table: Table, path: Path) -> Path:
    fmt = {".fits": "fits", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv"}[path.suffix]
    table.write(path, format=fmt, overwrite=True)
    return path


def _brute_force(table: Table, ra: float, dec: float, radius: float) -> set[int]:
    near = angular_distance_deg(table["ra"], table["dec"], ra, dec) <= radius
    return set(np.asarray(table["source_id"][near]).tolist())


@pytest.mark.skipif(not REAL_GAIA_DIRS, reason="reference Gaia chunks not present")
def test_real_chunks_index_and_region_read(tmp_path):
    src = tmp_path / "gaia"
    src.mkdir()
    for folder in REAL_GAIA_DIRS:
        for chunk in folder.glob("chunk-*.fits"):
            shutil.copy(chunk, src / f"{folder.parent.name}-{chunk.name}")
    everything = vstack([Table.read(p) for p in sorted(src.iterdir())])
    index = build_index(src, tmp_path)
    assert int(index["n_stars"].sum()) == len(np.unique(everything["source_id"]))
    assert (tmp_path / datarepo.refcat_index_path()).exists()
    repo = DataRepository(tmp_path)
    for ra, dec in ((244.72, 12.0), (110.29, 24.05)):  # testcase3 and testcase6
        got = repo.refcat_in(ra, dec, 0.08)
        assert set(np.asarray(got["source_id"]).tolist()) == _brute_force(everything, ra, dec, 0.08)
        assert len(got) > 20 and set(GAIA_COLUMNS) <= set(got.colnames)
    whole = repo.refcat_in(177.0, 18.0, 70.0)  # both fields: two-parameter solutions keep NaN proper motions
    assert len(whole) == int(index["n_stars"].sum()) and np.isnan(np.asarray(whole["pmra"], float)).sum() > 10
    row = got[0]
    orig = everything[np.asarray(everything["source_id"]) == row["source_id"]][0]
    assert row["ra"] == orig["ra"] and row["phot_g_mean_mag"] == pytest.approx(orig["phot_g_mean_mag"])


def test_synthetic_catalog_in_fits_csv_and_ecsv(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a, b, c = _synthetic(4000, 1), _synthetic(3000, 2, first_id=10_000), _synthetic(2000, 3, first_id=20_000)
    _write(a, src / "part-a.fits")
    _write(b, src / "part-b.csv")
    _write(c, src / "part-c.ecsv")
    _write(a[:500], src / "overlap.fits")  # the same sources twice: kept once
    (src / "README.txt").write_text("not a catalog")
    index = build_index(src, tmp_path)
    assert int(index["n_stars"].sum()) == 9000 and len(index) > 40
    everything = vstack([a, b, c])
    repo = DataRepository(tmp_path)
    for ra, dec, radius in ((0.05, 1.0, 3.0), (200.0, 89.5, 2.0), (120.0, -45.0, 0.7), (359.9, -2.0, 5.0)):
        got = repo.refcat_in(ra, dec, radius)
        assert set(np.asarray(got["source_id"]).tolist()) == _brute_force(everything, ra, dec, radius)
    assert repo.refcat_partition.cache_info().currsize < len(index)  # only the partitions touched were read
    assert "extra_column" not in repo.refcat_in(0.05, 1.0, 3.0).colnames


def test_region_without_stars_is_empty_and_typed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    t = _synthetic(200)
    t["dec"] = np.full(len(t), 60.0)
    _write(t, src / "north.fits")
    build_index(src, tmp_path)
    got = DataRepository(tmp_path).refcat_in(10.0, -60.0, 0.5)
    assert len(got) == 0 and set(GAIA_COLUMNS) <= set(got.colnames)


def test_rebuilding_replaces_the_index(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(_synthetic(1000), src / "a.fits")
    build_index(src, tmp_path)
    (src / "a.fits").unlink()
    _write(_synthetic(50, 5), src / "b.fits")
    index = build_index(src, tmp_path)
    parts = list((tmp_path / datarepo.refcat_partition_path(0).parent).iterdir())
    assert int(index["n_stars"].sum()) == 50 and len(parts) == len(index)


def test_flux_errors_in_the_archives_other_spelling(tmp_path):
    t = _synthetic(10)
    for band in ("g", "bp", "rp"):
        foe = t[f"phot_{band}_mean_flux_over_error"]
        del t[f"phot_{band}_mean_flux_over_error"]
        t[f"phot_{band}_mean_flux"] = np.full(len(t), 1000.0)
        t[f"phot_{band}_mean_flux_error"] = 1000.0 / np.asarray(foe, float)
    read = read_gaia_file(_write(t, tmp_path / "flux.fits"))
    assert np.allclose(read["phot_bp_mean_flux_over_error"], _synthetic(10)["phot_bp_mean_flux_over_error"],
                       rtol=1e-5)


def test_bad_files_are_input_errors_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"SIMPLE  = nonsense" * 100)
    with pytest.raises(InputError, match="garbage.fits"):
        read_gaia_file(garbage)
    no_pm = _synthetic(10)
    del no_pm["pmra"]
    with pytest.raises(InputError, match=r"no_pm.fits.*pmra"):
        read_gaia_file(_write(no_pm, tmp_path / "no_pm.fits"))
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(image)
    with pytest.raises(InputError, match="image.fits"):
        read_gaia_file(image)
    bad_dec = _synthetic(10)
    bad_dec["dec"][3] = 95.0
    with pytest.raises(InputError, match="bad_dec.csv"):
        read_gaia_file(_write(bad_dec, tmp_path / "bad_dec.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Gaia-archive file"):
        build_index(tmp_path / "empty", tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        build_index(tmp_path / "missing", tmp_path)


def test_missing_index_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="blink refcat") as err:
        DataRepository(tmp_path).refcat_in(10.0, 10.0, 0.2)
    assert err.value.stage == "load_refcat"


def test_blink_refcat_command(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(_synthetic(300), src / "chunk-1.fits")
    assert main(["refcat", str(src), "--out", str(tmp_path / "root")]) == 0
    assert (tmp_path / "root" / datarepo.refcat_index_path()).exists()
    (src / "chunk-2.csv").write_text("ra,dec\n1,2\n")
    assert main(["refcat", str(src), "--out", str(tmp_path / "root")]) == 2  # a named InputError, exit 2
