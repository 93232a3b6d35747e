"""The worker loop with fake ports: transactions per message, retries, dead letters, SIGTERM, health."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

from pipeline.errors import AlgorithmError, InputError, TransientError
from streamer.errors import FencedError
from streamer.events.records import CcdWork, ExposureReady, encode_work
from streamer.ports import Envelope
from streamer.runtime import metrics
from streamer.worker.loop import CcdResult, RetryPolicy, Worker

WORK_TOPIC = "work"


def _event(detectors=(1, 5)) -> ExposureReady:
    return ExposureReady(event_id="DECam-00123456", instrument="DECam", exposure_id=123456,
                         raw_path="raw/x.fits.fz", band="r", midpoint_mjd_tai=60310.1,
                         shutter_close_mjd_tai=60310.1005, ra=150.1, dec=2.2, detectors=detectors)


def _work_envelope(detector: int, offset: int) -> Envelope:
    return Envelope(value=encode_work(CcdWork(exposure=_event(), detector=detector)), topic=WORK_TOPIC,
                    partition=0, offset=offset)


class FakeSource:
    def __init__(self, envelopes):
        self.envelopes = list(envelopes)
        self.committed: list[int] = []
        self.n_keepalive = 0

    def poll(self, timeout_s=1.0):
        return self.envelopes.pop(0) if self.envelopes else None

    def commit(self, envelope):
        self.committed.append(envelope.offset)

    def keepalive(self):
        self.n_keepalive += 1

    def close(self):
        pass


class FakeTransactions:
    """Records the transaction protocol; doubles as the alert and dead-letter sink."""

    def __init__(self):
        self.log: list[tuple] = []
        self.open = False

    def begin(self):
        assert not self.open
        self.open = True
        self.log.append(("begin",))

    def publish(self, alerts, *, headers=()):
        assert self.open
        self.log.append(("alerts", len(alerts)))

    def send(self, record):
        assert self.open
        self.log.append(("dead_letter", record["reason"], record["stage"]))

    def publish_work(self, items):
        assert self.open
        self.log.append(("work", len(items)))

    def commit(self, envelope):
        assert self.open
        self.open = False
        self.log.append(("commit", envelope.offset))

    def abort(self):
        if self.open:
            self.open = False
            self.log.append(("abort",))

    def flush(self):
        pass

    def close(self):
        pass


class FakeProcessor:
    """Publishes one alert per CCD; ``script`` maps detector -> exceptions to raise on successive calls."""

    def __init__(self, sink, script=None, on_process=None):
        self.alert_sink = sink
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.calls: list[int] = []
        self.on_process = on_process
        self.repo = None

    def process(self, event, detector):
        self.calls.append(detector)
        if self.on_process is not None:
            self.on_process(detector)
        todo = self.script.get(detector)
        if todo:
            raise todo.pop(0)
        self.alert_sink.publish([{"diaSourceId": detector}])
        return CcdResult(event.exposure_id, detector, None, 1)


def _worker(envelopes, script=None, transactional=True, on_process=None):
    txn = FakeTransactions()
    source = FakeSource(envelopes)
    proc = FakeProcessor(txn, script, on_process)
    worker = Worker(source=source, processor=proc, dead_letters=txn, work_topic=WORK_TOPIC,
                    retry=RetryPolicy(initial_s=0.01, max_s=0.01, max_tries=3),
                    transactions=txn if transactional else None)
    return worker, source, txn, proc


def test_one_transaction_per_message_with_its_offset():
    worker, source, txn, _ = _worker([_work_envelope(1, 10), _work_envelope(5, 11)])
    results = worker.run()
    assert [r.detector for r in results] == [1, 5]
    assert txn.log == [("begin",), ("alerts", 1), ("commit", 10), ("begin",), ("alerts", 1), ("commit", 11)]
    assert source.committed == []  # offsets go through the transaction only


def test_transient_failure_aborts_and_retries_the_whole_message():
    worker, _, txn, proc = _worker([_work_envelope(1, 3)], script={1: [TransientError("apdb down", stage="apdb")]})
    results = worker.run()
    assert proc.calls == [1, 1]
    assert txn.log == [("begin",), ("abort",), ("begin",), ("alerts", 1), ("commit", 3)]
    assert len(results) == 1 and results[0].error is None


def test_transient_failure_gives_up_after_max_tries():
    errors = [TransientError("down", stage="kafka")] * 3
    worker, _, txn, _ = _worker([_work_envelope(1, 3)], script={1: errors})
    with pytest.raises(TransientError):
        worker.run()
    assert txn.log.count(("abort",)) == 3 and ("commit", 3) not in txn.log
    assert worker.results == []


def test_bad_input_is_dead_lettered_inside_the_transaction():
    worker, _, txn, _ = _worker([_work_envelope(1, 7), _work_envelope(5, 8)],
                                script={1: [AlgorithmError("psf fit failed", stage="psf")]})
    results = worker.run()
    assert txn.log[:3] == [("begin",), ("dead_letter", "algorithm_failed", "psf"), ("commit", 7)]
    assert txn.log[3:] == [("begin",), ("alerts", 1), ("commit", 8)]
    assert results[0].error is not None and results[1].error is None


def test_malformed_message_is_dead_lettered_and_committed():
    bad = Envelope(value=b"\x00garbage", topic=WORK_TOPIC, partition=0, offset=1)
    worker, _, txn, _ = _worker([bad])
    worker.run()
    assert txn.log == [("begin",), ("dead_letter", "malformed_event", "decode_event"), ("commit", 1)]


def test_fenced_producer_stops_the_worker():
    worker, _, txn, _ = _worker([_work_envelope(1, 1)], script={1: [FencedError("fenced", stage="kafka")]})
    with pytest.raises(FencedError):
        worker.run()
    assert ("commit", 1) not in txn.log


def test_non_transactional_mode_commits_after_publish():
    worker, source, txn, _ = _worker([_work_envelope(1, 4)], transactional=False)
    txn.open = True  # the fake sink accepts alerts outside a transaction in this mode
    worker.run()
    assert source.committed == [4]


def test_sigterm_finishes_the_current_ccd_then_exits():
    def on_process(detector):
        os.kill(os.getpid(), signal.SIGTERM)

    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    worker, source, txn, proc = _worker([_work_envelope(1, 1), _work_envelope(5, 2)], on_process=on_process)
    worker.install_signal_handlers()
    try:
        worker.run(until_idle=False)
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
    assert proc.calls == [1]
    assert txn.log == [("begin",), ("alerts", 1), ("commit", 1)]
    assert len(source.envelopes) == 1  # the second message was never taken


def test_retry_backoff_keeps_the_consumer_alive():
    source = FakeSource([])
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise TransientError("x", stage="kafka")
        return "ok"

    assert RetryPolicy(initial_s=1.5, max_tries=3).run("x", flaky, lambda: False, source.keepalive) == "ok"
    assert source.n_keepalive >= 1


def test_health_and_metrics_endpoint():
    server = metrics.serve(0, host="127.0.0.1")
    port = server.server_address[1]
    try:
        metrics.HEALTH.beat()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200 and json.loads(resp.read())["ok"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"blink_alerts_total" in resp.read()
        metrics.HEALTH.last_beat -= 10 * metrics.HEALTH.stale_after_s
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert info.value.code == 503
    finally:
        metrics.HEALTH.beat()
        server.shutdown()


def test_bad_input_error_is_not_retried():
    worker, _, txn, proc = _worker([_work_envelope(1, 1)], script={1: [InputError("nan image", stage="isr")]})
    worker.run()
    assert proc.calls == [1] and ("dead_letter", "bad_input", "isr") in txn.log
