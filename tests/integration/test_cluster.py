"""Nights on the local cluster (ops/cluster.sh) while nodes die: one Cassandra node, then one Kafka broker, is
killed with SIGKILL and restarted; then the night is replayed.

Runs with ``BLINK_CLUSTER=1`` (``tests/run.sh`` sets it and brings the cluster up beside the single node; the
cluster takes about 3.5 GB; ``ops/up.sh --cluster`` brings it up by hand, and the tests do too when it is down).
The APDB keyspace has replication 3 and is read and written at QUORUM; the topics have replication 3 and
``min.insync.replicas`` 2. Two workers process the small night (2 CCDs x 2 epochs). After each run:

- every DiaSource (read back at QUORUM) has exactly one committed alert, and nothing is dead-lettered;
- the APDB's catalog tables equal those of a single-node run of the same night (the embedded SQLite path), row
  for row and bit for bit;
- after the Cassandra kill and ``nodetool repair``, each node alone (consistency ONE, routed to that node only)
  holds the same tables.

Keyspaces and topics are private to a run; the keyspaces are dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from streamer.alerts.framing import HEADER_REPLAY, headers_dict
from streamer.alerts.schema import AlertSchema
from streamer.apdb.columns import TABLES
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.apdb.table_rows import tables_equal
from streamer.cli import main
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.operator_tools import group_status
from streamer.kafka.producer import publish_event
from streamer.kafka.settings import KafkaSettings
from tests.helpers.kafka_topics import read_topic, unique_kafka_settings
from tests.helpers.night_files import link_fits
from tests.helpers.worker_runs import REPO, end_workers, log_count, wait_for, work_done, worker_env

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.environ.get("BLINK_CLUSTER") != "1", reason="needs BLINK_CLUSTER=1 and "
                                 "the local cluster of ops/cluster.sh")]

CASSANDRA_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
KAFKA_BOOTSTRAP = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
KAFKA_PORTS = {19092: "kafka-1", 19093: "kafka-2", 19094: "kafka-3"}
KILLED_CASSANDRA = "cassandra-2"  # 127.0.0.3: not the workers' first contact point
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


@pytest.fixture(scope="module")
def cluster_up() -> None:
    """The cluster, brought up if it is down (idempotent: only checks readiness when it runs)."""
    cluster("up", timeout_s=600)


@pytest.fixture(scope="module")
def single_node_tables(small_night, tmp_path_factory) -> dict:
    """The catalog tables of the small night processed on one node: the embedded path (SQLite, one process)."""
    root = tmp_path_factory.mktemp("single-node") / "night"
    shutil.copytree(small_night, root, ignore=shutil.ignore_patterns("out"), copy_function=link_fits)
    assert main(["run", "--root", str(root), "--strict"]) == 0
    apdb = SqliteApdb(root / "out" / "apdb.sqlite")
    try:
        return {name: table for name, table in apdb.dump_tables().items() if name in TABLES}
    finally:
        apdb.close()


def _assert_same_catalogs(got: dict, want: dict, where: str) -> None:
    for name in TABLES:
        assert len(got[name]) == len(want[name]), f"{where}: {name} has {len(got[name])} rows, {len(want[name])} " \
                                                  "on the single node"
        assert tables_equal(got[name], want[name]), f"{where}: {name} differs from the single-node run"


def _cassandra_tables(keyspace: str, *, hosts=CASSANDRA_HOSTS, consistency: str = "QUORUM",
                      only_node: str | None = None) -> tuple[dict, str]:
    """The catalog tables and the keyspace's replication factor; ``only_node``: every request goes to that node
    alone, at ``consistency`` (ONE: what that node holds)."""
    import cassandra.policies

    from streamer.apdb.cassandra import CassandraApdb

    policy = cassandra.policies.TokenAwarePolicy
    if only_node is not None:  # the store's token-aware routing would send a read to any replica
        cassandra.policies.TokenAwarePolicy = lambda _child: cassandra.policies.WhiteListRoundRobinPolicy([only_node])
    try:
        apdb = CassandraApdb([only_node] if only_node else hosts, 9042, keyspace=keyspace, consistency=consistency)
    finally:
        cassandra.policies.TokenAwarePolicy = policy
    try:
        tables = {name: table for name, table in apdb.dump_tables().items() if name in TABLES}
        replication = apdb.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                                   (keyspace,))[0][0]
    finally:
        apdb.close()
    return tables, replication["replication_factor"]


def _drop_keyspace(keyspace: str) -> None:
    from streamer.apdb.cassandra import CassandraApdb

    apdb = CassandraApdb(CASSANDRA_HOSTS, 9042, keyspace=keyspace, consistency="QUORUM")
    try:
        apdb.drop_keyspace()
    finally:
        apdb.close()


def _topic_replication(topic: str) -> tuple[set[int], str]:
    """The replica counts of a topic's partitions and its min.insync.replicas."""
    admin = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP})
    md = admin.list_topics(topic, timeout=10).topics[topic]
    configs = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    entries = next(iter(configs.values())).result(timeout=10)
    return {len(p.replicas) for p in md.partitions.values()}, entries["min.insync.replicas"].value


