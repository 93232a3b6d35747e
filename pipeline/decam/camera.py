"""DECam camera tables: CCD positions on the focal plane, amplifier electronics, known defects.

Read from the reference folder ``<shared>/reference/decam`` (``camera/chipcenters.txt``,
``camera/segmentfile.txt``, ``defects/<detpos>/<date>.ecsv``). The shared folder defaults to the sibling
``shared`` of the repository and can be overridden with the environment variable ``BLINK_SHARED_DIR``.

Conventions
-----------
* The trimmed, assembled CCD is a (4096, 2048) array ``[y, x]``; x runs along the 2048-pixel side.
* Focal-plane coordinates are millimetres; pixels are 15 um; a CCD's pixel x grows with focal-plane x and
  pixel y with focal-plane y (before the small per-CCD rotation ``rotation_deg``).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIXEL_SIZE_MM = 0.015
"""Physical pixel size (mm)."""

CCD_SHAPE = (4096, 2048)
"""Shape (ny, nx) of a trimmed, assembled CCD."""

RAW_SHAPE = (4146, 2160)
"""Shape (ny, nx) of a raw CCD extension."""

SCIENCE_CCDS: tuple[int, ...] = tuple(range(1, 63))
"""CCDNUMs of the 62 science CCDs (N30 = 61 included; it is dead)."""

DEAD_CCDS: frozenset[int] = frozenset({61})
"""CCDs with no usable signal (N30)."""

RADIAL_COEFFS = (0.0, 8.5165e-05, 0.0, -4.5014e-12)
"""Field angle (radians) as a polynomial of focal-plane radius (mm), obs_decam."""

CCD_CENTRE_X_PIX = 1023.5
"""Pixel x of the trimmed CCD's centre (0-based)."""
CCD_CENTRE_Y_PIX = 2047.5
"""Pixel y of the trimmed CCD's centre (0-based)."""


