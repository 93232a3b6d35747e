"""A small APDB to export and inspect: the same rows written to any store."""

from __future__ import annotations

import numpy as np

from streamer.apdb.base import Apdb
from tests.helpers.apdb_contract import make_objects, make_sources

VISIT_MJDS = (60000.1, 60001.1, 60002.1)
"""Times of the three visits (MJD TAI)."""
N_OBJECTS = 40


def fill_three_visits(apdb: Apdb) -> None:
    """Three visits of the same :data:`N_OBJECTS` objects around (10, -5) deg, 1 deg across: at each, a new
    DiaObject version, a DiaSource and a DiaForcedSource per object."""
    ids = np.arange(1, N_OBJECTS + 1)
    rng = np.random.default_rng(1)
    ra, dec = 10.0 + rng.uniform(-0.5, 0.5, N_OBJECTS), -5.0 + rng.uniform(-0.5, 0.5, N_OBJECTS)
    for k, mjd in enumerate(VISIT_MJDS):
        visit = 100 + k
        apdb.store(visit=visit, detector=4,
                   dia_objects=make_objects(ids, ra, dec, validity=mjd, n_sources=k + 1),
                   dia_sources=make_sources(ids + 1000 * (k + 1), ids, ra, dec, np.full(N_OBJECTS, mjd), visit=visit,
                                            detector=4),
                   dia_forced_sources=make_sources(ids + 10_000 * (k + 1), ids, ra, dec, np.full(N_OBJECTS, mjd),
                                                   visit=visit, detector=4, forced=True))
