"""Simulated CCDs with known truth for the ISR and calibration tests, made once per test session.

Three small-mode nights of one exposure each: ``good`` (seeing 0.80-0.85", airmass 1.0-1.1, CCDs 1 (focal
plane edge) and 35), ``poor`` (seeing 1.9-2.0", airmass 1.8-2.0, CCDs 1 and 28) and ``empty`` (CCD 35, no
stars or galaxies: clouds, and a clean measure of the bias residual). Each CCD is processed once (ISR and
calibration) and the results are shared by every test module through a cache.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from schemas import datarepo
from simulator import SimConfig
from streamer.simulated import simulated_repository

NIGHTS = {
    "good": dict(seed=21, seeing_range=(0.8, 0.85), airmass_range=(1.0, 1.1), ccds=[1, 35]),
    "poor": dict(seed=22, seeing_range=(1.9, 2.0), airmass_range=(1.8, 2.0), ccds=[1, 28]),
    # The bias residual is measured against a flat without the simulator's illumination error (1% by default):
    # that error is the flat's, not the bias's; likewise a flat sky (no gradient), the tabulated gains and a
    # linear response (gain errors of 0.3% and a non-linearity of 0.03% at the sky's level are the sky's).
    "empty": dict(seed=23, ccds=[35], star_density=0.0, galaxy_density=0.0, n_transients=0,
                  flat_illumination_error=0.0, sky_gradient=0.0, gain_error=0.0, nonlinearity=0.0),
}
CASES = [("good", 1), ("good", 35), ("poor", 1), ("poor", 28)]


@functools.cache
def night(name: str) -> Path:
    """Root of the simulated night ``name`` (one exposure, small mode)."""
    root = Path(tempfile.mkdtemp(prefix=f"blink_truth_{name}_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    simulated_repository(root, SimConfig(n_epochs=1, small=True, **NIGHTS[name]))
    return root


@dataclass(frozen=True)
class Inputs:
    """Inputs of one simulated CCD and its truth."""

    root: Path
    raw: object
    bias: np.ndarray
    flat: np.ndarray
    defects: np.ndarray | None
    refcat: Table
    refstars: Table
    truth: Table.Row
    truth_wcs: WCS
    cr_truth: np.ndarray


@functools.cache
def inputs(name: str, ccd: int) -> Inputs:
    """Raw, calibration frames, reference catalog (Gaia columns, as the worker reads it), the exposure's
    reference stars (:func:`pipeline.refcat.reference_stars`) and truth of CCD ``ccd`` of night ``name``."""
    from pipeline.decam.header import ccd_footprint
    from pipeline.refcat import reference_stars
    from streamer.decam.raw_files import read_raw_ccd
    from streamer.worker.inputs import DataRepository

    root = night(name)
    repo = DataRepository(root)
    truth = Table.read(root / "truth" / "exposures.ecsv")[0]
    expnum = int(truth["expnum"])
    raw = read_raw_ccd(root / datarepo.raw_path(expnum), ccd)
    ra, dec, radius = ccd_footprint(raw.header)
    truth_wcs = WCS(fits.getheader(root / datarepo.truth_wcs_path(expnum), extname=raw.detpos))
    cr = np.load(root / "truth" / "cosmic_rays" / f"{expnum:08d}_{ccd:02d}.npy")
    refcat = repo.refcat_in(ra, dec, radius + 0.02)
    refstars = reference_stars(refcat, mjd_tai=raw.info.mjd_mid_tai, band=raw.info.band)
    return Inputs(root=root, raw=raw, bias=repo.bias(ccd), flat=repo.flat(raw.info.band, ccd),
                  defects=repo.defects(ccd, raw.info.mjd_mid_tai), refcat=refcat, refstars=refstars,
                  truth=truth, truth_wcs=truth_wcs, cr_truth=cr)


@functools.cache
def isr(name: str, ccd: int):
    """ISR output (default configuration, the camera's crosstalk coefficients) of one simulated CCD."""
    from pipeline.isr import run_isr
    from streamer.decam.camera_tables import decam_camera

    i = inputs(name, ccd)
    info = decam_camera().ccd(ccd)
    return run_isr(i.raw, i.bias, i.flat, i.defects, crosstalk=(info.crosstalk_a_from_b, info.crosstalk_b_from_a))


@functools.cache
def calibrated(name: str, ccd: int):
    """(exposure, sources) from ``calibrate`` on one simulated CCD."""
    from pipeline.calibrate import calibrate
    from pipeline.decam.camera import field_angle_model
    from pipeline.decam.header import header_wcs
    from streamer.decam.camera_tables import decam_camera

    i = inputs(name, ccd)
    return calibrate(isr(name, ccd), header_wcs(i.raw.header), i.refstars, info=i.raw.info, ccdnum=ccd,
                     camera=field_angle_model(decam_camera().ccd(ccd)))


def truth_sources(name: str) -> Table:
    """The truth source list of a night."""
    return Table.read(night(name) / "truth" / "sources.ecsv")
