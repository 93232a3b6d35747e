"""The night report's reads of the worker's outputs: alert cutouts and dead letters, from the embedded files or
from the Kafka topics."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fastavro

from streamer.apdb.ccd_timings import CcdTiming
from streamer.settings import BlinkSettings

__all__ = ["read_cutouts", "read_night_dead_letters", "read_topic_since"]

log = logging.getLogger(__name__)

_UNIX_EPOCH_MJD = 40587.0
_MARGIN_S = 600.0
"""Dead letters within this many seconds of the night's processing belong to it."""


def _unix_ms(mjd_tai: float) -> int:
    return int(((mjd_tai - _UNIX_EPOCH_MJD) * 86400.0 - 37.0) * 1000.0)


def read_topic_since(kafka, topic: str, since_ms: int, take: Callable[[bytes], bool], *,
                     timeout_s: float = 10.0) -> None:
    """Hand every message of ``topic`` produced since ``since_ms`` (Unix ms) to ``take``, up to the topic's end
    as it was when called, or until ``take`` returns True (enough read).

    Parameters
    ----------
    kafka : streamer.kafka.settings.KafkaSettings
    topic : str
    since_ms : int
        Kafka timestamp to start from (each partition's first offset at or after it).
    take : callable
        Gets each message value; True stops the read.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(kafka.consumer_config(**{"group.id": f"blink-report-{uuid.uuid4().hex[:8]}",
                                                 "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            log.warning("topic %s not found", topic)
            return
        starts = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in meta.partitions],
                                            timeout=timeout_s)
        ends = {}
        for tp in starts:
            high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout_s)[1]
            if 0 <= tp.offset < high:
                ends[tp.partition] = high - 1
        consumer.assign([tp for tp in starts if tp.partition in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            deadline = time.monotonic() + timeout_s
            if take(msg.value() or b""):
                return
            if msg.offset() >= ends.get(msg.partition(), -1):
                ends.pop(msg.partition(), None)
    finally:
        consumer.close()


def _triplet(alert: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return alert.get("cutoutScience"), alert.get("cutoutTemplate"), alert.get("cutoutDifference")


def read_cutouts(settings: BlinkSettings, kafka, wanted: Mapping[int, tuple[int, int, int]],
                 since_mjd_tai: float | None = None) -> tuple[dict[int, tuple[Any, Any, Any]], str]:
    """The cutout triplets of chosen DiaSources' alerts.

    Parameters
    ----------
    settings : BlinkSettings
        Embedded mode: the alert files are under ``<outputs>/alerts``.
    kafka : KafkaSettings or None
        Kafka mode: the alert topic is read from ``since_mjd_tai`` on.
    wanted : mapping
        ``diaObjectId`` -> (``diaSourceId``, visit, detector).
    since_mjd_tai : float, optional
        Kafka mode: when the night's first CCD started (wall clock, MJD TAI).

    Returns
    -------
    dict, str
        ``diaObjectId`` -> (science, template, difference) FITS bytes; and where the alerts were read.
    """
    by_source = {s: o for o, (s, _, _) in wanted.items()}
    found: dict[int, tuple[Any, Any, Any]] = {}
    if kafka is None:
        from streamer.embedded.sinks import alert_file_name

        folder = settings.outputs / "alerts"
        for visit, detector in sorted({(v, d) for _, v, d in wanted.values()}):
            path = folder / alert_file_name(visit, detector)
            if not path.is_file():
                continue
            with open(path, "rb") as fo:
                for alert in fastavro.reader(fo):
                    obj = by_source.get(int(alert["diaSource"]["diaSourceId"]))
                    if obj is not None:
                        found[obj] = _triplet(alert)
        return found, str(folder)
    if not wanted:
        return found, f"topic {kafka.alerts_topic}"
    from streamer.alerts.schema import AlertSchema

    schema = AlertSchema.latest()

    def take(value: bytes) -> bool:
        try:
            alert = schema.deserialize(value)
        except Exception as exc:  # a foreign or corrupt message: the report goes on without it
            log.debug("skipping an undecodable alert: %s", exc)
            return False
        obj = by_source.get(int(alert["diaSource"]["diaSourceId"]))
        if obj is not None:
            found[obj] = _triplet(alert)
        return len(found) == len(wanted)

    read_topic_since(kafka, kafka.alerts_topic, _unix_ms(since_mjd_tai or 0.0) if since_mjd_tai else 0, take)
    return found, f"topic {kafka.alerts_topic}"


def _of_night(record: Mapping[str, Any], night: Sequence[CcdTiming]) -> bool:
    if not night:
        return True
    if record.get("exposureId") in {t.visit for t in night}:
        return True
    first = min(t.started_mjd_tai for t in night) - _MARGIN_S / 86400.0
    last = max(t.published_mjd_tai for t in night) + _MARGIN_S / 86400.0
    return first <= float(record.get("failedAtMjdTai", 0.0)) <= last


def read_night_dead_letters(settings: BlinkSettings, kafka, night: Sequence[CcdTiming]
                            ) -> tuple[list[dict[str, Any]], str]:
    """The dead letters of the night: those of its exposures, and those written while it was processed (within
    10 minutes); every dead letter when no CCD-visit of the night was recorded.

    Returns
    -------
    list of dict, str
        Dead-letter records without their payload, and where they were read.
    """
    if kafka is None:
        from streamer.embedded.sinks import LocalDeadLetterSink, read_dead_letters

        folder = settings.outputs / "dead-letters"
        records, where = read_dead_letters(folder), str(folder / LocalDeadLetterSink.FILE_NAME)
    else:
        from streamer.events.dead_letters import decode_dead_letter

        records = []

        def take(value: bytes) -> bool:
            try:
                records.append(decode_dead_letter(value))
            except Exception as exc:  # a foreign message on the topic
                log.debug("skipping an undecodable dead letter: %s", exc)
            return False

        since = min((t.started_mjd_tai for t in night), default=None)
        read_topic_since(kafka, kafka.dead_letter_topic, _unix_ms(since - _MARGIN_S / 86400.0) if since else 0,
                         take)
        where = f"topic {kafka.dead_letter_topic}"
    return [{k: v for k, v in r.items() if k != "payload"} for r in records if _of_night(r, night)], where
