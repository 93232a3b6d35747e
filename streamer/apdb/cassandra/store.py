"""The Cassandra APDB store: :class:`CassandraApdb`, composed of its reads, writes, compaction, schema and
session parts (see :mod:`streamer.apdb.cassandra`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from astropy.table import Table

from streamer.apdb.blob_codec import check_codec
from streamer.apdb.bookkeeping import VISIT_DETECTOR_COLUMNS, VISIT_DETECTOR_TABLE, bookkeeping_tables
from streamer.apdb.cassandra.compaction import HistoryCompaction
from streamer.apdb.cassandra.reads import RegionReads
from streamer.apdb.cassandra.schema import parse_datacenters
from streamer.apdb.columns import DIA_OBJECT, TABLES, TableSpec
from streamer.apdb.cql_schema import BATCHED_TABLES, ROW_COLUMN, ROWS_COLUMN
from streamer.apdb.packed import drop_repeated_keys, packed_to_table, sort_packed

__all__ = ["CassandraApdb"]


class CassandraApdb(RegionReads, HistoryCompaction):
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
    replication_datacenters : str or mapping, optional
        Replicas per data centre (``"dc1:3,dc2:3"`` or ``{"dc1": 3}``): the keyspace is created with
        NetworkTopologyStrategy instead (use ``LOCAL_QUORUM`` then); ``replication_factor`` is not used.
    consistency : str, optional
        Consistency level of reads and writes (``LOCAL_QUORUM``, ``ONE``, ``QUORUM``...).
    username, password : str, optional
        Plain-text authentication.
    ssl : bool, optional
        Use TLS (system trust store).
    ssl_ca : str, optional
        Use TLS, trusting the CA certificates (PEM) in this file (ops/secure.sh: ``ops/.run/secure/tls/ca.pem``).
    ssl_cert, ssl_key : str, optional
        Client certificate and its unencrypted key (PEM files), for a server that requires one.
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
                 keyspace: str = "blink_apdb", replication_factor: int = 1,
                 replication_datacenters: str | Mapping[str, int] | None = None, consistency: str = "LOCAL_QUORUM",
                 username: str | None = None, password: str | None = None, ssl: bool = False,
                 ssl_ca: str | None = None, ssl_cert: str | None = None, ssl_key: str | None = None,
                 nside: int | None = None, time_partition_days: int = 30, connect_timeout_s: float = 60.0,
                 request_timeout_s: float = 10.0, max_retries: int = 5, concurrency: int = 128,
                 protocol_version: int | None = 4, blob_codec: str | None = None) -> None:
        from cassandra import ConsistencyLevel

        self.hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        self.port = int(port)
        self.keyspace = keyspace
        self.replication_factor = int(replication_factor)
        self.replication_datacenters = parse_datacenters(replication_datacenters)
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
        self._cluster, self._session = self._connect(username, password, ssl=ssl, ssl_ca=ssl_ca,
                                                     ssl_cert=(ssl_cert, ssl_key) if ssl_cert else None,
                                                     connect_timeout_s=connect_timeout_s,
                                                     request_timeout_s=request_timeout_s)

    # ------------------------------------------------------------------ bookkeeping
    def is_stored(self, visit: int, detector: int) -> bool:
        """True when a complete write of this CCD-visit is recorded."""
        rows = self.execute(f"SELECT visit FROM {self.table_name(VISIT_DETECTOR_TABLE)} WHERE visit = %s AND "
                             "detector = %s", (int(visit), int(detector)))
        return bool(rows)

    def dump_tables(self) -> dict[str, Table]:
        """Every table, sorted by primary key (full scans: for tests and replay comparisons)."""
        out = {}
        for name, spec in TABLES.items():
            rows = self.execute(f"SELECT {ROWS_COLUMN if name in BATCHED_TABLES else ROW_COLUMN} "
                                 f"FROM {self.table_name(name)}")
            packed = sort_packed(spec, self._unpack(name, [r[0] for r in rows]))
            out[name] = packed_to_table(spec, drop_repeated_keys(spec, packed) if name in BATCHED_TABLES
                                        else packed)
        rows = sorted(self.execute(f"SELECT {', '.join(VISIT_DETECTOR_COLUMNS)} "
                                    f"FROM {self.table_name(VISIT_DETECTOR_TABLE)}"))
        out.update(bookkeeping_tables(rows, self._read_metadata()))
        return out

    def read_object(self, dia_object_id: int) -> Table:
        """Every stored version of one DiaObject (its partition), oldest first (see ``Apdb.read_object``)."""
        rows = self.execute(f'SELECT {ROW_COLUMN} FROM {self.table_name(DIA_OBJECT)} WHERE "diaObjectId" = %s',
                            (int(dia_object_id),))
        return packed_to_table(DIA_OBJECT, sort_packed(DIA_OBJECT, self._unpack(DIA_OBJECT, [r[0] for r in rows])))

    def scan_table(self, table: str, batch_rows: int = 50_000) -> Iterator[Table]:
        """Every row of ``table`` (a full scan, paged), as Tables of about ``batch_rows`` CQL rows each (a
        DiaSource or DiaForcedSource CQL row holds one CCD-visit's rows of one partition).

        A scan returns each partition's CQL rows together, so the rows a compacted DiaSource or DiaForcedSource
        partition holds twice (see :mod:`streamer.apdb.cql_schema`) are dropped within a batch: a batch ends
        only at a partition boundary.
        """
        from cassandra.query import SimpleStatement

        spec = TABLES[table]
        batched = table in BATCHED_TABLES
        cols = f"apdb_part, apdb_time_part, {ROWS_COLUMN}" if batched else ROW_COLUMN
        statement = SimpleStatement(f"SELECT {cols} FROM {self.table_name(table)}", fetch_size=1000,
                                    consistency_level=self.consistency)
        blobs: list[bytes] = []
        n, partition = 0, None
        for row in self._session.execute(statement):
            key = tuple(row[:2]) if batched else None
            if n >= batch_rows and key != partition:
                yield self._scan_batch(spec, blobs)
                blobs, n = [], 0
            partition = key
            blobs.append(row[-1])
            n += 1
        if blobs:
            yield self._scan_batch(spec, blobs)

    def _scan_batch(self, spec: TableSpec, blobs: list[bytes]) -> Table:
        packed = sort_packed(spec, self._unpack(spec.name, blobs))
        return packed_to_table(spec, drop_repeated_keys(spec, packed) if spec.name in BATCHED_TABLES else packed)

    def drop_keyspace(self) -> None:
        """Drop the whole keyspace (tests and teardown only)."""
        self.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}")
        self._prepared.clear()
        self._stored_layout = None

    def close(self) -> None:
        """Shut the driver down."""
        self._cluster.shutdown()

    def __enter__(self) -> CassandraApdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
