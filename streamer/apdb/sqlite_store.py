"""Embedded APDB on SQLite: the default store for a single machine, tests and replays.

Every table of :mod:`streamer.apdb.columns` becomes an SQLite table holding every column of the Rubin schema,
typed and by name (``SELECT ra, dec, psfFlux FROM DiaSource`` works in ``sqlite3``, pandas and astropy; NULL
for a missing value), plus ``packed``: the whole row as one fixed-width blob of
:func:`~streamer.apdb.packed.packed_dtype` (the layout the Cassandra store uses). The worker's reads fetch
only the blobs and decode all of them with one ``np.frombuffer``, instead of building a Python object per
value; the typed columns are written in the same statement as the blob (see ``bench/README.md`` for what they
cost per CCD). ``SqliteApdb(path, columns=False)`` keeps only the key columns (primary key and what reads
select on) beside the blob: the layout ``packed-1`` of earlier versions. The DDL is generated from the column
spec. A CCD-visit is written in one transaction, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from pipeline.errors import InputError, TransientError
from streamer.apdb.base import APDB_SCHEMA_VERSION, RegionData, SkyRegion
from streamer.apdb.bookkeeping import (
    METADATA_TABLE,
    VISIT_DETECTOR_TABLE,
    bookkeeping_tables,
    check_versions,
    schema_is_current,
)
from streamer.apdb.columns import (
    ALERT_SCHEMA_VERSION,
    DIA_FORCED_SOURCE,
    DIA_OBJECT,
    DIA_OBJECT_LAST,
    DIA_SOURCE,
    TABLES,
    ColumnSpec,
    TableSpec,
)
from streamer.apdb.history import history_window
from streamer.apdb.packed import (
    pack_rows,
    pack_table,
    packed_to_table,
    sort_packed,
    take_rows,
    unpack_packed,
)
from streamer.apdb.sky import bounding_box, in_circle
from streamer.apdb.table_rows import sort_table

__all__ = ["SqliteApdb", "sqlite_ddl"]

_log = logging.getLogger(__name__)

SQLITE_LAYOUT = "columns-packed-1"
"""Layout of the SQLite tables (every column typed + one packed blob per row), recorded in the metadata; a file
written with another layout is refused with a message."""
PACKED_ONLY_LAYOUT = "packed-1"
"""Layout with only the key columns beside the blob (``columns=False``)."""
PACKED = "packed"
"""Name of the blob column holding a whole row."""
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    DIA_OBJECT: ("diaObjectId", "validityStartMjdTai"),
    DIA_OBJECT_LAST: ("diaObjectId", "validityStartMjdTai", "ra", "dec"),
    DIA_SOURCE: ("diaSourceId", "diaObjectId", "midpointMjdTai"),
    DIA_FORCED_SOURCE: ("diaForcedSourceId", "diaObjectId", "midpointMjdTai"),
}
"""Columns stored beside the blob: the primary key and what reads select or upsert on."""

_IN_CHUNK = 500
_AS_OF_MARGIN_DEG = 10.0 / 3600.0
"""An object's version valid at an earlier visit lies within this distance of its latest one."""


def _q(name: str) -> str:
    return f'"{name}"'


