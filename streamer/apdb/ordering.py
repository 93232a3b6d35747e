"""Time order of association over overlapping sky: work claims kept in the APDB.

Why
---
Association depends on processing order: a transient seen by two overlapping exposures must become one
DiaObject, created by the earlier exposure and updated by the later one. With :meth:`Apdb.read_region` reading
the APDB *as of* the visit time (see :mod:`streamer.apdb.base`), processing the later exposure first makes a
second DiaObject. Kafka orders only within a partition, and ``streamer.events.fan_out.work_key`` (boresight cell +
CCD) keeps one CCD of repeated visits of one field in order, but not a different CCD over the same sky
(large dithers) nor CCDs straddling a cell edge.

Mechanism
---------
The fan-out, which sees exposures in time order, *registers* a claim for every CCD it publishes:
``(cell, mjd, work_id)`` for each coarse HEALPix cell (nside 64, 0.9 deg) the CCD region touches. A consumer,
before reading the APDB, calls :meth:`WorkClaims.wait_turn`: it waits until no claim with an earlier ``mjd``
remains on any of its cells, and after the APDB write it calls :meth:`WorkClaims.done`, which deletes its
claims. So overlapping CCD-visits are associated in time order whatever consumer gets them, while disjoint sky
and the CCDs of one visit (same ``mjd``, which never see each other's objects) run in parallel. Two consumers
can then never create two DiaObjects for one source, and a replayed night leaves the same tables.

Claims expire (``ttl_s``) so a lost consumer cannot block a cell forever; its work is redelivered by Kafka
(the worker stores offsets after the APDB write). ``wait_turn`` raises :class:`TransientError` after
``timeout_s``: the work is retried, not lost.

Wiring (:class:`streamer.worker.ordering.ClaimedOrder`, Kafka mode): the fan-out calls
:meth:`WorkClaims.register` for every work item before publishing it; a worker checks
:meth:`WorkClaims.is_turn` before it starts a work item and, when it is not, hands the message back
(:meth:`streamer.kafka.source.KafkaEventSource.defer`: its partition is paused and rewound, and the worker goes
on with its other partitions); after the item's APDB write, or its dead letter, it
calls :meth:`WorkClaims.done`. Never blocking is what makes this safe for a consumer of many partitions: the
earliest unfinished claim never waits, and it is never queued behind a later one of its own partition,
because the fan-out registers and publishes in time order. Regions are :func:`claim_region`: the CCD's
footprint from the camera model and the event's boresight, the same at the fan-out and in the worker.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any, Protocol

import numpy as np

from pipeline.errors import TransientError
from streamer.apdb.base import SkyRegion
from streamer.apdb.sky import cover_disc

__all__ = ["CLAIM_NSIDE", "CLAIM_RADIUS_DEG", "claim_cells", "claim_region", "WorkClaims", "SqliteWorkClaims",
           "CassandraWorkClaims", "open_claims"]

CLAIM_NSIDE = 64
"""HEALPix nside of the claim cells (0.92 deg): a CCD region touches 1 to 4 of them."""

CLAIMS_TABLE = "ApdbWorkClaim"


CLAIM_RADIUS_DEG = 0.25
"""Radius of a CCD's claim region: its half-diagonal (0.17 deg) plus pointing and dither slop."""


def claim_region(ra_deg: float, dec_deg: float, detector: int) -> SkyRegion:
    """The sky region a CCD-visit claims: a disc about the CCD centre, placed by the camera model.

    Parameters
    ----------
    ra_deg, dec_deg : float
        The exposure's boresight (from its exposure-ready event).
    detector : int
        CCDNUM.
    """
    from pipeline.astrometry import tangent_plane
    from pipeline.decam.camera import CCD_CENTRE_X_PIX, CCD_CENTRE_Y_PIX, field_angle_model
    from streamer.decam.camera_tables import decam_camera

    model = field_angle_model(decam_camera().ccd(detector))
    xi, eta = model(np.array([CCD_CENTRE_X_PIX]), np.array([CCD_CENTRE_Y_PIX]))
    ra, dec = tangent_plane(np.array([ra_deg, dec_deg])).wcs_pix2world(np.degrees(xi), np.degrees(eta), 0)
    return SkyRegion(float(ra[0]) % 360.0, float(dec[0]), CLAIM_RADIUS_DEG)


