"""Production APDB on Apache Cassandra, laid out for one CCD-visit's reads.

The DDL is ``schemas/apdb.cql`` (see :mod:`streamer.apdb.cql_schema` for the layout). A region read is a
few concurrent multi-partition queries on DiaObjectLast (``apdb_part IN ?``, one per group of HEALPix pixels
covering the circle), then on DiaSource and DiaForcedSource (``apdb_part IN ? AND apdb_time_part IN ?``).
Each row comes back as one packed blob (see :mod:`streamer.apdb.columns`); the blobs are joined into one
structured array, filtered exactly in numpy (distance, diaObjectId, time window) and sorted, and only then
turned into Tables. Writes are unlogged single-partition batches of prepared inserts (one partition
of DiaSource, DiaForcedSource or DiaObjectLast per batch, concurrently), which Cassandra applies as upserts,
so writing a CCD-visit twice leaves the tables as one write would. The ApdbVisitDetector marker is written
last, after every other write was acknowledged.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np
from astropy.table import Table

from pipeline.errors import TransientError
from streamer.apdb.base import APDB_SCHEMA_VERSION, RegionData, SkyRegion
from streamer.apdb.blob_codec import (
    CODEC_METADATA_KEY,
    DEFAULT_CODEC,
    SSTABLE_COMPRESSION,
    check_codec,
    decode_rows,
    encode_rows,
)
from streamer.apdb.columns import (
    ALERT_SCHEMA_VERSION,
    DIA_FORCED_SOURCE,
    DIA_OBJECT,
    DIA_OBJECT_LAST,
    DIA_SOURCE,
    TABLES,
    drop_repeated_keys,
    pack_rows,
    pack_table,
    packed_to_table,
    sort_packed,
    take_rows,
    sort_table,
    unpack_packed,
    unpack_rows,
)
from streamer.apdb.cql_schema import (
    BATCHED_TABLES,
    COMPACTED_VISIT,
    HISTORY_GC_GRACE_S,
    KEY_COLUMNS,
    ROW_COLUMN,
    ROWS_COLUMN,
    ROWS_PER_BLOB,
    load_cql,
)
from streamer.apdb.sky import ang2pix_nested, cover_disc, in_circle
from streamer.apdb.sqlite_store import (
    METADATA_TABLE,
    VISIT_DETECTOR_TABLE,
    _VD_NAMES,
    check_versions,
    history_window,
    major_minor,
    select_history,
)

__all__ = ["CassandraApdb"]

_log = logging.getLogger(__name__)

_HISTORY_MARGIN_DEG = 10.0 / 3600.0
"""Sources of an object inside the region lie within this distance of the circle (association radius is 1")."""
_PIXELS_PER_QUERY = 8
"""Pixels per multi-partition read query (the queries of one region run concurrently)."""
_READ_FETCH_SIZE = 50_000
"""Rows per page of a region read: one page per query (paging would fetch the next pages one by one)."""
_RECV_BUFFER_BYTES = 256 * 1024
"""Bytes per socket read of the driver's connections (the driver's default: 4096)."""
_BATCHED_NAMES = ("apdb_part", "apdb_time_part", "visit", "detector", "apdb_chunk", ROWS_COLUMN)
"""Columns of :data:`BATCHED_TABLES` rows, in the order of their insert parameters."""
_COMPACTED_BELOW_KEY = "history_compacted_below"
"""Metadata entry: the time buckets below this one were compacted by :meth:`CassandraApdb.compact_history`."""
_COMPACT_PARTITIONS_PER_ROUND = 2_000
"""Partitions read and rewritten per concurrent round of :meth:`CassandraApdb.compact_history`."""
_BATCH_BYTES = 40_000
"""Bound on one unlogged batch, counting 16 bytes a cell (Cassandra refuses batches above 50 KiB)."""
_ROW_OVERHEAD = 64
"""Bytes counted per CQL row of a batch besides its blob (its key cells)."""
DEFAULT_NSIDE = 512
"""HEALPix nside of a new keyspace's partitions."""


def _retryable() -> tuple[type[BaseException], ...]:
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return (OperationTimedOut, ReadTimeout, WriteTimeout, Unavailable, NoHostAvailable, ConnectionException)


@functools.cache
def _connection_class() -> type:
    """The driver's default connection class with a :data:`_RECV_BUFFER_BYTES` receive buffer.

    The driver reads its socket 4 kB at a time, each read a Python call and a buffer append: 3,000 of them
    for a region read.
    """
    from cassandra.cluster import DefaultConnection

    return type("BlinkConnection", (DefaultConnection,), {"in_buffer_size": _RECV_BUFFER_BYTES})


def _newest_rows(ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Index of the newest row (largest ``valid``) of each id, in id order."""
    order = np.lexsort((valid, ids))
    sorted_ids = ids[order]
    return order[np.r_[sorted_ids[1:] != sorted_ids[:-1], True]]


def _newest_per_object(objects: np.ndarray) -> np.ndarray:
    """Packed DiaObjectLast rows with one row per diaObjectId, the newest (a row a store failed to delete from
    the pixel an object moved out of must not make it two objects)."""
    if len(objects) < 2:
        return objects
    newest = _newest_rows(objects["diaObjectId"], objects["validityStartMjdTai"])
    return objects if len(newest) == len(objects) else take_rows(objects, newest)


def _version_keys(ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One comparable value per (diaObjectId, validityStartMjdTai) pair (16 bytes)."""
    keys = np.empty(len(ids), dtype=[("id", "<i8"), ("valid", "<f8")])
    keys["id"], keys["valid"] = ids, valid
    return keys.view("V16")


def _newest_version(versions: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel and validity of the newest of ``versions`` (id, part, valid records) of each of ``ids``; -1 and
    -inf for an id without one."""
    part, valid = np.full(len(ids), -1, np.int64), np.full(len(ids), -np.inf)
    if len(versions) == 0:
        return part, valid
    newest = _newest_rows(versions["id"], versions["valid"])
    newest_ids = versions["id"][newest]
    at = np.clip(np.searchsorted(newest_ids, ids), 0, len(newest) - 1)
    found = newest_ids[at] == ids
    part[found], valid[found] = versions["part"][newest[at[found]]], versions["valid"][newest[at[found]]]
    return part, valid


class CassandraApdb:
    """APDB in a Cassandra keyspace.

    Parameters
    ----------
    hosts : sequence of str
        Contact points.
    port : int, optional
        Native protocol port.
    keyspace : str, optional
        Keyspace holding the APDB tables.
    replication_factor : int, optional
        Used by :meth:`init_schema` when it creates the keyspace (SimpleStrategy).
    consistency : str, optional
        Consistency level of reads and writes (``LOCAL_QUORUM``, ``ONE``, ``QUORUM``...).
    username, password : str, optional
        Plain-text authentication.
    ssl : bool, optional
        Use TLS (system trust store).
    nside : int or None, optional
        HEALPix nside of the spatial partitions of a new keyspace; None (the default): the keyspace's own
        (:data:`DEFAULT_NSIDE` for a new one); a value given must match it. At 512, pixels of about 0.11 deg,
        22 cover a 0.2 deg CCD region plus margin, whose area is 2.3 times the region's. At 1024, 67 cover 1.75
        times the region: on fresh 1M-object keyspaces (schema 4.2.0) reads took the same time, stores about 5
        ms longer at the median (more partitions, more statements), and the fill and its first compaction 1.5
        and 2.5 times as long. At 2048, 206 pixels cover 1.35 times the region, but with compacted history the
        reads were no faster than at 1024, stores took about 60% longer, and a 1M-object fill and its first
        compaction took 1.8 and 4.2 times as long as at 1024.
    time_partition_days : int, optional
        Width of the time partitions of DiaSource, DiaForcedSource and DiaObject.
    connect_timeout_s : float, optional
        How long to keep retrying (exponential backoff) while no host answers at startup.
    request_timeout_s : float, optional
        Driver timeout of one request.
    max_retries : int, optional
        Retries of a timed-out or unavailable request (exponential backoff) before raising
        :class:`TransientError`.
    concurrency : int, optional
        Requests in flight per round.
    protocol_version : int or None, optional
        Native protocol version; None lets the driver negotiate (5 with Cassandra 4 and 5). The default is 4:
        the driver checksums version 5's frames in Python, which took about a third of the client CPU of a
        region read (12 MB). The native protocol's own compression is off: the history blobs arrive
        compressed, and compressing the rest costs Cassandra CPU for nothing on a local network.
    blob_codec : str or None, optional
        Codec of the DiaSource and DiaForcedSource blobs (:mod:`streamer.apdb.blob_codec`), chosen when the
        keyspace is created and recorded in its metadata. None (the default): the keyspace's own
        (``lz4-shuffle`` for a new one, ``none`` for one created before schema 4.2.0); a value given must
        match it.
    """

    def __init__(self, hosts: Sequence[str] | str = ("127.0.0.1",), port: int = 9042, *,
                 keyspace: str = "blink_apdb", replication_factor: int = 1, consistency: str = "LOCAL_QUORUM",
                 username: str | None = None, password: str | None = None, ssl: bool = False,
                 nside: int | None = None, time_partition_days: int = 30, connect_timeout_s: float = 60.0,
                 request_timeout_s: float = 10.0, max_retries: int = 5, concurrency: int = 128,
                 protocol_version: int | None = 4, blob_codec: str | None = None) -> None:
        from cassandra import ConsistencyLevel

        self.hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        self.port = int(port)
        self.keyspace = keyspace
        self.replication_factor = int(replication_factor)
        try:
            self.consistency = ConsistencyLevel.name_to_value[consistency.upper()]
        except KeyError:
            raise ValueError(f"unknown consistency level {consistency!r}") from None
        self._requested_nside = None if nside is None else int(nside)
        self.time_partition_days = int(time_partition_days)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self._protocol_version = protocol_version
        self._requested_codec = None if blob_codec is None else check_codec(blob_codec)
        self._stored_layout: dict[str, str] | None = None
        self._where = f"{','.join(self.hosts)}:{self.port}/{keyspace}"
        self._prepared: dict[str, Any] = {}
        self._cluster, self._session = self._connect(username, password, ssl, connect_timeout_s,
                                                     request_timeout_s)

    # ------------------------------------------------------------------ connection
    def _connect(self, username: str | None, password: str | None, ssl: bool, connect_timeout_s: float,
                 request_timeout_s: float) -> tuple[Any, Any]:
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
        from cassandra.query import tuple_factory

        profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                                   consistency_level=self.consistency, request_timeout=request_timeout_s,
                                   row_factory=tuple_factory)
        kwargs: dict[str, Any] = {}
        if self._protocol_version is not None:
            kwargs["protocol_version"] = self._protocol_version
        if username is not None:
            kwargs["auth_provider"] = PlainTextAuthProvider(username=username, password=password or "")
        if ssl:
            import ssl as ssl_mod

            kwargs["ssl_context"] = ssl_mod.create_default_context()
        deadline = time.monotonic() + connect_timeout_s
        delay, n_tries = 0.5, 0
        while True:
            n_tries += 1
            cluster = Cluster(self.hosts, port=self.port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                              connection_class=_connection_class(), compression=False,
                              connect_timeout=min(5.0, max(connect_timeout_s, 0.1)), **kwargs)
            try:
                return cluster, cluster.connect()
            except (NoHostAvailable, OSError) as exc:
                cluster.shutdown()
                if time.monotonic() + delay > deadline:
                    hosts = ",".join(f"{h}:{self.port}" for h in self.hosts)
                    raise TransientError(f"Cassandra at {hosts} unavailable after {n_tries} tries "
                                         f"({connect_timeout_s:.0f} s): {exc}", stage="apdb") from exc
                _log.warning("Cassandra at %s not reachable (try %d), retrying in %.1f s: %s",
                             self._where, n_tries, delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _t(self, table: str) -> str:
        return f'{self.keyspace}."{table}"'

    # ------------------------------------------------------------------ execution helpers
    def _execute(self, query: Any, params: Sequence[Any] = ()) -> list[tuple]:
        return self._concurrent(query, [tuple(params)])[0]

    def _concurrent(self, statement: Any, params: Sequence[Sequence[Any]]) -> list[list[tuple]]:
        """Run ``statement`` once per parameter tuple, concurrently; retry the failed ones with backoff.

        Returns the rows of each execution, in order.
        """
        return self._run_all([(statement, tuple(p)) for p in params])

    def _run_all(self, work: Sequence[tuple[Any, Any]]) -> list[list[tuple]]:
        """Run (statement, parameters) pairs concurrently; retry the failed ones with backoff.

        Every statement is an idempotent upsert or a read, so a retry after a timeout cannot change the
        result. Returns the rows of each execution, in order.

        Raises
        ------
        TransientError
            Some still fail (timeouts, unavailable replicas) after ``max_retries`` retries.
        """
        from cassandra.concurrent import execute_concurrent

        results: list[list[tuple] | None] = [None] * len(work)
        todo = list(range(len(work)))
        delay = 0.2
        failed: list[int] = []
        last_exc: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            out = execute_concurrent(self._session, [work[i] for i in todo], concurrency=self.concurrency,
                                     raise_on_first_error=False)
            failed, last_exc = [], None
            for i, (ok, res) in zip(todo, out):
                if ok:
                    results[i] = list(res) if res is not None else []
                elif isinstance(res, _retryable()):
                    failed.append(i)
                    last_exc = res
                else:
                    raise res
            if not failed:
                return results  # type: ignore[return-value]
            if attempt == self.max_retries:
                break
            _log.warning("Cassandra %s: %d of %d requests failed (%s), retrying in %.1f s", self._where,
                         len(failed), len(todo), last_exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            todo = failed
        raise TransientError(f"Cassandra at {self._where}: {len(failed)} requests still failing after "
                             f"{self.max_retries + 1} tries: {last_exc}", stage="apdb") from last_exc

    def _prepare(self, key: str, cql: str) -> Any:
        if key not in self._prepared:
            self._prepared[key] = self._session.prepare(cql)
        return self._prepared[key]

    def _insert(self, table: str, names: Sequence[str]) -> Any:
        cols = ", ".join(n if n.startswith("apdb_") else f'"{n}"' for n in names)
        marks = ", ".join("?" * len(names))
        return self._prepare(f"insert:{table}", f"INSERT INTO {self._t(table)} ({cols}) VALUES ({marks})")

    def _select(self, table: str, where: str, columns: str | None = None) -> Any:
        """Prepared ``SELECT columns (default: the row blob) FROM table WHERE where``, one page per query."""
        columns = columns or (ROWS_COLUMN if table in BATCHED_TABLES else ROW_COLUMN)
        key = f"select:{table}:{columns}:{where}"
        if key not in self._prepared:
            self._prepare(key, f"SELECT {columns} FROM {self._t(table)} WHERE {where}").fetch_size = \
                _READ_FETCH_SIZE
        return self._prepared[key]

    # ------------------------------------------------------------------ schema
    def _expected_metadata(self) -> dict[str, str]:
        """What the keyspace's metadata must say: versions, partitioning, and the layout asked for."""
        expected = {"schema_version": APDB_SCHEMA_VERSION, "alert_schema_version": ALERT_SCHEMA_VERSION,
                    "time_partition_days": str(self.time_partition_days)}
        if self._requested_nside is not None:
            expected["nside"] = str(self._requested_nside)
        if self._requested_codec is not None:
            expected[CODEC_METADATA_KEY] = self._requested_codec
        return expected

    def _new_layout(self) -> dict[str, str]:
        """nside and blob codec of a keyspace this client creates."""
        return {"nside": str(self._requested_nside or DEFAULT_NSIDE),
                CODEC_METADATA_KEY: self._requested_codec or DEFAULT_CODEC}

    def _layout(self) -> dict[str, str]:
        """The keyspace's nside and blob codec, read from its metadata once (a new keyspace's before it exists)."""
        if self._stored_layout is None:
            stored = self._read_metadata()
            if "schema_version" not in stored:
                return self._new_layout()
            self._stored_layout = {"nside": stored["nside"],
                                   CODEC_METADATA_KEY: stored.get(CODEC_METADATA_KEY, "none")}
        return self._stored_layout

    @property
    def nside(self) -> int:
        """HEALPix nside of this keyspace's partitions."""
        return int(self._layout()["nside"])

    @property
    def blob_codec(self) -> str:
        """Codec of this keyspace's history blobs."""
        return self._layout()[CODEC_METADATA_KEY]

    def _read_metadata(self) -> dict[str, str]:
        from cassandra import InvalidRequest

        try:
            rows = self._execute(f'SELECT name, value FROM {self._t(METADATA_TABLE)}')
        except InvalidRequest:  # keyspace or table absent
            return {}
        return dict(rows)

    def _write_metadata(self, name: str, value: str, *, if_absent: bool = False) -> None:
        """Set one metadata entry (with ``if_absent``: only where it has none)."""
        self._execute(f"INSERT INTO {self._t(METADATA_TABLE)} (name, value) VALUES (%s, %s)"
                      + (" IF NOT EXISTS" if if_absent else ""), (name, value))

    def init_schema(self) -> None:
        """Create the keyspace and tables from ``schemas/apdb.cql`` and record the version; safe twice.

        Raises
        ------
        InputError
            The keyspace already holds an APDB of another schema version or partitioning.
        """
        stored = self._read_metadata()
        if stored:
            check_versions(stored, self._expected_metadata(), self._where)
        replication = f"{{'class': 'SimpleStrategy', 'replication_factor': {self.replication_factor}}}"
        new_layout = self._new_layout()
        compression = SSTABLE_COMPRESSION[new_layout[CODEC_METADATA_KEY]]
        for stmt in load_cql(self.keyspace, replication, history_compression=compression):
            self._execute(stmt)
        if stored and major_minor(stored["schema_version"]) < major_minor(APDB_SCHEMA_VERSION):
            self._upgrade_minor(stored["schema_version"])
        self._session.cluster.control_connection.wait_for_schema_agreement()
        for name, value in {**self._expected_metadata(), **new_layout}.items():
            self._write_metadata(name, value, if_absent=True)
        self._stored_layout = None

    def _upgrade_minor(self, stored_version: str) -> None:
        """Bring a database of an older minor version of this major version up to date.

        4.0.0 -> 4.1.0: the history tables' ``gc_grace_seconds`` (:data:`HISTORY_GC_GRACE_S`).
        4.1.0 -> 4.2.0: the history blob codec is recorded; the keyspace's blobs are raw packed rows (``none``).
        """
        if major_minor(stored_version) < (4, 1):
            for name in BATCHED_TABLES:
                self._execute(f"ALTER TABLE {self._t(name)} WITH gc_grace_seconds = {HISTORY_GC_GRACE_S}")
        self._write_metadata(CODEC_METADATA_KEY, "none", if_absent=True)
        self._write_metadata("schema_version", APDB_SCHEMA_VERSION)
        _log.info("APDB at %s upgraded from schema %s to %s", self._where, stored_version, APDB_SCHEMA_VERSION)

    def check_schema(self) -> None:
        """Raise :class:`InputError` when the stored schema version or partitioning does not match."""
        check_versions(self._read_metadata(), self._expected_metadata(), self._where)

    # ------------------------------------------------------------------ reads
    def _time_parts(self, mjd: np.ndarray) -> np.ndarray:
        return np.floor(np.asarray(mjd, dtype=float) / self.time_partition_days).astype(np.int64)

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
        objects = _newest_per_object(self._as_of(read[DIA_OBJECT_LAST], visit_mjd_tai))
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
        blobs = [r[0] for rows in self._concurrent(stmt, [(int(i), float(visit_mjd_tai)) for i in ids])
                 for r in rows]
        older = unpack_packed(DIA_OBJECT, blobs).view(objects.dtype)
        return np.concatenate([take_rows(objects, ~later), older])

    # ------------------------------------------------------------------ writes
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
        stmt = self._prepare("insert:vd", f"INSERT INTO {self._t(VISIT_DETECTOR_TABLE)} "
                             f"({', '.join(_VD_NAMES)}) VALUES (?, ?, ?, ?, ?)")
        self._concurrent(stmt, [(int(visit), int(detector), len(obj), len(src), len(fsrc))])
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
        stmt = self._insert(table, _BATCHED_NAMES)
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
        stmt = self._prepare("select:versions", f'SELECT "diaObjectId", apdb_part, "validityStartMjdTai" '
                             f'FROM {self._t(DIA_OBJECT)} WHERE "diaObjectId" IN ? PER PARTITION LIMIT ?')
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
        keep[_newest_rows(ids, obj_valid)] = True  # the latest version of each object within this write
        stored = np.array(stored_rows, dtype=[("id", "i8"), ("part", "i8"), ("valid", "f8")]).reshape(-1)
        _, newest_valid = _newest_version(stored, ids)
        ours = np.isin(_version_keys(stored["id"], stored["valid"]), _version_keys(ids, obj_valid))
        previous_part, _ = _newest_version(stored[~ours], ids)
        keep &= obj_valid >= newest_valid
        work = self._inserts(DIA_OBJECT_LAST, obj, obj_part, select=keep)
        moved = keep & (previous_part >= 0) & (previous_part != obj_part)
        if moved.any():
            delete = self._prepare("delete:last", f'DELETE FROM {self._t(DIA_OBJECT_LAST)} '
                                   'WHERE apdb_part = ? AND "diaObjectId" = ?')
            work += [(delete, p) for p in zip(previous_part[moved].tolist(), ids[moved].tolist())]
        return work

    # ------------------------------------------------------------------ maintenance
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
            keys = [(int(p), int(t)) for p, t in self._execute(
                f"SELECT DISTINCT apdb_part, apdb_time_part FROM {self._t(name)}") if first_bucket <= t < closed_below]
            read = self._select(name, "apdb_part = ? AND apdb_time_part = ?",
                                f"visit, detector, apdb_chunk, {ROWS_COLUMN}")
            insert = self._insert(name, _BATCHED_NAMES)
            delete = self._prepare(f"delete:{name}", f"DELETE FROM {self._t(name)} WHERE apdb_part = ? AND "
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

    # ------------------------------------------------------------------ bookkeeping
    def is_stored(self, visit: int, detector: int) -> bool:
        """True when a complete write of this CCD-visit is recorded."""
        rows = self._execute(f"SELECT visit FROM {self._t(VISIT_DETECTOR_TABLE)} WHERE visit = %s AND "
                             "detector = %s", (int(visit), int(detector)))
        return bool(rows)

    def dump_tables(self) -> dict[str, Table]:
        """Every table, sorted by primary key (full scans: for tests and replay comparisons)."""
        out = {}
        for name, spec in TABLES.items():
            rows = self._execute(f"SELECT {ROWS_COLUMN if name in BATCHED_TABLES else ROW_COLUMN} "
                                 f"FROM {self._t(name)}")
            packed = sort_packed(spec, self._unpack(name, [r[0] for r in rows]))
            out[name] = packed_to_table(spec, drop_repeated_keys(spec, packed) if name in BATCHED_TABLES
                                        else packed)
        rows = sorted(self._execute(f"SELECT {', '.join(_VD_NAMES)} FROM {self._t(VISIT_DETECTOR_TABLE)}"))
        out[VISIT_DETECTOR_TABLE] = Table(rows=rows or None, names=_VD_NAMES, dtype=[np.int64] * len(_VD_NAMES))
        meta = sorted(self._read_metadata().items())
        out[METADATA_TABLE] = Table(rows=meta or None, names=["name", "value"], dtype=[str, str])
        return out

    def drop_keyspace(self) -> None:
        """Drop the whole keyspace (tests and teardown only)."""
        self._execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}")
        self._prepared.clear()
        self._stored_layout = None

    def close(self) -> None:
        """Shut the driver down."""
        self._cluster.shutdown()

    def __enter__(self) -> "CassandraApdb":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
