"""Sky geometry for the APDB: angular distances, bounding boxes and a HEALPix (nested) pixelization.

The HEALPix ``ang2pix`` here is a numpy port of the nested scheme of Gorski et al. (2005), the same
numbering as ``astropy_healpix`` and ``healpy`` (checked in the tests when ``astropy_healpix`` is
installed), so Blink needs no extra dependency to compute Cassandra partitions.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "angular_distance_deg", "in_circle", "bounding_box", "ang2pix_nested", "pix2ang_nested", "pixel_size_deg",
    "max_pixrad_deg", "cover_disc",
]


def angular_distance_deg(ra1: np.ndarray | float, dec1: np.ndarray | float,
                         ra2: np.ndarray | float, dec2: np.ndarray | float) -> np.ndarray:
    """Great-circle distance (haversine), degrees; inputs in degrees, broadcast."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    s = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0))))


def in_circle(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float, radius_deg: float) -> np.ndarray:
    """Boolean mask of the points within ``radius_deg`` of (``ra0``, ``dec0``), all degrees."""
    if len(ra) == 0:
        return np.zeros(0, bool)
    return angular_distance_deg(ra, dec, ra0, dec0) <= radius_deg


def bounding_box(ra0: float, dec0: float, radius_deg: float) -> tuple[float, float, list[tuple[float, float]]]:
    """RA/Dec box enclosing a circle.

    Returns
    -------
    dec_min, dec_max : float
        Declination range, degrees.
    ra_ranges : list of (float, float)
        One or two RA intervals in [0, 360] (two when the circle crosses RA = 0); ``[(0, 360)]`` when the
        circle reaches a pole.
    """
    dec_min, dec_max = dec0 - radius_deg, dec0 + radius_deg
    if dec_min <= -90.0 or dec_max >= 90.0:
        return max(dec_min, -90.0), min(dec_max, 90.0), [(0.0, 360.0)]
    # Half-width in RA of a circle, exact for the small-circle tangent (Bertin et al. style bound).
    s = np.sin(np.radians(radius_deg)) / np.cos(np.radians(dec0))
    dra = 180.0 if s >= 1.0 else float(np.degrees(np.arcsin(s))) + 1e-9
    if dra >= 180.0:
        return dec_min, dec_max, [(0.0, 360.0)]
    ra0 = ra0 % 360.0
    lo, hi = ra0 - dra, ra0 + dra
    if lo < 0.0:
        return dec_min, dec_max, [(lo + 360.0, 360.0), (0.0, hi)]
    if hi > 360.0:
        return dec_min, dec_max, [(lo, 360.0), (0.0, hi - 360.0)]
    return dec_min, dec_max, [(lo, hi)]


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Interleave zeros between the bits of ``v`` (uint64 up to 2**29)."""
    v = v.astype(np.uint64)
    v = (v | (v << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    v = (v | (v << np.uint64(2))) & np.uint64(0x3333333333333333)
    v = (v | (v << np.uint64(1))) & np.uint64(0x5555555555555555)
    return v


def ang2pix_nested(nside: int, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """HEALPix nested pixel index of each position.

    Parameters
    ----------
    nside : int
        Power of two.
    ra_deg, dec_deg : ndarray
        Positions, degrees.

    Returns
    -------
    ndarray of int64
    """
    if nside < 1 or nside & (nside - 1):
        raise ValueError(f"nside must be a power of two, got {nside}")
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=float))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=float))
    z = np.sin(np.radians(dec))
    za = np.abs(z)
    tt = np.mod(np.radians(ra), 2 * np.pi) * (2 / np.pi)  # in [0, 4)
    tt = np.where(tt >= 4.0, 0.0, tt)
    ix = np.empty(ra.shape, np.int64)
    iy = np.empty(ra.shape, np.int64)
    face = np.empty(ra.shape, np.int64)

    eq = za <= 2.0 / 3.0
    if eq.any():
        t1 = nside * (0.5 + tt[eq])
        t2 = nside * z[eq] * 0.75
        jp = (t1 - t2).astype(np.int64)
        jm = (t1 + t2).astype(np.int64)
        ifp, ifm = jp // nside, jm // nside
        face[eq] = np.where(ifp == ifm, ifp | 4, np.where(ifp < ifm, ifp, ifm + 8))
        ix[eq] = jm & (nside - 1)
        iy[eq] = nside - (jp & (nside - 1)) - 1

    po = ~eq
    if po.any():
        ntt = np.minimum(3, tt[po].astype(np.int64))
        tp = tt[po] - ntt
        # sqrt(3 (1 - |z|)) computed as sqrt(3) * |cos(dec)| / sqrt(1 + |z|) for precision near the poles.
        tmp = nside * np.sqrt(3.0) * np.abs(np.cos(np.radians(dec[po]))) / np.sqrt(1.0 + za[po])
        jp = np.minimum((tp * tmp).astype(np.int64), nside - 1)
        jm = np.minimum(((1.0 - tp) * tmp).astype(np.int64), nside - 1)
        north = z[po] >= 0
        face[po] = np.where(north, ntt, ntt + 8)
        ix[po] = np.where(north, nside - jm - 1, jp)
        iy[po] = np.where(north, nside - jp - 1, jm)

    pix = (face.astype(np.uint64) * np.uint64(nside) * np.uint64(nside)
           + _spread_bits(ix) + (_spread_bits(iy) << np.uint64(1)))
    return pix.astype(np.int64)


def _compress_bits(v: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_spread_bits` on the even bits of ``v``."""
    v = v.astype(np.uint64) & np.uint64(0x5555555555555555)
    v = (v | (v >> np.uint64(1))) & np.uint64(0x3333333333333333)
    v = (v | (v >> np.uint64(2))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    v = (v | (v >> np.uint64(4))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v | (v >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    v = (v | (v >> np.uint64(16))) & np.uint64(0x00000000FFFFFFFF)
    return v.astype(np.int64)


_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4], np.int64)
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7], np.int64)


