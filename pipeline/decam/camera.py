"""The DECam instrument model: CCD positions on the focal plane, amplifier electronics, crosstalk, defects.

Pure: the tables arrive as text or arrays (the shell reads the package data in ``pipeline/decam/data/``,
see :mod:`streamer.decam.camera_tables`) and are parsed here into a :class:`DecamCamera`.

Conventions
-----------
* The trimmed, assembled CCD is a (4096, 2048) array ``[y, x]``; x runs along the 2048-pixel side.
* Focal-plane coordinates are millimetres; pixels are 15 um; a CCD's pixel x grows with focal-plane x and
  pixel y with focal-plane y (before the small per-CCD rotation ``rotation_deg``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from astropy.time import Time

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
        """Whether the amplifier reads the left half of the CCD."""
        return self.x_offset == 0


@dataclass(frozen=True)
class CcdInfo:
    """One CCD: number, DETPOS name, focal-plane bounds (mm), rotation (deg), amplifiers and crosstalk.

    ``crosstalk_a_from_b`` is the fraction of amplifier B's signal seen in amplifier A (and conversely),
    from the DECam 2013 crosstalk table; 0 where the table has no entry.
    """

    ccdnum: int
    detpos: str
    xmin: float
    xmax: float
    ymin: float
    ymax: float
    rotation_deg: float
    amps: Mapping[str, AmpInfo]
    crosstalk_a_from_b: float = 0.0
    crosstalk_b_from_a: float = 0.0

    @property
    def center_mm(self) -> tuple[float, float]:
        """Focal-plane centre (mm)."""
        return (0.5 * (self.xmin + self.xmax), 0.5 * (self.ymin + self.ymax))

    @property
    def left_amp(self) -> AmpInfo:
        """The amplifier reading the left half."""
        return next(a for a in self.amps.values() if a.is_left)

    @property
    def right_amp(self) -> AmpInfo:
        """The amplifier reading the right half."""
        return next(a for a in self.amps.values() if not a.is_left)


@dataclass(frozen=True)
class DecamCamera:
    """Every CCD of the camera (science, guide and focus) by CCDNUM."""

    ccds: Mapping[int, CcdInfo] = field(default_factory=dict)

    def ccd(self, ccdnum: int) -> CcdInfo:
        """One CCD by CCDNUM; raises KeyError for an unknown number."""
        return self.ccds[int(ccdnum)]

    def ccdnum_of(self, detpos: str) -> int:
        """CCDNUM of a DETPOS name (``'S4'`` -> 28); raises KeyError for an unknown name."""
        for num, info in self.ccds.items():
            if info.detpos.upper() == detpos.upper():
                return num
        raise KeyError(detpos)


# ------------------------------------------------------------------------------------------ parsing
def _rows(text: str, min_words: int) -> Iterable[list[str]]:
    """Whitespace-split data lines of a table with one header line (short and comment lines skipped)."""
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) >= min_words and not line.lstrip().startswith("#"):
            yield words


def parse_segmentfile(text: str) -> dict[int, dict[str, AmpInfo]]:
    """``segmentfile.txt`` -> ``{ccdnum: {amp name: AmpInfo}}``."""
    amps: dict[int, dict[str, AmpInfo]] = {}
    for words in _rows(text, 10):
        amps.setdefault(int(words[0]), {})[words[2]] = AmpInfo(
            name=words[2], gain=float(words[7]), saturation=float(words[8]), read_noise=float(words[9]),
            x_offset=int(words[5]))
    return amps


def parse_crosstalk(text: str) -> dict[tuple[int, str, int, str], float]:
    """``DECam_xtalk_20130606.txt`` -> ``{(victim ccd, amp, source ccd, amp): coefficient}``."""
    table = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or line.lstrip().startswith("#"):
            continue
        victim, source = words[0], words[1]
        table[(int(victim[3:-1]), victim[-1], int(source[3:-1]), source[-1])] = float(words[2])
    return table


def build_camera(chipcenters: str, segmentfile: str, crosstalk: str) -> DecamCamera:
    """The camera from the text of ``chipcenters.txt``, ``segmentfile.txt`` and the crosstalk table."""
    amps = parse_segmentfile(segmentfile)
    xtalk = parse_crosstalk(crosstalk)
    ccds: dict[int, CcdInfo] = {}
    for words in _rows(chipcenters, 7):
        num = int(words[0])
        ccds[num] = CcdInfo(ccdnum=num, detpos=words[1], xmin=float(words[2]), xmax=float(words[3]),
                            ymin=float(words[4]), ymax=float(words[5]), rotation_deg=float(words[6]),
                            amps=amps.get(num, {}),
                            crosstalk_a_from_b=xtalk.get((num, "A", num, "B"), 0.0),
                            crosstalk_b_from_a=xtalk.get((num, "B", num, "A"), 0.0))
    return DecamCamera(ccds)


# ------------------------------------------------------------------------------------------ optics
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


CameraModel = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""A CCD's optical model: trimmed 0-based pixel ``(x, y)`` -> gnomonic field angles ``(xi, eta)`` (radians)."""


