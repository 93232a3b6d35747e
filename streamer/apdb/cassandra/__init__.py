"""Production APDB on Apache Cassandra, laid out for one CCD-visit's reads.

The DDL is ``schemas/apdb.cql`` (see :mod:`streamer.apdb.cql_schema` for the layout). A region read is a
few concurrent multi-partition queries on DiaObjectLast (``apdb_part IN ?``, one per group of HEALPix pixels
covering the circle), then on DiaSource and DiaForcedSource (``apdb_part IN ? AND apdb_time_part IN ?``).
Each row comes back as one packed blob (see :mod:`streamer.apdb.packed`); the blobs are joined into one
structured array, filtered exactly in numpy (distance, diaObjectId, time window) and sorted, and only then
turned into Tables. Writes are unlogged single-partition batches of prepared inserts (one partition
of DiaSource, DiaForcedSource or DiaObjectLast per batch, concurrently), which Cassandra applies as upserts,
so writing a CCD-visit twice leaves the tables as one write would. The ApdbVisitDetector marker is written
last, after every other write was acknowledged.

One class, :class:`CassandraApdb` (:mod:`~streamer.apdb.cassandra.store`), is composed of one part per job:

* :mod:`~streamer.apdb.cassandra.session`: connection, prepared statements, concurrent execution, retries;
* :mod:`~streamer.apdb.cassandra.schema`: keyspace creation, version checks, upgrades, metadata, layout;
* :mod:`~streamer.apdb.cassandra.reads`: the region read (objects and their history);
* :mod:`~streamer.apdb.cassandra.writes`: a CCD-visit's store;
* :mod:`~streamer.apdb.cassandra.compaction`: the rewrite of closed history partitions;
* :mod:`~streamer.apdb.cassandra.versions`: the newest DiaObject versions, for reads and writes.
"""

from streamer.apdb.cassandra.schema import DEFAULT_NSIDE
from streamer.apdb.cassandra.store import CassandraApdb

__all__ = ["CassandraApdb", "DEFAULT_NSIDE"]
