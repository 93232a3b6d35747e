"""Conversions between :class:`astropy.table.Table` catalogs and driver rows, columns and record dicts of
the APDB tables (:mod:`streamer.apdb.columns` gives the specs and the conventions for missing values); sorting
and comparing Tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from astropy.table import Column, MaskedColumn, Table

from pipeline.errors import InputError
from streamer.apdb.columns import ColumnSpec, TableSpec, empty_table, table_spec

__all__ = [
    "table_to_columns",
    "table_to_records",
    "column_arrays",
    "table_to_rows",
    "rows_to_table",
    "arrays_to_table",
    "sort_table",
    "tables_equal",
]


def table_to_columns(kind: str | TableSpec, table: Table) -> dict[str, list[Any]]:
    """Convert a Table into per-column Python lists ready to bind (None for missing values).

    Parameters
    ----------
    kind : str
        Target table.
    table : Table
        Catalog with columns named as in the alert schema. Missing nullable columns are all NULL; extra
        columns are ignored.

    Returns
    -------
    dict of str to list
        Column name -> values (Python scalars, None where missing), every column of the spec.

    Raises
    ------
    InputError
        A non-nullable column is missing or holds missing values.
    """
    spec = table_spec(kind)
    out: dict[str, list[Any]] = {}
    for c in spec.columns:
        raw, mask = column_arrays(spec, c, table)
        out[c.name] = np.ma.MaskedArray(raw, mask=mask).tolist() if mask.any() else raw.tolist()
    return out


def table_to_records(kind: str | TableSpec, table: Table) -> list[dict[str, Any]]:
    """Convert a Table into record dicts of the alert schema (None for missing values), one per row."""
    columns = table_to_columns(kind, table)
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*(columns[n] for n in names))] if len(table) else []


def column_arrays(spec: TableSpec, c: ColumnSpec, table: Table) -> tuple[np.ndarray, np.ndarray]:
    """One column of ``table`` as (values in the column's dtype, missing-value mask).

    NaN of a float column counts as missing (written as NULL / Avro null); a missing nullable column is all
    missing.

    Raises
    ------
    InputError
        A non-nullable column is missing or holds missing values.
    """
    n = len(table)
    if c.name not in table.colnames:
        if not c.nullable:
            raise InputError(f"{spec.name}: required column {c.name!r} is missing", stage="apdb")
        return np.zeros(n, dtype=c.dtype if c.avro_type != "string" else "U1"), np.ones(n, bool)
    col = table.columns[c.name]
    mask = np.ma.getmaskarray(col).copy()
    raw = np.asarray(col)  # a plain ndarray: astropy's Column methods cost more than the data at this size
    if c.is_float:
        raw = raw.astype(c.dtype, copy=False)
        mask |= np.isnan(raw)
    elif c.avro_type == "string":
        raw = raw.astype(str)
    else:
        raw = raw.astype(c.dtype, copy=False)
    if not c.nullable and mask.any():
        raise InputError(f"{spec.name}: required column {c.name!r} has missing values", stage="apdb")
    return raw, mask


def table_to_rows(kind: str | TableSpec, table: Table, extra: dict[str, Sequence[Any]] | None = None,
                  ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Convert a Table into (column names, row tuples) for ``executemany`` or prepared statements.

    Parameters
    ----------
    kind : str
        Target table.
    table : Table
        Catalog (see :func:`table_to_columns`).
    extra : dict, optional
        Further columns (e.g. partition keys) appended after the schema columns.

    Returns
    -------
    names : list of str
    rows : list of tuple
    """
    cols = table_to_columns(kind, table)
    if extra:
        for k, v in extra.items():
            cols[k] = list(v)
    names = list(cols)
    return names, list(zip(*(cols[k] for k in names)))


def rows_to_table(kind: str | TableSpec, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """Build a typed Table from database rows.

    Parameters
    ----------
    kind : str
        Source table.
    names : sequence of str
        Names of the row fields; fields not in the spec (partition keys) are dropped, spec columns absent
        from ``names`` are all missing.
    rows : iterable of sequence
        Rows with None for NULL.

    Returns
    -------
    Table
        Every column of the spec, typed as in :func:`empty_table`.
    """
    spec = table_spec(kind)
    rows = list(rows)
    if not rows:
        return empty_table(spec)
    index = {n: i for i, n in enumerate(names)}
    by_col = list(zip(*rows))
    n = len(rows)
    arrays: dict[str, np.ndarray] = {}
    for c in spec.columns:
        if c.name not in index:
            continue
        vals = by_col[index[c.name]]
        if c.is_float:
            arrays[c.name] = np.array(vals, dtype=c.dtype)  # None -> NaN
        elif not c.nullable and c.avro_type != "string":
            arrays[c.name] = np.array(vals, dtype=c.dtype)
        else:
            arrays[c.name] = np.array(vals, dtype=object)
    return arrays_to_table(spec, arrays, n)


def arrays_to_table(kind: str | TableSpec, arrays: dict[str, np.ndarray], n_rows: int) -> Table:
    """Build a typed Table from per-column arrays (as the driver's NumPy protocol handler returns them).

    Parameters
    ----------
    kind : str
        Source table.
    arrays : dict of str to ndarray
        Column name -> values: numeric arrays (masked where NULL, or NaN for floats) or object arrays with
        None for NULL. Names not in the spec are ignored; spec columns absent here are all missing.
    n_rows : int
        Number of rows.

    Returns
    -------
    Table
        Every column of the spec, typed as in :func:`empty_table`.
    """
    spec = table_spec(kind)
    if n_rows == 0:
        return empty_table(spec)
    cols = []
    for c in spec.columns:
        arr = arrays.get(c.name)
        if arr is None:
            arr = np.full(n_rows, None, dtype=object)
        if arr.dtype == object:
            mask = np.equal(arr, None)
            if mask.any():
                arr = arr.copy()
                arr[mask] = np.nan if c.is_float else ("" if c.avro_type == "string" else 0)
            values = arr.astype(str) if c.avro_type == "string" else arr.astype(c.dtype)
        else:
            mask = np.ma.getmaskarray(arr)
            values = np.ma.getdata(arr).astype(c.dtype, copy=False)
            if c.is_float and mask.any():
                values = np.where(mask, np.nan, values).astype(c.dtype, copy=False)
        if c.is_float:
            cols.append(Column(values, name=c.name, dtype=c.dtype, copy=False))
        elif not c.nullable:
            cols.append(Column(values, name=c.name, dtype=c.dtype, copy=False))
        else:
            cols.append(MaskedColumn(values, name=c.name, dtype=c.dtype, mask=mask, copy=False))
    return Table(cols, meta={"apdb_table": spec.name}, copy=False)


def sort_table(kind: str | TableSpec, table: Table) -> Table:
    """Return ``table`` sorted by the primary key of ``kind``."""
    spec = table_spec(kind)
    if len(table) == 0:
        return table
    order = np.lexsort([np.asarray(table[k]) for k in reversed(spec.primary_key)])
    return table[order]


def tables_equal(a: Table, b: Table) -> bool:
    """True when two Tables have the same columns, masks and values (NaN equal to NaN)."""
    if a.colnames != b.colnames or len(a) != len(b):
        return False
    for name in a.colnames:
        ca, cb = np.ma.asarray(a[name]), np.ma.asarray(b[name])
        ma, mb = np.ma.getmaskarray(ca), np.ma.getmaskarray(cb)
        if not np.array_equal(ma, mb):
            return False
        da, db = np.ma.getdata(ca)[~ma], np.ma.getdata(cb)[~mb]
        if da.dtype.kind == "f":
            if not np.array_equal(da, db, equal_nan=True):
                return False
        elif not np.array_equal(da, db):
            return False
    return True
