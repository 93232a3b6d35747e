"""History blob codecs: every codec gives back the packed rows it was given, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from streamer.apdb.blob_codec import CODECS, SSTABLE_COMPRESSION, check_codec, decode_rows, encode_rows
from streamer.apdb.columns import DIA_FORCED_SOURCE, DIA_SOURCE
from streamer.apdb.packed import pack_table, packed_dtype
from tests.helpers.apdb_contract import VISIT_MJD, make_sources


def _packed(kind: str, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    table = make_sources(ids * 7, ids, rng.uniform(10, 11, n), rng.uniform(-1, 1, n),
                         VISIT_MJD - rng.uniform(0, 300, n), forced=kind == DIA_FORCED_SOURCE)
    table["psfFlux"] = rng.normal(100.0, 30.0, n).astype(np.float32)
    return pack_table(kind, table)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", [DIA_SOURCE, DIA_FORCED_SOURCE])
def test_round_trip_of_several_blobs(kind, codec):
    packed = _packed(kind, 57)
    cuts = [0, 1, 20, 57]  # a one-row blob, then two longer ones
    blobs = [encode_rows(packed[a:b], codec) for a, b in zip(cuts[:-1], cuts[1:])]
    decoded = decode_rows(kind, blobs, codec)
    assert decoded.dtype == packed_dtype(kind)
    assert decoded.tobytes() == packed.tobytes()
    assert len(decode_rows(kind, [], codec)) == 0


def test_lz4_shuffle_is_smaller_and_works_on_row_selections():
    packed = _packed(DIA_SOURCE, 400)
    every_other = packed[::2]  # not contiguous
    blob = encode_rows(every_other, "lz4-shuffle")
    assert decode_rows(DIA_SOURCE, [blob], "lz4-shuffle").tobytes() == np.ascontiguousarray(every_other).tobytes()
    raw = encode_rows(packed, "none")
    assert len(raw) == packed.nbytes
    # Mostly-null rows (as the test tables are) compress many times; the benchmark's random rows about 2x.
    assert len(encode_rows(packed, "lz4-shuffle")) < len(raw) / 4


def test_a_blob_of_another_codec_or_table_is_refused():
    packed = _packed(DIA_SOURCE, 10)
    with pytest.raises(InputError, match="lz4-shuffle"):
        decode_rows(DIA_SOURCE, [encode_rows(packed, "none")], "lz4-shuffle")
    with pytest.raises(InputError, match="whole packed rows"):
        decode_rows(DIA_FORCED_SOURCE, [encode_rows(packed[:1], "lz4-shuffle")], "lz4-shuffle")


def test_codec_names():
    assert set(SSTABLE_COMPRESSION) == set(CODECS)
    assert check_codec("none") == "none"
    with pytest.raises(ValueError, match="lz4-shuffle"):
        check_codec("gzip")
