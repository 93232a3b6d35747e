"""A patch of sky with injected transients, and the stand-in science of the ordering tests (association only).

Each "exposure" is a CCD footprint over the same sky; its DiaSources are the injected transients inside it, run
through read_region -> associate -> store, which is what time ordering of overlapping work protects.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from pipeline.associate import associate
from streamer.apdb.base import SkyRegion
from streamer.apdb.sky import angular_distance_deg
from streamer.apdb.sqlite_store import SqliteApdb
from tests.helpers.apdb_contract import make_objects, make_sources

RA0, DEC0, RADIUS = 40.0, -10.0, 0.2
"""Centre of the patch of sky (deg) and the radius of one exposure's disc (deg)."""

N_TRANSIENTS = 40
"""Transients injected within 0.25 deg of (RA0, DEC0)."""


def transient_positions(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (deg) of the injected transients, uniform in a disc of 0.25 deg around (RA0, DEC0)."""
    rng = np.random.default_rng(seed)
    r = 0.25 * np.sqrt(rng.uniform(0, 1, N_TRANSIENTS))
    th = rng.uniform(0, 2 * np.pi, N_TRANSIENTS)
    return RA0 + r * np.cos(th) / np.cos(np.radians(DEC0)), DEC0 + r * np.sin(th)


def associate_and_store(apdb: SqliteApdb, visit: int, region: SkyRegion, mjd: float, truth) -> None:
    """Detect the transients of ``truth`` inside ``region``, associate them with the APDB's objects, store them."""
    ra, dec = truth
    seen = np.flatnonzero(angular_distance_deg(ra, dec, region.ra_deg, region.dec_deg) <= region.radius_deg)
    data = apdb.read_region(region, mjd)
    src_ids = visit * 1000 + seen
    jitter = 0.05 / 3600
    sources = make_sources(src_ids, np.zeros(len(seen), np.int64), ra[seen] + jitter, dec[seen], mjd,
                           visit=visit, detector=1)
    sources, is_new = associate(sources, data.dia_objects)
    obj_ids = np.asarray(sources["diaObjectId"], np.int64)
    prev = {int(i): int(n) for i, n in zip(data.dia_objects["diaObjectId"], data.dia_objects["nDiaSources"])}
    n_src = np.array([prev.get(int(i), 0) + 1 for i in obj_ids], np.int32)
    objects = make_objects(obj_ids, ra[seen], dec[seen], validity=mjd)
    objects["nDiaSources"] = n_src
    apdb.store(visit=visit, detector=1, dia_objects=objects, dia_sources=sources,
               dia_forced_sources=Table(make_sources([], [], [], [], mjd, forced=True)))
