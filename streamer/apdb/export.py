"""APDB tables to Parquet, with the Rubin column names and types, from any store (``blink apdb export``).

Each table becomes one Parquet file, ``<out>/<table>.parquet``, whose schema is the table's
:mod:`streamer.apdb.columns` spec: the alert-schema field names in schema order, Avro ``long``/``int``/``float``/
``double``/``boolean``/``string`` as Arrow ``int64``/``int32``/``float32``/``float64``/``bool``/``string``, and
the schema's nullability (a missing value is a Parquet null, also for nullable floats, which a Table holds as
NaN). The rows are read with :meth:`streamer.apdb.base.Apdb.scan_table` batch by batch, so memory stays bounded
whatever the size of the APDB, and are optionally filtered by time and by sky region.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.table import Table

from pipeline.errors import InputError
from streamer.apdb.base import APDB_SCHEMA_VERSION, Apdb, SkyRegion
from streamer.apdb.columns import (
    ALERT_SCHEMA_VERSION,
    DIA_FORCED_SOURCE,
    DIA_OBJECT,
    DIA_OBJECT_LAST,
    DIA_SOURCE,
    TableSpec,
    table_spec,
)
from streamer.apdb.sky import in_circle

__all__ = ["EXPORT_TABLES", "ExportSelection", "ExportedTable", "arrow_schema", "export_apdb",
           "export_with_progress", "table_to_arrow"]

EXPORT_TABLES: tuple[str, ...] = (DIA_OBJECT, DIA_SOURCE, DIA_FORCED_SOURCE)
"""Tables written by default (DiaObject with every version; ``DiaObjectLast`` may be asked for)."""

_ARROW_TYPES: dict[str, pa.DataType] = {
    "long": pa.int64(), "int": pa.int32(), "float": pa.float32(), "double": pa.float64(), "boolean": pa.bool_(),
    "string": pa.string(),
}
_TIME_COLUMNS = {DIA_OBJECT: "validityStartMjdTai", DIA_OBJECT_LAST: "validityStartMjdTai",
                 DIA_SOURCE: "midpointMjdTai", DIA_FORCED_SOURCE: "midpointMjdTai"}


@dataclass(frozen=True)
class ExportSelection:
    """Which rows to export: a time range, a sky region, both or neither (everything).

    Attributes
    ----------
    mjd_min_tai, mjd_max_tai : float or None
        Half-open range ``[mjd_min_tai, mjd_max_tai)``, MJD (TAI), on ``midpointMjdTai`` for DiaSource and
        DiaForcedSource and on ``validityStartMjdTai`` for DiaObject (the versions the visits of the range
        made). None: unbounded.
    region : SkyRegion or None
        Rows whose ``ra``, ``dec`` lie inside the circle (distance <= radius).
    """

    mjd_min_tai: float | None = None
    mjd_max_tai: float | None = None
    region: SkyRegion | None = None

    def __post_init__(self) -> None:
        lo, hi = self.mjd_min_tai, self.mjd_max_tai
        if lo is not None and hi is not None and not lo < hi:
            raise InputError(f"empty time range: mjd_min_tai {lo} must be below mjd_max_tai {hi}", stage="export")
        if self.region is not None and not self.region.radius_deg > 0:
            raise InputError(f"radius_deg must be positive, got {self.region.radius_deg}", stage="export")

    def mask(self, table: Table, spec: TableSpec) -> np.ndarray | None:
        """Boolean mask of the rows of ``table`` (a ``spec`` table) selected; None when all are."""
        keep = None
        if self.mjd_min_tai is not None or self.mjd_max_tai is not None:
            t = np.asarray(table[_TIME_COLUMNS[spec.name]], float)
            keep = np.ones(len(t), bool)
            if self.mjd_min_tai is not None:
                keep &= t >= self.mjd_min_tai
            if self.mjd_max_tai is not None:
                keep &= t < self.mjd_max_tai
        if self.region is not None:
            r = self.region
            inside = in_circle(np.asarray(table["ra"], float), np.asarray(table["dec"], float), r.ra_deg, r.dec_deg,
                               r.radius_deg)
            keep = inside if keep is None else keep & inside
        return keep


@dataclass(frozen=True)
class ExportedTable:
    """One written file: its table, path, rows written and rows read."""

    table: str
    path: Path
    n_rows: int
    n_scanned: int


def arrow_schema(kind: str | TableSpec) -> pa.Schema:
    """The Arrow schema of APDB table ``kind``: Rubin names, types and nullability, in schema order.

    The schema's metadata names the table and the alert and APDB schema versions.
    """
    spec = table_spec(kind)
    fields = [pa.field(c.name, _ARROW_TYPES[c.avro_type], nullable=c.nullable) for c in spec.columns]
    return pa.schema(fields, metadata={"apdb_table": spec.name, "alert_schema_version": ALERT_SCHEMA_VERSION,
                                       "apdb_schema_version": APDB_SCHEMA_VERSION})


def table_to_arrow(table: Table, kind: str | TableSpec) -> pa.Table:
    """Convert a store's Table of APDB table ``kind`` to Arrow with :func:`arrow_schema`.

    Masked entries, and NaN in nullable float columns, become nulls; columns are converted whole (no row loop).
    """
    spec = table_spec(kind)
    schema = arrow_schema(spec)
    arrays = []
    for c, field in zip(spec.columns, schema):
        col = table[c.name]
        values = np.asarray(np.ma.getdata(col))
        mask = None
        if c.nullable:
            mask = np.ma.getmaskarray(col) | np.isnan(values) if c.is_float else np.ma.getmaskarray(col)
        arrays.append(pa.array(values, type=field.type, mask=mask if mask is not None and mask.any() else None))
    return pa.Table.from_arrays(arrays, schema=schema)


def export_apdb(apdb: Apdb, out_dir: str | os.PathLike[str], *, selection: ExportSelection | None = None,
                tables: Sequence[str] = EXPORT_TABLES, batch_rows: int = 50_000,
                progress: Callable[[str, int, int | None], None] | None = None) -> list[ExportedTable]:
    """Write APDB tables to ``<out_dir>/<table>.parquet`` (zstd-compressed), streaming batch by batch.

    Parameters
    ----------
    apdb : Apdb
        An open store (SQLite or Cassandra).
    out_dir : path-like
        Folder (created). A file is written under a temporary name and renamed when complete.
    selection : ExportSelection, optional
        Rows to keep (default: all).
    tables : sequence of str, optional
        Tables to write (default :data:`EXPORT_TABLES`).
    batch_rows : int, optional
        Rows per scan batch (and at most per Parquet row group).
    progress : callable, optional
        ``progress(table, rows_scanned, rows_total)`` after each batch; ``rows_total`` is None when the store
        cannot count cheaply (Cassandra).

    Returns
    -------
    list of ExportedTable
        One per table, in the order of ``tables``.
    """
    selection = selection or ExportSelection()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    count_rows = getattr(apdb, "count_rows", None)  # SQLite counts cheaply; a Cassandra count is a full scan
    written = []
    for name in tables:
        spec = table_spec(name)
        total = int(count_rows(spec.name)) if count_rows is not None else None
        path = out / f"{spec.name}.parquet"
        tmp = out / f".{spec.name}.parquet.tmp-{os.getpid()}"
        n_rows = n_scanned = 0
        try:
            with pq.ParquetWriter(tmp, arrow_schema(spec), compression="zstd") as writer:
                for batch in apdb.scan_table(spec.name, batch_rows=batch_rows):
                    n_scanned += len(batch)
                    keep = selection.mask(batch, spec)
                    if keep is not None:
                        batch = batch[keep]
                    if len(batch):
                        writer.write_table(table_to_arrow(batch, spec))
                        n_rows += len(batch)
                    if progress is not None:
                        progress(spec.name, n_scanned, total)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        written.append(ExportedTable(spec.name, path, n_rows, n_scanned))
    return written


def export_with_progress(apdb: Apdb, out_dir: str | os.PathLike[str], *, console=None,
                         **options) -> list[ExportedTable]:
    """:func:`export_apdb` with a rich progress bar per table (``options`` are its keyword arguments)."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def advance(table: str, done: int, total: int | None) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(f"exporting {table}", total=total)
            bar.update(tasks[table], completed=done)

        return export_apdb(apdb, out_dir, progress=advance, **options)