def claim_cells(region: SkyRegion, nside: int = CLAIM_NSIDE) -> list[int]:
    """Coarse HEALPix cells (nested) touched by ``region``, sorted."""
    return sorted(int(c) for c in cover_disc(nside, region.ra_deg, region.dec_deg, region.radius_deg))


class WorkClaims(Protocol):
    """Claims on sky cells that put overlapping CCD-visits in time order."""

    def register(self, work_id: str, region: SkyRegion, mjd_tai: float) -> None:
        """Record that ``work_id`` (a CCD-visit at ``mjd_tai`` over ``region``) will be processed."""

    def is_turn(self, region: SkyRegion, mjd_tai: float) -> bool:
        """True when no unfinished earlier claim overlaps ``region`` (one check, never blocks)."""

    def wait_turn(self, work_id: str, region: SkyRegion, mjd_tai: float, *, timeout_s: float = 600.0) -> None:
        """Block until no earlier claim overlaps ``region``; raise TransientError after ``timeout_s``."""

    def done(self, work_id: str, region: SkyRegion, mjd_tai: float) -> None:
        """Delete the claims of ``work_id`` (after its APDB write)."""


def _wait(earlier: Any, work_id: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    delay = min(poll_s, 0.005)
    while earlier():
        if time.monotonic() > deadline:
            raise TransientError(f"{work_id}: earlier overlapping work still unfinished after {timeout_s:.0f} s",
                                 stage="apdb")
        time.sleep(delay)
        delay = min(delay * 2, poll_s)


class SqliteWorkClaims:
    """Claims in a table of an SQLite APDB file (shared by threads and processes).

    Parameters
    ----------
    path : str
        The SQLite file of the APDB (``":memory:"`` works within one process only).
    ttl_s : float, optional
        Claims older than this are ignored (a consumer that died).
    poll_s : float, optional
        Longest pause between two checks in :meth:`wait_turn`.
    """

    def __init__(self, path: str, *, ttl_s: float = 3600.0, poll_s: float = 0.05) -> None:
        self.path, self.ttl_s, self.poll_s = str(path), float(ttl_s), float(poll_s)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.execute(f'CREATE TABLE IF NOT EXISTS "{CLAIMS_TABLE}" ("cell" INTEGER NOT NULL, '
                           '"mjd" REAL NOT NULL, "work_id" TEXT NOT NULL, "registered" REAL NOT NULL, '
                           'PRIMARY KEY ("cell", "mjd", "work_id"))')
        self._conn.execute(f'CREATE INDEX IF NOT EXISTS "{CLAIMS_TABLE}_work" ON "{CLAIMS_TABLE}" ("work_id")')

    def register(self, work_id: str, region: SkyRegion, mjd_tai: float) -> None:
        """Record the claim (idempotent)."""
        now = time.time()
        with self._lock:
            self._conn.executemany(f'INSERT OR REPLACE INTO "{CLAIMS_TABLE}" VALUES (?, ?, ?, ?)',
                                   [(c, float(mjd_tai), work_id, now) for c in claim_cells(region)])

    def is_turn(self, region: SkyRegion, mjd_tai: float) -> bool:
        """True when no unexpired claim with an earlier mjd remains on the region's cells."""
        cells = claim_cells(region)
        sql = (f'SELECT 1 FROM "{CLAIMS_TABLE}" WHERE "cell" IN ({", ".join("?" * len(cells))}) AND "mjd" < ? '
               'AND "registered" > ? LIMIT 1')
        with self._lock:
            return self._conn.execute(sql, (*cells, float(mjd_tai), time.time() - self.ttl_s)).fetchone() is None

    def wait_turn(self, work_id: str, region: SkyRegion, mjd_tai: float, *, timeout_s: float = 600.0) -> None:
        """Block until :meth:`is_turn`."""
        _wait(lambda: not self.is_turn(region, mjd_tai), work_id, timeout_s, self.poll_s)

    def done(self, work_id: str, region: SkyRegion | None = None, mjd_tai: float | None = None) -> None:
        """Delete the claims of ``work_id``."""
        with self._lock:
            self._conn.execute(f'DELETE FROM "{CLAIMS_TABLE}" WHERE "work_id" = ?', (work_id,))

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class CassandraWorkClaims:
    """Claims in a table of a Cassandra APDB keyspace: partition = cell, clustering = (mjd, work_id), TTL.

    Parameters
    ----------
    apdb : CassandraApdb
        An open store (its session and keyspace are used).
    ttl_s : int, optional
        Cassandra TTL of a claim.
    poll_s : float, optional
        Longest pause between two checks in :meth:`wait_turn`.
    """

    def __init__(self, apdb: Any, *, ttl_s: int = 3600, poll_s: float = 0.05) -> None:
        self._apdb, self.ttl_s, self.poll_s = apdb, int(ttl_s), float(poll_s)
        t = apdb.table_name(CLAIMS_TABLE)
        apdb.ensure_table(CLAIMS_TABLE, "(cell int, mjd double, work_id text, PRIMARY KEY ((cell), mjd, work_id))")
        self._insert = apdb.prepare("claims:insert", f"INSERT INTO {t} (cell, mjd, work_id) VALUES (?, ?, ?) "
                                     f"USING TTL {self.ttl_s}")
        self._earlier = apdb.prepare("claims:earlier", f"SELECT mjd FROM {t} WHERE cell = ? AND mjd < ? LIMIT 1")
        self._delete = apdb.prepare("claims:delete", f"DELETE FROM {t} WHERE cell = ? AND mjd = ? AND "
                                     "work_id = ?")
        self._mine: dict[str, tuple[list[int], float]] = {}

    def register(self, work_id: str, region: SkyRegion, mjd_tai: float) -> None:
        """Record the claim (idempotent)."""
        cells = claim_cells(region)
        self._apdb.execute_concurrent(self._insert, [(c, float(mjd_tai), work_id) for c in cells])

    def is_turn(self, region: SkyRegion, mjd_tai: float) -> bool:
        """True when no claim with an earlier mjd remains on the region's cells."""
        rows = self._apdb.execute_concurrent(self._earlier, [(c, float(mjd_tai)) for c in claim_cells(region)])
        return not any(len(r) for r in rows)

    def wait_turn(self, work_id: str, region: SkyRegion, mjd_tai: float, *, timeout_s: float = 600.0) -> None:
        """Block until :meth:`is_turn`."""
        self._mine[work_id] = (claim_cells(region), float(mjd_tai))
        _wait(lambda: not self.is_turn(region, mjd_tai), work_id, timeout_s, self.poll_s)

    def done(self, work_id: str, region: SkyRegion | None = None, mjd_tai: float | None = None) -> None:
        """Delete the claims of ``work_id`` (its region and mjd are remembered from :meth:`wait_turn`)."""
        if region is not None and mjd_tai is not None:
            cells, mjd = claim_cells(region), float(mjd_tai)
        elif work_id in self._mine:
            cells, mjd = self._mine[work_id]
        else:
            return
        self._apdb.execute_concurrent(self._delete, [(c, mjd, work_id) for c in cells])
        self._mine.pop(work_id, None)

    def close(self) -> None:
        """Nothing to release (the store owns the session)."""


def open_claims(apdb: Any, **options: Any) -> WorkClaims:
    """Open the claims table of an open APDB store (SQLite file or Cassandra keyspace)."""
    from streamer.apdb.sqlite_store import SqliteApdb

    if isinstance(apdb, SqliteApdb):
        return SqliteWorkClaims(apdb.path, **options)
    return CassandraWorkClaims(apdb, **options)
