"""build_alerts: one alert per DiaSource at or above the distribution threshold (Rubin's minReliability)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from streamer.alerts.builder import build_alerts
from streamer.apdb.base import RegionData
from streamer.apdb.columns import empty_table
from tests.helpers.apdb_contract import VISIT_MJD, make_objects, make_sources


def _outputs(reliability):
    ids = np.arange(1, len(reliability) + 1)
    ra, dec = 10.0 + 1e-3 * ids, np.full(len(ids), -5.0)
    sources = make_sources(ids + 100, ids, ra, dec, np.full(len(ids), VISIT_MJD))
    sources["reliability"] = np.asarray(reliability, np.float32)
    return SimpleNamespace(exposure=SimpleNamespace(info=SimpleNamespace(mjd_mid_tai=VISIT_MJD)),
                           dia_objects=make_objects(ids, ra, dec), dia_sources=sources, cutouts={})


def test_threshold_selects_the_distributed_sources():
    outputs = _outputs([0.1, 0.59, 0.6, 0.95, np.nan])
    region = RegionData(empty_table("DiaObject"), empty_table("DiaSource"), empty_table("DiaForcedSource"))
    assert [a["diaSourceId"] for a in build_alerts(outputs, region)] == [101, 102, 103, 104, 105]
    kept = build_alerts(outputs, region, min_reliability=0.6)
    assert [a["diaSourceId"] for a in kept] == [103, 104]  # below the cut or unscored: stored, not distributed
    assert all(a["diaObject"]["diaObjectId"] == a["diaSource"]["diaObjectId"] for a in kept)
