"""The Cassandra DDL: ``schemas/apdb.cql`` is the contract; this module renders, loads and splits it.

``schemas/apdb.cql`` is generated from :mod:`streamer.apdb.columns` (``python -m streamer.apdb.cql_schema >
schemas/apdb.cql``) and checked against it by the tests, and the store executes the file itself, with
``${KEYSPACE}`` and ``${REPLICATION}`` substituted.

Layout
------
``apdb_part`` is the HEALPix nested pixel (nside stored in the metadata, 512 for a new keyspace: 0.11 deg
pixels, so the 22 pixels covering a CCD region hold about 2.3 times the region's rows) of a row's position and
``apdb_time_part`` is ``floor(midpointMjdTai / time_partition_days)`` (30 days by default).

Rows are stored packed, as fixed-width little-endian records (:func:`streamer.apdb.packed.packed_dtype`).
The Python driver spends about 2 us binding or decoding each CQL value, so a CCD-visit's 50,000 values
written and 1.5 million read would take 0.1 s and 1 to 3 s; packed, reads decode with one
``numpy.frombuffer``.

* DiaObject and DiaObjectLast: one CQL row per APDB row, its key columns (:data:`KEY_COLUMNS`) as CQL
  columns and the whole row in the ``apdb_row`` blob.
* DiaSource and DiaForcedSource (:data:`BATCHED_TABLES`): one CQL row per CCD-visit, partition and visit of
  the rows (clustering ``visit, detector, apdb_chunk``), whose ``apdb_rows`` blob holds all of them (up to
  :data:`ROWS_PER_BLOB`), shuffled and LZ4-compressed (:mod:`streamer.apdb.blob_codec`; the tables' own
  sstable compression is then off). A CCD-visit's sources and forced sources are written by one store call and never
  change, so a re-run rewrites the same CQL rows with the same bytes. Cassandra's cost of a read grows with
  the CQL rows it returns: on the 1M-object benchmark a region's DiaSource query returns 9,988 CQL rows
  (2.8 sources each) instead of 27,540, in 67-113 ms instead of 105-162. Forced photometry (every object of
  the CCD at every visit) comes in tens of rows per CQL row.
* Compacted partitions: once a time bucket is over, ``blink apdb compact``
  (:meth:`streamer.apdb.cassandra.CassandraApdb.compact_history`) rewrites each of its partitions as
  one run of blobs keyed ``visit = COMPACTED_VISIT`` (-1), ``detector`` = a generation number, holding
  every row of the partition sorted by primary key, then deletes the CCD-visit rows it merged. The new blobs
  are written before the old rows are deleted, and a later store of an old CCD-visit (a replay) writes its
  CCD-visit rows again, so a partition may hold a row twice: readers keep one row per primary key
  (:func:`streamer.apdb.packed.drop_repeated_keys`). The tables' tombstones are kept for
  :data:`HISTORY_GC_GRACE_S` only.

* ``DiaObjectLast``: partition ``apdb_part``, clustering ``diaObjectId``: the region is one multi-partition
  query (``apdb_part IN ?``) per group of pixels.
* ``DiaSource`` / ``DiaForcedSource``: partition ``(apdb_part, apdb_time_part)``, clustering by CCD-visit:
  the 12-month history of a region is one query (``apdb_part IN ? AND apdb_time_part IN ?``) per group of
  pixels.
  A source lies within an arcsecond of its object, so the pixels of the region plus a 10" margin hold the
  whole history of the region's objects.
* ``DiaObject``: every version, partition ``diaObjectId``, clustering ``validityStartMjdTai DESC``, with the
  version's pixel as a plain ``apdb_part`` column. A store reads the newest versions of each object it writes
  (``PER PARTITION LIMIT 2``) to find the pixel of its DiaObjectLast row, so that a newer version that moved
  to another pixel deletes the old row and an older version never overwrites a newer one (Rubin keeps a
  separate DiaObjectLastToPartition table for this, one more single-row write per object). Also read when a
  CCD-visit is re-processed after later visits stored newer versions.
* ``ApdbVisitDetector``: one row per stored CCD-visit, written last (a completion marker).
* ``ApdbMetadata``: schema version and partitioning configuration.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import schemas
from streamer.apdb.columns import DIA_FORCED_SOURCE, DIA_OBJECT, DIA_OBJECT_LAST, DIA_SOURCE, TABLES

__all__ = ["KEY_COLUMNS", "ROW_COLUMN", "ROWS_COLUMN", "BATCHED_TABLES", "ROWS_PER_BLOB", "CQL_PATH",
           "COMPACTED_VISIT", "HISTORY_GC_GRACE_S", "render_cql", "load_cql", "split_statements"]

CQL_PATH = Path(schemas.__file__).resolve().parent / "apdb.cql"
"""Location of the DDL (package data of :mod:`schemas`)."""

_PARTITIONING = {
    DIA_OBJECT: ('("diaObjectId")', ("apdb_part int",)),  # apdb_part: a plain column (the pixel of this version)
    DIA_OBJECT_LAST: ("(apdb_part)", ("apdb_part int",)),
    DIA_SOURCE: ("(apdb_part, apdb_time_part)", ("apdb_part int", "apdb_time_part int")),
    DIA_FORCED_SOURCE: ("(apdb_part, apdb_time_part)", ("apdb_part int", "apdb_time_part int")),
}


KEY_COLUMNS = {
    DIA_OBJECT: ("diaObjectId", "validityStartMjdTai"),
    DIA_OBJECT_LAST: ("diaObjectId", "validityStartMjdTai"),
}
"""Columns of the per-row tables kept as CQL columns (keys and what a query may need); the whole row is in
``apdb_row``."""

BATCHED_TABLES = (DIA_SOURCE, DIA_FORCED_SOURCE)
"""Tables stored as blobs of many packed rows: one CQL row per (pixel, time bucket, CCD-visit, chunk)."""

ROW_COLUMN = "apdb_row"
"""Blob column holding the whole row, packed by :func:`streamer.apdb.packed.pack_table` (little-endian
fixed-width record, layout fixed by the column spec and so by ``alert_schema_version`` in the metadata)."""

ROWS_COLUMN = "apdb_rows"
"""Blob column of :data:`BATCHED_TABLES`: packed rows back to back."""

ROWS_PER_BLOB = 1000
"""Packed rows per ``apdb_rows`` blob at most (about 440 kB)."""

COMPACTED_VISIT = -1
"""``visit`` clustering value of the blobs of a compacted partition (see the module docstring)."""

HISTORY_GC_GRACE_S = 3 * 3600
"""``gc_grace_seconds`` of :data:`BATCHED_TABLES` (Cassandra's default: 10 days). Only compaction deletes
there, and a deleted CCD-visit row that a replica resurrects (it missed the delete and the tombstone is
gone) is a copy of rows in the compacted blobs, which readers drop; so the tombstones and the rows they
shadow need not stay on disk, and be read, for 10 days. Three hours is the default hint window, so hints
still carry the compacted blobs to a replica that was down."""


def render_cql() -> str:
    """Render the DDL template from the column spec (the content of ``schemas/apdb.cql``)."""
    out = [
        "-- Blink APDB on Cassandra. GENERATED by `python -m streamer.apdb.cql_schema > schemas/apdb.cql`",
        "-- from streamer/apdb/columns.py (lsst-alert-packet 11.1 records); do not edit by hand.",
        "-- ${KEYSPACE}, ${REPLICATION} and ${HISTORY_COMPRESSION} (sstable compression of the history tables:",
        "-- off when their blobs are compressed, see streamer.apdb.blob_codec) are substituted by",
        "-- CassandraApdb.init_schema.",
        "-- apdb_part: HEALPix nested pixel of the row position (nside in ApdbMetadata);",
        "-- apdb_time_part: floor(midpointMjdTai / time_partition_days) (in ApdbMetadata).",
        "-- apdb_row: the whole row, packed (little-endian fixed-width record of every alert-schema column, in",
        "-- schema order; see streamer.apdb.columns.packed_dtype); a few key columns are also CQL columns.",
        "-- apdb_rows (DiaSource, DiaForcedSource): the packed rows of one CCD-visit in one partition, back to",
        f"-- back (apdb_chunk numbers the blobs when there are more than {ROWS_PER_BLOB} rows), encoded by the",
        "-- keyspace's history_blob_codec (ApdbMetadata; streamer.apdb.blob_codec).",
        f"-- visit = {COMPACTED_VISIT}: blobs of a compacted partition (every row of a closed time bucket, sorted; "
        "detector is",
        "-- a generation number). A row may then also be in a CCD-visit blob: readers keep one per primary key.",
        "-- DiaObject (every version) is partitioned by diaObjectId: read only to find the version valid at a",
        "-- given time when a CCD-visit is re-processed after later visits were stored.",
        "",
        "CREATE KEYSPACE IF NOT EXISTS ${KEYSPACE} WITH replication = ${REPLICATION};",
        "",
    ]
    for name in (DIA_OBJECT, DIA_OBJECT_LAST, DIA_SOURCE, DIA_FORCED_SOURCE):
        spec = TABLES[name]
        part, part_cols = _PARTITIONING[name]
        lines = [f"    {c}," for c in part_cols]
        if name in BATCHED_TABLES:
            lines += ["    visit bigint,", "    detector int,", "    apdb_chunk int,", f"    {ROWS_COLUMN} blob,"]
            clustering = ["visit", "detector", "apdb_chunk"]
        else:
            lines += [f'    "{k}" {spec.column(k).cql_type},' for k in KEY_COLUMNS[name]]
            lines.append(f"    {ROW_COLUMN} blob,")
            clustering = [f'"{k}"' for k in spec.primary_key if f'"{k}"' not in part]
        lines.append(f"    PRIMARY KEY ({part}, {', '.join(clustering)})")
        out.append(f'CREATE TABLE IF NOT EXISTS ${{KEYSPACE}}."{name}" (')
        out += lines
        if name == DIA_OBJECT:  # newest version first: "latest version before t" is LIMIT 1
            out.append(') WITH CLUSTERING ORDER BY ("validityStartMjdTai" DESC);')
        elif name in BATCHED_TABLES:
            out.append(f") WITH gc_grace_seconds = {HISTORY_GC_GRACE_S} AND compression = ${{HISTORY_COMPRESSION}};")
        else:
            out.append(");")
        out.append("")
    out += [
        'CREATE TABLE IF NOT EXISTS ${KEYSPACE}."ApdbVisitDetector" (',
        "    visit bigint,",
        "    detector int,",
        "    n_dia_objects int,",
        "    n_dia_sources int,",
        "    n_dia_forced_sources int,",
        "    PRIMARY KEY ((visit, detector))",
        ");",
        "",
        'CREATE TABLE IF NOT EXISTS ${KEYSPACE}."ApdbMetadata" (',
        "    name text,",
        "    value text,",
        "    PRIMARY KEY (name)",
        ");",
    ]
    return "\n".join(out) + "\n"


def split_statements(text: str) -> list[str]:
    """Split CQL text into statements: drop ``--`` and ``//`` comment lines, split on ``;``."""
    body = "\n".join(line for line in text.splitlines() if not re.match(r"\s*(--|//)", line))
    return [s.strip() for s in body.split(";") if s.strip()]


def load_cql(keyspace: str, replication: str, path: Path | None = None, *,
             history_compression: str = "{'class': 'LZ4Compressor'}") -> list[str]:
    """Read the DDL file and substitute the keyspace, replication map and history tables' compression.

    Parameters
    ----------
    keyspace : str
        Keyspace name (letters, digits, underscores).
    replication : str
        CQL replication map, e.g. ``{'class': 'SimpleStrategy', 'replication_factor': 1}``.
    history_compression : str
        CQL compression map of DiaSource and DiaForcedSource
        (:data:`streamer.apdb.blob_codec.SSTABLE_COMPRESSION`).
    path : Path, optional
        DDL file; default ``schemas/apdb.cql``.

    Returns
    -------
    list of str
        Statements ready to execute, in order.
    """
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}")
    path = path or CQL_PATH
    text = path.read_text()
    text = (text.replace("${KEYSPACE}", keyspace).replace("${REPLICATION}", replication)
            .replace("${HISTORY_COMPRESSION}", history_compression))
    return split_statements(text)


if __name__ == "__main__":
    sys.stdout.write(render_cql())