def sqlite_ddl(columns: bool = True) -> list[str]:
    """CREATE statements (``IF NOT EXISTS``) for every APDB table and index.

    Parameters
    ----------
    columns : bool, optional
        Every schema column beside the blob (True), or only the key columns (:data:`PACKED_ONLY_LAYOUT`).
    """
    stmts = []
    for spec in TABLES.values():
        keys = _stored_columns(spec, columns)
        cols = [f"{_q(c.name)} {c.sqlite_type}{'' if c.nullable else ' NOT NULL'}" for c in spec.columns
                if c.name in keys]
        pk = ", ".join(_q(k) for k in spec.primary_key)
        stmts.append(f"CREATE TABLE IF NOT EXISTS {_q(spec.name)} ({', '.join(cols)}, {_q(PACKED)} BLOB NOT NULL, "
                     f"PRIMARY KEY ({pk}))")
    stmts += [
        f'CREATE INDEX IF NOT EXISTS "DiaObjectLast_dec_ra" ON {_q(DIA_OBJECT_LAST)} ("dec", "ra")',
        f'CREATE INDEX IF NOT EXISTS "DiaSource_object" ON {_q(DIA_SOURCE)} ("diaObjectId", "midpointMjdTai")',
        f'CREATE INDEX IF NOT EXISTS "DiaForcedSource_object" ON {_q(DIA_FORCED_SOURCE)} '
        '("diaObjectId", "midpointMjdTai")',
        f'CREATE TABLE IF NOT EXISTS {_q(METADATA_TABLE)} ("name" TEXT PRIMARY KEY, "value" TEXT NOT NULL)',
        f'CREATE TABLE IF NOT EXISTS {_q(VISIT_DETECTOR_TABLE)} ("visit" INTEGER NOT NULL, '
        '"detector" INTEGER NOT NULL, "n_dia_objects" INTEGER NOT NULL, "n_dia_sources" INTEGER NOT NULL, '
        '"n_dia_forced_sources" INTEGER NOT NULL, PRIMARY KEY ("visit", "detector"))',
    ]
    return stmts


def _stored_columns(spec: TableSpec, columns: bool) -> tuple[str, ...]:
    """Schema columns stored beside the blob: all of them, or the key columns only."""
    if columns:
        return tuple(spec.names)
    keys = KEY_COLUMNS.get(spec.name, ())
    return tuple(n for n in spec.names if n in keys or n in spec.primary_key)


def _column_values(c: ColumnSpec, packed: np.ndarray) -> list[Any]:
    """One column of packed rows as Python values to bind (None for a missing value; strings decoded)."""
    raw = packed[c.name]
    if c.is_float:
        missing = np.isnan(raw)
    elif c.nullable:
        missing = packed[c.name + "__null"] > 0
    else:
        missing = np.zeros(len(raw), bool)
    if c.avro_type == "string":
        raw = np.char.decode(raw, "utf-8") if len(raw) else raw.astype(str)
    elif c.avro_type == "boolean":
        raw = raw.astype(bool)
    # a masked array's tolist() writes None for masked entries (one C loop, no Python per value)
    return np.ma.MaskedArray(raw, mask=missing).tolist() if missing.any() else raw.tolist()