def shared_dir() -> Path:
    """The shared reference folder (``BLINK_SHARED_DIR`` or the repository's sibling ``shared``)."""
    env = os.environ.get("BLINK_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared"


def decam_reference_dir() -> Path:
    """``<shared>/reference/decam``."""
    return shared_dir() / "reference" / "decam"


@dataclass(frozen=True)
class AmpInfo:
    """One amplifier of a CCD, from segmentfile.txt.

    ``x_offset`` is 0 for the amplifier reading the left half (trimmed x 0..1023), 1080 for the right half.
    """

    name: str
    gain: float
    saturation: float
    read_noise: float
    x_offset: int

    @property
    def is_left(self) -> bool:
        return self.x_offset == 0


@dataclass(frozen=True)
class CcdInfo:
    """One CCD: number, DETPOS name, focal-plane bounds (mm), rotation (deg) and amplifiers."""

    ccdnum: int
    detpos: str
    xmin: float
    xmax: float
    ymin: float
    ymax: float
    rotation_deg: float
    amps: dict

    @property
    def center_mm(self) -> tuple[float, float]:
        return (0.5 * (self.xmin + self.xmax), 0.5 * (self.ymin + self.ymax))

    @property
    def left_amp(self) -> AmpInfo:
        return next(a for a in self.amps.values() if a.is_left)

    @property
    def right_amp(self) -> AmpInfo:
        return next(a for a in self.amps.values() if not a.is_left)


@functools.lru_cache(maxsize=4)
def _load_camera(ref: str) -> dict[int, CcdInfo]:
    ref_dir = Path(ref)
    amps: dict[int, dict[str, AmpInfo]] = {}
    with open(ref_dir / "camera" / "segmentfile.txt") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            if len(parts) < 10:
                continue
            ccd = int(parts[0])
            amps.setdefault(ccd, {})[parts[2]] = AmpInfo(
                name=parts[2], gain=float(parts[7]), saturation=float(parts[8]),
                read_noise=float(parts[9]), x_offset=int(parts[5]))
    ccds: dict[int, CcdInfo] = {}
    with open(ref_dir / "camera" / "chipcenters.txt") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            if len(parts) < 7:
                continue
            num = int(parts[0])
            ccds[num] = CcdInfo(ccdnum=num, detpos=parts[1], xmin=float(parts[2]), xmax=float(parts[3]),
                                ymin=float(parts[4]), ymax=float(parts[5]), rotation_deg=float(parts[6]),
                                amps=amps.get(num, {}))
    return ccds


def camera() -> dict[int, CcdInfo]:
    """All CCDs (science, guide and focus) by CCDNUM."""
    return _load_camera(str(decam_reference_dir()))


def ccd_info(ccdnum: int) -> CcdInfo:
    """One CCD by CCDNUM; raises KeyError for an unknown number."""
    return camera()[int(ccdnum)]


def field_angle_of_radius(r: np.ndarray) -> np.ndarray:
    """Field angle (radians) at focal-plane radius ``r`` (mm)."""
    c = RADIAL_COEFFS
    return c[0] + r * (c[1] + r * (c[2] + r * c[3]))


def pixel_to_focal(ccd: CcdInfo, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed 0-based pixel -> focal plane (mm)."""
    u = (np.asarray(x, dtype=float) - CCD_CENTRE_X_PIX) * PIXEL_SIZE_MM
    v = (np.asarray(y, dtype=float) - CCD_CENTRE_Y_PIX) * PIXEL_SIZE_MM
    t = np.deg2rad(ccd.rotation_deg)
    xc, yc = ccd.center_mm
    return xc + np.cos(t) * u - np.sin(t) * v, yc + np.sin(t) * u + np.cos(t) * v


def focal_to_tangent(fx, fy) -> tuple[np.ndarray, np.ndarray]:
    """Focal plane (mm) -> gnomonic tangent-plane coordinates (xi East, eta North), radians (tan units)."""
    fx = np.asarray(fx, dtype=float)
    fy = np.asarray(fy, dtype=float)
    r = np.hypot(fx, fy)
    theta = field_angle_of_radius(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(r > 0, np.tan(theta) / np.where(r > 0, r, 1.0), RADIAL_COEFFS[1])
    return k * fy, -k * fx


def field_angle_model(ccdnum: int) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The nominal optical model of one CCD: trimmed 0-based pixel -> gnomonic field angles (radians).

    A callable ``(x, y) -> (xi, eta)``: focal plane from chipcenters.txt and the CCD's rotation, then the
    obs_decam radial distortion. An astrometric fit on top of it needs only an affine map to the sky.
    """
    info = ccd_info(ccdnum)

    def model(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return focal_to_tangent(*pixel_to_focal(info, x, y))

    return model


def ccdnum_of(detpos: str) -> int:
    """CCDNUM of a DETPOS name (``'S4'`` -> 28)."""
    for num, info in camera().items():
        if info.detpos.upper() == detpos.upper():
            return num
    raise KeyError(detpos)


# ---------------------------------------------------------------------------------------------- defects
_DATE_RE = re.compile(r"^(\d{8})[tT](\d{4})")


def _defect_files(detpos: str) -> list[tuple[str, Path]]:
    folder = decam_reference_dir() / "defects" / detpos.lower()
    out = []
    if folder.is_dir():
        for p in folder.glob("*.ecsv"):
            m = _DATE_RE.match(p.name)
            if m:
                out.append((m.group(1) + m.group(2), p))
    return sorted(out)


def _date_key(date) -> str:
    """'YYYYMMDDhhmm' from an MJD (float), an astropy Time, a datetime or an ISO string."""
    from astropy.time import Time

    if isinstance(date, (int, float, np.floating)):
        t = Time(float(date), format="mjd", scale="utc")
    elif isinstance(date, Time):
        t = date
    else:
        t = Time(date)
    iso = t.utc.isot  # 2013-02-13T09:01:40.967
    return iso[0:4] + iso[5:7] + iso[8:10] + iso[11:13] + iso[14:16]


@functools.lru_cache(maxsize=256)
def defect_boxes(ccdnum: int, date) -> np.ndarray:
    """Bad-pixel boxes ``(n, 4)`` int array of ``x0, y0, width, height`` (0-based, trimmed CCD frame).

    Uses the latest defect file dated on or before ``date`` (MJD float, ISO string or astropy Time).
    """
    from astropy.table import Table

    files = _defect_files(ccd_info(ccdnum).detpos)
    if not files:
        return np.zeros((0, 4), dtype=np.int64)
    key = _date_key(date)
    chosen = files[0][1]
    for fkey, path in files:
        if fkey <= key:
            chosen = path
    tab = Table.read(chosen, format="ascii.ecsv")
    return np.column_stack([np.asarray(tab[c], dtype=np.int64) for c in ("x0", "y0", "width", "height")])


def defect_mask(ccdnum: int, date) -> np.ndarray:
    """Boolean (4096, 2048) mask of known defects of a CCD at a date (True = bad)."""
    mask = np.zeros(CCD_SHAPE, dtype=bool)
    for x0, y0, w, h in defect_boxes(int(ccdnum), date):
        mask[max(y0, 0):y0 + h, max(x0, 0):x0 + w] = True
    return mask
