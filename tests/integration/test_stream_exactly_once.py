"""Exactly-once alert production on a real broker: aborted transactions are invisible to read_committed
consumers, a zombie producer is fenced, and a worker killed with SIGKILL in the middle of an exposure
leaves, after a restart, every alert on the topic (duplicates, if any, identical) and a complete APDB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer

from simulator import SimConfig
from streamer.alerts.framing import alert_headers, unframe
from streamer.alerts.schema import AlertSchema, sample_alert
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.errors import FencedError
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import publish_event
from streamer.kafka.settings import KafkaSettings
from streamer.kafka.source import KafkaEventSource
from streamer.kafka.transactions import KafkaTransactions
from streamer.simulated import simulated_repository
from tests.helpers.kafka_topics import read_topic, unique_kafka_settings
from tests.helpers.truth_checks import check_against_truth

pytestmark = pytest.mark.integration


REPO = Path(__file__).resolve().parents[2]
THREE_CCDS = [1, 28, 35]


def settings_env(kafka: KafkaSettings) -> dict[str, str]:
    """The environment that makes a ``blink`` subprocess use ``kafka``'s topics and group (every DiaSource
    distributed: the test checks one alert per DiaSource)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLINK_")} | {"BLINK_MIN_RELIABILITY": "0"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("group_id", "events_topic", "work_topic", "alerts_topic", "dead_letter_topic",
                 "work_partitions", "alerts_partitions", "session_timeout_s"):
        env[f"BLINK_KAFKA_{name.upper()}"] = str(getattr(kafka, name))
    return env


@pytest.fixture(scope="module")
def three_ccd_night(tmp_path_factory) -> Path:
    """One exposure of three CCDs, small mode (about 15 s to make)."""
    root = tmp_path_factory.mktemp("night3")
    simulated_repository(root, SimConfig(seed=11, n_epochs=1, ccds=THREE_CCDS, small=True))
    return root


def test_aborted_alerts_are_invisible_and_zombies_fenced(kafka_bootstrap):
    kafka = unique_kafka_settings(kafka_bootstrap, "txn")
    create_topics(kafka)
    schema = AlertSchema.latest()
    headers = alert_headers(shutter_close_mjd_tai=60000.0, replay=False, schema_id=schema.schema_id)
    # An input message to commit offsets against.
    from confluent_kafka import Producer

    prod = Producer({"bootstrap.servers": kafka_bootstrap})
    prod.produce(kafka.work_topic, b"x", partition=0)
    prod.flush(10)
    source = KafkaEventSource(kafka, topics=[kafka.work_topic])
    try:
        env = None
        for _ in range(60):
            env = source.poll(1.0)
            if env is not None:
                break
        assert env is not None
        txn = KafkaTransactions(kafka, source, worker_id="a")
        txn.begin()
        txn.publish([sample_alert(dia_source_id=1), sample_alert(dia_source_id=2)], headers=headers)
        txn.abort()
        txn.begin()
        txn.publish([sample_alert(dia_source_id=3)], headers=headers)
        txn.commit(env)
        # A second instance with the same transactional id fences the first.
        zombie_source = KafkaEventSource(kafka, topics=[kafka.work_topic])
        newer = KafkaTransactions(kafka, zombie_source, worker_id="a")
        txn.begin()
        txn.publish([sample_alert(dia_source_id=4)], headers=headers)
        with pytest.raises(FencedError):
            txn.commit(env)
        newer.close()
        zombie_source.close()
    finally:
        source.close()
    committed = read_topic(kafka_bootstrap, kafka.alerts_topic)
    ids = sorted(schema.deserialize(m.value())["diaSourceId"] for m in committed)
    assert ids == [3]
    # (librdkafka may purge aborted messages before sending them, so read_uncommitted proves nothing here.)
    # The offset was committed in the transaction.
    check = Consumer(kafka.consumer_config())
    try:
        from confluent_kafka import TopicPartition

        [tp] = check.committed([TopicPartition(kafka.work_topic, env.partition)], timeout=10)
        assert tp.offset == env.offset + 1
    finally:
        check.close()


