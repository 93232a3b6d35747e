"""``blink lightcurve``: a DiaObject's versions and whole history through the APDB port, and its figure."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from rich.console import Console

from pipeline.errors import InputError
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.cli import main
from streamer.inspect.light_curve import plot_light_curve, print_object_history, read_object_history
from tests.helpers.apdb_contract import make_objects, make_sources

# four visits over two years: the history spans more than one region read's 365-day window
VISIT_MJDS = (60000.2, 60100.3, 60420.1, 60800.4)
OBJECT, NEIGHBOUR = 7, 8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def apdb_path(tmp_path):
    """OBJECT detected at visits 0, 1 and 3 and measured by forced photometry at 1, 2 and 3; NEIGHBOUR (2 arcsec
    away) detected at every visit."""
    path = tmp_path / "apdb.sqlite"
    ra, dec = np.array([150.0, 150.0]), np.array([2.0, 2.0 + 2.0 / 3600])
    with SqliteApdb(path) as apdb:
        apdb.init_schema()
        for k, mjd in enumerate(VISIT_MJDS):
            detected = [OBJECT, NEIGHBOUR] if k != 2 else [NEIGHBOUR]
            pick = np.isin([OBJECT, NEIGHBOUR], detected)
            ids = np.array(detected)
            sources = make_sources(ids * 100 + k, ids, ra[pick], dec[pick], mjd, visit=k + 1, detector=3)
            sources["psfFluxErr"] = np.float32(5.0)
            sources["band"] = ["g" if k % 2 else "r"] * len(ids)
            forced_ids = np.array([OBJECT] if k else [], np.int64)
            forced = make_sources(forced_ids * 1000 + k, forced_ids, ra[:len(forced_ids)], dec[:len(forced_ids)],
                                  mjd, visit=k + 1, detector=3, forced=True)
            forced["band"] = ["g" if k % 2 else "r"] * len(forced_ids)
            apdb.store(visit=k + 1, detector=3, dia_objects=make_objects(ids, ra[pick], dec[pick], validity=mjd,
                                                                         n_sources=k + 1),
                       dia_sources=sources, dia_forced_sources=forced)
    return path


def test_history_has_every_version_and_source_of_the_object_only(apdb_path):
    with SqliteApdb(apdb_path) as apdb:
        history = read_object_history(apdb, OBJECT, until_mjd_tai=VISIT_MJDS[-1] + 1)
        every = apdb.dump_tables()
    assert history.dia_object_id == OBJECT
    assert history.versions["validityStartMjdTai"].tolist() == [VISIT_MJDS[0], VISIT_MJDS[1], VISIT_MJDS[3]]
    assert history.dia_sources["diaSourceId"].tolist() == [700, 701, 703]
    assert history.dia_forced_sources["diaForcedSourceId"].tolist() == [7001, 7002, 7003]
    assert history.dia_sources["midpointMjdTai"].tolist() == [VISIT_MJDS[0], VISIT_MJDS[1], VISIT_MJDS[3]]
    # what the region reads gave equals the APDB's rows of this object
    want = every["DiaSource"][np.asarray(every["DiaSource"]["diaObjectId"]) == OBJECT]
    assert np.array_equal(np.asarray(history.dia_sources["psfFlux"]), np.asarray(want["psfFlux"]))
    # the default end (now, or a year after the latest version) reaches the same rows
    with SqliteApdb(apdb_path) as apdb:
        assert len(read_object_history(apdb, OBJECT).dia_forced_sources) == 3
        with pytest.raises(InputError, match="no DiaObject 99"):
            read_object_history(apdb, 99)


def test_summary_and_history_are_printed(apdb_path):
    with SqliteApdb(apdb_path) as apdb:
        history = read_object_history(apdb, OBJECT)
    text = io.StringIO()
    print_object_history(history, Console(file=text, width=200))
    printed = text.getvalue()
    assert f"DiaObject {OBJECT}" in printed and "150.0000000, +2.0000000" in printed
    assert printed.count("DiaSource ") >= 3 and printed.count("forced") >= 3
    for source_id in ("700", "701", "703", "7001", "7002", "7003"):
        assert source_id in printed


def test_light_curve_png(apdb_path, tmp_path):
    with SqliteApdb(apdb_path) as apdb:
        history = read_object_history(apdb, OBJECT)
    path = plot_light_curve(history.dia_sources, history.dia_forced_sources, tmp_path / "lc" / "7.png", title="7")
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = plt.imread(path)
    assert pixels.ndim == 3 and pixels.shape[:2] == (495, 880)  # 8 x 4.5 inches at 110 dpi
    empty = plot_light_curve(history.dia_sources[:0], history.dia_forced_sources[:0], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_MAGIC


def test_cli_prints_and_draws(apdb_path, tmp_path, capsys):
    out = tmp_path / "curve.png"
    assert main(["lightcurve", str(OBJECT), "--apdb", f"sqlite:///{apdb_path}", "--out", str(out)]) == 0
    assert f"DiaObject {OBJECT}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert main(["lightcurve", "99", "--apdb", f"sqlite:///{apdb_path}", "--out", str(out)]) == 2
