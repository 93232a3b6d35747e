"""When each CCD-visit was processed and how long each stage took: a bookkeeping table beside the APDB.

Why
---
The night report (:mod:`streamer.report.night`) shows the latency from shutter close to alert and the time of
each pipeline stage per CCD. Prometheus metrics (:mod:`streamer.runtime.metrics`) hold these only while a
worker lives, so every worker also writes one row per CCD-visit it finishes into ``ApdbCcdTiming``, in the
APDB it already writes (the SQLite file or the Cassandra keyspace): the record outlives the workers and is
shared by all of them. The catalog tables and the alerts are untouched.

A row is written after the CCD's alerts were handed to the sink; processing the CCD again (a replay) replaces
it. In Cassandra a row is partitioned by the MJD day of its shutter close, so a night is read from one or two
partitions.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from astropy.table import Table

__all__ = ["TIMINGS_TABLE", "CcdTiming", "CcdTimingLog", "SqliteCcdTimings", "CassandraCcdTimings",
           "open_ccd_timings", "timings_table"]

TIMINGS_TABLE = "ApdbCcdTiming"
"""Name of the table (one row per processed CCD-visit)."""


@dataclass(frozen=True)
class CcdTiming:
    """What a worker records about one CCD-visit it finished.

    Attributes
    ----------
    visit, detector : int
        The CCD-visit.
    shutter_close_mjd_tai : float
        The exposure's shutter close, MJD (TAI), from its exposure-ready event.
    started_mjd_tai, published_mjd_tai : float
        Wall clock (MJD TAI) when the worker started the CCD, and when its alerts were handed to the sink.
    total_s : float
        Wall time of the whole CCD (inputs, pipeline, APDB write, alerts), s.
    n_alerts, n_dia_sources, n_new_dia_objects : int
        What it produced.
    stage_s : dict of str to float
        Seconds per pipeline stage (``isr``, ``calibrate``, ..., the pipeline's ``timings_s``).
    """

    visit: int
    detector: int
    shutter_close_mjd_tai: float
    started_mjd_tai: float
    published_mjd_tai: float
    total_s: float
    n_alerts: int
    n_dia_sources: int
    n_new_dia_objects: int
    stage_s: dict[str, float] = field(default_factory=dict)

    @property
    def latency_s(self) -> float:
        """Seconds from shutter close to the alerts handed to the sink."""
        return (self.published_mjd_tai - self.shutter_close_mjd_tai) * 86400.0


_COLUMNS = ("visit", "detector", "shutter_close_mjd_tai", "started_mjd_tai", "published_mjd_tai", "total_s",
            "n_alerts", "n_dia_sources", "n_new_dia_objects", "stage_s")


def _row(timing: CcdTiming) -> tuple[Any, ...]:
    values = asdict(timing)
    values["stage_s"] = json.dumps({k: float(v) for k, v in timing.stage_s.items()}, sort_keys=True)
    return tuple(values[c] for c in _COLUMNS)


def _timing(row: tuple[Any, ...]) -> CcdTiming:
    values = dict(zip(_COLUMNS, row))
    values["stage_s"] = json.loads(values["stage_s"] or "{}")
    return CcdTiming(**values)


class CcdTimingLog(Protocol):
    """Where workers record their CCD timings and the night report reads them."""

    def record(self, timing: CcdTiming) -> None:
        """Store (or replace) the row of one CCD-visit."""

    def read(self, from_mjd_tai: float = -math.inf, to_mjd_tai: float = math.inf) -> list[CcdTiming]:
        """Rows whose shutter close is in ``[from_mjd_tai, to_mjd_tai]``, by visit and detector."""

    def close(self) -> None:
        """Release what the log holds (the store owns its connection)."""


class SqliteCcdTimings:
    """The table in the SQLite APDB file (its own connection, as :class:`streamer.apdb.ordering.SqliteWorkClaims`).

    Parameters
    ----------
    path : str
        The SQLite file of the APDB.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{TIMINGS_TABLE}" ("visit" INTEGER NOT NULL, "detector" INTEGER NOT NULL, '
            '"shutter_close_mjd_tai" REAL NOT NULL, "started_mjd_tai" REAL NOT NULL, "published_mjd_tai" REAL '
            'NOT NULL, "total_s" REAL NOT NULL, "n_alerts" INTEGER NOT NULL, "n_dia_sources" INTEGER NOT NULL, '
            '"n_new_dia_objects" INTEGER NOT NULL, "stage_s" TEXT NOT NULL, PRIMARY KEY ("visit", "detector"))')

    def record(self, timing: CcdTiming) -> None:
        """Insert or replace the CCD-visit's row."""
        with self._lock:
            self._conn.execute(f'INSERT OR REPLACE INTO "{TIMINGS_TABLE}" VALUES ({", ".join("?" * len(_COLUMNS))})',
                               _row(timing))

    def read(self, from_mjd_tai: float = -math.inf, to_mjd_tai: float = math.inf) -> list[CcdTiming]:
        """Rows of the shutter-close range, by visit and detector."""
        sql = (f'SELECT {", ".join(_COLUMNS)} FROM "{TIMINGS_TABLE}" WHERE "shutter_close_mjd_tai" >= ? AND '
               '"shutter_close_mjd_tai" <= ? ORDER BY "visit", "detector"')
        with self._lock:
            rows = self._conn.execute(sql, (max(from_mjd_tai, -1e300), min(to_mjd_tai, 1e300))).fetchall()
        return [_timing(r) for r in rows]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class CassandraCcdTimings:
    """The table in a Cassandra APDB keyspace: partition = MJD day of the shutter close, clustering = visit,
    detector.

    Parameters
    ----------
    apdb : CassandraApdb
        An open store (its session and keyspace are used).
    """

    def __init__(self, apdb: Any) -> None:
        self._apdb = apdb
        t = apdb.table_name(TIMINGS_TABLE)
        apdb.ensure_table(TIMINGS_TABLE, "(day int, visit bigint, detector int, shutter_close_mjd_tai double, "
                                         "started_mjd_tai double, published_mjd_tai double, total_s double, "
                                         "n_alerts int, n_dia_sources int, n_new_dia_objects int, stage_s text, "
                                         "PRIMARY KEY ((day), visit, detector))")
        self._insert = apdb.prepare("timings:insert", f"INSERT INTO {t} (day, {', '.join(_COLUMNS)}) VALUES "
                                                      f"(?, {', '.join('?' * len(_COLUMNS))})")
        self._day = apdb.prepare("timings:day", f"SELECT {', '.join(_COLUMNS)} FROM {t} WHERE day = ?")
        self._all = f"SELECT {', '.join(_COLUMNS)} FROM {t}"

    def record(self, timing: CcdTiming) -> None:
        """Upsert the CCD-visit's row."""
        self._apdb.execute_concurrent(self._insert, [(int(math.floor(timing.shutter_close_mjd_tai)),
                                                      *_row(timing))])

    def read(self, from_mjd_tai: float = -math.inf, to_mjd_tai: float = math.inf) -> list[CcdTiming]:
        """Rows of the shutter-close range (the range's day partitions; the whole table when open-ended)."""
        if math.isfinite(from_mjd_tai) and math.isfinite(to_mjd_tai) and to_mjd_tai - from_mjd_tai < 366:
            days = range(int(math.floor(from_mjd_tai)), int(math.floor(to_mjd_tai)) + 1)
            rows = [r for part in self._apdb.execute_concurrent(self._day, [(d,) for d in days]) for r in part]
        else:
            rows = self._apdb.execute(self._all)
        timings = [_timing(tuple(r)) for r in rows]
        return sorted((t for t in timings if from_mjd_tai <= t.shutter_close_mjd_tai <= to_mjd_tai),
                      key=lambda t: (t.visit, t.detector))

    def close(self) -> None:
        """Nothing to release (the store owns the session)."""


def open_ccd_timings(apdb: Any) -> CcdTimingLog:
    """Open (creating it if needed) the timing table of an open APDB store (SQLite file or Cassandra keyspace)."""
    from streamer.apdb.sqlite_store import SqliteApdb

    if isinstance(apdb, SqliteApdb):
        return SqliteCcdTimings(apdb.path)
    return CassandraCcdTimings(apdb)


def timings_table(timings: list[CcdTiming]) -> Table:
    """The rows as a Table: one column per field, ``latency_s``, and one ``stage_<name>_s`` column per stage
    seen (NaN where a CCD did not run it)."""
    stages = sorted({name for t in timings for name in t.stage_s})
    table = Table({c: np.array([getattr(t, c) for t in timings], dtype=float if c.endswith(("_tai", "_s")) else
                               np.int64) for c in _COLUMNS if c != "stage_s"})
    table["latency_s"] = np.array([t.latency_s for t in timings], float)
    for name in stages:
        table[f"stage_{name}_s"] = np.array([t.stage_s.get(name, np.nan) for t in timings], float)
    return table