def _work_offsets(bootstrap: str, kafka: KafkaSettings) -> dict[int, int]:
    """Last committed work message of each partition of the work topic."""
    last: dict[int, int] = {}
    for m in read_topic(bootstrap, kafka.work_topic, idle_s=3.0):
        last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
    return last


def _group_done(kafka: KafkaSettings, last: dict[int, int]) -> int:
    """How many work partitions the group has committed to the end."""
    from confluent_kafka import TopicPartition

    consumer = Consumer(kafka.consumer_config())
    try:
        tps = consumer.committed([TopicPartition(kafka.work_topic, p) for p in last], timeout=10)
        return sum(tp.offset >= last[tp.partition] + 1 for tp in tps)
    finally:
        consumer.close()


def _start_worker(night: Path, db: Path, kafka: KafkaSettings, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamer.cli", "run", "--forever", "--root", str(night),
           "--apdb", f"sqlite:///{db}", "--kafka-bootstrap", kafka.bootstrap_servers, "--worker-id", "crash-w0"]
    return subprocess.Popen(cmd, cwd=REPO, env=settings_env(kafka), stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT)


def _wait_for(cond, timeout_s: float, what: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) while waiting for {what}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text()[-3000:]}")


@pytest.mark.timeout(400)
def test_sigkill_mid_exposure_then_restart(three_ccd_night, kafka_bootstrap, tmp_path):
    kafka = unique_kafka_settings(kafka_bootstrap, "crash")
    create_topics(kafka)
    for path in sorted((three_ccd_night / "events").glob("*.avro")):
        publish_event(kafka, read_event_file(path))
    db = tmp_path / "apdb.sqlite"
    log_path = tmp_path / "worker.log"

    proc = _start_worker(three_ccd_night, db, kafka, log_path)
    try:
        _wait_for(lambda: " alerts" in log_path.read_text(), 180, "the first CCD", proc, log_path)
        time.sleep(3.0)  # well inside the next CCD (each takes several seconds)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = _work_offsets(kafka_bootstrap, kafka)
    assert sum(1 for _ in last) >= 1
    n_work = sum(1 for m in read_topic(kafka_bootstrap, kafka.work_topic, idle_s=2.0))
    assert n_work == len(THREE_CCDS)
    done_at_kill = _group_done(kafka, last)
    assert done_at_kill < len(last), "the kill came after the exposure was finished"

    proc = _start_worker(three_ccd_night, db, kafka, log_path)
    try:
        _wait_for(lambda: _group_done(kafka, last) == len(last), 240, "the rest of the exposure", proc, log_path)
        proc.send_signal(signal.SIGTERM)  # a clean stop: finishes (nothing), closes, exit status 0
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()

    apdb = SqliteApdb(db)
    try:
        tables = apdb.dump_tables()
    finally:
        apdb.close()
    dia_sources = tables["DiaSource"]
    check_against_truth(three_ccd_night, dia_sources)
    assert set(np.asarray(dia_sources["detector"]).tolist()) <= set(THREE_CCDS)

    schema = AlertSchema.latest()
    by_id: dict[int, tuple[bytes, bytes]] = {}
    n_duplicates = 0
    for msg in read_topic(kafka_bootstrap, kafka.alerts_topic):
        schema_id, _ = unframe(msg.value())
        assert schema_id == schema.schema_id
        alert = schema.deserialize(msg.value())
        seen = by_id.get(alert["diaSourceId"])
        if seen is not None:
            n_duplicates += 1
            assert seen == (msg.key(), msg.value()), "a duplicate alert differs from the first copy"
        by_id[alert["diaSourceId"]] = (msg.key(), msg.value())
    assert sorted(by_id) == sorted(np.asarray(dia_sources["diaSourceId"]).tolist())
    assert n_duplicates == 0  # transactions: the killed CCD's alerts were never committed
    assert read_topic(kafka_bootstrap, kafka.dead_letter_topic, idle_s=2.0) == []
