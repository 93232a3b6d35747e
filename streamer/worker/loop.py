"""The worker: take exposure-ready events or per-CCD work, run the pipeline, write the APDB, publish alerts.

For each CCD: gather inputs (raw, calibrations, reference stars, templates, APDB region) -> pipeline ->
APDB upserts -> alerts acknowledged -> only then is the message committed. Bad input goes to the
dead-letter sink with the reason and stage; transient faults are retried with backoff and never
dead-lettered.
"""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, TypeVar

from pipeline.ccd import PipelineConfig, process_ccd
from pipeline.decam.header import ccd_footprint
from pipeline.errors import BlinkError, InputError, NoWorkError, TransientError
from pipeline.threads import using as pipeline_threads
from pipeline.types import CcdInputs, CcdOutputs
from streamer.runtime import metrics
from streamer.alerts.builder import build_alerts
from streamer.alerts.framing import alert_headers
from streamer.alerts.schema import AlertSchema
from streamer.apdb.base import Apdb, RegionData, SkyRegion
from streamer.decam.camera_tables import decam_camera
from streamer.decam.raw_files import list_ccds, read_raw_ccd
from streamer.worker.inputs import DataRepository
from streamer.events.dead_letters import dead_letter_record
from streamer.events.fan_out import fan_out
from streamer.events.records import CcdWork, ExposureReady, decode_event, decode_work
from streamer.errors import FencedError
from streamer.ports import AlertSink, DeadLetterSink, Envelope, EventSource

log = logging.getLogger(__name__)

T = TypeVar("T")

@dataclass
class CcdResult:
    """What processing one CCD produced (for logs, tests and the truth report)."""

    visit: int
    detector: int
    outputs: CcdOutputs | None
    n_alerts: int
    error: BaseException | None = None
    seconds: float = 0.0
    """Inputs to alerts handed to the sink (acknowledged, or produced into the open transaction)."""


