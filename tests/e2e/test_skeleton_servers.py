"""Walking skeleton against the real servers started by ops/: exposure-ready events on Kafka in,
DiaSources in Cassandra and alerts on Kafka out."""

from __future__ import annotations

import io
import json
import uuid

import fastavro
import numpy as np
import pytest
from confluent_kafka import Consumer
from lsst.alert.packet import Schema

from streamer.alerts.framing import unframe
from streamer.alerts.registry import schema_by_id
from streamer.apdb.cassandra import CassandraApdb
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import publish_event
from streamer.service import run_service
from streamer.settings import BlinkSettings
from tests.helpers.kafka_topics import unique_kafka_settings
from tests.helpers.truth_checks import check_against_truth, check_alerts

pytestmark = pytest.mark.integration


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages, idle = [], 0
    try:
        while len(messages) < expected and idle < timeout_s:
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                continue
            assert msg.error() is None, msg.error()
            messages.append(msg)
    finally:
        consumer.close()
    return messages


def test_events_on_kafka_to_cassandra_and_alerts(night_copy, kafka_bootstrap, cassandra_hosts):
    kafka = unique_kafka_settings(kafka_bootstrap, "skeleton", session_timeout_s=45.0)
    tag = kafka.group_id.rsplit("-", 1)[-1]
    create_topics(kafka)
    for path in sorted((night_copy / "events").glob("*.avro")):
        publish_event(kafka, read_event_file(path))
    hosts, port = cassandra_hosts
    apdb = CassandraApdb(hosts.split(","), port, keyspace=f"skel_{tag}", consistency="ONE")
    apdb.init_schema()
    try:
        results = run_service(BlinkSettings(data_root=night_copy), apdb, kafka, idle_timeout_s=20.0)
        assert results and all(r.error is None for r in results), [repr(r.error) for r in results]
        tables = apdb.dump_tables()
        # the night report of a Kafka/Cassandra deployment: timings from the keyspace, cutouts from the topic
        from streamer.report.night import gather_night
        from streamer.settings import CassandraSettings, ServiceSettings

        facts = gather_night(ServiceSettings(blink=BlinkSettings(data_root=night_copy, source="kafka"),
                                             cassandra=CassandraSettings(), kafka=kafka), from_mjd_tai=0.0, apdb=apdb)
    finally:
        apdb.drop_keyspace()
        apdb.close()
    dia_sources = tables["DiaSource"]
    check_against_truth(night_copy, dia_sources)
    messages = _consume_all(kafka_bootstrap, kafka.alerts_topic, expected=len(dia_sources))
    schema = Schema.from_file()
    alerts = []
    for msg in messages:
        schema_id, body = unframe(msg.value())
        assert schema_id == 1101
        alert = schema.deserialize(body)
        assert msg.key() == str(alert["diaObject"]["diaObjectId"]).encode()
        alerts.append(alert)
    check_alerts(alerts, dia_sources)
    if kafka.schema_registry_url:  # tests/run.sh sets it: a broker resolves the framing id through the registry
        served = fastavro.parse_schema(json.loads(schema_by_id(kafka.schema_registry_url, 1101)["schema"]))
        first = fastavro.schemaless_reader(io.BytesIO(unframe(messages[0].value())[1]), served)
        assert first["diaSourceId"] == alerts[0]["diaSourceId"]
    assert np.all(np.isin([a["diaSourceId"] for a in alerts], np.asarray(dia_sources["diaSourceId"])))
    assert len(facts.timings) == len(results) and int(facts.timings["n_alerts"].sum()) == len(alerts)
    assert len(facts.dia_sources) == len(dia_sources) and facts.where["alerts"] == f"topic {kafka.alerts_topic}"
    assert len(facts.new_objects) and set(facts.cutouts) == set(np.asarray(facts.new_objects["diaObjectId"]).tolist())
    assert all(all(c for c in triplet) for triplet in facts.cutouts.values()) and facts.dead_letters == []
