"""Kafka topics private to one test: settings with a group and topics no one used, and reading a topic back."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer

from streamer.kafka.settings import KafkaSettings


def unique_kafka_settings(bootstrap: str, prefix: str, **extra) -> KafkaSettings:
    """KafkaSettings with a group and four topics no other test (or earlier run) used; ``extra`` overrides."""
    tag = uuid.uuid4().hex[:10]
    options = dict(bootstrap_servers=bootstrap, group_id=f"{prefix}-{tag}", events_topic=f"{prefix}.{tag}.exposures",
                   work_topic=f"{prefix}.{tag}.ccd-work", alerts_topic=f"{prefix}.{tag}.alerts",
                   dead_letter_topic=f"{prefix}.{tag}.dead-letter", work_partitions=4, alerts_partitions=4,
                   session_timeout_s=10.0)
    return KafkaSettings(**(options | extra))


def read_topic(bootstrap: str, topic: str, *, committed: bool = True, idle_s: float = 5.0) -> list:
    """Every message of ``topic`` (read_committed unless told), until ``idle_s`` seconds without one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed" if committed else "read_uncommitted"})
    consumer.subscribe([topic])
    out, last = [], time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            out.append(msg)
            last = time.monotonic()
    finally:
        consumer.close()
    return out


def read_with_alert_stream(bootstrap: str, topic: str, *, idle_s: float = 5.0) -> list[tuple[dict, dict[str, bytes]]]:
    """Every alert of ``topic`` as a broker reads it, with lsst-alert-stream's ``AlertConsumer`` (read_committed),
    each with its message's headers; until ``idle_s`` seconds without one."""
    from lsst.alert.packet import Schema
    from lsst.alert.stream.alertConsumer import AlertConsumer

    from streamer.alerts.framing import headers_dict

    conf = {"bootstrap.servers": bootstrap, "group.id": f"las-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.auto.commit": False}
    alerts = []
    # The registry of lsst-alert-packet has no id 1101 (it is keyed differently), so pass the schema.
    with AlertConsumer(topic, schema=Schema.from_file(), **conf) as consumer:
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            msg = consumer.consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            _, alert = consumer.decode_message(msg)
            alerts.append((alert, headers_dict(msg.headers())))
            last = time.monotonic()
    return alerts
