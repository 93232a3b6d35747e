"""Column specification of the APDB tables, derived from the Rubin alert schema (lsst-alert-packet 11.1).

The DiaObject, DiaObjectLast, DiaSource and DiaForcedSource tables carry exactly the fields of the alert
records ``diaObject``, ``diaSource`` and ``diaForcedSource``, with the same names, so an alert is a
projection of APDB rows. This module maps each Avro type to a numpy dtype, a CQL type and an SQLite type;
:mod:`streamer.apdb.table_rows` converts between :class:`astropy.table.Table` catalogs and driver rows, and
:mod:`streamer.apdb.packed` between Tables and packed rows.

Conventions
-----------
* A missing value of a nullable float column is NaN in a Table and NULL in the database (NaN is written as
  NULL, so the two stores agree).
* A missing value of a nullable int, bool or string column is a masked entry of a
  :class:`astropy.table.MaskedColumn`.
* Tables returned by the stores hold every column of the spec, in schema order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Column, MaskedColumn, Table

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "ColumnSpec",
    "TableSpec",
    "TABLES",
    "DIA_OBJECT",
    "DIA_OBJECT_LAST",
    "DIA_SOURCE",
    "DIA_FORCED_SOURCE",
    "table_spec",
    "empty_table",
]

ALERT_SCHEMA_VERSION = "11.1"
"""Alert schema whose records define the APDB columns."""

DIA_OBJECT = "DiaObject"
DIA_OBJECT_LAST = "DiaObjectLast"
DIA_SOURCE = "DiaSource"
DIA_FORCED_SOURCE = "DiaForcedSource"

# Avro primitive -> (numpy dtype, CQL type, SQLite type)
_AVRO_TYPES: dict[str, tuple[str, str, str]] = {
    "long": ("int64", "bigint", "INTEGER"),
    "int": ("int32", "int", "INTEGER"),
    "float": ("float32", "float", "REAL"),
    "double": ("float64", "double", "REAL"),
    "boolean": ("bool", "boolean", "INTEGER"),
    "string": ("str", "text", "TEXT"),
}


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its schema name, types and nullability.

    Attributes
    ----------
    name : str
        Field name as in the alert schema (camelCase).
    avro_type : str
        Avro primitive type (``long``, ``int``, ``float``, ``double``, ``boolean``, ``string``).
    nullable : bool
        True for ``["null", T]`` unions.
    """

    name: str
    avro_type: str
    nullable: bool

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the column in a Table."""
        return np.dtype(_AVRO_TYPES[self.avro_type][0])

    @property
    def cql_type(self) -> str:
        """CQL type."""
        return _AVRO_TYPES[self.avro_type][1]

    @property
    def sqlite_type(self) -> str:
        """SQLite type affinity."""
        return _AVRO_TYPES[self.avro_type][2]

    @property
    def is_float(self) -> bool:
        """True for float and double columns (missing values are NaN)."""
        return self.avro_type in ("float", "double")


@dataclass(frozen=True)
class TableSpec:
    """One APDB table.

    Attributes
    ----------
    name : str
        Table name (``DiaObject``, ``DiaObjectLast``, ``DiaSource``, ``DiaForcedSource``).
    record : str
        Alert schema record whose fields are the columns.
    columns : tuple of ColumnSpec
        Columns in schema order.
    primary_key : tuple of str
        Columns identifying a row (the upsert key).
    """

    name: str
    record: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        """Column names in schema order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        """Return the spec of column ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


def _schema_dir() -> Path:
    from lsst.alert.packet import get_schema_root

    major, minor = ALERT_SCHEMA_VERSION.split(".")
    return Path(get_schema_root()) / major / minor


def _load_record(record: str) -> tuple[ColumnSpec, ...]:
    ns = "lsst.v" + ALERT_SCHEMA_VERSION.replace(".", "_")
    path = _schema_dir() / f"{ns}.{record}.avsc"
    schema = json.loads(path.read_text())
    cols = []
    for field in schema["fields"]:
        ftype = field["type"]
        if isinstance(ftype, list):
            others = [t for t in ftype if t != "null"]
            if len(others) != 1 or not isinstance(others[0], str):
                raise ValueError(f"unsupported union {ftype} for {record}.{field['name']}")
            cols.append(ColumnSpec(field["name"], others[0], "null" in ftype))
        else:
            cols.append(ColumnSpec(field["name"], ftype, False))
        if cols[-1].avro_type not in _AVRO_TYPES:
            raise ValueError(f"unsupported Avro type {cols[-1].avro_type} for {record}.{field['name']}")
    return tuple(cols)


def _build_tables() -> dict[str, TableSpec]:
    obj = _load_record("diaObject")
    src = _load_record("diaSource")
    fsrc = _load_record("diaForcedSource")
    return {
        DIA_OBJECT: TableSpec(DIA_OBJECT, "diaObject", obj, ("diaObjectId", "validityStartMjdTai")),
        DIA_OBJECT_LAST: TableSpec(DIA_OBJECT_LAST, "diaObject", obj, ("diaObjectId",)),
        DIA_SOURCE: TableSpec(DIA_SOURCE, "diaSource", src, ("diaSourceId",)),
        DIA_FORCED_SOURCE: TableSpec(DIA_FORCED_SOURCE, "diaForcedSource", fsrc, ("diaForcedSourceId",)),
    }


TABLES: dict[str, TableSpec] = _build_tables()
"""Every APDB catalog table by name."""


def table_spec(kind: str | TableSpec) -> TableSpec:
    """The spec of table ``kind`` (a name, a record name such as ``diaSource``, or a spec itself)."""
    if isinstance(kind, TableSpec):
        return kind
    aliases = {"diaObject": DIA_OBJECT, "diaSource": DIA_SOURCE, "diaForcedSource": DIA_FORCED_SOURCE}
    try:
        return TABLES[aliases.get(kind, kind)]
    except KeyError:
        raise KeyError(f"unknown APDB table {kind!r}; expected one of {sorted(TABLES)}") from None


def _make_column(c: ColumnSpec, values: Any, mask: np.ndarray | None) -> Column:
    if c.is_float or not c.nullable:
        return Column(values, name=c.name, dtype=c.dtype)
    return MaskedColumn(values, name=c.name, dtype=c.dtype, mask=mask)


def empty_table(kind: str | TableSpec) -> Table:
    """Return a typed zero-row Table with every column of table ``kind``.

    Parameters
    ----------
    kind : str
        ``DiaObject``, ``DiaObjectLast``, ``DiaSource`` or ``DiaForcedSource`` (or the record names
        ``diaObject``, ``diaSource``, ``diaForcedSource``).

    Returns
    -------
    Table
        Float columns are plain (NaN marks a missing value); nullable int, bool and string columns are
        masked; string columns are ``U32``. Note that :meth:`Table.add_row` fills omitted float values
        with 0, not NaN: give every nullable float explicitly (NaN when missing).
    """
    spec = table_spec(kind)
    cols = []
    for c in spec.columns:
        values = np.zeros(0, dtype="U32" if c.avro_type == "string" else c.dtype)
        cols.append(_make_column(c, values, np.zeros(0, bool)))
    return Table(cols, meta={"apdb_table": spec.name})
