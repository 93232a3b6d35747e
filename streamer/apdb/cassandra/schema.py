"""Keyspace schema of :class:`~streamer.apdb.cassandra.CassandraApdb`: creation from ``schemas/apdb.cql``,
version checks, minor upgrades, the metadata table, and the layout (nside, blob codec, time partitions)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from streamer.apdb.base import APDB_SCHEMA_VERSION
from streamer.apdb.blob_codec import CODEC_METADATA_KEY, DEFAULT_CODEC, SSTABLE_COMPRESSION
from streamer.apdb.bookkeeping import METADATA_TABLE, check_versions, major_minor, schema_is_current
from streamer.apdb.cassandra.session import CassandraSession
from streamer.apdb.columns import ALERT_SCHEMA_VERSION
from streamer.apdb.cql_schema import BATCHED_TABLES, HISTORY_GC_GRACE_S, load_cql

__all__ = ["KeyspaceSchema", "DEFAULT_NSIDE", "parse_datacenters", "replication_map"]

_log = logging.getLogger(__name__)

DEFAULT_NSIDE = 512
"""HEALPix nside of a new keyspace's partitions."""


def parse_datacenters(value: str | Mapping[str, int] | None) -> dict[str, int] | None:
    """Replicas per data centre from ``"dc1:3,dc2:3"`` or a mapping; None for none.

    Raises
    ------
    ValueError
        An entry that is not ``name:count`` with a count of at least 1.
    """
    if value is None or value == "" or value == {}:
        return None
    pairs = value.items() if isinstance(value, Mapping) else (
        entry.split(":", 1) if ":" in entry else (entry, "") for entry in str(value).split(",") if entry.strip())
    out: dict[str, int] = {}
    for name, count in pairs:
        try:
            n = int(count)
        except (TypeError, ValueError):
            n = 0
        if not str(name).strip() or n < 1:
            raise ValueError(f"replication_datacenters: {name}:{count} is not <data centre>:<replicas >= 1>")
        out[str(name).strip()] = n
    return out


def replication_map(replication_factor: int, datacenters: Mapping[str, int] | None) -> str:
    """The CQL replication map of a new keyspace: NetworkTopologyStrategy when data centres are named, else
    SimpleStrategy."""
    if datacenters:
        entries = ", ".join(f"'{name}': {count}" for name, count in sorted(datacenters.items()))
        return f"{{'class': 'NetworkTopologyStrategy', {entries}}}"
    return f"{{'class': 'SimpleStrategy', 'replication_factor': {int(replication_factor)}}}"


class KeyspaceSchema(CassandraSession):
    """Schema and layout of the client's keyspace (a base of :class:`~streamer.apdb.cassandra.CassandraApdb`,
    whose constructor sets these attributes)."""

    replication_factor: int
    replication_datacenters: dict[str, int] | None
    time_partition_days: int
    _requested_nside: int | None
    _requested_codec: str | None
    _stored_layout: dict[str, str] | None

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
            rows = self.execute(f'SELECT name, value FROM {self.table_name(METADATA_TABLE)}')
        except InvalidRequest:  # keyspace or table absent
            return {}
        return dict(rows)

    def _write_metadata(self, name: str, value: str, *, if_absent: bool = False) -> None:
        """Set one metadata entry (with ``if_absent``: only where it has none)."""
        self.execute(f"INSERT INTO {self.table_name(METADATA_TABLE)} (name, value) VALUES (%s, %s)"
                      + (" IF NOT EXISTS" if if_absent else ""), (name, value))

    def record_provenance(self, key: str, text: str) -> None:
        """Store a run's provenance as the metadata entry ``key`` (see ``Apdb.record_provenance``)."""
        self._write_metadata(key, text)

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
        replication = replication_map(self.replication_factor, self.replication_datacenters)
        new_layout = self._new_layout()
        compression = SSTABLE_COMPRESSION[new_layout[CODEC_METADATA_KEY]]
        for stmt in load_cql(self.keyspace, replication, history_compression=compression):
            self.execute(stmt)
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
                self.execute(f"ALTER TABLE {self.table_name(name)} WITH gc_grace_seconds = {HISTORY_GC_GRACE_S}")
        self._write_metadata(CODEC_METADATA_KEY, "none", if_absent=True)
        self._write_metadata("schema_version", APDB_SCHEMA_VERSION)
        _log.info("APDB at %s upgraded from schema %s to %s", self._where, stored_version, APDB_SCHEMA_VERSION)

    def schema_is_current(self) -> bool:
        """True when this store holds this code's schema exactly (:meth:`init_schema` would change nothing)."""
        stored = self._read_metadata()
        return schema_is_current(stored, self._expected_metadata()) and set(self._new_layout()) <= set(stored)

    def check_schema(self) -> None:
        """Raise :class:`InputError` when the stored schema version or partitioning does not match."""
        check_versions(self._read_metadata(), self._expected_metadata(), self._where)

    # ------------------------------------------------------------------ partitioning
    def _time_parts(self, mjd: np.ndarray) -> np.ndarray:
        return np.floor(np.asarray(mjd, dtype=float) / self.time_partition_days).astype(np.int64)
