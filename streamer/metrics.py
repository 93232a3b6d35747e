"""Prometheus metrics of the worker (served on ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from streamer.alerts import now_mjd_tai

STAGE_SECONDS = Histogram("blink_stage_seconds", "Time spent in each pipeline stage per CCD", ["stage"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))
CCD_SECONDS = Histogram("blink_ccd_seconds", "End-to-end time of one CCD (inputs to alerts acknowledged)",
                        buckets=(0.5, 1, 2, 4, 8, 16, 32, 64, 128))
ALERT_LATENCY_SECONDS = Histogram("blink_alert_latency_seconds",
                                  "Shutter close to alerts acknowledged (live data only)",
                                  buckets=(5, 10, 20, 30, 60, 120, 300, 600))
ALERTS = Counter("blink_alerts_total", "Alerts published and acknowledged")
DEAD_LETTERS = Counter("blink_dead_letters_total", "Work sent to the dead-letter sink", ["reason", "stage"])


def observe_ccd(timings: dict[str, float], total_s: float, n_alerts: int, shutter_close_mjd_tai: float) -> None:
    """Record one processed CCD."""
    for stage, seconds in timings.items():
        STAGE_SECONDS.labels(stage=stage).observe(seconds)
    CCD_SECONDS.observe(total_s)
    ALERTS.inc(n_alerts)
    latency_s = (now_mjd_tai() - shutter_close_mjd_tai) * 86400.0
    if 0 <= latency_s < 86400:
        ALERT_LATENCY_SECONDS.observe(latency_s)
