"""Assembles a worker from settings: the embedded default (local folders, SQLite) or Kafka and Cassandra."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from streamer.apdb.base import Apdb
from streamer.config import BlinkSettings
from streamer.datastore import DataRepository
from streamer.worker import CcdProcessor, CcdResult, Worker

log = logging.getLogger(__name__)


def run_service(settings: BlinkSettings, apdb: Apdb, kafka=None, *, forever: bool = False,
                workers: int = 1, idle_timeout_s: float | None = None) -> list[CcdResult]:
    """Run one worker until idle (or forever) and return what it processed.

    Parameters
    ----------
    settings : BlinkSettings
    apdb : Apdb
        An opened, checked APDB.
    kafka : streamer.kafka_io.KafkaSettings, optional
        When given, consume events and work from Kafka and publish alerts and dead letters there.
    forever : bool
        Keep polling when idle (a long-running consumer).
    """
    repo = DataRepository(settings.data_root)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    if kafka is None:
        from streamer.local_io import LocalAlertSink, LocalDeadLetterSink, LocalEventSource

        out = settings.outputs
        out.mkdir(parents=True, exist_ok=True)
        source = LocalEventSource(settings.data_root / "events", state_dir=out)
        alert_sink = LocalAlertSink(out / "alerts")
        dead_letters = LocalDeadLetterSink(out / "dead-letters")
        fan_out_to = None
    else:
        from streamer.kafka_io import (KafkaAlertSink, KafkaDeadLetterSink, KafkaEventSource, create_topics,
                                       publish_work)

        create_topics(kafka)
        source = KafkaEventSource(kafka, topics=[kafka.events_topic, kafka.work_topic])
        alert_sink = KafkaAlertSink(kafka)
        dead_letters = KafkaDeadLetterSink(kafka)

        def fan_out_to(items):
            publish_work(kafka, items)

    worker = Worker(source=source, processor=CcdProcessor(repo, apdb, alert_sink), dead_letters=dead_letters,
                    fan_out_to=fan_out_to, work_topic=kafka.work_topic if kafka is not None else None)
    worker.install_signal_handlers()
    try:
        if idle_timeout_s is None:
            idle_timeout_s = 1.0 if kafka is None else 10.0
        return worker.run(until_idle=not forever, idle_timeout_s=idle_timeout_s)
    finally:
        source.close()
        alert_sink.close()
        dead_letters.close()