def _packed_rows(spec: TableSpec, table: Table, columns: bool = True) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, row tuples) to insert: the stored columns (None for missing) and the packed row."""
    packed = pack_table(spec, table)
    names = list(_stored_columns(spec, columns))
    cols = [_column_values(spec.column(name), packed) for name in names]
    cols.append(pack_rows(packed))
    return names + [PACKED], list(zip(*cols))


class SqliteApdb:
    """APDB in one SQLite file (WAL mode; safe to share between threads and processes).

    Parameters
    ----------
    path : str or Path
        Database file (created when absent); ``":memory:"`` for a private in-memory database.
    timeout_s : float, optional
        How long a writer waits for another process's lock before raising :class:`TransientError`.
    columns : bool, optional
        Store every schema column typed beside the packed blob (True, the default: the tables answer SQL by
        column name), or only the key columns (layout ``packed-1`` of earlier versions, a little faster to
        write); recorded in the metadata, a file of the other layout is refused.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0, columns: bool = True) -> None:
        self.path = str(path)
        self.columns = bool(columns)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                         check_same_thread=False)
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA mmap_size=1073741824")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.OperationalError as exc:
            raise TransientError(f"cannot open SQLite APDB {self.path}: {exc}", stage="apdb") from exc

    # ------------------------------------------------------------------ schema
    def _expected_metadata(self) -> dict[str, str]:
        return {"schema_version": APDB_SCHEMA_VERSION, "alert_schema_version": ALERT_SCHEMA_VERSION,
                "sqlite_layout": SQLITE_LAYOUT if self.columns else PACKED_ONLY_LAYOUT}

    def _read_metadata(self) -> dict[str, str]:
        with self._lock:
            exists = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                        (METADATA_TABLE,)).fetchone()
            if not exists:
                return {}
            return dict(self._conn.execute(f'SELECT "name", "value" FROM {_q(METADATA_TABLE)}').fetchall())

    def init_schema(self) -> None:
        """Create the tables and record the schema version; safe to call twice.

        Raises
        ------
        InputError
            The file already holds an APDB of another schema version.
        """
        stored = self._read_metadata()
        if stored:
            check_versions(stored, self._expected_metadata(), self.path)
        with self._transaction():
            for stmt in sqlite_ddl(self.columns):
                self._conn.execute(stmt)
            self._conn.executemany(f'INSERT OR IGNORE INTO {_q(METADATA_TABLE)} VALUES (?, ?)',
                                   list(self._expected_metadata().items()))

    def schema_is_current(self) -> bool:
        """True when this store holds this code's schema exactly (:meth:`init_schema` would change nothing)."""
        return schema_is_current(self._read_metadata(), self._expected_metadata())

    def check_schema(self) -> None:
        """Raise :class:`InputError` when the stored schema version does not match this code."""
        check_versions(self._read_metadata(), self._expected_metadata(), self.path)

    def _write_metadata(self, name: str, value: str) -> None:
        """Set one metadata entry (for migrations and tests)."""
        with self._transaction():
            self._conn.execute(f"INSERT OR REPLACE INTO {_q(METADATA_TABLE)} VALUES (?, ?)", (name, value))

    def record_provenance(self, key: str, text: str) -> None:
        """Store a run's provenance as the metadata entry ``key`` (see ``Apdb.record_provenance``)."""
        self._write_metadata(key, text)

    # ------------------------------------------------------------------ reads
    def _select_packed(self, spec: TableSpec, where: str, params: Sequence[Any], alias: str = "") -> np.ndarray:
        col = f"{alias}.{_q(PACKED)}" if alias else _q(PACKED)
        sql = f"SELECT {col} FROM {_q(spec.name)} {alias} WHERE {where}"
        with self._lock:
            blobs = [r[0] for r in self._conn.execute(sql, tuple(params))]
        return unpack_packed(spec, blobs)

    def _select(self, spec: TableSpec, where: str, params: Sequence[Any], alias: str = "") -> Table:
        return packed_to_table(spec, self._select_packed(spec, where, params, alias))

    def read_region(self, region: SkyRegion, visit_mjd_tai: float) -> RegionData:
        """Read DiaObjectLast rows in ``region`` and their history before ``visit_mjd_tai``.

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
        """
        dec_min, dec_max, ra_ranges = bounding_box(region.ra_deg, region.dec_deg,
                                                   region.radius_deg + _AS_OF_MARGIN_DEG)
        ra_sql = " OR ".join('("ra" >= ? AND "ra" <= ?)' for _ in ra_ranges)
        params: list[float] = [dec_min, dec_max] + [v for r in ra_ranges for v in r]
        objects = self._select_packed(TABLES[DIA_OBJECT_LAST], f'"dec" >= ? AND "dec" <= ? AND ({ra_sql})', params)
        objects = self._as_of(objects, visit_mjd_tai)
        inside = in_circle(objects["ra"], objects["dec"], region.ra_deg, region.dec_deg, region.radius_deg)
        objects = sort_packed(DIA_OBJECT_LAST, take_rows(objects, inside))
        lo, hi = history_window(visit_mjd_tai)
        history = []
        id_list = json.dumps(objects["diaObjectId"].tolist())
        for name in (DIA_SOURCE, DIA_FORCED_SOURCE):
            # one indexed lookup per id on ("diaObjectId", "midpointMjdTai"); ids travel as one JSON array
            packed = self._select_packed(TABLES[name], '"diaObjectId" IN (SELECT "value" FROM json_each(?)) AND '
                                         '"midpointMjdTai" >= ? AND "midpointMjdTai" < ?', [id_list, lo, hi])
            history.append(packed_to_table(name, sort_packed(name, packed)))
        return RegionData(dia_objects=packed_to_table(DIA_OBJECT_LAST, objects), dia_sources=history[0],
                          dia_forced_sources=history[1])

    def _as_of(self, objects: np.ndarray, visit_mjd_tai: float) -> np.ndarray:
        """Replace DiaObjectLast rows not older than the visit by the version valid before it (or drop them).

        Works on packed rows; DiaObject and DiaObjectLast rows have the same layout.
        """
        later = objects["validityStartMjdTai"] >= visit_mjd_tai
        if not later.any():
            return objects
        ids = objects["diaObjectId"][later].tolist()
        cols = f"o.{_q(PACKED)}"
        parts = [take_rows(objects, ~later)]
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i:i + _IN_CHUNK]
            sql = (f"SELECT {cols} FROM {_q(DIA_OBJECT)} o JOIN (SELECT \"diaObjectId\" AS id, "
                   f"MAX(\"validityStartMjdTai\") AS v FROM {_q(DIA_OBJECT)} WHERE \"validityStartMjdTai\" < ? "
                   f"AND \"diaObjectId\" IN ({', '.join('?' * len(chunk))}) GROUP BY \"diaObjectId\") m "
                   "ON o.\"diaObjectId\" = m.id AND o.\"validityStartMjdTai\" = m.v")
            with self._lock:
                blobs = [r[0] for r in self._conn.execute(sql, (float(visit_mjd_tai), *chunk))]
            parts.append(unpack_packed(DIA_OBJECT, blobs).view(objects.dtype))
        return np.concatenate(parts)

    # ------------------------------------------------------------------ writes
    def store(self, *, visit: int, detector: int, dia_objects: Table, dia_sources: Table,
              dia_forced_sources: Table) -> None:
        """Upsert one CCD-visit's outputs in one transaction.

        DiaObject rows are keyed by (diaObjectId, validityStartMjdTai); a DiaObjectLast row is replaced only
        by a version at least as recent; DiaSource and DiaForcedSource rows are keyed by their ids.

        Raises
        ------
        InputError
            A required column is missing or has missing values.
        TransientError
            The database stayed locked by another writer.
        """
        obj_names, obj_rows = _packed_rows(TABLES[DIA_OBJECT], dia_objects, self.columns)
        if self.columns:  # DiaObjectLast has DiaObject's columns and packed layout
            last_names, last_rows = obj_names, obj_rows
        else:
            last_names, last_rows = _packed_rows(TABLES[DIA_OBJECT_LAST], dia_objects, False)
        src_names, src_rows = _packed_rows(TABLES[DIA_SOURCE], dia_sources, self.columns)
        fs_names, fs_rows = _packed_rows(TABLES[DIA_FORCED_SOURCE], dia_forced_sources, self.columns)
        cols = lambda names: ", ".join(_q(n) for n in names)  # noqa: E731
        marks = lambda names: ", ".join("?" * len(names))  # noqa: E731
        updates = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in last_names if n != "diaObjectId")
        last_sql = (f"INSERT INTO {_q(DIA_OBJECT_LAST)} ({cols(last_names)}) VALUES ({marks(last_names)}) "
                    f'ON CONFLICT ("diaObjectId") DO UPDATE SET {updates} '
                    f'WHERE excluded."validityStartMjdTai" >= {_q(DIA_OBJECT_LAST)}."validityStartMjdTai"')
        with self._transaction():
            self._conn.executemany(f"INSERT OR REPLACE INTO {_q(DIA_OBJECT)} ({cols(obj_names)}) "
                                   f"VALUES ({marks(obj_names)})", obj_rows)
            self._conn.executemany(last_sql, last_rows)
            self._conn.executemany(f"INSERT OR REPLACE INTO {_q(DIA_SOURCE)} ({cols(src_names)}) "
                                   f"VALUES ({marks(src_names)})", src_rows)
            self._conn.executemany(f"INSERT OR REPLACE INTO {_q(DIA_FORCED_SOURCE)} ({cols(fs_names)}) "
                                   f"VALUES ({marks(fs_names)})", fs_rows)
            self._conn.execute(f"INSERT OR REPLACE INTO {_q(VISIT_DETECTOR_TABLE)} VALUES (?, ?, ?, ?, ?)",
                               (int(visit), int(detector), len(obj_rows), len(src_rows), len(fs_rows)))
        _log.debug("stored visit %d detector %d: %d objects, %d sources, %d forced", visit, detector,
                   len(obj_rows), len(src_rows), len(fs_rows))

    def compact_history(self, before_mjd_tai: float, progress: Callable[[str, int, int], None] | None = None,
                        *, everything: bool = False) -> dict[str, int]:
        """Nothing to do: SQLite keeps one row per source, found through an index on (diaObjectId, time).

        Present so that ``blink apdb compact`` runs on any store (see :meth:`CassandraApdb.compact_history`).
        """
        return {key: 0 for name in (DIA_SOURCE, DIA_FORCED_SOURCE) for key in (name, name + "_rows_merged")}

    def is_stored(self, visit: int, detector: int) -> bool:
        """True when a complete write of this CCD-visit is recorded."""
        with self._lock:
            row = self._conn.execute(f'SELECT 1 FROM {_q(VISIT_DETECTOR_TABLE)} WHERE "visit" = ? AND '
                                     '"detector" = ?', (int(visit), int(detector))).fetchone()
        return row is not None

    def read_object(self, dia_object_id: int) -> Table:
        """Every stored version of one DiaObject, oldest first (see ``Apdb.read_object``)."""
        return self._select(TABLES[DIA_OBJECT], '"diaObjectId" = ? ORDER BY "validityStartMjdTai"',
                            [int(dia_object_id)])

    def scan_table(self, table: str, batch_rows: int = 50_000) -> Iterator[Table]:
        """Every row of ``table`` in primary-key order, as Tables of up to ``batch_rows`` rows (one query per
        batch, resuming after the last key read, so that no lock or cursor is held between batches)."""
        spec = TABLES[table]
        keys = ", ".join(_q(k) for k in spec.primary_key)
        first = f"SELECT {_q(PACKED)} FROM {_q(spec.name)} ORDER BY {keys} LIMIT ?"
        marks = ", ".join("?" * len(spec.primary_key))
        after = f"SELECT {_q(PACKED)} FROM {_q(spec.name)} WHERE ({keys}) > ({marks}) ORDER BY {keys} LIMIT ?"
        last: tuple[Any, ...] | None = None
        while True:
            with self._lock:
                sql, params = (first, (batch_rows,)) if last is None else (after, (*last, batch_rows))
                blobs = [r[0] for r in self._conn.execute(sql, params)]
            if not blobs:
                return
            packed = unpack_packed(spec, blobs)
            last = tuple(packed[k][-1].item() for k in spec.primary_key)
            yield packed_to_table(spec, packed)
            if len(blobs) < batch_rows:
                return

    def count_rows(self, table: str) -> int:
        """Number of rows of ``table`` (for progress bars)."""
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {_q(TABLES[table].name)}").fetchone()[0])

    def dump_tables(self) -> dict[str, Table]:
        """Every table, sorted by primary key (for comparing two databases)."""
        out = {name: sort_table(spec, self._select(spec, "1", [])) for name, spec in TABLES.items()}
        with self._lock:
            rows = self._conn.execute(f'SELECT * FROM {_q(VISIT_DETECTOR_TABLE)} ORDER BY "visit", "detector"'
                                      ).fetchall()
        out.update(bookkeeping_tables(rows, self._read_metadata()))
        return out

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # ------------------------------------------------------------------ helpers
    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn, self.path, self._lock)

    def __enter__(self) -> SqliteApdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error; lock timeouts become TransientError."""

    def __init__(self, conn: sqlite3.Connection, path: str, lock: threading.RLock) -> None:
        self._conn, self._path, self._lock = conn, path, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._lock.release()
            raise TransientError(f"SQLite APDB {self._path} is locked: {exc}", stage="apdb") from exc

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            self._finish(exc_type, exc)
        finally:
            self._lock.release()

    def _finish(self, exc_type: type | None, exc: BaseException | None) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as err:
                self._conn.execute("ROLLBACK")
                raise TransientError(f"SQLite APDB {self._path}: commit failed: {err}", stage="apdb") from err
        self._conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            raise InputError(f"SQLite APDB {self._path}: {exc}", stage="apdb") from exc
        if isinstance(exc, sqlite3.OperationalError):
            raise TransientError(f"SQLite APDB {self._path}: {exc}", stage="apdb") from exc
