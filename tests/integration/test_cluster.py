"""A night on the local cluster (ops/cluster.sh) while one Cassandra node is killed with SIGKILL and restarted.

Runs only with ``BLINK_CLUSTER=1`` (the cluster takes about 3.5 GB and two minutes to start; ``ops/up.sh
--cluster`` brings it up, and the test does too when it is down). The APDB keyspace has replication 3 and is read
and written at QUORUM; the topics have replication 3 and ``min.insync.replicas`` 2. Two workers process the small
night; after the first CCD the node at 127.0.0.3 is killed, at least one more CCD is processed with it down, and
it is restarted. Every DiaSource (read back at QUORUM) has exactly one committed alert and nothing is
dead-lettered. The keyspace and topics are private to the run; the keyspace is dropped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from streamer.alerts.schema import AlertSchema
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import publish_event
from tests.helpers.kafka_topics import read_topic, unique_kafka_settings
from tests.helpers.worker_runs import REPO, end_workers, log_count, wait_for, work_done, worker_env

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.environ.get("BLINK_CLUSTER") != "1", reason="needs BLINK_CLUSTER=1 and "
                                 "the local cluster of ops/cluster.sh")]

CASSANDRA_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
KAFKA_BOOTSTRAP = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
KILLED = "cassandra-2"  # 127.0.0.3: not the workers' first contact point
N_WORK = 4  # small night: 2 CCDs x 2 epochs


def cluster(*args: str, timeout_s: float = 300) -> float:
    """Run ``ops/cluster.sh ARGS``; return its duration in seconds."""
    t0 = time.monotonic()
    done = subprocess.run(["bash", str(REPO / "ops" / "cluster.sh"), *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHON": sys.executable})
    if done.returncode != 0:
        raise RuntimeError(f"ops/cluster.sh {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                           f"{done.stderr[-3000:]}")
    return time.monotonic() - t0


def _topic_replication(bootstrap: str, topic: str) -> tuple[set[int], str]:
    """The replica counts of a topic's partitions and its min.insync.replicas."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=10).topics[topic]
    configs = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    entries = next(iter(configs.values())).result(timeout=10)
    return {len(p.replicas) for p in md.partitions.values()}, entries["min.insync.replicas"].value


def _read_apdb_sources(keyspace: str, *, drop: bool = False) -> tuple[list[int], set[int], str]:
    """DiaSource ids and detectors read at QUORUM, and the keyspace's replication factor; ``drop``: only drop it."""
    from streamer.apdb.cassandra import CassandraApdb

    apdb = CassandraApdb(CASSANDRA_HOSTS, 9042, keyspace=keyspace, consistency="QUORUM")
    try:
        if drop:
            apdb.drop_keyspace()
            return [], set(), ""
        sources = apdb.dump_tables()["DiaSource"]
        replication = apdb.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                                   (keyspace,))[0][0]
    finally:
        apdb.close()
    return (sorted(np.asarray(sources["diaSourceId"]).tolist()), set(np.asarray(sources["detector"]).tolist()),
            replication["replication_factor"])


@pytest.mark.timeout(900)
def test_night_survives_a_cassandra_node_killed_and_restarted(small_night, tmp_path):
    t_start = time.monotonic()
    cluster("up")  # idempotent: only checks readiness when the cluster runs
    kafka = unique_kafka_settings(KAFKA_BOOTSTRAP, "cluster", session_timeout_s=30.0, replication_factor=3,
                                  min_insync_replicas=2)
    tag = kafka.group_id.rsplit("-", 1)[-1]
    create_topics(kafka)
    assert _topic_replication(KAFKA_BOOTSTRAP, kafka.alerts_topic) == ({3}, "2")
    for path in sorted((small_night / "events").glob("*.avro")):
        publish_event(kafka, read_event_file(path))
    keyspace = f"cluster_{tag}"
    env = worker_env(kafka, BLINK_KAFKA_REPLICATION_FACTOR="3", BLINK_KAFKA_MIN_INSYNC_REPLICAS="2")
    log_path = tmp_path / "workers.log"
    cmd = [sys.executable, "-m", "streamer.cli", "run", "--forever", "--workers", "2", "--root", str(small_night),
           "--apdb", f"cassandra://{','.join(CASSANDRA_HOSTS)}:9042/{keyspace}?replication_factor=3&"
                     "consistency=QUORUM",
           "--kafka-bootstrap", KAFKA_BOOTSTRAP, "--worker-id", f"cluster-{tag}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: log_count(log_path, " alerts in ") >= 1, 300, "the first CCD", proc, log_path)
        cluster("kill", KILLED)
        t_killed = time.monotonic()
        n_before = log_count(log_path, " alerts in ")
        wait_for(lambda: log_count(log_path, " alerts in ") > n_before or work_done(kafka) >= N_WORK, 300,
                 f"a CCD with {KILLED} down", proc, log_path)
        n_while_down = log_count(log_path, " alerts in ") - n_before
        t_restart = cluster("start", KILLED)
        down_s = time.monotonic() - t_killed
        wait_for(lambda: work_done(kafka) >= N_WORK, 300, "every work item committed", proc, log_path)
        proc.send_signal(15)
        rc = proc.wait(90)
        logs = log_path.read_text(errors="replace")
        assert rc == 0, logs[-4000:]
        assert "dead letter" not in logs
        source_ids, detectors, replication = _read_apdb_sources(keyspace)
        assert replication == "3"
        assert source_ids, "no DiaSources in Cassandra"
        assert detectors == {28, 35}
        schema = AlertSchema.latest()
        alert_ids = sorted(schema.deserialize(m.value())["diaSourceId"]
                           for m in read_topic(KAFKA_BOOTSTRAP, kafka.alerts_topic, idle_s=4.0))
        assert alert_ids == source_ids  # each DiaSource: exactly one committed alert
        assert read_topic(KAFKA_BOOTSTRAP, kafka.dead_letter_topic, idle_s=2.0) == []
        print(f"cluster test: {KILLED} down {down_s:.0f} s ({n_while_down} CCDs meanwhile, restart "
              f"{t_restart:.0f} s), {len(source_ids)} alerts, total {time.monotonic() - t_start:.0f} s; retries "
              f"logged: {logs.count('transient failure')}")
    finally:
        end_workers(proc)
        cluster("start", KILLED)  # leave the cluster whole (on a running node this only checks readiness)
        _read_apdb_sources(keyspace, drop=True)
