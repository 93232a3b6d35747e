"""Kafka restarted, then Cassandra restarted, during a run: the workers recover and finish without losing work.

The test starts its OWN Kafka and Cassandra (ops/kafka.sh, ops/cassandra.sh) on free non-default ports in a
temporary ``BLINK_OPS_DIR`` (the default-port servers are shared and are never touched), runs two ``blink run
--forever`` workers (``--workers 2``: one parent, two consumers in the group) on the small night, stops and
starts Kafka while they work, later stops and starts Cassandra, and checks that every DiaSource in Cassandra
has exactly one committed alert, that nothing was dead-lettered and that the workers stop cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.alerts.schema import AlertSchema
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import publish_event
from tests.helpers.kafka_topics import read_topic, unique_kafka_settings
from tests.helpers.servers import unavailable
from tests.helpers.worker_runs import end_workers, log_count, wait_for, work_done, worker_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N_WORK = 4  # small night: 2 CCDs x 2 epochs


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class OwnServers:
    """A private Kafka + Cassandra pair managed with ops/*.sh (never the default-port servers)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="blink-ops-"))
        kport, kctl, cport, cstore, cjmx = _free_ports(5)
        self.kafka_port, self.cassandra_port = kport, cport
        self.env = {**os.environ, "BLINK_OPS_DIR": str(self.dir), "BLINK_KAFKA_PORT": str(kport),
                    "BLINK_KAFKA_CONTROLLER_PORT": str(kctl), "BLINK_CASSANDRA_PORT": str(cport),
                    "BLINK_CASSANDRA_STORAGE_PORT": str(cstore), "BLINK_CASSANDRA_JMX_PORT": str(cjmx),
                    "BLINK_CASSANDRA_HEAP": "512M",
                    "BLINK_STOP_TIMEOUT": "30", "PYTHON": sys.executable}
        self.bootstrap = f"127.0.0.1:{kport}"

    def ops(self, server: str, action: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(REPO / "ops" / f"{server}.sh"), action], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def run(self, server: str, action: str, timeout_s: float = 240) -> float:
        t0 = time.monotonic()
        proc = self.ops(server, action)
        out, _ = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"ops/{server}.sh {action} failed ({proc.returncode}):\n{out.decode()[-3000:]}")
        return time.monotonic() - t0

    def start_both(self) -> None:
        procs = {name: self.ops(name, "start") for name in ("kafka", "cassandra")}
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"ops/{name}.sh start failed:\n{out.decode()[-3000:]}")

    def stop_and_wipe(self) -> None:
        for name in ("kafka", "cassandra"):
            try:
                self.ops(name, "stop").communicate(timeout=90)
            except Exception:  # noqa: BLE001 - best effort; the pid file names only our JVMs
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _have_tools() -> bool:
    cache = Path(os.environ.get("BLINK_OPS_CACHE", REPO / "ops" / ".cache"))
    return shutil.which("java") is not None and any(cache.glob("kafka-*/lib/.fetched")) and any(
        cache.glob("cassandra-*/lib/.fetched"))


@pytest.mark.timeout(420)
def test_kafka_then_cassandra_restart_during_run(small_night, tmp_path):
    if not _have_tools():
        unavailable("java or the ops/ jar cache is missing (ops/up.sh fetches it)")
    servers = OwnServers()
    proc = None
    t_start = time.monotonic()
    try:
        servers.start_both()
        kafka = unique_kafka_settings(servers.bootstrap, "restart", session_timeout_s=30.0)
        tag = kafka.group_id.rsplit("-", 1)[-1]
        create_topics(kafka)
        for path in sorted((small_night / "events").glob("*.avro")):
            publish_event(kafka, read_event_file(path))
        keyspace = f"restart_{tag}"
        env = worker_env(kafka)
        log_path = tmp_path / "workers.log"
        cmd = [sys.executable, "-m", "streamer.cli", "run", "--forever", "--workers", "2", "--root", str(small_night),
               "--apdb", f"cassandra://127.0.0.1:{servers.cassandra_port}/{keyspace}",
               "--kafka-bootstrap", servers.bootstrap, "--worker-id", f"restart-{tag}"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: the finally can end the children

        # Kafka outage while the first CCDs are being processed.
        wait_for(lambda: log_count(log_path, " alerts in ") >= 1, 150, "the first CCD", proc, log_path)
        t_k = servers.run("kafka", "stop")
        time.sleep(3.0)
        t_k += servers.run("kafka", "start")
        # Cassandra outage after at least one more CCD went through.
        n_before = log_count(log_path, " alerts in ")
        wait_for(lambda: log_count(log_path, " alerts in ") > n_before, 150, "a CCD after the Kafka restart",
                  proc, log_path)
        t_c = servers.run("cassandra", "stop")
        time.sleep(3.0)
        t_c += servers.run("cassandra", "start")
        wait_for(lambda: work_done(kafka) >= N_WORK, 200, "every work item committed", proc, log_path)
        proc.send_signal(signal.SIGTERM)  # the parent forwards it to both workers
        rc = proc.wait(90)
        logs = log_path.read_text(errors="replace")
        assert rc == 0, logs[-4000:]
        assert "dead letter" not in logs

        from streamer.apdb.cassandra import CassandraApdb

        apdb = CassandraApdb(["127.0.0.1"], servers.cassandra_port, keyspace=keyspace, consistency="ONE")
        try:
            tables = apdb.dump_tables()
        finally:
            apdb.close()
        source_ids = sorted(np.asarray(tables["DiaSource"]["diaSourceId"]).tolist())
        assert source_ids, "no DiaSources in Cassandra"
        assert set(np.asarray(tables["DiaSource"]["detector"]).tolist()) == {28, 35}
        schema = AlertSchema.latest()
        alert_ids = sorted(schema.deserialize(m.value())["diaSourceId"]
                           for m in read_topic(servers.bootstrap, kafka.alerts_topic, idle_s=4.0))
        assert alert_ids == source_ids  # each DiaSource: exactly one committed alert
        assert read_topic(servers.bootstrap, kafka.dead_letter_topic, idle_s=2.0) == []
        print(f"restart test: Kafka outage {t_k:.1f} s, Cassandra outage {t_c:.1f} s, {len(source_ids)} alerts, "
              f"total {time.monotonic() - t_start:.0f} s; retries logged: {logs.count('transient failure')}")
    finally:
        end_workers(proc)
        servers.stop_and_wipe()
