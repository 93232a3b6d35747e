"""The history a region read returns with its DiaObjects: DiaSource and DiaForcedSource rows of the
objects, within :data:`~streamer.apdb.base.HISTORY_DAYS` before the visit (both stores)."""

from __future__ import annotations

import numpy as np

from streamer.apdb.base import HISTORY_DAYS
from streamer.apdb.packed import take_rows

__all__ = ["history_window", "select_history"]


def history_window(visit_mjd_tai: float) -> tuple[float, float]:
    """[start, end) of the DiaSource/DiaForcedSource history read for a visit, MJD TAI."""
    return visit_mjd_tai - HISTORY_DAYS, visit_mjd_tai


def select_history(packed: np.ndarray, object_ids: np.ndarray, visit_mjd_tai: float) -> np.ndarray:
    """Packed rows whose diaObjectId is in ``object_ids`` and midpointMjdTai in the history window."""
    if len(packed) == 0:
        return packed
    lo, hi = history_window(visit_mjd_tai)
    t = packed["midpointMjdTai"]
    keep = np.isin(packed["diaObjectId"], object_ids) & (t >= lo) & (t < hi)
    if "diaObjectId__null" in packed.dtype.names:
        keep &= packed["diaObjectId__null"] == 0
    return take_rows(packed, keep)
