"""The driver side of :class:`~streamer.apdb.cassandra.CassandraApdb`: connection (retried while no host
answers), prepared statements, and concurrent execution with retries of timed-out requests."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from pipeline.errors import TransientError
from streamer.apdb.cql_schema import BATCHED_TABLES, ROW_COLUMN, ROWS_COLUMN

__all__ = ["CassandraSession"]

_log = logging.getLogger(__name__)

_READ_FETCH_SIZE = 50_000
"""Rows per page of a region read: one page per query (paging would fetch the next pages one by one)."""
_RECV_BUFFER_BYTES = 256 * 1024
"""Bytes per socket read of the driver's connections (the driver's default: 4096)."""


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


class CassandraSession:
    """Connection and statement execution of a Cassandra APDB client (a base of
    :class:`~streamer.apdb.cassandra.CassandraApdb`, whose constructor sets these attributes)."""

    hosts: list[str]
    port: int
    keyspace: str
    consistency: int
    max_retries: int
    concurrency: int
    _protocol_version: int | None
    _where: str
    _prepared: dict[str, Any]
    _session: Any

    # ------------------------------------------------------------------ connection
    def _connect(self, username: str | None, password: str | None, *, ssl: bool, ssl_ca: str | None,
                 ssl_cert: tuple[str, str | None] | None, connect_timeout_s: float,
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
        if ssl or ssl_ca:
            import ssl as ssl_mod

            # The server's certificate must be signed by ssl_ca (else a CA of the system's) and name the
            # contact point (the driver checks the host name when the context does).
            kwargs["ssl_context"] = ssl_mod.create_default_context(cafile=ssl_ca)
            if ssl_cert is not None:  # (certificate, key): for a server that requires client certificates
                kwargs["ssl_context"].load_cert_chain(*ssl_cert)
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

    def ensure_table(self, table: str, definition: str) -> None:
        """``CREATE TABLE IF NOT EXISTS`` the keyspace's ``table`` (``definition``: its columns and key, in
        parentheses), only when the schema lacks it: a role without ``CREATE`` on the keyspace (a worker's,
        :mod:`streamer.apdb.cassandra.grants`) is refused even that statement on a table that exists."""
        if not self.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND "
                            "table_name = %s", (self.keyspace, table)):
            self.execute(f"CREATE TABLE IF NOT EXISTS {self.table_name(table)} {definition}")

    def table_name(self, table: str) -> str:
        """The keyspace-qualified, quoted name of one of the APDB's tables (``ks."DiaSource"``)."""
        return f'{self.keyspace}."{table}"'

    # ------------------------------------------------------------------ execution helpers
    def execute(self, query: Any, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement (retried with backoff like :meth:`execute_concurrent`) and return its rows."""
        return self.execute_concurrent(query, [tuple(params)])[0]

    def execute_concurrent(self, statement: Any, params: Sequence[Sequence[Any]]) -> list[list[tuple]]:
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

    def prepare(self, key: str, cql: str) -> Any:
        """The prepared statement of ``cql``, prepared once per session and kept under ``key``."""
        if key not in self._prepared:
            self._prepared[key] = self._session.prepare(cql)
        return self._prepared[key]

    def _insert(self, table: str, names: Sequence[str]) -> Any:
        cols = ", ".join(n if n.startswith("apdb_") else f'"{n}"' for n in names)
        marks = ", ".join("?" * len(names))
        return self.prepare(f"insert:{table}", f"INSERT INTO {self.table_name(table)} ({cols}) VALUES ({marks})")

    def _select(self, table: str, where: str, columns: str | None = None) -> Any:
        """Prepared ``SELECT columns (default: the row blob) FROM table WHERE where``, one page per query."""
        columns = columns or (ROWS_COLUMN if table in BATCHED_TABLES else ROW_COLUMN)
        key = f"select:{table}:{columns}:{where}"
        if key not in self._prepared:
            self.prepare(key, f"SELECT {columns} FROM {self.table_name(table)} WHERE {where}").fetch_size = \
                _READ_FETCH_SIZE
        return self._prepared[key]
