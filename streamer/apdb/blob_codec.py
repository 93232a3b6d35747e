"""How a run of packed rows becomes one ``apdb_rows`` blob of the Cassandra history tables, and back.

A blob holds packed rows (:func:`streamer.apdb.packed.packed_dtype`) back to back. With the ``lz4-shuffle``
codec the rows' bytes are first transposed (byte 0 of every row, then byte 1, ...: the "shuffle" filter of
Blosc and HDF5, so that a column's flags, exponents and string padding sit together) and then compressed as
one LZ4 block. On the 1M-object benchmark, where every float column holds random values, this makes the
DiaSource blobs 2.0 times smaller (LZ4 alone: 1.6 times, about what Cassandra's own sstable compression
does), a CCD's DiaSource query costs Cassandra about a quarter less CPU (the whole region read about a
sixth), and the client spends 3-5 ms more decoding the 9 MB. Real rows, with many null columns, compress
further. ``none`` keeps the packed bytes as they are (APDBs created before schema 4.2.0).

The codec of a keyspace is fixed when it is created and recorded in its metadata
(:data:`CODEC_METADATA_KEY`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.errors import InputError
from streamer.apdb.columns import TableSpec
from streamer.apdb.packed import packed_dtype, unpack_packed

__all__ = ["CODECS", "DEFAULT_CODEC", "CODEC_METADATA_KEY", "SSTABLE_COMPRESSION", "encode_rows", "decode_rows",
           "check_codec"]

CODECS = ("none", "lz4-shuffle")
"""Known blob codecs."""
DEFAULT_CODEC = "lz4-shuffle"
"""Codec of a new keyspace."""
CODEC_METADATA_KEY = "history_blob_codec"
"""ApdbMetadata entry holding a keyspace's codec (absent before schema 4.2.0: ``none``)."""
SSTABLE_COMPRESSION = {"none": "{'class': 'LZ4Compressor'}", "lz4-shuffle": "{'enabled': 'false'}"}
"""Cassandra's own compression of the history tables for each codec: compressed blobs are not compressed
again (Cassandra CPU of a CCD's DiaSource read: 49-60 ms with it off, 53-67 ms with LZ4 on the compressed
blobs, 67-83 ms for raw blobs in LZ4 sstables; the same disk space)."""


def check_codec(codec: str) -> str:
    """Return ``codec`` when it is one of :data:`CODECS`; raise ``ValueError`` otherwise."""
    if codec not in CODECS:
        raise ValueError(f"unknown history blob codec {codec!r}: expected one of {', '.join(CODECS)}")
    return codec


def encode_rows(packed: np.ndarray, codec: str) -> bytes:
    """One blob holding the packed rows ``packed`` (a contiguous structured array of packed rows)."""
    if codec == "none":
        return packed.tobytes()
    import lz4.block

    rows = np.ascontiguousarray(packed).view(np.uint8).reshape(len(packed), packed.dtype.itemsize)
    shuffled = np.ascontiguousarray(rows.T)
    return lz4.block.compress(shuffled, store_size=True)


def decode_rows(kind: str | TableSpec, blobs: Sequence[bytes], codec: str) -> np.ndarray:
    """Join blobs written by :func:`encode_rows` into one structured array of :func:`packed_dtype` rows.

    Raises
    ------
    InputError
        A blob is not a run of packed rows of this table in this codec.
    """
    if codec == "none" or not blobs:
        return unpack_packed(kind, blobs)
    import lz4.block

    dtype = packed_dtype(kind)
    try:
        raws = [lz4.block.decompress(blob) for blob in blobs]
    except lz4.block.LZ4BlockError as exc:
        raise InputError(f"{dtype.itemsize}-byte rows: a history blob is not {codec} ({exc}); another APDB "
                         "schema version?", stage="apdb") from exc
    sizes = np.fromiter(map(len, raws), np.int64, len(raws))
    if (sizes == 0).any() or (sizes % dtype.itemsize).any():
        bad = int(sizes[(sizes == 0) | (sizes % dtype.itemsize != 0)][0])
        raise InputError(f"a {codec} history blob holds {bad} bytes, not whole packed rows of "
                         f"{dtype.itemsize} bytes (another APDB schema version?)", stage="apdb")
    counts = (sizes // dtype.itemsize).tolist()
    rows = np.empty((sum(counts), dtype.itemsize), np.uint8)  # C order: whole records
    # Each blob, (itemsize, n) bytes, seen as its transpose (n rows of itemsize bytes) without a copy.
    np.concatenate([np.ndarray((n, dtype.itemsize), np.uint8, raw, 0, (1, n)) for raw, n in zip(raws, counts)],
                   out=rows)
    return rows.view(dtype).reshape(-1)
