"""Astropy tables to and from Parquet, lossless: every column with its numpy type, the table's meta as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.table import Table

_META_KEY = b"blink_meta"


def write_parquet(table: Table, path: str | Path) -> None:
    """Write ``table`` to ``path`` (zstd): numeric, boolean and string columns keep their types."""
    arrays = [pa.array(np.asarray(table[name]).tolist() if table[name].dtype.kind == "U" else np.asarray(table[name]))
              for name in table.colnames]
    meta = {_META_KEY: json.dumps(dict(table.meta), default=str).encode()}
    pq.write_table(pa.Table.from_arrays(arrays, names=table.colnames).replace_schema_metadata(meta), path,
                   compression="zstd")


def read_parquet(path: str | Path) -> Table:
    """A table written by :func:`write_parquet` (strings as numpy unicode columns)."""
    arrow = pq.read_table(path)
    columns = {}
    for name in arrow.column_names:
        values = arrow.column(name).to_numpy(zero_copy_only=False)
        columns[name] = values.astype(str) if values.dtype == object else values
    meta = (arrow.schema.metadata or {}).get(_META_KEY)
    return Table(columns, names=arrow.column_names, meta=json.loads(meta) if meta else {})
