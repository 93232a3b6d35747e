"""A simulated night of Community Pipeline InstCal products (``SimConfig.instcal``), made once per session and
shared by the InstCal tests: one exposure of CCD 1 (the focal plane's edge, where the optical distortion is
largest) and CCD 35, fpack-compressed as the CP delivers them."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from astropy.table import Table

from simulator import SimConfig
from streamer.simulated import simulated_repository

CONFIG = SimConfig(seed=32, n_epochs=1, ccds=[1, 35], small=True, instcal=True, compress=True)
"""The night: one exposure, two CCDs, small mode (with the cosmic-ray truth), compressed."""


@functools.cache
def instcal_night() -> Path:
    """Root of the simulated InstCal night (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="blink_instcal_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    simulated_repository(root, CONFIG)
    return root


def exposure_truth() -> Table.Row:
    """The truth row (truth/exposures.ecsv) of the night's exposure."""
    return Table.read(instcal_night() / "truth" / "exposures.ecsv")[0]


def ooi_path() -> Path:
    """The night's CP image file."""
    (path,) = sorted((instcal_night() / "instcal").glob("*_ooi_*"))
    return path
