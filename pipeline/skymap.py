"""The sky grid that templates are built on: rings of declination cut into near-square tiles.

In the spirit of Rubin's skymap (tracts cut into patches), kept to one level: the sphere is cut into rings of
``tile_size_deg`` in declination, starting at the south pole; ring ``j`` spans ``[-90 + j H, -90 + (j + 1) H]``
and is cut into ``n_j = ceil(360 cos(delta_eq) / H)`` tiles of equal right-ascension width, where ``delta_eq``
is the ring's edge nearest the equator, so that no tile is wider than it is tall. Tiles are numbered ring by
ring from the south pole and, within a ring, eastwards from RA 0. Each tile is a square TAN projection centred
on its cell with a fixed pixel scale, padded by ``overlap_deg`` on every side so that neighbouring tiles share
a margin (a CCD near a cell edge finds all its template in one tile).

The grid is fixed by its configuration alone: the same settings give the same tile ids and WCSs everywhere.
Tiles are valid away from the poles (beyond |dec| = 88 the few polar tiles leave gaps in their corners).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field


class SkyMapConfig(BaseModel):
    """The sky grid of template tiles (frozen: tiles built with one grid are read with the same)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    tile_size_deg: float = Field(0.25, gt=0.01, le=10.0, description="Height of a declination ring, and the "
                                                                     "largest width of a tile's cell.")
    overlap_deg: float = Field(0.01, ge=0.0, le=1.0, description="Margin added on every side of a cell.")
    pixel_scale_arcsec: float = Field(0.263, gt=0.01, le=10.0, description="Pixel scale of the tiles "
                                                                           "(DECam's at the field centre).")


@dataclass(frozen=True)
class SkyTile:
    """One tile of the sky grid.

    Attributes
    ----------
    tile_id : int
    ra_deg, dec_deg : float
        Centre of the tile (its cell's centre), degrees.
    radius_deg : float
        Radius of the circle through the tile's corners.
    wcs : astropy.wcs.WCS
        TAN projection about the centre (0-based through ``pixel_to_world``).
    shape : tuple of int
        (ny, nx) pixels.
    """

    tile_id: int
    ra_deg: float
    dec_deg: float
    radius_deg: float
    wcs: WCS
    shape: tuple[int, int]


@functools.lru_cache(maxsize=16)
def _ring_counts(config: SkyMapConfig) -> np.ndarray:
    """Tiles in each declination ring, south to north."""
    size = config.tile_size_deg
    n_rings = int(np.ceil(180.0 / size - 1e-9))
    lo = -90.0 + size * np.arange(n_rings)
    hi = np.minimum(lo + size, 90.0)
    nearest_equator = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    return np.maximum(1, np.ceil(360.0 * np.cos(np.deg2rad(nearest_equator)) / size - 1e-9)).astype(np.int64)


@functools.lru_cache(maxsize=16)
def _ring_starts(config: SkyMapConfig) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(_ring_counts(config))])


def tile_count(config: SkyMapConfig = SkyMapConfig()) -> int:
    """Number of tiles on the whole sky."""
    return int(_ring_starts(config)[-1])


def tile(tile_id: int, config: SkyMapConfig = SkyMapConfig()) -> SkyTile:
    """The tile of a given id.

    Raises
    ------
    ValueError
        No such tile in this grid.
    """
    starts = _ring_starts(config)
    if not 0 <= tile_id < starts[-1]:
        raise ValueError(f"tile {tile_id} is not in a sky map of {starts[-1]} tiles")
    ring = int(np.searchsorted(starts, tile_id, side="right") - 1)
    index = tile_id - int(starts[ring])
    size = config.tile_size_deg
    n_ring = int(_ring_counts(config)[ring])
    dec_lo = -90.0 + ring * size
    dec = float(np.clip(dec_lo + size / 2.0, -90.0, 90.0))
    ra = float((index + 0.5) * 360.0 / n_ring)
    npix = int(np.ceil((size + 2.0 * config.overlap_deg) * 3600.0 / config.pixel_scale_arcsec))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
    scale_deg = config.pixel_scale_arcsec / 3600.0
    wcs.wcs.cd = np.array([[-scale_deg, 0.0], [0.0, scale_deg]])
    wcs.wcs.cunit = ["deg", "deg"]
    half_deg = npix * scale_deg / 2.0
    return SkyTile(tile_id=int(tile_id), ra_deg=ra, dec_deg=dec, radius_deg=float(np.sqrt(2.0) * half_deg),
                   wcs=wcs, shape=(npix, npix))


def tiles_overlapping(ra_deg: float, dec_deg: float, radius_deg: float,
                      config: SkyMapConfig = SkyMapConfig()) -> list[int]:
    """Ids of the tiles whose cell (with its margin) may meet a circle on the sky, sorted.

    A tile is kept when the distance between its centre and the circle's is at most the sum of the radii.
    """
    size = config.tile_size_deg
    counts, starts = _ring_counts(config), _ring_starts(config)
    pad = radius_deg + config.overlap_deg
    first = max(0, int(np.floor((dec_deg - pad + 90.0) / size)))
    last = min(counts.size - 1, int(np.floor((dec_deg + pad + 90.0) / size)))
    ids: list[np.ndarray] = []
    for ring in range(first, last + 1):
        n_ring = int(counts[ring])
        width = 360.0 / n_ring
        top = min(89.999, max(abs(dec_deg - pad), abs(dec_deg + pad)))
        half_ra = (pad + size) / max(np.cos(np.deg2rad(top)), 1e-3)
        if half_ra >= 180.0 or n_ring <= 3:
            index = np.arange(n_ring)
        else:
            index = np.arange(int(np.floor((ra_deg - half_ra) / width)),
                              int(np.floor((ra_deg + half_ra) / width)) + 1) % n_ring
        ids.append(starts[ring] + np.unique(index))
    candidates = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    kept = [int(t) for t in candidates if _within(tile(int(t), config), ra_deg, dec_deg, radius_deg)]
    return sorted(kept)


def _within(sky_tile: SkyTile, ra_deg: float, dec_deg: float, radius_deg: float) -> bool:
    ra1, dec1, ra2, dec2 = map(np.deg2rad, (sky_tile.ra_deg, sky_tile.dec_deg, ra_deg, dec_deg))
    cos_d = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return bool(np.rad2deg(np.arccos(np.clip(cos_d, -1.0, 1.0))) <= sky_tile.radius_deg + radius_deg)
