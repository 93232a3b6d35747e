"""The worker loop with fake ports: transactions per message, retries, dead letters, SIGTERM, health."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

from pipeline.errors import AlgorithmError, InputError, NoWorkError, TransientError
from streamer.errors import FencedError
from streamer.events.files import write_event_file
from streamer.events.records import CcdWork, ExposureReady, encode_event, encode_work
from streamer.ports import Envelope
from streamer.runtime import metrics
from streamer.worker.commit_modes import AtLeastOnceCommit, EmbeddedCommit, ExactlyOnceCommit
from streamer.worker.inputs import DataRepository
from streamer.worker.loop import RetryPolicy, Worker
from streamer.worker.processor import CcdResult

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

    def defer(self, envelope, delay_s=0.5):
        self.envelopes.append(envelope)

    has_deferred = False

    def owns(self, envelope):
        return True

    def lag(self):
        return {}

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

    def was_committed(self, envelope):
        return False

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

    def prefetch(self, event, detector):
        pass

    def check_exposure(self, event):
        pass

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
    commit = ExactlyOnceCommit(txn, WORK_TOPIC) if transactional else AtLeastOnceCommit(WORK_TOPIC, txn.publish_work)
    worker = Worker(source=source, processor=proc, dead_letters=txn, commit=commit,
                    retry=RetryPolicy(initial_s=0.01, max_s=0.01, max_tries=3))
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


def _event_envelope(offset: int, detectors=(1, 5)) -> Envelope:
    return Envelope(value=encode_event(_event(detectors)), topic="events", partition=0, offset=offset)


def test_exactly_once_fans_an_exposure_out_in_its_transaction():
    worker, _, txn, proc = _worker([_event_envelope(2)])
    worker.run()
    assert txn.log == [("begin",), ("work", 2), ("commit", 2)] and proc.calls == []


def test_at_least_once_fans_out_then_commits():
    worker, source, txn, proc = _worker([_event_envelope(6)], transactional=False)
    txn.open = True
    worker.run()
    assert ("work", 2) in txn.log and source.committed == [6] and proc.calls == []


def test_embedded_mode_processes_every_ccd_of_an_event_file(tmp_path):
    path = write_event_file(tmp_path / "e.avro", _event((5, 1)))
    txn = FakeTransactions()
    txn.open = True
    source = FakeSource([Envelope(value=path.read_bytes(), path=path)])
    proc = FakeProcessor(txn, {5: [NoWorkError("no template covers the CCD", stage="load_template")]})
    worker = Worker(source=source, processor=proc, dead_letters=txn, commit=EmbeddedCommit())
    results = worker.run()
    assert proc.calls == [5, 1] and source.committed == [None]
    assert ("dead_letter", "no_work", "load_template") in txn.log  # the policy records no work too
    assert [(r.detector, r.error is None) for r in results] == [(5, False), (1, True)]


def test_a_bug_in_one_ccd_is_an_internal_error_dead_letter():
    worker, _, txn, _ = _worker([_work_envelope(1, 3)], script={1: [ZeroDivisionError("bug")]})
    worker.run()
    assert txn.log == [("begin",), ("dead_letter", "internal_error", "unknown"), ("commit", 3)]


class FakeOrder:
    """Work claims: detector 1's turn comes only after one hand-back."""

    def __init__(self):
        self.asked: list[int] = []
        self.released: list[int] = []

    def register(self, items, retried):
        pass

    def is_turn(self, item, retried):
        self.asked.append(item.detector)
        return self.asked.count(item.detector) > 1

    def done(self, item, retried):
        self.released.append(item.detector)

    def close(self):
        pass


def test_work_whose_turn_has_not_come_is_handed_back():
    worker, source, txn, proc = _worker([_work_envelope(1, 4)])
    worker.order = FakeOrder()
    worker.run()
    assert worker.order.asked == [1, 1] and worker.order.released == [1]
    assert proc.calls == [1] and txn.log == [("begin",), ("alerts", 1), ("commit", 4)]


def test_a_message_already_committed_is_skipped():
    worker, _, txn, proc = _worker([_work_envelope(1, 5), _work_envelope(1, 5)])
    worker.run()
    assert proc.calls == [1] and txn.log.count(("commit", 5)) == 1


def test_data_repository_resolves_inside_its_root(tmp_path):
    root = tmp_path / "root"
    (root / "raw").mkdir(parents=True)
    repo = DataRepository(root)
    assert repo.resolve("raw/x.fits") == (root / "raw/x.fits").resolve()
    (root / "escape").symlink_to(tmp_path)
    for outside in ("escape/x.fits", "../x.fits", "/etc/passwd"):
        with pytest.raises(InputError, match="escapes the data root"):
            repo.resolve(outside)
    with pytest.raises(InputError, match="cannot be resolved"):
        repo.resolve("raw/\x00.fits")
