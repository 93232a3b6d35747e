"""End-to-end latency of one exposure through Kafka + Cassandra: event published -> last alert committed.

Simulates (once, cached under ``bench/out/``) one full-density exposure of K CCDs, then for 1 and 2 workers
(``blink run --forever --workers N``) on the running servers (default ports; the bench uses its own topics,
group and keyspace and drops the keyspace after): waits until the workers are ready, publishes the
exposure-ready event, reads the alert topic (read_committed) until every CCD is done, and reports the time from
the event's publication to the last committed alert, plus per-CCD latency percentiles taken from the workers'
``... alerts in X s`` log lines (the same quantity as the ``blink_ccd_seconds`` metric).

Run: ``python bench/bench_exposure.py`` (K=4); ``--ccds 62`` for a whole DECam exposure; ``--workers 1 2``;
``--kafka-bootstrap``, ``--cassandra-port``; ``--cluster`` on the local cluster (ops/cluster.sh up:
replication 3, QUORUM).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import OUT_DIR, console, machine_line, median, p95  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALL_CCDS = [c for c in range(1, 63) if c not in (2, 61)] + [2, 61]  # 62 science CCDs (N30/S7 last)
CCD_LINE = re.compile(r"visit (\d+) detector (\d+): (\d+) alerts in ([0-9.]+) s")
DEAD_LETTER_LINE = re.compile(r"streamer\.worker(?:\.\w+)*: dead letter \(")
"""A CCD that ends as a dead letter (a dead CCD, no stars) is finished too; it has no 'alerts in' line."""


def ensure_exposure(n_ccds: int) -> Path:
    from simulator import SimConfig
    from streamer.simulated import simulated_repository

    ccds = sorted([28, 35, 1, 29, 34, 27, 36, 22, 23, 42, 41, 30, 33, 21][:n_ccds]) if n_ccds <= 14 \
        else sorted(ALL_CCDS[:n_ccds])
    root = OUT_DIR / f"sim_exposure_{n_ccds}ccd_full"
    if (root / "events").is_dir():
        return root
    console.print(f"simulating one full-density exposure of {n_ccds} CCDs {ccds} into {root} (once)...")
    t0 = time.perf_counter()
    tmp = root.with_suffix(".tmp")
    simulated_repository(tmp, SimConfig(seed=5, n_epochs=1, ccds=ccds, small=False))
    tmp.rename(root)
    console.print(f"  simulated in {time.perf_counter() - t0:.0f} s")
    return root


def run_once(root: Path, n_workers: int, bootstrap: str, cass_port: int, n_ccds: int, timeout_s: float,
             threads: int = 1, monitor=None, *, cassandra_hosts: str = "127.0.0.1", replication: int = 1) -> dict:
    """One run of the exposure; ``monitor`` (``bench/profile_exposure.py``), if given, is started with the
    supervisor's pid just before the event is published and stopped (with the keyspace's name) once the last
    alert is committed, before the workers are stopped. ``replication`` 3: the keyspace and topics have
    replication 3, read and written at QUORUM and with ``min.insync.replicas`` 2 (the local cluster)."""
    from confluent_kafka import Consumer

    from streamer.apdb.cassandra import CassandraApdb
    from streamer.events.files import read_event_file
    from streamer.kafka.admin import create_topics
    from streamer.kafka.producer import publish_event
    from streamer.kafka.settings import KafkaSettings

    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap_servers=bootstrap, group_id=f"bench-{tag}", events_topic=f"bench.{tag}.exposures",
                          work_topic=f"bench.{tag}.ccd-work", alerts_topic=f"bench.{tag}.alerts",
                          dead_letter_topic=f"bench.{tag}.dead-letter", work_partitions=8, alerts_partitions=4,
                          replication_factor=replication, min_insync_replicas=min(replication, 2))
    create_topics(kafka)
    keyspace = f"bench_{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLINK_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("group_id", "events_topic", "work_topic", "alerts_topic", "dead_letter_topic", "work_partitions",
                 "alerts_partitions", "replication_factor", "min_insync_replicas"):
        env[f"BLINK_KAFKA_{name.upper()}"] = str(getattr(kafka, name))
    log_path = OUT_DIR / f"bench_exposure_{tag}.log"
    cmd = [sys.executable, "-m", "streamer.cli", "run", "--forever", "--workers", str(n_workers), "--root", str(root),
           "--apdb", f"cassandra://{cassandra_hosts}:{cass_port}/{keyspace}"
                     + (f"?replication_factor={replication}&consistency=QUORUM" if replication > 1 else ""),
           "--kafka-bootstrap", bootstrap,
           "--worker-id", f"bench-{tag}", "--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{tag}", "auto.offset.reset": "earliest",
                       "enable.auto.commit": False, "isolation.level": "read_committed"})
    reader.subscribe([kafka.alerts_topic])
    try:
        deadline = time.monotonic() + 120
        while log_path.read_text(errors="replace").count("exactly-once mode") < n_workers:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"workers not ready:\n{log_path.read_text(errors='replace')[-3000:]}")
            reader.poll(0.2)
        time.sleep(5.0)  # let the group settle (assignment of every partition)
        event = read_event_file(sorted((root / "events").glob("*.avro"))[0])
        if monitor is not None:
            monitor.start(proc.pid)
        t0 = time.monotonic()
        publish_event(kafka, event)
        n_alerts, t_last, deadline = 0, None, t0 + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the workers exited ({proc.returncode}) before the exposure was done:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            msg = reader.poll(0.2)
            if msg is not None and msg.error() is None:
                n_alerts += 1
                t_last = time.monotonic()
            text = log_path.read_text(errors="replace")
            done = CCD_LINE.findall(text)
            dead = len(DEAD_LETTER_LINE.findall(text))
            # A CCD logs its alerts when they are produced into its transaction, just before the commit: wait
            # until every logged alert is readable (a redone CCD logs twice; count its last line).
            logged = sum(int(n) for n in {det: n for _, det, n, _ in done}.values())
            if len(done) + dead >= n_ccds and n_alerts >= logged and msg is None:
                break
        else:
            tail = log_path.read_text(errors='replace')[-3000:]
            raise RuntimeError(f"exposure not finished in {timeout_s} s:\n{tail}")
        if monitor is not None:
            monitor.stop(keyspace, t_last - t0)
        per_ccd = [float(m[3]) for m in done]
        expected = logged
    finally:
        reader.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        try:
            apdb = CassandraApdb(cassandra_hosts.split(","), cass_port, keyspace=keyspace, consistency="ONE")
            apdb.drop_keyspace()
            apdb.close()
        except Exception as exc:  # noqa: BLE001
            console.print(f"[yellow]could not drop keyspace {keyspace}: {exc}[/yellow]")
    return {"workers": n_workers, "threads": threads, "e2e_s": t_last - t0, "alerts": n_alerts, "expected": expected,
            "per_ccd": per_ccd, "dead_letters": dead, "log": log_path}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ccds", type=int, default=4, help="CCDs of the exposure (62 = a whole DECam exposure)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1],
                    help="pipeline threads per worker (blink run --threads); every workers x threads pair is run")
    ap.add_argument("--kafka-bootstrap", default=os.environ.get("BLINK_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--cassandra-port", type=int, default=int(os.environ.get("BLINK_CASSANDRA_PORT", "9042")))
    ap.add_argument("--timeout-s", type=float, default=900.0)
    ap.add_argument("--cluster", action="store_true",
                    help="on the local cluster of ops/cluster.sh: Cassandra 127.0.0.2-4 and Kafka :19092-19094, "
                         "replication 3, QUORUM, min.insync.replicas 2")
    args = ap.parse_args(argv)
    cluster = {"cassandra_hosts": "127.0.0.2,127.0.0.3,127.0.0.4", "replication": 3} if args.cluster else {}
    if args.cluster:
        args.kafka_bootstrap = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    root = ensure_exposure(args.ccds)
    rows = [run_once(root, n, args.kafka_bootstrap, args.cassandra_port, args.ccds, args.timeout_s, threads=t,
                     **cluster) for n in args.workers for t in args.threads]
    where = "the 3+3-node local cluster, replication 3, QUORUM" if args.cluster else "single nodes"
    table = Table(title=f"one full-density exposure of {args.ccds} CCDs: event published -> last alert committed "
                        f"(Kafka + Cassandra on {where}, exactly-once)")
    for col in ("workers", "threads", "event -> last alert (s)", "alerts (committed / logged)", "CCDs with alerts",
                "dead letters", "CCD p50 (s)", "CCD p95 (s)", "CCD max (s)", "CCDs/min"):
        table.add_column(col, justify="right")
    for r in rows:
        pc = r["per_ccd"]
        table.add_row(str(r["workers"]), str(r["threads"]), f"{r['e2e_s']:.1f}", f"{r['alerts']} / {r['expected']}",
                      str(len(pc)),
                      str(r["dead_letters"]), f"{median(pc):.2f}", f"{p95(pc):.2f}", f"{max(pc):.2f}",
                      f"{60 * (len(pc) + r['dead_letters']) / r['e2e_s']:.1f}")
    console.print(table)
    console.print(f"{machine_line()} | per-CCD = inputs to alerts produced (log 'alerts in X s' = blink_ccd_seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
