"""The contract of the CCD timing table (:mod:`streamer.apdb.ccd_timings`), checked on either APDB store."""

from __future__ import annotations

import numpy as np

from streamer.apdb.ccd_timings import CcdTiming, open_ccd_timings, timings_table

NIGHT_MJD = 60500.1


def _timing(visit: int, detector: int, shutter_close: float, *, total_s: float = 20.0) -> CcdTiming:
    return CcdTiming(visit=visit, detector=detector, shutter_close_mjd_tai=shutter_close,
                     started_mjd_tai=shutter_close + 5.0 / 86400, published_mjd_tai=shutter_close + 31.5 / 86400,
                     total_s=total_s, n_alerts=7, n_dia_sources=9, n_new_dia_objects=3,
                     stage_s={"isr": 1.25, "subtract": 4.5})


def check_timing_log(apdb) -> None:
    """Rows come back as written, a second write of a CCD-visit replaces its row, reads keep the shutter-close
    range (crossing an MJD day), and the table view has one column per stage."""
    log = open_ccd_timings(apdb)
    try:
        first = _timing(1, 35, NIGHT_MJD)
        log.record(first)
        log.record(_timing(1, 35, NIGHT_MJD, total_s=22.0))  # a replay of the CCD-visit
        log.record(_timing(2, 28, NIGHT_MJD + 0.95))  # after midnight in MJD: the next day's partition
        log.record(_timing(3, 1, NIGHT_MJD + 3.0))  # another night
        every = log.read()
        assert [(t.visit, t.detector) for t in every] == [(1, 35), (2, 28), (3, 1)]
        assert every[0].total_s == 22.0 and every[0].stage_s == {"isr": 1.25, "subtract": 4.5}
        assert abs(every[0].latency_s - 31.5) < 1e-3  # MJD doubles: about 1 us at MJD 6e4
        night = log.read(NIGHT_MJD - 0.1, NIGHT_MJD + 1.0)
        assert [t.visit for t in night] == [1, 2]
        table = timings_table(night)
        assert table["stage_isr_s"].tolist() == [1.25, 1.25] and table["n_alerts"].tolist() == [7, 7]
        assert np.allclose(table["latency_s"], 31.5, atol=1e-3)
    finally:
        log.close()
