"""``blink process``: one CCD of a small simulated night offline, its products against the worker's.

One CCD, one epoch (truth-rendered templates): the worker runs the night keeping that CCD's products
(``keep_products_ccds``), ``blink process`` runs it offline; then ``--steps diffim`` from the calibrated exposure
alone, and ``--reuse``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from astropy.io import fits
from astropy.table import vstack
from astropy.wcs import WCS

from simulator import SimConfig
from streamer.apdb import open_apdb
from streamer.cli import main
from streamer.products.tables import read_parquet
from streamer.simulated import simulated_repository

CCD = 35
RAW = "raw/DECam_01100000.fits"


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> dict[str, Path]:
    """The night, the worker's kept products of the CCD and ``blink process``'s."""
    root = tmp_path_factory.mktemp("process_night")
    simulated_repository(root, SimConfig(seed=7, n_epochs=1, ccds=[CCD], small=True))
    config = root / "keep.yaml"
    config.write_text(yaml.safe_dump({"blink": {"keep_products_ccds": [CCD]}}))
    assert main(["run", "--root", str(root), "--config", str(config)]) == 0
    out = root / "offline"
    assert main(["process", RAW, "--root", str(root), "--ccd", str(CCD), "--out", str(out)]) == 0
    return {"root": root, "worker": root / "out" / "products" / f"1100000-{CCD:02d}", "offline": out}


def test_products_open_with_astropy_and_pyarrow(processed):
    out = processed["offline"]
    with fits.open(out / "calexp.fits") as calexp, fits.open(out / "difference.fits") as diff:
        wcs = WCS(calexp["IMAGE"].header)
        assert wcs.has_celestial and wcs.sip is not None
        assert 20 < calexp[0].header["MAGZERO"] < 40
        psf = calexp["PSF"].data
        assert psf.ndim == 3 and abs(psf[0].sum() - 1) < 0.01  # the constant term sums to 1 (stamp truncation)
        shape = calexp["IMAGE"].data.shape
        assert shape == (4096, 2048)
        for name in ("IMAGE", "MASK", "VARIANCE", "TEMPLATE_IMAGE"):
            assert diff[name].data.shape == shape
        assert calexp["MASK"].header["MP_NO_DATA"] == 8
    for name in ("src", "diaSrc", "diaSource", "diaObject"):
        assert pq.read_table(out / f"{name}.parquet").num_rows > 0
    assert "psfFlux" in pq.read_table(out / "diaForcedSource.parquet").column_names  # none on a first visit
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["steps"].values()) == {"ran"} and timings["stage_s"]["subtract"] > 0
    assert "subtract" in json.loads((out / "config.json").read_text())


def test_dia_sources_equal_the_workers(processed):
    offline = read_parquet(processed["offline"] / "diaSource.parquet")
    worker = read_parquet(processed["worker"] / "diaSource.parquet")
    assert len(offline) > 0 and offline.colnames == worker.colnames
    for name in offline.colnames:
        assert offline[name].dtype == worker[name].dtype, name
        assert np.array_equal(np.asarray(offline[name]), np.asarray(worker[name]),
                              equal_nan=offline[name].dtype.kind == "f"), name
    apdb = open_apdb(f"sqlite:///{processed['root'] / 'out' / 'apdb.sqlite'}")
    try:
        stored = vstack(list(apdb.scan_table("DiaSource")))
    finally:
        apdb.close()
    stored = stored[np.argsort(np.asarray(stored["diaSourceId"]))]
    ordered = offline[np.argsort(np.asarray(offline["diaSourceId"]))]
    for name in ("diaSourceId", "diaObjectId", "ra", "dec", "psfFlux", "psfFluxErr", "reliability"):
        assert np.array_equal(np.asarray(stored[name]), np.asarray(ordered[name], stored[name].dtype)), name
    offline_diff, worker_diff = processed["offline"] / "difference.fits", processed["worker"] / "difference.fits"
    with fits.open(offline_diff) as a, fits.open(worker_diff) as b:
        assert np.array_equal(a["IMAGE"].data, b["IMAGE"].data, equal_nan=True)


def test_diffim_step_from_a_calexp_alone_gives_the_same_difference(processed, tmp_path):
    for name in ("calexp.fits", "src.parquet"):
        shutil.copy(processed["offline"] / name, tmp_path / name)
    assert main(["process", RAW, "--root", str(processed["root"]), "--ccd", str(CCD), "--out", str(tmp_path),
                 "--steps", "diffim"]) == 0
    assert not (tmp_path / "postISRCCD.fits").exists()
    with fits.open(tmp_path / "difference.fits") as again, fits.open(processed["offline"] / "difference.fits") as full:
        for name in ("IMAGE", "MASK", "VARIANCE", "TEMPLATE_IMAGE", "PSF"):
            assert np.array_equal(again[name].data, full[name].data, equal_nan=True), name
    assert json.loads((tmp_path / "timings.json").read_text())["steps"] == {"diffim": "ran"}


def test_reuse_skips_steps_whose_products_exist(processed):
    out = processed["offline"]
    before = (out / "calexp.fits").stat().st_mtime_ns
    assert main(["process", RAW, "--root", str(processed["root"]), "--ccd", str(CCD), "--out", str(out),
                 "--reuse"]) == 0
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["steps"].values()) == {"reused"} and timings["stage_s"] == {}
    assert (out / "calexp.fits").stat().st_mtime_ns == before
