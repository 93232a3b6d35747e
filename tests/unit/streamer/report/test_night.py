"""The night report's choices: which DiaObjects are new and brightest, and from when latency is counted."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from streamer.apdb.ccd_timings import CcdTiming, timings_table
from streamer.report.html import LATENCY_GOAL_S, alert_latencies, render_night
from streamer.report.night import NightFacts, new_objects_of


def _sources() -> Table:
    return Table({"diaSourceId": [11, 12, 21, 31, 41], "diaObjectId": [1, 1, 2, 3, 4],
                  "psfFlux": [500.0, 900.0, 3000.0, np.nan, 50.0], "visit": [7] * 5, "detector": [35] * 5,
                  "ra": [10.0] * 5, "dec": [-5.0] * 5, "midpointMjdTai": [60000.2] * 5,
                  "psfFluxErr": [10.0] * 5, "band": ["g"] * 5, "reliability": [0.9] * 5})


def _objects() -> Table:
    # object 2 was first seen an earlier night: not new
    return Table({"diaObjectId": [1, 2, 3, 4], "firstDiaSourceMjdTai": [60000.2, 59990.1, 60000.2, 60000.2],
                  "ra": [10.0] * 4, "dec": [-5.0] * 4, "nDiaSources": [2, 5, 1, 1]})


def test_new_objects_are_first_seen_tonight_brightest_first():
    new = new_objects_of(_sources(), _objects(), 60000.0, n=10)
    assert new["diaObjectId"].tolist() == [1, 4, 3]  # 2 is old; 3's only flux is NaN: last
    assert new["peakDiaSourceId"].tolist() == [12, 41, 31] and new["peakPsfFlux"][0] == 900.0
    assert new_objects_of(_sources(), _objects(), 60000.0, n=1)["diaObjectId"].tolist() == [1]


def _timing(visit: int, detector: int, shutter: float, started_after_s: float, published_after_s: float):
    return CcdTiming(visit=visit, detector=detector, shutter_close_mjd_tai=shutter,
                     started_mjd_tai=shutter + started_after_s / 86400, published_mjd_tai=shutter +
                     published_after_s / 86400, total_s=published_after_s - started_after_s, n_alerts=3,
                     n_dia_sources=3, n_new_dia_objects=1, stage_s={"isr": 2.0})


def test_latency_from_shutter_close_live_and_from_take_up_on_replay():
    live = timings_table([_timing(1, 1, 60000.1, 4.0, 30.0), _timing(1, 2, 60000.1, 30.0, 55.0)])
    latency, basis = alert_latencies(live)
    assert basis == "from shutter close" and np.allclose(latency, [30.0, 55.0], atol=1e-3)
    # replayed two years later: counted from the first CCD's start of each exposure
    late = 2 * 365 * 86400.0
    replay = timings_table([_timing(1, 1, 60000.1, late, late + 26.0), _timing(1, 2, 60000.1, late + 26.0,
                                                                                 late + 50.0)])
    latency, basis = alert_latencies(replay)
    assert basis.startswith("replay") and np.allclose(latency, [26.0, 50.0], atol=1e-2)


def test_page_escapes_text_and_states_the_goal():
    facts = NightFacts(window=(60000.0, 60000.75), where={"APDB": "sqlite:///<x>"},
                       timings=timings_table([_timing(1, 1, 60000.1, 4.0, 30.0)]), dia_sources=_sources(),
                       new_objects=new_objects_of(_sources(), _objects(), 60000.0, n=2),
                       dead_letters=[{"reason": "bad_input", "stage": "read_raw", "message": "<bad & raw>",
                                      "exposureId": 1, "detector": 3}])
    page = render_night(facts)
    assert "&lt;bad &amp; raw&gt;" in page and "<bad & raw>" not in page and "sqlite:///&lt;x&gt;" in page
    assert f"goal {LATENCY_GOAL_S:.0f} s" in page and page.count("data:image/png;base64,") == 3 + 2 * 2
