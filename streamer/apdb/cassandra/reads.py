"""The region read of :class:`~streamer.apdb.cassandra.CassandraApdb`: the DiaObjects of a circle as they
were before a visit, and their DiaSource and DiaForcedSource history."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer.apdb.base import RegionData, SkyRegion
from streamer.apdb.blob_codec import decode_rows
from streamer.apdb.cassandra.schema import KeyspaceSchema
from streamer.apdb.cassandra.versions import newest_per_object
from streamer.apdb.columns import DIA_FORCED_SOURCE, DIA_OBJECT, DIA_OBJECT_LAST, DIA_SOURCE
from streamer.apdb.cql_schema import BATCHED_TABLES
from streamer.apdb.history import history_window, select_history
from streamer.apdb.packed import drop_repeated_keys, packed_to_table, sort_packed, take_rows, unpack_packed
from streamer.apdb.sky import cover_disc, in_circle

__all__ = ["RegionReads"]

_HISTORY_MARGIN_DEG = 10.0 / 3600.0
"""Sources of an object inside the region lie within this distance of the circle (association radius is 1")."""
_PIXELS_PER_QUERY = 8
"""Pixels per multi-partition read query (the queries of one region run concurrently)."""


class RegionReads(KeyspaceSchema):
    """Region reads (a base of :class:`~streamer.apdb.cassandra.CassandraApdb`)."""

    def _pixel_groups(self, pixels: np.ndarray) -> list[list[int]]:
        pixels = np.sort(np.asarray(pixels, dtype=np.int64))
        return [pixels[i:i + _PIXELS_PER_QUERY].tolist() for i in range(0, len(pixels), _PIXELS_PER_QUERY)]

    def read_region(self, region: SkyRegion, visit_mjd_tai: float) -> RegionData:
        """Read the region's DiaObjects as they were before ``visit_mjd_tai``, and their history.

        Parameters
        ----------
        region : SkyRegion
            Circle to read.
        visit_mjd_tai : float
            Visit time. Objects are returned in their latest version with ``validityStartMjdTai <
            visit_mjd_tai`` (objects first seen at or after the visit are left out), so re-processing a visit
            after later visits were stored reads what the first processing read. History is read from
            ``visit_mjd_tai - 365`` (inclusive) to ``visit_mjd_tai`` (exclusive).

        Returns
        -------
        RegionData

        Raises
        ------
        TransientError
            Requests still timing out after the retries.
        """
        pixels = cover_disc(self.nside, region.ra_deg, region.dec_deg, region.radius_deg + _HISTORY_MARGIN_DEG)
        groups = self._pixel_groups(pixels)
        lo, hi = history_window(visit_mjd_tai)
        buckets = np.arange(self._time_parts(lo), self._time_parts(hi) + 1).tolist()
        # One concurrent round for the three tables: the history of every object in the pixels is read and
        # then filtered to the objects inside the region.
        tables = (DIA_OBJECT_LAST, DIA_SOURCE, DIA_FORCED_SOURCE)
        work = [(self._select(DIA_OBJECT_LAST, "apdb_part IN ?"), (g,)) for g in groups]
        for name in tables[1:]:
            stmt = self._select(name, "apdb_part IN ? AND apdb_time_part IN ?")
            work += [(stmt, (g, buckets)) for g in groups]
        results = self._run_all(work)
        n = len(groups)
        # Filtering and sorting happen on the packed arrays; only the rows returned become Table columns.
        read = {name: self._unpack(name, [r[0] for rows in results[k * n:(k + 1) * n] for r in rows])
                for k, name in enumerate(tables)}
        objects = newest_per_object(self._as_of(read[DIA_OBJECT_LAST], visit_mjd_tai))
        inside = in_circle(objects["ra"], objects["dec"], region.ra_deg, region.dec_deg, region.radius_deg)
        objects = sort_packed(DIA_OBJECT_LAST, take_rows(objects, inside))
        ids = objects["diaObjectId"].astype(np.int64)
        history = [packed_to_table(name, drop_repeated_keys(name, sort_packed(
            name, select_history(read[name], ids, visit_mjd_tai)))) for name in tables[1:]]
        return RegionData(dia_objects=packed_to_table(DIA_OBJECT_LAST, objects), dia_sources=history[0],
                          dia_forced_sources=history[1])

    def _unpack(self, table: str, blobs: Sequence[bytes]) -> np.ndarray:
        """Packed rows of ``table`` from its blob column's values (history blobs in the keyspace's codec)."""
        if table in BATCHED_TABLES:
            return decode_rows(table, blobs, self.blob_codec)
        return unpack_packed(table, blobs)

    def _as_of(self, objects: np.ndarray, visit_mjd_tai: float) -> np.ndarray:
        """Replace DiaObjectLast rows not older than the visit by the version valid before it (or drop them).

        Works on packed rows; DiaObject and DiaObjectLast rows have the same layout.
        """
        later = objects["validityStartMjdTai"] >= visit_mjd_tai
        if not later.any():
            return objects
        stmt = self._select(DIA_OBJECT, '"diaObjectId" = ? AND "validityStartMjdTai" < ? LIMIT 1')
        ids = objects["diaObjectId"][later].tolist()
        blobs = [r[0] for rows in self.execute_concurrent(stmt, [(int(i), float(visit_mjd_tai)) for i in ids])
                 for r in rows]
        older = unpack_packed(DIA_OBJECT, blobs).view(objects.dtype)
        return np.concatenate([take_rows(objects, ~later), older])