def pix2ang_nested(nside: int, pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (RA, Dec), degrees, of nested HEALPix pixels."""
    pix = np.atleast_1d(np.asarray(pix, dtype=np.int64))
    npface = nside * nside
    face = pix // npface
    ipf = pix % npface
    ix = _compress_bits(ipf)
    iy = _compress_bits(ipf >> 1)
    jr = _JRLL[face] * nside - ix - iy - 1
    fact2 = 4.0 / (12 * npface)
    fact1 = 2 * nside * fact2
    nr = np.full(pix.shape, nside, np.int64)
    z = (2 * nside - jr) * fact1
    kshift = (jr - nside) & 1
    north, south = jr < nside, jr > 3 * nside
    nr = np.where(north, jr, np.where(south, 4 * nside - jr, nr))
    z = np.where(north, 1 - nr * nr * fact2, np.where(south, -1 + nr * nr * fact2, z))
    kshift = np.where(north | south, 0, kshift)
    jp = (_JPLL[face] * nr + ix - iy + 1 + kshift) // 2
    jp = np.where(jp > 4 * nside, jp - 4 * nside, jp)
    jp = np.where(jp < 1, jp + 4 * nside, jp)
    phi = (jp - (kshift + 1) * 0.5) * (np.pi / 2 / nr)
    return np.degrees(phi) % 360.0, np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))


def pixel_size_deg(nside: int) -> float:
    """Square root of the HEALPix pixel area, degrees."""
    return float(np.degrees(np.sqrt(4 * np.pi / (12 * nside * nside))))


def max_pixrad_deg(nside: int) -> float:
    """Largest distance from a pixel centre to its corners, degrees (HEALPix ``max_pixrad``)."""
    t1 = (1.0 - 1.0 / nside) ** 2
    za, zb = 2.0 / 3.0, 1.0 - t1 / 3.0
    return float(angular_distance_deg(np.degrees(np.pi / (4 * nside)), np.degrees(np.arcsin(za)),
                                      0.0, np.degrees(np.arcsin(zb))))


def _disc_points(ra0: float, dec0: float, radius_deg: float, step_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Points filling a disc: concentric rings ``step_deg`` apart, points on a ring at most ``step_deg``
    apart, plus the centre (computed with unit vectors, so valid at the poles)."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    centre = np.array([np.cos(d0) * np.cos(a0), np.cos(d0) * np.sin(a0), np.sin(d0)])
    east = np.array([-np.sin(a0), np.cos(a0), 0.0])
    north = np.cross(centre, east)
    n_rings = int(np.ceil(radius_deg / step_deg))
    rho_deg = np.linspace(0.0, radius_deg, n_rings + 1)
    n_pts = np.maximum(1, np.ceil(2 * np.pi * np.sin(np.radians(rho_deg)) / np.radians(step_deg))).astype(int)
    n_pts[1:] = np.maximum(n_pts[1:], 6)
    rho = np.radians(np.repeat(rho_deg, n_pts))
    th = np.concatenate([np.arange(k) * (2 * np.pi / k) for k in n_pts])
    v = (np.cos(rho)[:, None] * centre
         + np.sin(rho)[:, None] * (np.cos(th)[:, None] * north + np.sin(th)[:, None] * east))
    ra = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(v[:, 2], -1.0, 1.0)))
    return ra, dec


def cover_disc(nside: int, ra0: float, dec0: float, radius_deg: float) -> np.ndarray:
    """Sorted nested pixels that include every pixel touching the disc (a small superset).

    Notes
    -----
    A pixel touching the disc has its centre within ``radius + max_pixrad`` of the disc centre and lies
    wholly within ``radius + 2 max_pixrad``. That larger disc is sampled on rings a quarter of a pixel apart
    (so every pixel inside it holds a sample), and the candidates are kept when their centre is within
    ``radius + max_pixrad``. Exact filtering by distance happens on the rows read.
    """
    rad = max_pixrad_deg(nside)
    step = pixel_size_deg(nside) / 4.0
    ra, dec = _disc_points(ra0, dec0, min(radius_deg + 2 * rad + step, 180.0), step)
    cand = np.unique(ang2pix_nested(nside, ra, dec))
    cra, cdec = pix2ang_nested(nside, cand)
    return cand[angular_distance_deg(cra, cdec, ra0, dec0) <= radius_deg + rad]
