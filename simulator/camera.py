"""The simulated DECam: where each CCD sits, its amplifiers and its bad pixels, from the simulator's own data.

The tables are package data of :mod:`simulator` (``simulator/data/``, provenance in its README), read with
astropy's ASCII readers; nothing of the pipeline's instrument model is used. Each CCD also carries its
*placement error*: the simulated camera's CCDs sit a few microns away from where ``chipcenters.txt`` puts them
and are turned by a few thousandths of a degree more than its ``rotcor`` (fixed for the camera: the same in
every simulation), which a pipeline that trusts the nominal table must fit away.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
from astropy.table import Table

__all__ = ["CCD_SHAPE", "DEAD_CCDS", "PIXEL_SIZE_MM", "PLACEMENT_SIGMA_UM", "RAW_SHAPE", "ROTATION_SIGMA_DEG",
           "SCIENCE_CCDS", "Amplifier", "SimCcd", "ccd", "defect_boxes"]

CCD_SHAPE = (4096, 2048)
"""(ny, nx) of a trimmed, assembled CCD; x runs along the 2048-pixel side."""

RAW_SHAPE = (4146, 2160)
"""(ny, nx) of a raw CCD extension: 50 parallel-overscan rows, pre- and overscan columns of both amplifiers."""

PIXEL_SIZE_MM = 0.015
"""15 um pixels."""

SCIENCE_CCDS: tuple[int, ...] = tuple(range(1, 63))
"""CCDNUMs of the 62 science CCDs."""

DEAD_CCDS = frozenset({61})
"""N30 (CCDNUM 61) gives no signal."""

PLACEMENT_SIGMA_UM = 3.0
"""Standard deviation of each CCD's offset from its nominal focal-plane position, per axis (microns)."""

ROTATION_SIGMA_DEG = 0.005
"""Standard deviation of each CCD's rotation beyond its nominal ``rotcor`` (degrees)."""

_CAMERA_SEED = 20121211
"""Seed of the placement errors: one simulated camera, the same in every simulation."""


@dataclass(frozen=True)
class Amplifier:
    """One amplifier: its name, gain (e-/ADU), saturation (ADU), read noise (e-) and raw x offset (0: left)."""

    name: str
    gain: float
    saturation: float
    read_noise: float
    x_offset: int


@dataclass(frozen=True)
class SimCcd:
    """One CCD of the simulated camera.

    ``bounds_mm`` (xmin, xmax, ymin, ymax) and ``rotation_deg`` are the nominal focal-plane bounds (mm) and rotation of
    ``chipcenters.txt``; ``true_center_mm`` and ``true_rotation_deg`` are where the CCD really is.
    """

    ccdnum: int
    detpos: str
    bounds_mm: tuple[float, float, float, float]
    rotation_deg: float
    true_center_mm: tuple[float, float]
    true_rotation_deg: float
    left_amp: Amplifier
    right_amp: Amplifier

    @property
    def nominal_center_mm(self) -> tuple[float, float]:
        """Centre (mm) of the CCD as ``chipcenters.txt`` has it."""
        xmin, xmax, ymin, ymax = self.bounds_mm
        return 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)

    @property
    def amps(self) -> dict[str, Amplifier]:
        """Amplifiers by name (``'A'``, ``'B'``)."""
        return {a.name: a for a in (self.left_amp, self.right_amp)}


def _data(name: str) -> str:
    return (resources.files("simulator") / "data" / name).read_text()


@functools.cache
def _camera() -> dict[int, SimCcd]:
    chips = Table.read(_data("chipcenters.txt"), format="ascii.basic")
    segments = Table.read(_data("segmentfile.txt"), format="ascii.basic")
    rng = np.random.default_rng(_CAMERA_SEED)
    offsets = rng.normal(0.0, PLACEMENT_SIGMA_UM * 1e-3, (len(chips), 2))
    turns = rng.normal(0.0, ROTATION_SIGMA_DEG, len(chips))
    amps: dict[int, list[Amplifier]] = {}
    for row in segments:
        amps.setdefault(int(row["chipId"]), []).append(Amplifier(
            name=str(row["ampName"]), gain=float(row["gain"]), saturation=float(row["sat"]),
            read_noise=float(row["readnoise"]), x_offset=int(row["xoff"])))
    out = {}
    for k, row in enumerate(chips):
        num = int(row["ccdnum"])
        if num not in amps:  # guide and focus CCDs: not simulated
            continue
        left, right = sorted(amps[num], key=lambda a: a.x_offset)
        xmin, xmax, ymin, ymax = (float(row[c]) for c in ("xmin", "xmax", "ymin", "ymax"))
        out[num] = SimCcd(ccdnum=num, detpos=str(row["ID"]), bounds_mm=(xmin, xmax, ymin, ymax),
                          rotation_deg=float(row["rotcor"]),
                          true_center_mm=(0.5 * (xmin + xmax) + float(offsets[k, 0]),
                                          0.5 * (ymin + ymax) + float(offsets[k, 1])),
                          true_rotation_deg=float(row["rotcor"]) + float(turns[k]), left_amp=left, right_amp=right)
    return out


def ccd(ccdnum: int) -> SimCcd:
    """One CCD of the simulated camera by CCDNUM; KeyError for an unknown number."""
    return _camera()[int(ccdnum)]


@functools.cache
def _defects() -> Table:
    return Table.read(_data("defects.ecsv"), format="ascii.ecsv")


def defect_boxes(ccdnum: int) -> np.ndarray:
    """The simulated CCD's bad-pixel boxes ``(n, 4)``: ``x0, y0, width, height`` (0-based trimmed pixels)."""
    t = _defects()
    rows = np.asarray(t["ccdnum"]) == int(ccdnum)
    return np.column_stack([np.asarray(t[c][rows], dtype=np.int64) for c in ("x0", "y0", "width", "height")])