def _leader_of_most_partitions(topic: str) -> str:
    """The broker (ops/cluster.sh node name) that leads the most partitions of ``topic``."""
    md = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP}).list_topics(topic, timeout=10)
    leaders = Counter(p.leader for p in md.topics[topic].partitions.values())
    broker_id = leaders.most_common(1)[0][0]
    return KAFKA_PORTS[md.brokers[broker_id].port]


class ClusterNight:
    """One private keyspace and set of topics on the cluster, the small night's events published to them, and
    the two-worker ``blink run --forever`` that processes them."""

    def __init__(self, night: Path, log_path: Path) -> None:
        self.night, self.log_path = night, log_path
        self.kafka: KafkaSettings = unique_kafka_settings(KAFKA_BOOTSTRAP, "cluster", session_timeout_s=30.0,
                                                          replication_factor=3, min_insync_replicas=2)
        self.tag = self.kafka.group_id.rsplit("-", 1)[-1]
        self.keyspace = f"cluster_{self.tag}"
        create_topics(self.kafka)
        assert _topic_replication(self.kafka.alerts_topic) == ({3}, "2")
        for path in sorted((night / "events").glob("*.avro")):
            publish_event(self.kafka, read_event_file(path))
        self.env = worker_env(self.kafka, BLINK_KAFKA_REPLICATION_FACTOR="3", BLINK_KAFKA_MIN_INSYNC_REPLICAS="2")
        self.proc: subprocess.Popen | None = None

    def start_workers(self) -> None:
        cmd = [sys.executable, "-m", "streamer.cli", "run", "--forever", "--workers", "2", "--root", str(self.night),
               "--apdb", f"cassandra://{','.join(CASSANDRA_HOSTS)}:9042/{self.keyspace}?replication_factor=3&"
                         "consistency=QUORUM",
               "--kafka-bootstrap", KAFKA_BOOTSTRAP, "--worker-id", f"cluster-{self.tag}"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, cond, what: str, timeout_s: float = 300) -> None:
        wait_for(cond, timeout_s, what, self.proc, self.log_path)

    def ccds_done(self) -> int:
        return log_count(self.log_path, " alerts in ")

    def caught_up(self) -> bool:
        """The group has committed everything on the events and work topics (transaction markers aside)."""
        try:
            rows = group_status(self.kafka, sample_s=0.0, timeout_s=5.0)
        except Exception:  # noqa: BLE001 - a broker restarting
            return False
        return {r.topic for r in rows} == {self.kafka.events_topic, self.kafka.work_topic} and \
            all(r.lag == 0 for r in rows)

    def run_with_a_node_killed(self, node: str) -> tuple[float, int, float]:
        """Start the workers, SIGKILL ``node`` after the first CCD, let at least one more CCD be processed with it
        down (unless the night ends first), restart it, and wait until every work item is committed; return how
        long the node was down (s), the CCDs processed meanwhile and its restart time (s)."""
        self.start_workers()
        self.wait(lambda: self.ccds_done() >= 1, "the first CCD")
        cluster("kill", node)
        t_killed = time.monotonic()
        n_before = self.ccds_done()
        self.wait(lambda: self.ccds_done() > n_before or work_done(self.kafka) >= N_WORK, f"a CCD with {node} down")
        n_while_down = self.ccds_done() - n_before
        t_restart = cluster("start", node)
        down_s = time.monotonic() - t_killed
        self.wait(lambda: work_done(self.kafka) >= N_WORK and self.caught_up(), "every work item committed")
        return down_s, n_while_down, t_restart

    def stop_workers(self) -> str:
        """SIGTERM the workers (a clean stop); return their log, which must hold no dead letter."""
        self.proc.send_signal(15)
        rc = self.proc.wait(90)
        logs = self.log_path.read_text(errors="replace")
        assert rc == 0, logs[-4000:]
        assert "dead letter" not in logs
        return logs

    def committed_alerts(self) -> list[tuple[dict, dict[str, bytes]]]:
        schema = AlertSchema.latest()
        return [(schema.deserialize(m.value()), headers_dict(m.headers()))
                for m in read_topic(KAFKA_BOOTSTRAP, self.kafka.alerts_topic, idle_s=4.0)]

    def check(self, single_node_tables: dict) -> dict:
        """Exactly one committed alert per DiaSource read at QUORUM, no dead letter, the single node's tables."""
        tables, replication = _cassandra_tables(self.keyspace)
        assert replication == "3"
        source_ids = sorted(np.asarray(tables["DiaSource"]["diaSourceId"]).tolist())
        assert source_ids and set(np.asarray(tables["DiaSource"]["detector"]).tolist()) == {28, 35}
        alert_ids = sorted(a["diaSourceId"] for a, _ in self.committed_alerts())
        assert alert_ids == source_ids  # each DiaSource: exactly one committed alert
        assert read_topic(KAFKA_BOOTSTRAP, self.kafka.dead_letter_topic, idle_s=2.0) == []
        _assert_same_catalogs(tables, single_node_tables, "QUORUM")
        return tables

    def close(self) -> None:
        end_workers(self.proc)
        _drop_keyspace(self.keyspace)


