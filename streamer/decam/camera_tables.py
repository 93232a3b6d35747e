"""The DECam tables shipped as package data (``pipeline/decam/data/``), read once per process.

The shell's side of the instrument model: this module reads the files; :mod:`pipeline.decam.camera` parses
and models them. See ``pipeline/decam/data/README.md`` for where the tables come from.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable

import numpy as np
from astropy.table import Table

from pipeline.decam.camera import DecamCamera, build_camera, defect_file_date, defect_list_in_force, defect_mask

DATA_PACKAGE = "pipeline.decam"
"""The package whose ``data/`` folder holds the tables."""


def data_folder() -> Traversable:
    """The package data folder of the DECam tables."""
    return resources.files(DATA_PACKAGE) / "data"


@functools.cache
def decam_camera() -> DecamCamera:
    """The DECam camera (geometry, amplifiers, crosstalk) from the package data."""
    folder = data_folder()
    return build_camera((folder / "chipcenters.txt").read_text(), (folder / "segmentfile.txt").read_text(),
                        (folder / "DECam_xtalk_20130606.txt").read_text())


@functools.lru_cache(maxsize=256)
def _boxes_of_file(detpos: str, name: str) -> np.ndarray:
    with (data_folder() / "defects" / detpos / name).open("r") as fh:
        table = Table.read(fh.read(), format="ascii.ecsv")
    return np.column_stack([np.asarray(table[c], dtype=np.int64) for c in ("x0", "y0", "width", "height")])


def defect_boxes(ccdnum: int, date) -> np.ndarray:
    """Bad-pixel boxes ``(n, 4)`` (``x0, y0, width, height``, 0-based trimmed CCD) of a CCD at a date.

    The latest defect list dated on or before ``date`` (MJD float, ISO string or astropy Time) is used; an
    empty ``(0, 4)`` array for a CCD without lists.
    """
    detpos = decam_camera().ccd(ccdnum).detpos.lower()
    folder = data_folder() / "defects" / detpos
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    dated = [(key, name) for name in names if name.endswith(".ecsv") and (key := defect_file_date(name))]
    chosen = defect_list_in_force(dated, date)
    if chosen is None:
        return np.zeros((0, 4), dtype=np.int64)
    return _boxes_of_file(detpos, chosen)


def known_defects(ccdnum: int, date) -> np.ndarray:
    """Boolean (4096, 2048) mask of a CCD's known defects at a date (True = bad)."""
    return defect_mask(defect_boxes(ccdnum, date))


__all__ = ["data_folder", "decam_camera", "defect_boxes", "known_defects"]
