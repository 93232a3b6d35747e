"""History compaction of :class:`~streamer.apdb.cassandra.CassandraApdb`: each closed DiaSource and
DiaForcedSource partition rewritten as one run of blobs (see :mod:`streamer.apdb.cql_schema`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from streamer.apdb.blob_codec import decode_rows, encode_rows
from streamer.apdb.cassandra.writes import BATCHED_NAMES, VisitWrites
from streamer.apdb.cql_schema import BATCHED_TABLES, COMPACTED_VISIT, ROWS_COLUMN, ROWS_PER_BLOB
from streamer.apdb.packed import drop_repeated_keys, sort_packed

__all__ = ["HistoryCompaction"]

_log = logging.getLogger(__name__)

_COMPACTED_BELOW_KEY = "history_compacted_below"
"""Metadata entry: the time buckets below this one were compacted by :meth:`CassandraApdb.compact_history`."""
_COMPACT_PARTITIONS_PER_ROUND = 2_000
"""Partitions read and rewritten per concurrent round of :meth:`CassandraApdb.compact_history`."""


class HistoryCompaction(VisitWrites):
    """History compaction (a base of :class:`~streamer.apdb.cassandra.CassandraApdb`)."""

    def compact_history(self, before_mjd_tai: float, progress: Callable[[str, int, int], None] | None = None,
                        *, everything: bool = False) -> dict[str, int]:
        """Rewrite each DiaSource and DiaForcedSource partition of the time buckets that ended by
        ``before_mjd_tai`` as one run of blobs (see :mod:`streamer.apdb.cql_schema`).

        A region read returns a CQL row per CCD-visit and partition, and pays for each; a compacted partition
        is one row per :data:`ROWS_PER_BLOB` rows. Contents are unchanged: the new blobs hold every row
        (one per primary key) and are written before the merged rows are deleted, so a reader sees every row
        at any moment, and a run stopped half-way is finished by the next. Run one at a time: two runs on
        one partition while a CCD-visit of its bucket is re-stored could delete that CCD-visit's new rows.

        Parameters
        ----------
        before_mjd_tai : float
            Buckets ending at or before this time are compacted (a bucket still written by new visits
            would be compacted again and again).
        progress : callable, optional
            Called as ``progress(table, partitions_done, partitions_total)`` after each round.
        everything : bool, optional
            Also go over the buckets that an earlier run compacted (recorded in the metadata as
            ``history_compacted_below``), for CCD-visits re-stored there since (a replay of an old night). By
            default a run only does the buckets that ended since the last run.

        Returns
        -------
        dict
            ``{table: partitions rewritten}`` and ``{table + "_rows_merged": CQL rows merged}``.
        """
        closed_below = int(self._time_parts(before_mjd_tai))
        done_below = int(self._read_metadata().get(_COMPACTED_BELOW_KEY, -1))
        first_bucket = -1 if everything else done_below
        counts = {key: 0 for name in BATCHED_TABLES for key in (name, name + "_rows_merged")}
        if first_bucket >= closed_below:  # no bucket ended since the last run: no table scan
            return counts
        for name in BATCHED_TABLES:
            partitions = self.execute(f"SELECT DISTINCT apdb_part, apdb_time_part FROM {self.table_name(name)}")
            keys = [(int(p), int(t)) for p, t in partitions if first_bucket <= t < closed_below]
            read = self._select(name, "apdb_part = ? AND apdb_time_part = ?",
                                f"visit, detector, apdb_chunk, {ROWS_COLUMN}")
            insert = self._insert(name, BATCHED_NAMES)
            delete = self.prepare(f"delete:{name}", f"DELETE FROM {self.table_name(name)} WHERE apdb_part = ? AND "
                                   "apdb_time_part = ? AND visit = ? AND detector = ? AND apdb_chunk = ?")
            rewritten = merged = 0
            for start in range(0, len(keys), _COMPACT_PARTITIONS_PER_ROUND):
                group = keys[start:start + _COMPACT_PARTITIONS_PER_ROUND]
                partitions = self._run_all([(read, key) for key in group])
                inserts, deletes = self._compactions(name, group, partitions, self.blob_codec)
                self._run_all(self._partition_batches(insert, inserts))
                self._run_all(self._partition_batches(delete, deletes, blob_bytes=lambda row: 0))
                rewritten += len(inserts)
                merged += sum(len(d) for d in deletes)
                if progress is not None:
                    progress(name, start + len(group), len(keys))
            counts[name], counts[name + "_rows_merged"] = rewritten, merged
        if closed_below > done_below:
            self._write_metadata(_COMPACTED_BELOW_KEY, str(closed_below))
        _log.info("compacted %s before MJD %.1f: %s", self._where, before_mjd_tai, counts)
        return counts

    @staticmethod
    def _compactions(table: str, keys: Sequence[tuple[int, int]], partitions: Sequence[list[tuple]], codec: str,
                     ) -> tuple[list[list[tuple]], list[list[tuple]]]:
        """Per partition worth compacting: the new blobs' insert parameters and the old rows' delete keys.

        A partition is left alone when it is one CQL row, or one generation of compacted blobs.
        """
        inserts, deletes = [], []
        for (p, t), rows in zip(keys, partitions):
            generations = {d for v, d, _, _ in rows if v == COMPACTED_VISIT}
            if len(rows) < 2 or (len(generations) == 1 and all(v == COMPACTED_VISIT for v, _, _, _ in rows)):
                continue
            packed = drop_repeated_keys(table, sort_packed(table, decode_rows(table, [r[3] for r in rows], codec)))
            generation = max(generations, default=0) + 1
            inserts.append([(p, t, COMPACTED_VISIT, generation, k, encode_rows(packed[i:i + ROWS_PER_BLOB], codec))
                            for k, i in enumerate(range(0, len(packed), ROWS_PER_BLOB))])
            deletes.append([(p, t, v, d, c) for v, d, c, _ in rows])
        return inserts, deletes