@pytest.mark.timeout(900)
def test_night_survives_a_cassandra_node_killed_and_restarted(cluster_up, small_night, single_node_tables,
                                                              tmp_path):
    t_start = time.monotonic()
    night = ClusterNight(small_night, tmp_path / "workers.log")
    try:
        down_s, n_while_down, t_restart = night.run_with_a_node_killed(KILLED_CASSANDRA)
        logs = night.stop_workers()
        night.check(single_node_tables)
        # the restarted node missed writes (hints may not cover them all): a repair makes every replica whole
        t0 = time.monotonic()
        cluster("nodetool", "1", "repair", "--full", night.keyspace, timeout_s=600)
        repair_s = time.monotonic() - t0
        for host in CASSANDRA_HOSTS:
            tables, _ = _cassandra_tables(night.keyspace, consistency="ONE", only_node=host)
            _assert_same_catalogs(tables, single_node_tables, f"node {host} alone after the repair")
        print(f"cluster test: {KILLED_CASSANDRA} down {down_s:.0f} s ({n_while_down} CCDs meanwhile, restart "
              f"{t_restart:.0f} s), repair {repair_s:.0f} s, total {time.monotonic() - t_start:.0f} s; retries "
              f"logged: {logs.count('transient failure')}")
    finally:
        night.close()
        cluster("start", KILLED_CASSANDRA)  # leave the cluster whole (on a running node this only checks readiness)


@pytest.mark.timeout(900)
def test_night_survives_the_alert_leader_broker_killed_and_is_replayed_identically(cluster_up, small_night,
                                                                                   single_node_tables, tmp_path):
    t_start = time.monotonic()
    night = ClusterNight(small_night, tmp_path / "workers.log")
    killed = _leader_of_most_partitions(night.kafka.alerts_topic)
    try:
        down_s, n_while_down, t_restart = night.run_with_a_node_killed(killed)
        night.stop_workers()
        first = night.check(single_node_tables)
        alerts_first = {a["diaSourceId"]: a for a, _ in night.committed_alerts()}

        # Replay the whole night (blink replay re-publishes its exposure events): the same APDB, the same alerts
        replay = subprocess.run([sys.executable, "-m", "streamer.cli", "replay", "--all", "--kafka-bootstrap",
                                 KAFKA_BOOTSTRAP], cwd=REPO, env=night.env, capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stderr[-3000:]
        assert not night.caught_up(), "the replayed events are not there"
        n_first = night.ccds_done()
        night.start_workers()
        night.wait(lambda: night.ccds_done() >= n_first + N_WORK and night.caught_up(), "the replayed work committed")
        night.stop_workers()
        tables, _ = _cassandra_tables(night.keyspace)
        _assert_same_catalogs(tables, first, "after the replay")
        replayed = {a["diaSourceId"]: a for a, h in night.committed_alerts() if h.get(HEADER_REPLAY) == b"1"}
        assert replayed == alerts_first  # every alert again, cutouts and history included
        print(f"cluster test: {killed} (leader of the most alert partitions) down {down_s:.0f} s ({n_while_down} "
              f"CCDs meanwhile, restart {t_restart:.0f} s), {len(alerts_first)} alerts, replayed; total "
              f"{time.monotonic() - t_start:.0f} s")
    finally:
        night.close()
        cluster("start", killed)
