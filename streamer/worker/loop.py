"""The worker: take exposure-ready events or per-CCD work, run the pipeline, write the APDB, publish alerts.

For each CCD: gather inputs (raw, calibrations, reference stars, templates, APDB region) -> pipeline ->
APDB upserts -> alerts acknowledged -> only then is the message committed. Bad input goes to the
dead-letter sink with the reason and stage (:class:`~streamer.worker.error_policy.ErrorPolicy`); transient
faults are retried with backoff and never dead-lettered. What surrounds each message (fan-out, retries,
commits, transactions) is the worker's :mod:`commit mode <streamer.worker.commit_modes>`; one CCD's work is
:class:`~streamer.worker.processor.CcdProcessor`'s.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pipeline.errors import InputError, TransientError
from streamer.events.fan_out import fan_out
from streamer.events.files import read_event_file
from streamer.events.records import CcdWork, decode_event, decode_work
from streamer.ports import DeadLetterSink, Envelope, EventSource
from streamer.runtime import metrics
from streamer.worker.commit_modes import CommitMode, EmbeddedCommit
from streamer.worker.error_policy import ErrorPolicy
from streamer.worker.ordering import Unordered, WorkOrder
from streamer.worker.processor import CcdResult, Processor

__all__ = ["RetryPolicy", "Worker"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class RetryPolicy:
    """Backoff for transient faults: ``initial_s * 2**k`` capped at ``max_s``, ``max_tries`` in all
    (0 = forever, for long-running consumers)."""

    initial_s: float = 1.0
    max_s: float = 30.0
    max_tries: int = 5

    def run(self, what: str, call: Callable[[], T], stop: Callable[[], bool],
            keepalive: Callable[[], None] | None = None) -> T:
        """Call ``call`` until it does not raise TransientError.

        ``keepalive`` is called about once a second while waiting (a Kafka consumer polls with its partitions
        paused, so a long outage does not exceed ``max.poll.interval.ms``)."""
        tries = 0
        while True:
            try:
                return call()
            except TransientError as err:
                tries += 1
                if (self.max_tries and tries >= self.max_tries) or stop():
                    raise
                delay = min(self.initial_s * 2 ** (tries - 1), self.max_s)
                log.warning("%s: transient failure (%s); retry %d in %.1f s", what, err, tries, delay)
                metrics.RETRIES.inc()
                deadline = time.monotonic() + delay
                while (left := deadline - time.monotonic()) > 0 and not stop():
                    time.sleep(min(left, 1.0))
                    if keepalive is not None:
                        keepalive()


@dataclass
class Worker:
    """The consumer loop (STYLE.md convention 8): poll -> decode -> process -> publish -> commit.

    Parameters
    ----------
    source : EventSource
        Exposure-ready events or ccdWork items.
    processor : Processor
        Processes one CCD (:class:`~streamer.worker.processor.CcdProcessor`); its alert sink receives the alerts.
    dead_letters : DeadLetterSink
        Where the error policy sends dead letters.
    commit : CommitMode
        Embedded (default), at-least-once or exactly-once (:mod:`streamer.worker.commit_modes`).
    order : WorkOrder
        When a work item may be processed (default: as it comes; see :mod:`streamer.worker.ordering`).
    retry : RetryPolicy
        Backoff for transient faults.
    keep_outputs : bool
        Keep each CCD's pipeline outputs in :attr:`results` (tests and benchmarks).
    """

    source: EventSource
    processor: Processor
    dead_letters: DeadLetterSink
    commit: CommitMode = field(default_factory=EmbeddedCommit)
    order: WorkOrder = field(default_factory=Unordered)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    results: list[CcdResult] = field(default_factory=list)
    keep_outputs: bool = False
    on_error: ErrorPolicy = field(init=False)
    """The error policy: dead-letter a failure of the data, raise a transient fault."""
    _stopping: bool = False
    _lag_checked: float = 0.0

    def __post_init__(self) -> None:
        self.on_error = ErrorPolicy(self.dead_letters)

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stopping

    def stop(self, *_: object) -> None:
        """Finish the current CCD, then leave the loop (SIGTERM handler)."""
        log.info("stop requested; finishing the current CCD")
        self._stopping = True

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT set the stop flag."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, *, until_idle: bool = True, idle_timeout_s: float = 1.0) -> list[CcdResult]:
        """Process messages until the source is empty (``until_idle``) or a stop is requested.

        A stop request (SIGTERM) lets the current CCD finish, commits it, then leaves the loop.
        """
        try:
            while not self._stopping:
                envelope = self.source.poll(idle_timeout_s)
                metrics.HEALTH.beat()
                if envelope is None:
                    self._observe_lag()
                    if until_idle and not self.source.has_deferred:
                        break
                    continue
                if not self._not_its_turn(envelope):
                    self.commit.deliver(envelope, self.handle, self)
                    metrics.HEALTH.beat()
                    self._observe_lag()
        finally:
            self.processor.alert_sink.flush()
        return self.results

    def retried(self, what: str, call: Callable[[], T]) -> T:
        """``call`` under the retry policy (an APDB or broker outage must not stop the worker), with
        keepalives of the source while waiting."""
        return self.retry.run(what, call, lambda: self._stopping, self.source.keepalive)

    def _observe_lag(self, every_s: float = 15.0) -> None:
        now = time.monotonic()
        if now - self._lag_checked < every_s:
            return
        self._lag_checked = now
        metrics.observe_lag(self.source.lag())

    def _not_its_turn(self, envelope: Envelope) -> bool:
        """Hand a work item back (uncommitted) while earlier overlapping work is unfinished; True if handed back."""
        if not self.commit.is_work(envelope):
            return False
        try:
            item = decode_work(envelope.value)
        except InputError:
            return False  # handle() dead-letters it
        if self.order.is_turn(item, self.retried):
            return False
        log.debug("%s: earlier overlapping work unfinished; handed back", envelope.where())
        metrics.WORK_DEFERRED.inc()
        self.source.defer(envelope)
        return True

    def handle(self, envelope: Envelope) -> bool:
        """Handle one message; True when it may be committed."""
        try:
            items = self._work_of(envelope)
        except InputError as err:
            self._failed(err, envelope)
            return True
        is_work = self.commit.is_work(envelope)
        for k, item in enumerate(items):
            if self._stopping:
                return False
            if k + 1 < len(items):
                self.processor.prefetch(items[k + 1].exposure, items[k + 1].detector)
            self._process_item(item, envelope)
            if is_work:
                self.order.done(item, self.retried)
        return True

    def _work_of(self, envelope: Envelope) -> list[CcdWork]:
        """The CCDs to process here: the work item, the CCDs of an exposure (embedded), or none (an exposure
        fanned out to work items)."""
        if self.commit.is_work(envelope):
            return [decode_work(envelope.value)]
        event = decode_event(envelope.value) if envelope.path is None else read_event_file(envelope.path)
        self.processor.check_exposure(event)  # once per exposure, before its sky is claimed or a CCD read
        if not self.commit.fans_out:
            return [CcdWork(exposure=event, detector=d) for d in event.detectors or self.processor.raw_ccds(event)]
        items = fan_out(event) if event.detectors is not None else \
            fan_out(event, all_detectors=self.processor.raw_ccds(event))
        self.order.register(items, self.retried)
        self.commit.publish_work(items)
        return []

    def _process_item(self, item: CcdWork, envelope: Envelope) -> None:
        what = f"visit {item.exposure.exposure_id} detector {item.detector}"
        try:
            result = self.commit.process(what, lambda: self.processor.process(item.exposure, item.detector), self)
        except Exception as err:  # a bug in one CCD must not stop the night: the policy dead-letters it
            self._failed(err, envelope, item)
            return
        log.info("%s: %d alerts in %.2f s", what, result.n_alerts, result.seconds)
        if not self.keep_outputs:
            result.outputs = None
        self.results.append(result)

    def _failed(self, err: Exception, envelope: Envelope, item: CcdWork | None = None) -> None:
        """Hand a failure to the error policy (which raises what must not be committed) and record it."""
        exposure_id, detector = (item.exposure.exposure_id, item.detector) if item is not None else (None, None)
        self.on_error(err, envelope, exposure_id=exposure_id, detector=detector)
        self.results.append(CcdResult(exposure_id or -1, detector or -1, None, 0, error=err))
