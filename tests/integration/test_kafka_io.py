"""Integration tests of streamer.kafka (admin, source, producer) against a real broker (ops/kafka.sh start).

Bootstrap from ``BLINK_KAFKA_BOOTSTRAP`` (default 127.0.0.1:9092). When the broker is unreachable the tests
skip, unless ``BLINK_REQUIRE_SERVERS=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from lsst.alert.packet import Schema

from streamer.alerts.framing import alert_headers, headers_dict, unframe
from streamer.alerts.schema import sample_alert
from streamer.events.dead_letters import dead_letter_record, decode_dead_letter
from streamer.events.fan_out import fan_out, work_partition
from streamer.events.records import ExposureReady, decode_event, decode_work
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import KafkaAlertSink, KafkaDeadLetterSink, publish_event, publish_work
from streamer.kafka.settings import KafkaSettings
from streamer.kafka.source import KafkaEventSource
from streamer.ports import Envelope
from tests.helpers.servers import unavailable

pytestmark = pytest.mark.integration

BOOTSTRAP = os.environ.get("BLINK_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture(scope="module")
def settings() -> KafkaSettings:
    try:
        AdminClient({"bootstrap.servers": BOOTSTRAP, "socket.timeout.ms": 3000}).list_topics(timeout=5)
    except KafkaException as exc:
        unavailable(f"Kafka is not reachable at {BOOTSTRAP} (start it with ops/kafka.sh start): {exc}")
    tag = uuid.uuid4().hex[:10]
    s = KafkaSettings(
        bootstrap_servers=BOOTSTRAP,
        group_id=f"blink-test-{tag}",
        events_topic=f"test.{tag}.exposures",
        work_topic=f"test.{tag}.ccd-work",
        alerts_topic=f"test.{tag}.alerts.v11",
        dead_letter_topic=f"test.{tag}.dead-letter",
        alerts_partitions=6,
        work_partitions=4,
    )
    assert len(create_topics(s)) == 4
    assert create_topics(s) == []  # idempotent
    return s


def _consume_all(settings: KafkaSettings, topic: str, n: int, timeout_s: float = 30.0):
    consumer = Consumer({
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": f"reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    msgs = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(msgs) < n and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            msgs.append(msg)
    finally:
        consumer.close()
    return msgs


def _event(**kw) -> ExposureReady:
    base = dict(
        event_id="DECam-00900001", instrument="DECam", exposure_id=900001, raw_path="raw/c4d_900001.fits.fz",
        band="g", midpoint_mjd_tai=60400.2, shutter_close_mjd_tai=60400.2003, ra=10.0, dec=-20.0,
        detectors=(3, 4, 5), replay=False,
    )
    return ExposureReady(**(base | kw))


def test_topics_have_requested_partitions(settings):
    md = AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=10)
    assert len(md.topics[settings.alerts_topic].partitions) == 6
    assert len(md.topics[settings.work_topic].partitions) == 4


def test_alerts_round_trip_through_kafka(settings):
    sink = KafkaAlertSink(settings)
    alerts = [
        sample_alert(dia_object_id=7000 + (i % 5), dia_source_id=80_000 + i, visit=900001, detector=4)
        for i in range(40)
    ]
    headers = alert_headers(shutter_close_mjd_tai=60400.2003, replay=True, schema_id=1101)
    sink.publish(alerts, headers=headers)
    assert sink.n_delivered == 40
    sink.close()

    msgs = _consume_all(settings, settings.alerts_topic, 40)
    assert len(msgs) == 40
    lsst_schema = Schema.from_file()
    by_object: dict[bytes, list[int]] = {}
    partitions: dict[bytes, set[int]] = {}
    for msg in msgs:
        schema_id, body = unframe(msg.value())
        assert msg.value()[:5] == b"\x00\x00\x00\x04\x4d" and schema_id == 1101
        alert = lsst_schema.deserialize(body)
        assert msg.key() == str(alert["diaObject"]["diaObjectId"]).encode()
        h = headers_dict(msg.headers())
        assert h["blink-replay"] == b"1" and h["blink-schema-id"] == b"1101"
        assert float(h["blink-produced-mjd"]) >= float(h["blink-shutter-close-mjd"])
        assert len(alert["cutoutDifference"]) == 20_000
        by_object.setdefault(msg.key(), []).append(alert["diaSourceId"])
        partitions.setdefault(msg.key(), set()).add(msg.partition())
    # One object's alerts share a partition and arrive in production order.
    assert all(len(p) == 1 for p in partitions.values())
    assert all(ids == sorted(ids) for ids in by_object.values())


def test_event_fan_out_and_commit(settings):
    ev = _event()
    publish_event(settings, ev)
    src = KafkaEventSource(settings, topics=[settings.events_topic])
    try:
        env = None
        deadline = time.monotonic() + 30
        while env is None and time.monotonic() < deadline:
            env = src.poll(1.0)
        assert env is not None and env.key == ev.event_id.encode()
        got = decode_event(env.value)
        assert got == ev
        publish_work(settings, fan_out(got))
        src.commit(env)
    finally:
        src.close()

    # Restart with the same group: the committed event is not delivered again.
    src2 = KafkaEventSource(settings, topics=[settings.events_topic])
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert src2.poll(0.5) is None
    finally:
        src2.close()

    msgs = _consume_all(settings, settings.work_topic, 3)
    work = [decode_work(m.value()) for m in msgs]
    assert sorted(w.detector for w in work) == [3, 4, 5]
    assert all(w.exposure == ev for w in work)
    # Each CCD on the partition work_partition gives it (the topic's 4 partitions, from its metadata).
    assert [m.partition() for m in msgs] == [work_partition(w.exposure, w.detector, 4) for w in work]


def test_dead_letter_sink(settings):
    sink = KafkaDeadLetterSink(settings)
    env = Envelope(value=b"\x00bad", topic="t", partition=0, offset=1)
    rec = dead_letter_record(ValueError("boom"), env, exposure_id=1, detector=2, failed_at_mjd_tai=60000.0)
    sink.send(rec)
    sink.close()
    msgs = _consume_all(settings, settings.dead_letter_topic, 1)
    assert msgs[0].key() == b"1-2"
    assert decode_dead_letter(msgs[0].value()) == rec


def test_lag_from_the_fetched_watermarks(settings):
    """``lag()`` reads the high watermarks the consumer's fetches brought back (no broker request): produced
    minus consumed, summed over the assigned partitions, once every partition was fetched from."""
    s = settings.model_copy(update={"group_id": f"{settings.group_id}-lag",
                                    "work_topic": f"{settings.work_topic}-lag"})
    create_topics(s)
    publish_work(s, fan_out(_event(detectors=(1, 2, 3, 4, 5, 6, 7))))
    src = KafkaEventSource(s, topics=[s.work_topic])
    try:
        env, deadline = None, time.monotonic() + 30
        while env is None and time.monotonic() < deadline:
            env = src.poll(1.0)
        assert env is not None
        lag, deadline = {}, time.monotonic() + 15
        while sum(lag.values()) != 6 and time.monotonic() < deadline:
            time.sleep(0.2)
            lag = src.lag()
        assert sum(lag.values()) == 6, lag  # 7 produced, 1 consumed
        assert {topic for topic, _ in lag} == {s.work_topic}
    finally:
        src.close()
