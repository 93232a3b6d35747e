"""The newest DiaObject versions: which row of each object a region read keeps, and which a write supersedes.

Work on packed rows (:func:`streamer.apdb.packed.packed_dtype`) and on (id, part, valid) records read back
from DiaObject.
"""

from __future__ import annotations

import numpy as np

from streamer.apdb.packed import take_rows

__all__ = ["newest_rows", "newest_per_object", "version_keys", "newest_version"]


def newest_rows(ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Index of the newest row (largest ``valid``) of each id, in id order."""
    order = np.lexsort((valid, ids))
    sorted_ids = ids[order]
    return order[np.r_[sorted_ids[1:] != sorted_ids[:-1], True]]


def newest_per_object(objects: np.ndarray) -> np.ndarray:
    """Packed DiaObjectLast rows with one row per diaObjectId, the newest (a row a store failed to delete from
    the pixel an object moved out of must not make it two objects)."""
    if len(objects) < 2:
        return objects
    newest = newest_rows(objects["diaObjectId"], objects["validityStartMjdTai"])
    return objects if len(newest) == len(objects) else take_rows(objects, newest)


def version_keys(ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One comparable value per (diaObjectId, validityStartMjdTai) pair (16 bytes)."""
    keys = np.empty(len(ids), dtype=[("id", "<i8"), ("valid", "<f8")])
    keys["id"], keys["valid"] = ids, valid
    return keys.view("V16")


def newest_version(versions: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel and validity of the newest of ``versions`` (id, part, valid records) of each of ``ids``; -1 and
    -inf for an id without one."""
    part, valid = np.full(len(ids), -1, np.int64), np.full(len(ids), -np.inf)
    if len(versions) == 0:
        return part, valid
    newest = newest_rows(versions["id"], versions["valid"])
    newest_ids = versions["id"][newest]
    at = np.clip(np.searchsorted(newest_ids, ids), 0, len(newest) - 1)
    found = newest_ids[at] == ids
    part[found], valid[found] = versions["part"][newest[at[found]]], versions["valid"][newest[at[found]]]
    return part, valid
