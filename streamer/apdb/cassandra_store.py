"""Production APDB on Apache Cassandra, laid out for one CCD-visit's reads.

The DDL is ``schemas/apdb.cql`` (see :mod:`streamer.apdb.cql_schema` for the layout). A region read is one
round of concurrent single-partition queries on DiaObjectLast (one per HEALPix pixel covering the circle),
then one round on DiaSource and DiaForcedSource (one per pixel and 30-day bucket of the 12-month window),
each routed by a token-aware policy to a replica; rows are filtered exactly in numpy (distance, diaObjectId,
time window). Writes are concurrent prepared single-row inserts, which Cassandra applies as upserts, so
writing a CCD-visit twice leaves the tables as one write would.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np
from astropy.table import Table

from pipeline.errors import TransientError
from streamer.apdb.base import APDB_SCHEMA_VERSION, RegionData, SkyRegion
from streamer.apdb.columns import (
    ALERT_SCHEMA_VERSION,
    DIA_FORCED_SOURCE,
    DIA_OBJECT,
    DIA_OBJECT_LAST,
    DIA_SOURCE,
    TABLES,
    rows_to_table,
    sort_table,
    table_to_columns,
)
from streamer.apdb.cql_schema import load_cql
from streamer.apdb.sky import ang2pix_nested, cover_disc, in_circle
from streamer.apdb.sqlite_store import (
    METADATA_TABLE,
    VISIT_DETECTOR_TABLE,
    _VD_NAMES,
    check_versions,
    history_window,
    select_history,
)

__all__ = ["CassandraApdb"]

_log = logging.getLogger(__name__)

_HISTORY_MARGIN_DEG = 10.0 / 3600.0
"""Sources of an object inside the region lie within this distance of the circle (association radius is 1")."""
_LAST_TO_PART = "DiaObjectLastToPartition"


def _retryable() -> tuple[type[BaseException], ...]:
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return (OperationTimedOut, ReadTimeout, WriteTimeout, Unavailable, NoHostAvailable, ConnectionException)


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
    nside : int, optional
        HEALPix nside of the spatial partitions (256: pixels of about 0.23 deg, 10 to 15 per CCD region).
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
        Native protocol version (5 for Cassandra 4 and 5); None lets the driver negotiate.
    """

    def __init__(self, hosts: Sequence[str] | str = ("127.0.0.1",), port: int = 9042, *,
                 keyspace: str = "blink_apdb", replication_factor: int = 1, consistency: str = "LOCAL_QUORUM",
                 username: str | None = None, password: str | None = None, ssl: bool = False,
                 nside: int = 256, time_partition_days: int = 30, connect_timeout_s: float = 60.0,
                 request_timeout_s: float = 10.0, max_retries: int = 5, concurrency: int = 128,
                 protocol_version: int | None = 5) -> None:
        from cassandra import ConsistencyLevel

        self.hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        self.port = int(port)
        self.keyspace = keyspace
        self.replication_factor = int(replication_factor)
        try:
            self.consistency = ConsistencyLevel.name_to_value[consistency.upper()]
        except KeyError:
            raise ValueError(f"unknown consistency level {consistency!r}") from None
        self.nside = int(nside)
        self.time_partition_days = int(time_partition_days)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self._protocol_version = protocol_version
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
        from cassandra.concurrent import execute_concurrent_with_args

        results: list[list[tuple] | None] = [None] * len(params)
        todo = list(range(len(params)))
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            out = execute_concurrent_with_args(self._session, statement, [params[i] for i in todo],
                                               concurrency=self.concurrency, raise_on_first_error=False)
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

    def _select(self, table: str, where: str) -> Any:
        cols = ", ".join(f'"{n}"' for n in TABLES[table].names)
        return self._prepare(f"select:{table}:{where}", f"SELECT {cols} FROM {self._t(table)} WHERE {where}")

    # ------------------------------------------------------------------ schema
    def _expected_metadata(self) -> dict[str, str]:
        return {"schema_version": APDB_SCHEMA_VERSION, "alert_schema_version": ALERT_SCHEMA_VERSION,
                "nside": str(self.nside), "time_partition_days": str(self.time_partition_days)}

    def _read_metadata(self) -> dict[str, str]:
        from cassandra import InvalidRequest

        try:
            rows = self._execute(f'SELECT name, value FROM {self._t(METADATA_TABLE)}')
        except InvalidRequest:  # keyspace or table absent
            return {}
        return dict(rows)

    def _write_metadata(self, name: str, value: str) -> None:
        """Set one metadata entry (for migrations and tests)."""
        self._execute(f"INSERT INTO {self._t(METADATA_TABLE)} (name, value) VALUES (%s, %s)", (name, value))

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
        for stmt in load_cql(self.keyspace, replication):
            self._execute(stmt)
        self._session.cluster.control_connection.wait_for_schema_agreement()
        for name, value in self._expected_metadata().items():
            self._execute(f"INSERT INTO {self._t(METADATA_TABLE)} (name, value) VALUES (%s, %s) IF NOT EXISTS",
                          (name, value))

    def check_schema(self) -> None:
        """Raise :class:`InputError` when the stored schema version or partitioning does not match."""
        check_versions(self._read_metadata(), self._expected_metadata(), self._where)

    # ------------------------------------------------------------------ reads
    def _time_parts(self, mjd: np.ndarray) -> np.ndarray:
        return np.floor(np.asarray(mjd, dtype=float) / self.time_partition_days).astype(np.int64)

    def read_region(self, region: SkyRegion, visit_mjd_tai: float) -> RegionData:
        """Read DiaObjectLast rows in ``region`` and their history before ``visit_mjd_tai``.

        Parameters
        ----------
        region : SkyRegion
            Circle to read.
        visit_mjd_tai : float
            Visit time; history is read from ``visit_mjd_tai - 365`` (inclusive) to ``visit_mjd_tai``
            (exclusive).

        Returns
        -------
        RegionData

        Raises
        ------
        TransientError
            Requests still timing out after the retries.
        """
        pixels = cover_disc(self.nside, region.ra_deg, region.dec_deg, region.radius_deg)
        spec = TABLES[DIA_OBJECT_LAST]
        stmt = self._select(DIA_OBJECT_LAST, "apdb_part = ?")
        rows = [r for part in self._concurrent(stmt, [(int(p),) for p in pixels]) for r in part]
        objects = rows_to_table(spec, spec.names, rows)
        inside = in_circle(np.asarray(objects["ra"]), np.asarray(objects["dec"]),
                           region.ra_deg, region.dec_deg, region.radius_deg)
        objects = sort_table(spec, objects[inside])
        ids = np.asarray(objects["diaObjectId"], dtype=np.int64)

        history: list[Table] = []
        lo, hi = history_window(visit_mjd_tai)
        src_pixels = cover_disc(self.nside, region.ra_deg, region.dec_deg,
                                region.radius_deg + _HISTORY_MARGIN_DEG)
        buckets = np.arange(self._time_parts(lo), self._time_parts(hi) + 1)
        params = [(int(p), int(b)) for p in src_pixels for b in buckets] if len(ids) else []
        for name in (DIA_SOURCE, DIA_FORCED_SOURCE):
            hspec = TABLES[name]
            stmt = self._select(name, "apdb_part = ? AND apdb_time_part = ?")
            rows = [r for part in self._concurrent(stmt, params) for r in part]
            table = select_history(rows_to_table(hspec, hspec.names, rows), ids, visit_mjd_tai)
            history.append(sort_table(hspec, table))
        return RegionData(dia_objects=objects, dia_sources=history[0], dia_forced_sources=history[1])

    # ------------------------------------------------------------------ writes
    def store(self, *, visit: int, detector: int, dia_objects: Table, dia_sources: Table,
              dia_forced_sources: Table) -> None:
        """Upsert one CCD-visit's outputs.

        DiaObject, DiaSource and DiaForcedSource rows are written first, then DiaObjectLast (only where the
        new version is at least as recent as the stored one; a row left in another pixel by a moved object is
        deleted), then the ApdbVisitDetector marker, so a CCD-visit with a marker is complete.

        Raises
        ------
        InputError
            A required column is missing or has missing values.
        TransientError
            Writes still timing out after the retries.
        """
        obj = table_to_columns(DIA_OBJECT, dia_objects)
        src = table_to_columns(DIA_SOURCE, dia_sources)
        fsrc = table_to_columns(DIA_FORCED_SOURCE, dia_forced_sources)
        obj_part = ang2pix_nested(self.nside, np.asarray(obj["ra"], float), np.asarray(obj["dec"], float))
        obj_valid = np.asarray(obj["validityStartMjdTai"], float)

        # Append-only tables: write unset (not null) for missing values, so no tombstones are created.
        self._write(DIA_OBJECT, obj, obj_part, self._time_parts(obj_valid), unset_nulls=True)
        for name, cols in ((DIA_SOURCE, src), (DIA_FORCED_SOURCE, fsrc)):
            part = ang2pix_nested(self.nside, np.asarray(cols["ra"], float), np.asarray(cols["dec"], float))
            self._write(name, cols, part, self._time_parts(np.asarray(cols["midpointMjdTai"], float)),
                        unset_nulls=True)
        self._write_last(obj, obj_part, obj_valid)
        stmt = self._prepare("insert:vd", f"INSERT INTO {self._t(VISIT_DETECTOR_TABLE)} "
                             f"({', '.join(_VD_NAMES)}) VALUES (?, ?, ?, ?, ?)")
        self._concurrent(stmt, [(int(visit), int(detector), len(obj_part), len(src["ra"]), len(fsrc["ra"]))])
        _log.debug("stored visit %d detector %d in %s", visit, detector, self._where)

    def _write(self, table: str, cols: dict[str, list[Any]], part: np.ndarray, time_part: np.ndarray | None,
               unset_nulls: bool, select: np.ndarray | None = None) -> None:
        from cassandra.query import UNSET_VALUE

        names = ["apdb_part"] + (["apdb_time_part"] if time_part is not None else []) + list(cols)
        values = [part.tolist()] + ([time_part.tolist()] if time_part is not None else [])
        for col in cols.values():
            values.append([UNSET_VALUE if v is None else v for v in col] if unset_nulls and None in col else col)
        rows = list(zip(*values))
        if select is not None:
            rows = [rows[i] for i in np.flatnonzero(select)]
        if rows:
            self._concurrent(self._insert(table, names), rows)

    def _write_last(self, obj: dict[str, list[Any]], obj_part: np.ndarray, obj_valid: np.ndarray) -> None:
        """Upsert DiaObjectLast where the new version is not older than the stored one."""
        ids = np.asarray(obj["diaObjectId"], dtype=np.int64)
        if len(ids) == 0:
            return
        # The latest version of each object within this write.
        order = np.lexsort((obj_valid, ids))
        last_of_id = np.r_[ids[order][1:] != ids[order][:-1], True]
        keep = np.zeros(len(ids), bool)
        keep[order[last_of_id]] = True
        stmt = self._prepare("select:last2part", f'SELECT "diaObjectId", apdb_part, "validityStartMjdTai" '
                             f'FROM {self._t(_LAST_TO_PART)} WHERE "diaObjectId" = ?')
        stored = {r[0]: (r[1], r[2]) for part in self._concurrent(stmt, [(int(i),) for i in ids[keep]])
                  for r in part}
        old_part = np.array([stored.get(i, (-1, -np.inf))[0] for i in ids.tolist()], dtype=np.int64)
        old_valid = np.array([stored.get(i, (-1, -np.inf))[1] for i in ids.tolist()], dtype=float)
        keep &= obj_valid >= old_valid
        self._write(DIA_OBJECT_LAST, obj, obj_part, None, unset_nulls=False, select=keep)
        moved = keep & (old_part >= 0) & (old_part != obj_part)
        if moved.any():
            delete = self._prepare("delete:last", f'DELETE FROM {self._t(DIA_OBJECT_LAST)} '
                                   'WHERE apdb_part = ? AND "diaObjectId" = ?')
            self._concurrent(delete, list(zip(old_part[moved].tolist(), ids[moved].tolist())))
        insert = self._prepare("insert:last2part", f'INSERT INTO {self._t(_LAST_TO_PART)} '
                               '("diaObjectId", apdb_part, "validityStartMjdTai") VALUES (?, ?, ?)')
        self._concurrent(insert, list(zip(ids[keep].tolist(), obj_part[keep].tolist(),
                                          obj_valid[keep].tolist())))

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
            cols = ", ".join(f'"{n}"' for n in spec.names)
            rows = self._execute(f"SELECT {cols} FROM {self._t(name)}")
            out[name] = sort_table(spec, rows_to_table(spec, spec.names, rows))
        rows = sorted(self._execute(f"SELECT {', '.join(_VD_NAMES)} FROM {self._t(VISIT_DETECTOR_TABLE)}"))
        out[VISIT_DETECTOR_TABLE] = Table(rows=rows or None, names=_VD_NAMES, dtype=[np.int64] * len(_VD_NAMES))
        meta = sorted(self._read_metadata().items())
        out[METADATA_TABLE] = Table(rows=meta or None, names=["name", "value"], dtype=[str, str])
        return out

    def drop_keyspace(self) -> None:
        """Drop the whole keyspace (tests and teardown only)."""
        self._execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}")
        self._prepared.clear()

    def close(self) -> None:
        """Shut the driver down."""
        self._cluster.shutdown()

    def __enter__(self) -> "CassandraApdb":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
