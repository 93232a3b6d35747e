"""The simulator's Community Pipeline InstCal products: the CP's names, headers and planes, a TPV WCS true to
the simulated optics, events that name them, and the same bytes on every run."""

from __future__ import annotations

import ast
import hashlib
import inspect

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS

import simulator.instcal
from schemas import datarepo
from simulator import camera as sim_camera
from simulator import optics, simulate
from simulator.instcal import CP_WCS_ERROR_ARCSEC
from streamer.decam.instcal_files import instcal_paths
from streamer.events.files import read_event_file
from tests.helpers.instcal_night import CONFIG, exposure_truth, instcal_night, ooi_path
from tests.helpers.reference import DECAM_REFERENCE_DIR

REAL_HEADER = DECAM_REFERENCE_DIR / "headers" / "fitsheader-decam-instcal-c4d_190402_050618_ooi_VR_v1.yaml"

PRIMARY_KEYS = ("PROCTYPE", "PRODTYPE", "INSTRUME", "OBSTYPE", "EXPNUM", "EXPTIME", "MJD-OBS", "DATE-OBS",
                "FILTER", "RA", "DEC", "AIRMASS", "MAGZERO", "MAGZPT", "PHOTREF", "RADSTD", "WCSCAL", "BAND",
                "NITE", "PLVER", "DTNSANAM")
"""Primary keywords of a CP InstCal product that users and Blink read."""

EXTENSION_KEYS = ("EXTNAME", "CCDNUM", "DETPOS", "GAINA", "GAINB", "RDNOISEA", "RDNOISEB", "SATURATA", "SATURATB",
                  "SATURATE", "FWHM", "AVSKY", "AVSIG", "ARAWGAIN", "FLATMEDA", "FLATMEDB", "NSATPIX", "CTYPE1",
                  "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "LTV1",
                  "LTV2", *(f"PV{a}_{k}" for a in (1, 2) for k in range(11)))
"""Keywords of a CP InstCal image extension that users and Blink read."""


@pytest.fixture(scope="module")
def files():
    ooi, oow, ood = instcal_paths(ooi_path())
    with fits.open(ooi) as i, fits.open(oow) as w, fits.open(ood) as d:
        yield i, w, d


def test_keywords_are_the_real_cps(files):
    real = list(yaml.safe_load(REAL_HEADER.read_text()))
    real_primary, real_extension = set(real[:real.index("XTENSION")]), set(real[real.index("XTENSION"):])
    assert set(PRIMARY_KEYS) <= real_primary and set(EXTENSION_KEYS) <= real_extension
    image, weight, mask = files
    for hdul, prodtype in ((image, "image"), (weight, "wtmap"), (mask, "dqmask")):
        assert set(PRIMARY_KEYS) <= set(hdul[0].header)
        assert hdul[0].header["PROCTYPE"] == "InstCal" and hdul[0].header["PRODTYPE"] == prodtype
        assert [h.header["CCDNUM"] for h in hdul[1:]] == [35, 1]     # by DETPOS descending, as raws
        for hdu in hdul[1:]:
            assert isinstance(hdu, fits.CompImageHDU) and hdu.data.shape == (4094, 2046)
            assert set(EXTENSION_KEYS) <= set(hdu.header)
            assert hdu.header["CTYPE1"] == "RA---TPV" and hdu.header["EXTNAME"] == hdu.header["DETPOS"]
    truth = exposure_truth()
    assert image[0].header["EXPNUM"] == truth["expnum"]
    assert image[0].header["MAGZERO"] == pytest.approx(truth["zero_point"] - 2.5 * np.log10(
        image[1].header["ARAWGAIN"]), abs=1e-3)
    assert image[0].header["MAGZPT"] == pytest.approx(image[0].header["MAGZERO"] - 2.5 * np.log10(
        image[0].header["EXPTIME"]), abs=1e-3)


@pytest.mark.parametrize("index", [1, 2])
def test_tpv_is_the_true_optics_within_the_cps_error(files, index):
    hdu = files[0][index]
    wcs = WCS(hdu.header)
    truth = exposure_truth()
    ccd = sim_camera.ccd(hdu.header["CCDNUM"])
    rng = np.random.default_rng(index)
    x, y = rng.uniform(0, 2045, 1000), rng.uniform(0, 4093, 1000)
    ra, dec = wcs.all_pix2world(x, y, 0)
    tra, tdec = optics.pixel_to_sky(ccd, x + 1.0, y + 1.0, truth["ra"], truth["dec"])   # one edge pixel trimmed
    offset = np.hypot((ra - tra) * np.cos(np.radians(tdec)), dec - tdec) * 3600.0
    assert np.max(offset) < CP_WCS_ERROR_ARCSEC + 0.002
    assert np.ptp(offset) < 0.002       # a shift of the sky (the CP's error), not a distortion error


def test_weight_is_the_inverse_variance_and_the_dq_codes(files):
    image, weight, mask = (h[1].data.astype(np.float64) for h in files)
    dq = files[2][1].data
    assert set(np.unique(dq)) <= {0, 1, 3, 4, 5} and {1, 5} <= set(np.unique(dq))
    assert np.all(weight[dq != 0] == 0) and np.all(weight[dq == 0] > 0)
    sky = float(files[0][1].header["AVSKY"])
    clean = (dq == 0)
    _, median, std = sigma_clipped_stats(((image - sky) * np.sqrt(weight))[clean][::5], sigma=3.0)
    assert abs(median) < 0.05 and std == pytest.approx(1.0, abs=0.05)
    assert files[0][1].header["AVSIG"] == pytest.approx(1.0 / np.sqrt(np.median(weight[clean])), rel=0.02)


def test_events_name_the_instcal_image():
    root = instcal_night()
    truth = exposure_truth()
    event = read_event_file(root / datarepo.event_path(int(truth["expnum"])))
    assert event.product == "instcal" and event.exposure_id == truth["expnum"]
    assert root / event.raw_path == ooi_path() and "_ooi_r_" in event.raw_path and event.raw_path.endswith(".fz")
    assert not (root / "raw").exists()


def test_the_same_bytes_every_run(tmp_path):
    simulate(tmp_path, CONFIG)
    names = [p.relative_to(instcal_night()) for p in sorted((instcal_night() / "instcal").iterdir())]
    names += [datarepo.event_path(int(exposure_truth()["expnum"]))]
    assert len(names) == 4
    for name in names:
        digest = hashlib.sha256((tmp_path / name).read_bytes()).digest()
        assert digest == hashlib.sha256((instcal_night() / name).read_bytes()).digest(), name


def test_the_writer_imports_nothing_from_the_pipeline():
    tree = ast.parse(inspect.getsource(simulator.instcal))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(str(m).startswith("pipeline") for m in imported)
