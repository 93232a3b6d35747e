"""Template tiles are memory-mapped: the warp reads only the part a CCD needs, a worker holds page cache
rather than whole tiles, and a damaged tile is a clear input error."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from streamer.worker.inputs import DataRepository


def _tile_paths(root):
    return sorted((root / "templates").glob("*/*.fits"))


def test_tiles_are_memory_maps_with_the_file_values(night_copy):
    from astropy.io import fits

    repo = DataRepository(night_copy)
    path = _tile_paths(night_copy)[0]
    tile = repo._tile(str(path.relative_to(night_copy)), 1)
    assert tile.image.dtype == np.dtype(">f4")  # the file's byte order: nothing converted at load time
    with fits.open(path, memmap=False) as hdus:
        assert np.array_equal(np.asarray(tile.image), hdus["IMAGE"].data, equal_nan=True)
        assert np.array_equal(np.asarray(tile.variance), hdus["VARIANCE"].data, equal_nan=True)
        assert np.array_equal(np.asarray(tile.mask), hdus["MASK"].data)


def test_truncated_tile_is_an_input_error(night_copy):
    path = _tile_paths(night_copy)[0]
    data = path.read_bytes()
    path.unlink()  # a hard link to the shared night: write a new file, do not truncate the shared one
    path.write_bytes(data[: len(data) // 2])
    repo = DataRepository(night_copy)
    with pytest.raises(InputError, match="unreadable template tile"):
        repo._tile(str(path.relative_to(night_copy)), 1)
