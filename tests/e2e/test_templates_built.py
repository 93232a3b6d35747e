"""Templates that Blink builds itself (``blink templates build``) against the simulator's truth-rendered ones.

One simulated night (CCD 35, two epochs, small mode) with six earlier epochs of its field (seeing 0.7-1.2",
``SimConfig(templates="both")``): root T keeps the truth-rendered tiles, root B is the same night whose tiles
Blink coadds from the earlier epochs' raws, after every card that no real DECam header carries has been
stripped from every simulated FITS input. Both nights run through the embedded worker and are scored against
the truth.

Stated margins (the issue's "within a stated margin"): the built template's completeness at true SNR >= 10 at
most 10 points below the truth template's (the coadd of six 90 s epochs is about 1 mag shallower than the
26-mag truth tile, so the difference image is noisier), and at most 3 more unmatched DiaSources per CCD-visit
above the reliability cut. The built template's PSF model: within 3% of the true PSF of the weighted coadd
(the simulator's Moffats at the inputs' true seeing, combined with the tile's own weights), at every node that
every input covers. A second build adds nothing and leaves the tiles as they are.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from pipeline.errors import TemplatePsfError
from pipeline.psf import psf_image_fwhm
from pipeline.reliability import DEFAULT_MIN_RELIABILITY
from schemas import datarepo
from simulator import SimConfig
from simulator.scoring import score_dia_sources
from simulator.template_truth import true_tile_fwhm_arcsec
from streamer.apdb import open_apdb
from streamer.cli import main
from streamer.report.truth import load_truth
from streamer.simulated import simulated_repository
from streamer.templates.tiles import read_tile
from tests.helpers.reference import REFERENCE_DIR

NIGHT = SimConfig(seed=13, small=True, ccds=[35], n_epochs=2, templates="both", n_template_epochs=6)
STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
              "EXTNAME", "BZERO", "BSCALE", "CHECKSUM", "DATASUM", "TFIELDS", "ZIMAGE", "COMMENT", "HISTORY", ""}


def _real_keys() -> set[str]:
    """Every keyword of the real DECam headers in the reference folder (raw, bias, InstCal, calexp)."""
    keys = set()
    for path in (REFERENCE_DIR / "decam" / "headers").glob("*.yaml"):
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*-?\s*([A-Z0-9_\-]{1,8})\s*:", line)
            if match:
                keys.add(match.group(1))
    return keys


def _strip_simulator_cards(root: Path) -> int:
    """Remove from every simulated raw and calibration every card no real header has; the cards removed."""
    real = _real_keys() | STRUCTURAL
    removed = 0
    for path in sorted((root / "raw").glob("*.fits")) + sorted((root / "calib").glob("*.fits")):
        with fits.open(path, mode="update") as hdus:
            for hdu in hdus:
                extra = [k for k in hdu.header if k not in real and not k.startswith(("NAXIS", "TTYPE", "TFORM"))]
                for key in extra:
                    del hdu.header[key]
                removed += len(extra)
    return removed


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> tuple[Path, Path]:
    truth_root = tmp_path_factory.mktemp("truth_templates")
    simulated_repository(truth_root, NIGHT)
    built_root = tmp_path_factory.mktemp("built_templates") / "night"
    shutil.copytree(truth_root, built_root, copy_function=os.link, ignore=shutil.ignore_patterns("templates"))
    for path in (built_root / "raw").glob("*.fits"):  # hard links: give the stripped copies their own files
        shutil.copyfile(path, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    for path in (built_root / "calib").glob("*.fits"):
        shutil.copyfile(path, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    _strip_simulator_cards(built_root)
    assert main(["templates", "build", "--root", str(built_root), "raw/DECam_0109*.fits"]) == 0
    for root in (truth_root, built_root):
        assert main(["run", "--root", str(root), "--strict"]) == 0
    return truth_root, built_root


def _score(root: Path) -> tuple[float, float, float]:
    apdb = open_apdb(f"sqlite:///{root / 'out' / 'apdb.sqlite'}")
    dia = apdb.dump_tables()["DiaSource"]
    apdb.close()
    sources, fluxes = load_truth(root)
    _, matches = score_dia_sources(dia, sources, fluxes)
    truth_bright = fluxes[np.abs(np.asarray(fluxes["snr"], float)) >= 10]
    completeness = np.isin(truth_bright["source_id"] * 10**8 + truth_bright["expnum"],
                           matches["source_id"] * 10**8 + matches["expnum"]).mean()
    reliable = dia[np.asarray(dia["reliability"], float) >= DEFAULT_MIN_RELIABILITY]
    per_exposure, _ = score_dia_sources(reliable, sources, fluxes)
    per_all, _ = score_dia_sources(dia, sources, fluxes)
    return float(completeness), float(np.mean(per_exposure["n_false"])), float(np.mean(per_all["n_false"]))


def test_built_templates_within_margin_of_truth_templates(nights):
    truth_root, built_root = nights
    truth_completeness, truth_false_cut, _ = _score(truth_root)
    built_completeness, built_false_cut, _ = _score(built_root)
    assert truth_completeness > 0.8
    assert built_completeness >= truth_completeness - 0.10
    assert built_false_cut <= truth_false_cut + 3.0


def test_built_template_psf_matches_the_truth(nights):
    _, built_root = nights
    exposures = Table.read(built_root / datarepo.truth_dir() / "template_exposures.ecsv")
    psf_truth = Table.read(built_root / datarepo.truth_dir() / "psf.ecsv")
    index = Table.read(built_root / datarepo.template_index_path("r"))
    checked = 0
    for relative in index["path"]:
        with fits.open(built_root / relative) as hdus:
            inputs, nodes = Table(hdus["INPUTS"].data), Table(hdus["PSF_NODES"].data)
            images = np.asarray(hdus["PSF"].data)
        everywhere = np.isclose(np.asarray(nodes["weight"]), np.sum(inputs["weight"]), rtol=1e-6)
        if not everywhere.any() or len(inputs) < 4:
            continue
        model = psf_image_fwhm(images[everywhere]) * 0.263
        truth = true_tile_fwhm_arcsec(inputs, exposures, psf_truth)
        assert np.all(np.abs(model / truth - 1) < 0.03), (relative, model, truth)
        checked += 1
    assert checked >= 1


def test_second_build_adds_nothing(nights):
    _, built_root = nights
    tiles = sorted((built_root / "templates" / "r").glob("tile_*.fits"))
    before = {p.name: p.stat().st_mtime_ns for p in tiles}
    assert main(["templates", "build", "--root", str(built_root), "raw/DECam_0109*.fits"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in tiles} == before


def test_tile_without_psf_is_a_named_error(nights, tmp_path):
    _, built_root = nights
    source = sorted((built_root / "templates" / "r").glob("tile_*.fits"))[0]
    with fits.open(source) as hdus:
        fits.HDUList([h.copy() for h in hdus if h.name not in ("PSF", "PSF_NODES")]).writeto(tmp_path / "t.fits")
    with pytest.raises(TemplatePsfError, match="no PSF model"):
        read_tile(tmp_path / "t.fits", 1, "t.fits")
    assert read_tile(source, 1, source.name).psf.images.shape[0] >= 1