def field_angle_model(ccd: CcdInfo) -> CameraModel:
    """The nominal optical model of one CCD: trimmed 0-based pixel -> gnomonic field angles (radians).

    Focal plane from chipcenters.txt and the CCD's rotation, then the obs_decam radial distortion. An
    astrometric fit on top of it needs only an affine map to the sky.
    """

    def model(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return focal_to_tangent(*pixel_to_focal(ccd, x, y))

    return model


# ---------------------------------------------------------------------------------------------- defects
_DATE_RE = re.compile(r"^(\d{8})[tT](\d{4})")


def defect_file_date(name: str) -> str | None:
    """``'YYYYMMDDhhmm'`` of a dated defect file name (``20130115t0130.ecsv``), None for other names."""
    m = _DATE_RE.match(name)
    return m.group(1) + m.group(2) if m else None


def date_key(date) -> str:
    """'YYYYMMDDhhmm' from an MJD (float, UTC), an astropy Time, a datetime or an ISO string."""
    if isinstance(date, (int, float, np.floating)):
        t = Time(float(date), format="mjd", scale="utc")
    elif isinstance(date, Time):
        t = date
    else:
        t = Time(date)
    iso = t.utc.isot  # 2013-02-13T09:01:40.967
    return iso[0:4] + iso[5:7] + iso[8:10] + iso[11:13] + iso[14:16]


def defect_list_in_force(dated: Iterable[tuple[str, str]], date) -> str | None:
    """The name of the defect list in force at ``date``: the latest dated on or before it (the earliest if all
    are later), from ``(date key, name)`` pairs; None when there are none."""
    ordered = sorted(dated)
    if not ordered:
        return None
    key = date_key(date)
    chosen = ordered[0][1]
    for fkey, name in ordered:
        if fkey <= key:
            chosen = name
    return chosen


def defect_mask(boxes: np.ndarray, shape: tuple[int, int] = CCD_SHAPE) -> np.ndarray:
    """Boolean mask (True = bad) of defect boxes ``(n, 4)``: ``x0, y0, width, height`` (0-based, trimmed)."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, w, h in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        mask[max(y0, 0):y0 + h, max(x0, 0):x0 + w] = True
    return mask


__all__ = ["AmpInfo", "CCD_CENTRE_X_PIX", "CCD_CENTRE_Y_PIX", "CCD_SHAPE", "CameraModel", "CcdInfo", "DEAD_CCDS",
           "DecamCamera", "PIXEL_SIZE_MM", "RADIAL_COEFFS", "RAW_SHAPE", "SCIENCE_CCDS", "build_camera", "date_key",
           "defect_file_date", "defect_list_in_force", "defect_mask", "field_angle_model", "field_angle_of_radius",
           "focal_to_tangent", "parse_crosstalk", "parse_segmentfile", "pixel_to_focal"]
