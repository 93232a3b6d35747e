"""Prometheus metrics of the worker and its health endpoint (served on ``--metrics-port``).

``GET /metrics`` is the Prometheus exposition; ``GET /healthz`` answers 200 while the worker loop has
beaten within :attr:`Health.stale_after_s` seconds and 503 otherwise (JSON body either way).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from streamer.alerts.framing import now_mjd_tai

STAGE_SECONDS = Histogram("blink_stage_seconds", "Time spent in each pipeline stage per CCD", ["stage"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))
CCD_SECONDS = Histogram("blink_ccd_seconds", "End-to-end time of one CCD (inputs to alerts acknowledged)",
                        buckets=(0.5, 1, 2, 4, 8, 16, 32, 64, 128))
ALERT_LATENCY_SECONDS = Histogram("blink_alert_latency_seconds",
                                  "Shutter close to alerts acknowledged (live data only)",
                                  buckets=(5, 10, 20, 30, 60, 120, 300, 600))
ALERTS = Counter("blink_alerts_total", "Alerts published and acknowledged")
DEAD_LETTERS = Counter("blink_dead_letters_total", "Work sent to the dead-letter sink", ["reason", "stage"])
RETRIES = Counter("blink_transient_retries_total", "Transient failures retried with backoff")
WORK_DEFERRED = Counter("blink_work_deferred_total", "Work items handed back while earlier overlapping work "
                        "was unfinished (association in time order)")
CONSUMER_LAG = Gauge("blink_consumer_lag_messages", "High watermark minus position, per assigned partition",
                     ["topic", "partition"])


class Health:
    """Liveness of the worker loop: the loop calls :meth:`beat` after every poll and every message."""

    def __init__(self, stale_after_s: float = 1200.0) -> None:
        self.stale_after_s = stale_after_s
        self.last_beat = time.monotonic()
        self.started = time.monotonic()

    def beat(self) -> None:
        """Record that the loop is alive."""
        self.last_beat = time.monotonic()

    def status(self) -> tuple[bool, dict[str, float | bool]]:
        """Return ``(healthy, details)``."""
        age = time.monotonic() - self.last_beat
        ok = age < self.stale_after_s
        return ok, {"ok": ok, "last_beat_age_s": round(age, 3), "uptime_s": round(time.monotonic() - self.started, 3)}


HEALTH = Health()
"""Stale after 20 min: longer than ``max.poll.interval.ms`` (15 min) plus one CCD."""


def observe_ccd(timings: dict[str, float], total_s: float, n_alerts: int, shutter_close_mjd_tai: float) -> None:
    """Record one processed CCD."""
    for stage, seconds in timings.items():
        STAGE_SECONDS.labels(stage=stage).observe(seconds)
    CCD_SECONDS.observe(total_s)
    ALERTS.inc(n_alerts)
    latency_s = (now_mjd_tai() - shutter_close_mjd_tai) * 86400.0
    if 0 <= latency_s < 86400:
        ALERT_LATENCY_SECONDS.observe(latency_s)


def observe_lag(lag: dict[tuple[str, int], int]) -> None:
    """Set the consumer-lag gauge from ``{(topic, partition): lag}``."""
    for (topic, partition), value in lag.items():
        CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(value)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path.startswith("/healthz"):
            ok, details = HEALTH.status()
            body, code, ctype = json.dumps(details).encode(), 200 if ok else 503, "application/json"
        elif self.path.startswith("/metrics") or self.path == "/":
            body, code, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
        else:
            body, code, ctype = b"not found\n", 404, "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # keep access logs out of the worker's logs
        pass


def serve(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` from a daemon thread; return the server
    (``server.server_address[1]`` is the port when 0 was asked; ``shutdown()`` stops it)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="blink-metrics", daemon=True).start()
    return server
