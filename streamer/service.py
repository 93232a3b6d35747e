"""Assembles a worker from settings: the embedded default (local folders, SQLite) or Kafka and Cassandra."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamer.apdb.base import Apdb
from streamer.events.records import CcdWork
from streamer.ports import AlertSink, DeadLetterSink, EventSource
from streamer.runtime import metrics
from streamer.runtime.gc_tuning import startup_objects_frozen
from streamer.runtime.malloc_tuning import keep_freed_memory
from streamer.runtime.thread_pools import native_pools_limited
from streamer.settings import BlinkSettings
from streamer.worker.commit_modes import AtLeastOnceCommit, CommitMode, EmbeddedCommit, ExactlyOnceCommit
from streamer.worker.inputs import DataRepository
from streamer.worker.loop import RetryPolicy, Worker
from streamer.worker.ordering import ClaimedOrder, Unordered, WorkOrder
from streamer.worker.processor import CcdProcessor, CcdResult

if TYPE_CHECKING:
    from streamer.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    """``BLINK_WORKER_ID`` or the host name: stable across restarts of one worker instance (it names the
    transactional producer, so a restarted instance fences its predecessor)."""
    return os.environ.get("BLINK_WORKER_ID") or socket.gethostname()


def publish_alert_schema(kafka) -> int:
    """Serve the alert schema from the configured registry under the id alerts are framed with."""
    from streamer.alerts.registry import publish_schema
    from streamer.alerts.schema import AlertSchema

    schema = AlertSchema.latest()
    subject = f"{kafka.alerts_topic}-value"  # Confluent's TopicNameStrategy
    schema_id = publish_schema(kafka.schema_registry_url, subject, schema.definition, schema.schema_id)
    log.info("alert schema %s served by %s as id %d (subject %s)", schema.version, kafka.schema_registry_url,
             schema_id, subject)
    return schema_id


@dataclass(frozen=True)
class WorkerIo:
    """The I/O edges of a worker: where work comes from and where its outputs go."""

    source: EventSource
    alert_sink: AlertSink
    dead_letters: DeadLetterSink
    commit: CommitMode = field(default_factory=EmbeddedCommit)


def embedded_io(settings: BlinkSettings) -> WorkerIo:
    """Local event files in, Avro alert files and dead-letter files out (under ``settings.outputs``)."""
    from streamer.embedded.events import LocalEventSource
    from streamer.embedded.sinks import LocalAlertSink, LocalDeadLetterSink

    out = settings.outputs
    out.mkdir(parents=True, exist_ok=True)
    return WorkerIo(source=LocalEventSource(settings.data_root / "events", state_dir=out),
                    alert_sink=LocalAlertSink(out / "alerts"), dead_letters=LocalDeadLetterSink(out / "dead-letters"))


def kafka_io(kafka: KafkaSettings, *, exactly_once: bool, worker_id: str) -> WorkerIo:
    """Kafka in and out: topics created, the alert schema published, a consumer of the group, and either one
    transaction per message (``exactly_once``) or acknowledged produces before each offset commit."""
    from streamer.kafka.admin import create_topics
    from streamer.kafka.producer import KafkaAlertSink, KafkaDeadLetterSink, publish_work
    from streamer.kafka.source import KafkaEventSource

    create_topics(kafka)
    if kafka.schema_registry_url:
        publish_alert_schema(kafka)
    membership = {"group.instance.id": worker_id} if kafka.static_membership else {}
    source = KafkaEventSource(kafka, topics=[kafka.events_topic, kafka.work_topic], **membership)
    if exactly_once:
        from streamer.kafka.transactions import KafkaTransactions

        transactions = KafkaTransactions(kafka, source, worker_id=worker_id)
        log.info("exactly-once mode, transactional.id %s", transactions.transactional_id)
        return WorkerIo(source=source, alert_sink=transactions, dead_letters=transactions,
                        commit=ExactlyOnceCommit(transactions, kafka.work_topic))

    def fan_out_to(items: Sequence[CcdWork]) -> None:
        publish_work(kafka, items)

    return WorkerIo(source=source, alert_sink=KafkaAlertSink(kafka), dead_letters=KafkaDeadLetterSink(kafka),
                    commit=AtLeastOnceCommit(kafka.work_topic, fan_out_to))


def run_service(settings: BlinkSettings, apdb: Apdb, kafka: KafkaSettings | None = None, *, forever: bool = False,
                workers: int = 1, idle_timeout_s: float | None = None, exactly_once: bool = True,
                worker_id: str | None = None) -> list[CcdResult]:
    """Run one worker until idle (or forever) and return what it processed.

    Parameters
    ----------
    settings : BlinkSettings
        Where the data are, and the pipeline's configuration (``settings.pipeline``).
    apdb : Apdb
        An opened, checked APDB.
    kafka : streamer.kafka.settings.KafkaSettings, optional
        When given, consume events and work from Kafka and publish alerts and dead letters there.
    forever : bool
        Keep polling when idle (a long-running consumer).
    exactly_once : bool
        Kafka mode: commit each message's outputs and offset in one Kafka transaction (default). False:
        at-least-once (wait for acks, then commit the offset).
    worker_id : str, optional
        Stable name of this worker instance (default :func:`default_worker_id`).
    """
    if settings.malloc_trim_threshold_mb is not None:
        keep_freed_memory(settings.malloc_trim_threshold_mb)
    repo = DataRepository(settings.data_root)
    server = metrics.serve(settings.metrics_port) if settings.metrics_port else None
    io = embedded_io(settings) if kafka is None else \
        kafka_io(kafka, exactly_once=exactly_once, worker_id=worker_id or default_worker_id())
    order: WorkOrder = Unordered()
    if kafka is not None and settings.ordered_association:
        from streamer.apdb.ordering import open_claims

        order = ClaimedOrder(open_claims(apdb))
    from streamer.apdb.ccd_timings import open_ccd_timings

    timings = open_ccd_timings(apdb)
    processor = CcdProcessor(repo, apdb, io.alert_sink, config=settings.pipeline, threads=settings.pipeline_threads,
                             timings=timings, keep_products=(settings.keep_products_ccds, settings.products)
                             if settings.keep_products_ccds else None, min_reliability=settings.min_reliability)
    worker = Worker(source=io.source, processor=processor, dead_letters=io.dead_letters, commit=io.commit,
                    order=order,
                    # A long-running consumer retries transient faults (broker or APDB outages) forever, with
                    # backoff and paused-partition keepalives; a run-until-idle one gives up after a few tries.
                    retry=RetryPolicy(initial_s=1.0, max_s=10.0, max_tries=0) if forever else RetryPolicy())
    worker.install_signal_handlers()
    try:
        if idle_timeout_s is None:
            idle_timeout_s = 1.0 if kafka is None else 10.0
        with startup_objects_frozen(settings.gc_gen0_threshold), native_pools_limited(settings.pipeline_threads):
            return worker.run(until_idle=not forever, idle_timeout_s=idle_timeout_s)
    finally:
        io.source.close()
        order.close()
        timings.close()
        io.alert_sink.close()
        if io.dead_letters is not io.alert_sink:
            io.dead_letters.close()
        if server is not None:
            server.shutdown()
