"""Crosstalk between the two amplifiers of a CCD, from the real DECam coefficients.

Each CCD's two amplifiers are read at the same time from opposite sides, so a bright pixel read by one leaves a
faint copy (a "ghost" of positive or negative sign, a few 10^-4 of it) in the pixel that the other reads at
the same moment: mirrored about the CCD's centre column. The coefficients are the simulator's own copy of the
CTIO table (``data/DECam_xtalk_20130606.txt``: victim amplifier, source amplifier, linear coefficient); only
the intra-CCD pairs are simulated (the table's CCD-to-CCD terms are ten times smaller, and need the other
CCD's pixels), and the table's non-linear terms (above about 40,000 ADU of the source) are not.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
from astropy.table import Table

from . import camera


@functools.cache
def _table() -> dict[tuple[int, str], float]:
    """``{(ccdnum, victim amp): coefficient}`` of the intra-CCD pairs."""
    text = (resources.files("simulator") / "data" / "DECam_xtalk_20130606.txt").read_text()
    t = Table.read(text, format="ascii.no_header", comment="#")
    victim, source = np.asarray(t["col1"], str), np.asarray(t["col2"], str)
    same = np.char.equal(np.char.rstrip(victim, "AB"), np.char.rstrip(source, "AB")) & (victim != source)
    return {(int(v[3:-1]), v[-1]): float(c) for v, c in zip(victim[same], np.asarray(t["col3"], float)[same])}


def coefficients(ccdnum: int) -> dict[str, float]:
    """Fraction of the other amplifier's signal that each amplifier (``'A'``, ``'B'``) of the CCD sees; 0 where
    the table has none."""
    return {amp: _table().get((int(ccdnum), amp), 0.0) for amp in ("A", "B")}


def crosstalk_ghosts(signal: np.ndarray, ccd: camera.SimCcd) -> np.ndarray:
    """What each amplifier sees of the other's ``signal`` (ADU above the bias of the trimmed CCD, (ny, 2048):
    the left amplifier in columns 0-1023), to be added to it."""
    k = coefficients(ccd.ccdnum)
    half = signal.shape[1] // 2
    out = np.empty_like(signal)
    np.multiply(signal[:, half:][:, ::-1], np.float32(k[ccd.left_amp.name]), out=out[:, :half])
    np.multiply(signal[:, :half][:, ::-1], np.float32(k[ccd.right_amp.name]), out=out[:, half:])
    return out
