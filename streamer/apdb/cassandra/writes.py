"""The store of one CCD-visit by :class:`~streamer.apdb.cassandra.CassandraApdb`: batched upserts of the
history tables, DiaObject and DiaObjectLast, then the ApdbVisitDetector marker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from astropy.table import Table

from streamer.apdb.blob_codec import encode_rows
from streamer.apdb.bookkeeping import VISIT_DETECTOR_COLUMNS, VISIT_DETECTOR_TABLE
from streamer.apdb.cassandra.schema import KeyspaceSchema
from streamer.apdb.cassandra.versions import newest_rows, newest_version, version_keys
from streamer.apdb.columns import DIA_FORCED_SOURCE, DIA_OBJECT, DIA_OBJECT_LAST, DIA_SOURCE
from streamer.apdb.cql_schema import KEY_COLUMNS, ROW_COLUMN, ROWS_COLUMN, ROWS_PER_BLOB
from streamer.apdb.packed import pack_rows, pack_table, take_rows
from streamer.apdb.sky import ang2pix_nested

__all__ = ["VisitWrites", "BATCHED_NAMES"]

_log = logging.getLogger(__name__)

BATCHED_NAMES = ("apdb_part", "apdb_time_part", "visit", "detector", "apdb_chunk", ROWS_COLUMN)
"""Columns of :data:`BATCHED_TABLES` rows, in the order of their insert parameters."""
_BATCH_BYTES = 40_000
"""Bound on one unlogged batch, counting 16 bytes a cell (Cassandra refuses batches above 50 KiB)."""
_ROW_OVERHEAD = 64
"""Bytes counted per CQL row of a batch besides its blob (its key cells)."""


class VisitWrites(KeyspaceSchema):
    """CCD-visit writes (a base of :class:`~streamer.apdb.cassandra.CassandraApdb`)."""

    def store(self, *, visit: int, detector: int, dia_objects: Table, dia_sources: Table,
              dia_forced_sources: Table) -> None:
        """Upsert one CCD-visit's outputs.

        DiaSource and DiaForcedSource rows are written first, with a read of the two newest stored versions of
        each object; then DiaObject and DiaObjectLast (DiaObjectLast only where the new version is at least as
        recent as the stored one; a row left in another pixel by a moved object is deleted); then the
        ApdbVisitDetector marker, so a CCD-visit with a marker is complete. A write that fails half-way leaves
        no marker, and writing again (every write is an upsert of deterministic keys) completes it.

        Raises
        ------
        InputError
            A required column is missing or has missing values.
        TransientError
            Writes still timing out after the retries.
        """
        obj = pack_table(DIA_OBJECT, dia_objects)
        src = pack_table(DIA_SOURCE, dia_sources)
        fsrc = pack_table(DIA_FORCED_SOURCE, dia_forced_sources)
        obj_part = ang2pix_nested(self.nside, obj["ra"], obj["dec"])
        obj_valid = obj["validityStartMjdTai"].astype(float)

        # Round 1: the append-only source tables, and the stored versions of each object (where its
        # DiaObjectLast row is). Round 2: DiaObject and DiaObjectLast, and deletes of DiaObjectLast rows left in
        # another pixel. Round 3: the marker. A retry after a crash in round 2 finds this write's own versions
        # among the stored ones, and takes the pixel of the version before them.
        ids = np.asarray(obj["diaObjectId"], dtype=np.int64)
        lookups = self._stored_versions(ids)
        work: list[tuple[Any, Any]] = []
        for name, rows in ((DIA_SOURCE, src), (DIA_FORCED_SOURCE, fsrc)):
            work += self._batched_inserts(name, rows, visit, detector)
        results = self._run_all(lookups + work)
        stored = [r for rows in results[:len(lookups)] for r in rows]
        self._run_all(self._last_writes(obj, obj_part, obj_valid, stored)
                      + self._inserts(DIA_OBJECT, obj, obj_part, per_row=True))
        stmt = self.prepare("insert:vd", f"INSERT INTO {self.table_name(VISIT_DETECTOR_TABLE)} "
                             f"({', '.join(VISIT_DETECTOR_COLUMNS)}) VALUES (?, ?, ?, ?, ?)")
        self.execute_concurrent(stmt, [(int(visit), int(detector), len(obj), len(src), len(fsrc))])
        _log.debug("stored visit %d detector %d in %s", visit, detector, self._where)

    def _inserts(self, table: str, packed: np.ndarray, part: np.ndarray, select: np.ndarray | None = None,
                 per_row: bool = False) -> list[tuple[Any, Any]]:
        """(statement, parameters) pairs writing one CQL row per packed row: unlogged batches of one partition
        (``apdb_part``) each.

        With ``per_row`` (DiaObject: partitioned by id, ``apdb_part`` a plain column) every row is its own
        statement.
        """
        from cassandra.query import UNSET_VALUE

        if select is not None:
            packed, part = take_rows(packed, select), part[select]
        if len(packed) == 0:
            return []
        names, values = ["apdb_part"], [part.tolist()]
        for k in KEY_COLUMNS[table]:
            names.append(k)
            col = packed[k].tolist()
            if k + "__null" in packed.dtype.names:  # a missing key value is left unset (no tombstone)
                col = [UNSET_VALUE if null else v for v, null in zip(col, packed[k + "__null"].tolist())]
            values.append(col)
        names.append(ROW_COLUMN)
        values.append(pack_rows(packed))
        rows = list(zip(*values))
        stmt = self._insert(table, names)
        if per_row:
            return [(stmt, row) for row in rows]
        order = np.argsort(part, kind="stable")
        part_sorted = part[order]
        starts = np.flatnonzero(np.r_[True, part_sorted[1:] != part_sorted[:-1]])
        ends = np.r_[starts[1:], len(order)]
        return self._partition_batches(stmt, ([rows[i] for i in order[s0:e0].tolist()]
                                              for s0, e0 in zip(starts.tolist(), ends.tolist())))

    def _batched_inserts(self, table: str, packed: np.ndarray, visit: int, detector: int,
                         ) -> list[tuple[Any, Any]]:
        """(statement, parameters) pairs writing a CCD-visit's rows of a :data:`BATCHED_TABLES` table.

        Rows are grouped by partition (pixel, time bucket) and by their own ``visit`` (one group per
        partition for a worker's CCD-visit; many for a benchmark fill), in table order within a group, and
        each group is written as blobs of at most :data:`ROWS_PER_BLOB` rows, keyed by the store call's
        ``visit``, ``detector`` and a chunk number counted per partition.
        """
        if len(packed) == 0:
            return []
        part = ang2pix_nested(self.nside, packed["ra"], packed["dec"]).astype(np.int64)
        time_part = self._time_parts(packed["midpointMjdTai"])
        own_visit = packed["visit"].astype(np.int64)
        order = np.lexsort((own_visit, time_part, part))
        rows = take_rows(packed, order)
        part, time_part, own_visit = part[order], time_part[order], own_visit[order]
        new_group = np.r_[True, (part[1:] != part[:-1]) | (time_part[1:] != time_part[:-1])
                          | (own_visit[1:] != own_visit[:-1])]
        starts = np.flatnonzero(new_group)
        ends = np.r_[starts[1:], len(rows)]
        stmt = self._insert(table, BATCHED_NAMES)
        codec = self.blob_codec
        per_partition: dict[tuple[int, int], list[tuple]] = {}
        for s0, e0, p, t in zip(starts.tolist(), ends.tolist(), part[starts].tolist(), time_part[starts].tolist()):
            blobs = per_partition.setdefault((p, t), [])
            for b0 in range(s0, e0, ROWS_PER_BLOB):
                blobs.append((p, t, int(visit), int(detector), len(blobs),
                              encode_rows(rows[b0:min(e0, b0 + ROWS_PER_BLOB)], codec)))
        return self._partition_batches(stmt, per_partition.values())

    def _partition_batches(self, stmt: Any, partitions: Any,
                           blob_bytes: Callable[[tuple], int] = lambda row: len(row[-1])) -> list[tuple[Any, Any]]:
        """(statement, parameters) pairs for the CQL rows of each partition (an iterable of lists of parameter
        tuples; ``blob_bytes`` gives a row's blob size, by default that of its last value): one statement for
        a partition's only row or for a big blob, otherwise unlogged batches of at most ``_BATCH_BYTES``
        (blob plus ``_ROW_OVERHEAD`` a row)."""
        from cassandra.query import BatchStatement, BatchType

        work: list[tuple[Any, Any]] = []
        for rows in partitions:
            if len(rows) == 1:
                work.append((stmt, rows[0]))
                continue
            batch, size = None, 0
            for row in rows:
                row_size = blob_bytes(row) + _ROW_OVERHEAD
                if row_size > _BATCH_BYTES // 2:  # a big blob goes alone
                    work.append((stmt, row))
                    continue
                if batch is None or size + row_size > _BATCH_BYTES:
                    batch, size = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=self.consistency), 0
                    work.append((batch, None))
                batch.add(stmt, row)
                size += row_size
        return work

    def _stored_versions(self, ids: np.ndarray) -> list[tuple[Any, Any]]:
        """Reads of the newest stored DiaObject versions of ``ids``: (id, pixel, validity) rows, one more per
        object than the versions this write holds of it (so that the version before them is among them)."""
        if len(ids) == 0:
            return []
        unique, counts = np.unique(ids, return_counts=True)
        stmt = self.prepare("select:versions", f'SELECT "diaObjectId", apdb_part, "validityStartMjdTai" '
                             f'FROM {self.table_name(DIA_OBJECT)} WHERE "diaObjectId" IN ? PER PARTITION LIMIT ?')
        per_object = int(counts.max()) + 1
        return [(stmt, (unique[i:i + 100].tolist(), per_object)) for i in range(0, len(unique), 100)]

    def _last_writes(self, obj: np.ndarray, obj_part: np.ndarray, obj_valid: np.ndarray,
                     stored_rows: list[tuple]) -> list[tuple[Any, Any]]:
        """Writes of DiaObjectLast where the new version is not older than the newest stored one.

        ``stored_rows`` are the (id, pixel, validity) rows read by :meth:`_stored_versions`. The row of the
        version before this write's (the newest stored version that this write does not hold: a crashed
        earlier try of this write may have stored its versions already) is deleted when the object moved to
        another pixel.
        """
        ids = np.asarray(obj["diaObjectId"], dtype=np.int64)
        if len(ids) == 0:
            return []
        keep = np.zeros(len(ids), bool)
        keep[newest_rows(ids, obj_valid)] = True  # the latest version of each object within this write
        stored = np.array(stored_rows, dtype=[("id", "i8"), ("part", "i8"), ("valid", "f8")]).reshape(-1)
        _, newest_valid = newest_version(stored, ids)
        ours = np.isin(version_keys(stored["id"], stored["valid"]), version_keys(ids, obj_valid))
        previous_part, _ = newest_version(stored[~ours], ids)
        keep &= obj_valid >= newest_valid
        work = self._inserts(DIA_OBJECT_LAST, obj, obj_part, select=keep)
        moved = keep & (previous_part >= 0) & (previous_part != obj_part)
        if moved.any():
            delete = self.prepare("delete:last", f'DELETE FROM {self.table_name(DIA_OBJECT_LAST)} '
                                   'WHERE apdb_part = ? AND "diaObjectId" = ?')
            work += [(delete, p) for p in zip(previous_part[moved].tolist(), ids[moved].tolist())]
        return work