class CcdProcessor:
    """Processes one CCD end to end (pure pipeline between two I/O edges).

    Parameters
    ----------
    repo : DataRepository
    apdb : Apdb
    alert_sink : AlertSink
    config : PipelineConfig
    threads : int
        Threads the pipeline uses for a CCD (:func:`pipeline.threads.using`).
    """

    def __init__(self, repo: DataRepository, apdb: Apdb, alert_sink: AlertSink,
                 config: PipelineConfig = PipelineConfig(), threads: int = 1) -> None:
        self.repo = repo
        self.apdb = apdb
        self.alert_sink = alert_sink
        self.config = config
        self.threads = max(1, int(threads))
        self.schema = AlertSchema.latest()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._prefetched: dict[tuple[int, int], Future] = {}

    def load_static(self, event: ExposureReady, detector: int) -> CcdInputs:
        """Read the inputs of one CCD that do not depend on the APDB (raw, calibrations, references,
        templates); the APDB region is left empty, to be read just before processing."""
        raw_path = self.repo.resolve(event.raw_path)
        raw = read_raw_ccd(raw_path, detector)
        info = raw.info
        ra, dec, radius = ccd_footprint(raw.header)
        empty = empty_region()
        return CcdInputs(
            raw=raw,
            bias=self.repo.bias(detector),
            flat=self.repo.flat(info.band, detector),
            refcat=self.repo.refcat_in(ra, dec, radius + 0.02),
            template_tiles=self.repo.templates_in(info.band, ra, dec, radius),
            dia_objects=empty.dia_objects,
            dia_sources=empty.dia_sources,
            dia_forced_sources=empty.dia_forced_sources,
            ccd=decam_camera().ccd(detector),
            defects=self.repo.defects(detector, info.mjd_mid_tai),
        )

    def prefetch(self, event: ExposureReady, detector: int) -> None:
        """Start reading a CCD's static inputs in the background (while the current CCD runs), as Rubin's
        prompt-processing workers preload calibrations and templates before the pixels are needed."""
        key = (event.exposure_id, detector)
        if key not in self._prefetched:
            self._prefetched[key] = self._pool.submit(self.load_static, event, detector)

    def gather(self, event: ExposureReady, detector: int) -> tuple[CcdInputs, RegionData]:
        """Every input of one CCD: the static ones (prefetched when available) and the APDB region, read
        now so that the CCD sees every earlier CCD's writes."""
        future = self._prefetched.pop((event.exposure_id, detector), None)
        static = future.result() if future is not None else self.load_static(event, detector)
        ra, dec, radius = ccd_footprint(static.raw.header)
        region = self.apdb.read_region(SkyRegion(ra, dec, radius), static.raw.info.mjd_mid_tai)
        inputs = replace(static, dia_objects=region.dia_objects, dia_sources=region.dia_sources,
                         dia_forced_sources=region.dia_forced_sources)
        return inputs, region

    def process(self, event: ExposureReady, detector: int) -> CcdResult:
        """Process one CCD: inputs -> pipeline -> APDB -> alerts (acknowledged)."""
        start = time.perf_counter()
        inputs, region = self.gather(event, detector)
        with pipeline_threads(self.threads):
            outputs = process_ccd(inputs, config=self.config)
        self.apdb.store(visit=event.exposure_id, detector=detector, dia_objects=outputs.dia_objects,
                        dia_sources=outputs.dia_sources, dia_forced_sources=outputs.dia_forced_sources)
        alerts = build_alerts(outputs, region)
        headers = alert_headers(shutter_close_mjd_tai=event.shutter_close_mjd_tai, replay=event.replay,
                                schema_id=self.schema.schema_id)
        self.alert_sink.publish(alerts, headers=headers)
        seconds = time.perf_counter() - start
        metrics.observe_ccd(outputs.metadata.get("timings_s", {}), seconds, len(alerts),
                            event.shutter_close_mjd_tai)
        return CcdResult(event.exposure_id, detector, outputs, len(alerts), seconds=seconds)


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
    processor : CcdProcessor
    dead_letters : DeadLetterSink
    fan_out_to : callable, optional
        When given, exposure events are fanned out to per-CCD work with it (Kafka mode) instead of being
        processed in line (embedded mode).
    """

    source: EventSource
    processor: CcdProcessor
    dead_letters: DeadLetterSink
    fan_out_to: Callable[[list[CcdWork]], None] | None = None
    work_topic: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    results: list[CcdResult] = field(default_factory=list)
    keep_outputs: bool = False
    transactions: Any = None
    """A :class:`streamer.kafka.transactions.KafkaTransactions` (exactly-once Kafka mode): every output of a message
    and its offset are committed in one transaction; ``None`` = produce, wait for acks, then commit."""
    claims: Any = None
    """A :class:`streamer.apdb.ordering.WorkClaims` (Kafka mode): overlapping CCD-visits associate in time
    order whatever worker gets them; ``None`` = no ordering across partitions."""
    _stopping: bool = False
    _lag_checked: float = 0.0
    _next_offset: dict = field(default_factory=dict)
    """``{(topic, partition): offset after the last message this worker committed}`` (exactly-once mode)."""

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
                if envelope is None:
                    metrics.HEALTH.beat()
                    self._observe_lag()
                    if until_idle and not getattr(self.source, "has_deferred", False):
                        break
                    continue
                metrics.HEALTH.beat()
                if self._not_its_turn(envelope):
                    continue
                if self.transactions is None:
                    if self.handle(envelope):
                        self.retry.run(f"commit {envelope.where()}", lambda env=envelope: self.source.commit(env),
                                       lambda: self._stopping, getattr(self.source, "keepalive", None))
                else:
                    try:
                        self.retry.run(envelope.where(), lambda env=envelope: self._handle_in_transaction(env),
                                       lambda: self._stopping, getattr(self.source, "keepalive", None))
                    except TransientError as err:
                        if not self._stopping:
                            raise
                        # Not committed: the message is redelivered from the committed offset after a restart.
                        log.warning("%s: left uncommitted on stop (%s)", envelope.where(), err)
                metrics.HEALTH.beat()
                self._observe_lag()
        finally:
            self.processor.alert_sink.flush()
        return self.results

    def _observe_lag(self, every_s: float = 15.0) -> None:
        lag = getattr(self.source, "lag", None)
        now = time.monotonic()
        if lag is None or now - self._lag_checked < every_s:
            return
        self._lag_checked = now
        metrics.observe_lag(lag())

    def _handle_in_transaction(self, envelope: Envelope) -> None:
        """Begin; handle (outputs go into the transaction); commit outputs + offset, or abort."""
        txn = self.transactions
        key = (envelope.topic, envelope.partition)
        if envelope.offset < self._next_offset.get(key, -1):
            # Redelivered after a rebalance reset the position, but this worker already committed it.
            log.info("%s: already committed; skipped", envelope.where())
            return
        owns = getattr(self.source, "owns", None)
        if owns is not None and not owns(envelope):
            log.warning("%s: partition no longer assigned; its new owner redoes the message", envelope.where())
            return
        was_committed = getattr(txn, "was_committed", None)
        if was_committed is not None and was_committed(envelope):
            self._next_offset[key] = envelope.offset + 1
            return
        n_results = len(self.results)
        txn.begin()
        try:
            done = self.handle(envelope)
        except BaseException:
            del self.results[n_results:]
            txn.abort()
            raise
        if not done:
            txn.abort()
            return
        try:
            txn.commit(envelope)
        except BaseException:
            del self.results[n_results:]
            raise
        self._next_offset[key] = envelope.offset + 1

    def _not_its_turn(self, envelope: Envelope) -> bool:
        """Hand a work item back (uncommitted) while earlier overlapping work is unfinished; True if handed back."""
        if self.claims is None or not self._is_work(envelope):
            return False
        try:
            claim = _claim_of(decode_work(envelope.value))
        except InputError:
            return False  # handle() dead-letters it
        if claim is None or self._retried(f"claims of {envelope.where()}",
                                          lambda: self.claims.is_turn(claim[1], claim[2])):
            return False
        log.debug("%s: earlier overlapping work unfinished; handed back", envelope.where())
        metrics.WORK_DEFERRED.inc()
        self.source.defer(envelope)
        return True

    def _register_claims(self, items: list[CcdWork]) -> None:
        """Fan-out: claim each item's sky before publishing it (the fan-out sees exposures in time order)."""
        if self.claims is None:
            return
        for claim in filter(None, map(_claim_of, items)):
            self._retried(f"claim of {claim[0]}", lambda c=claim: self.claims.register(*c))

    def _release_claim(self, item: CcdWork) -> None:
        claim = _claim_of(item) if self.claims is not None else None
        if claim is not None:
            self._retried(f"release of {claim[0]}", lambda: self.claims.done(*claim))

    def _retried(self, what: str, call: Callable[[], T]) -> T:
        """``call`` under the retry policy (an APDB outage must not stop the worker), with keepalives."""
        return self.retry.run(what, call, lambda: self._stopping, getattr(self.source, "keepalive", None))

    def _is_work(self, envelope: Envelope) -> bool:
        return envelope.topic is not None and envelope.topic == self.work_topic

    def handle(self, envelope: Envelope) -> bool:
        """Handle one message; True when it may be committed."""
        try:
            if self._is_work(envelope):
                work = decode_work(envelope.value)
                items = [work]
            else:
                event = decode_event(envelope.value) if envelope.path is None else _read_local(envelope)
                if self.fan_out_to is not None:
                    work_items = fan_out(event, all_detectors=tuple(list_ccds(
                        self.processor.repo.resolve(event.raw_path)))) if event.detectors is None \
                        else fan_out(event)
                    self._register_claims(work_items)
                    self.fan_out_to(work_items)
                    return True
                detectors = event.detectors or tuple(list_ccds(self.processor.repo.resolve(event.raw_path)))
                items = [CcdWork(exposure=event, detector=d) for d in detectors]
        except InputError as err:
            self._dead_letter(err, envelope, None, None)
            return True
        for k, item in enumerate(items):
            if self._stopping:
                return False
            if k + 1 < len(items):
                self.processor.prefetch(items[k + 1].exposure, items[k + 1].detector)
            self._process_item(item, envelope)
            if self._is_work(envelope):
                self._release_claim(item)
        return True

    def _process_item(self, item: CcdWork, envelope: Envelope) -> None:
        what = f"visit {item.exposure.exposure_id} detector {item.detector}"
        try:
            if self.transactions is not None:  # the whole message is retried in a fresh transaction
                result = self.processor.process(item.exposure, item.detector)
            else:
                result = self.retry.run(what, lambda: self.processor.process(item.exposure, item.detector),
                                        lambda: self._stopping, getattr(self.source, "keepalive", None))
            log.info("%s: %d alerts in %.2f s", what, result.n_alerts, result.seconds)
            if not self.keep_outputs:
                result.outputs = None
            self.results.append(result)
        except (TransientError, FencedError):
            raise
        except NoWorkError as err:
            log.info("%s: no work (%s)", what, err)
            self._dead_letter(err, envelope, item.exposure.exposure_id, item.detector)
        except BlinkError as err:
            self._dead_letter(err, envelope, item.exposure.exposure_id, item.detector)
        except Exception as err:  # a bug in one CCD must not stop the night: dead-letter it with the trace
            log.exception("%s: unexpected error", what)
            self._dead_letter(err, envelope, item.exposure.exposure_id, item.detector)

    def _dead_letter(self, err: BaseException, envelope: Envelope, exposure_id: int | None,
                     detector: int | None) -> None:
        record = dead_letter_record(err, envelope, exposure_id=exposure_id, detector=detector)
        log.error("dead letter (%s, stage %s) for %s: %s", record["reason"], record["stage"],
                  envelope.where(), record["message"])
        metrics.DEAD_LETTERS.labels(reason=record["reason"], stage=record["stage"]).inc()
        self.dead_letters.send(record)
        self.results.append(CcdResult(exposure_id or -1, detector or -1, None, 0, error=err))


def _claim_of(item: CcdWork) -> tuple[str, SkyRegion, float] | None:
    """(work id, claim region, mjd) of a work item; None for a detector the camera does not know (it is
    dead-lettered by the pipeline)."""
    from streamer.apdb.ordering import claim_region

    try:
        region = claim_region(item.exposure.ra, item.exposure.dec, item.detector)
    except KeyError:
        return None
    return f"{item.exposure.exposure_id}-{item.detector}", region, float(item.exposure.midpoint_mjd_tai)


def _read_local(envelope: Envelope) -> ExposureReady:
    from streamer.events.files import read_event_file

    return read_event_file(envelope.path)


def empty_region() -> RegionData:
    """An APDB region with no rows (typed tables), for tests."""
    from streamer.apdb.columns import empty_table

    return RegionData(empty_table("DiaObjectLast"), empty_table("DiaSource"), empty_table("DiaForcedSource"))


__all__ = ["CcdProcessor", "Worker", "RetryPolicy", "CcdResult", "empty_region"]
