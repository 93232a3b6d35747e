"""Alert serialization and publishing throughput, one core.

Serializes N realistic alerts (``streamer.alerts.schema.sample_alert``: ~12 months of previous DiaSources and three
cutouts) with

* ``AlertSchema.serialize_framed`` (Blink's generated encoder + Confluent framing),
* ``fastavro.schemaless_writer`` on the parsed schema,
* ``lsst.alert.packet.Schema.serialize``,

and, when a Kafka broker answers at ``--bootstrap`` (``ops/kafka.sh start``), publishes N alerts through
``KafkaAlertSink`` to a fresh topic (alerts/s including the ``acks=all`` acknowledgement).

Goal: 5,000 alerts/s per core.

Run: ``python bench/bench_alerts.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastavro  # noqa: E402
from _common import console, machine_line, pin_to_one_core, worker_malloc  # noqa: E402
from rich.table import Table  # noqa: E402

GOAL_PER_S = 5000.0


def make_pool(n_pool: int, n_prv: int, cutout_nbytes: int) -> list[dict]:
    from streamer.alerts.schema import sample_alert

    return [
        sample_alert(dia_object_id=1_000_000_001 + i, dia_source_id=2_000_000_001 + 1000 * i, visit=1 + i // 100,
                     detector=1 + i % 62, n_prv_dia_sources=n_prv, cutout_nbytes=cutout_nbytes)
        for i in range(n_pool)
    ]


def history_batches(pool: list[dict], batch: int) -> list[tuple[list[dict], object]]:
    """The pool cut into CCD-sized batches as a worker has them: alerts, and their objects' previous
    DiaSources as one APDB Table (what ``ApdbStore.read_region`` returns)."""
    from streamer.apdb.columns import TABLES
    from streamer.apdb.table_rows import rows_to_table

    names = TABLES["DiaSource"].names
    out = []
    for start in range(0, len(pool), batch):
        alerts = pool[start:start + batch]
        rows = [tuple(r.get(k) for k in names) for a in alerts for r in a["prvDiaSources"]]
        table = rows_to_table("DiaSource", names, rows)
        out.append(([{**a, "prvDiaSources": None} for a in alerts], table))
    return out


def with_encoded_history(alerts: list[dict], history) -> list[dict]:
    """The worker's path (``streamer.alerts.builder``): every history row of the batch Avro-encoded at once,
    each alert given its object's rows as bytes."""
    from streamer.alerts.history_rows import encoded_history

    encoded = encoded_history("DiaSource", history, float("inf"))
    return [{**a, "prvDiaSources": encoded.get(a["diaSource"]["diaObjectId"], [])} for a in alerts]


def time_batches(serialize, batches, n: int, min_time_s: float) -> tuple[float, float, int, int]:
    """Encode the history of each batch and serialize its alerts until n alerts are done (as
    :func:`time_serializer`)."""
    serialize(with_encoded_history(*batches[0])[0])
    total_bytes = done = k = 0
    target = n
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    while True:
        while done < target:
            alerts = with_encoded_history(*batches[k % len(batches)])[: target - done]
            k += 1
            for alert in alerts:
                total_bytes += len(serialize(alert))
            done += len(alerts)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time_s or done >= 10 * n:
            return elapsed, time.process_time() - cpu0, done, total_bytes
        target += n


def time_serializer(fn, pool: list[dict], n: int, min_time_s: float) -> tuple[float, float, int, int]:
    """Serialize n alerts (cycling over the pool); returns (seconds, CPU seconds, alerts, bytes)."""
    # warm-up (first call may compile / fill caches)
    fn(pool[0])
    total_bytes = 0
    done = 0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    while True:
        for i in range(n):
            total_bytes += len(fn(pool[i % len(pool)]))
        done += n
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time_s or done >= 10 * n:
            return elapsed, time.process_time() - cpu0, done, total_bytes


def kafka_up(bootstrap: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout_s * 1000)})
        md = admin.list_topics(timeout=timeout_s)
        return True, f"{len(md.brokers)} broker(s), {len(md.topics)} topics"
    except Exception as exc:  # KafkaException, or the client library missing
        return False, f"{type(exc).__name__}: {exc}"


def bench_kafka(bootstrap: str, batches, n: int, partitions: int, keep: bool, compression: str):
    from confluent_kafka.admin import AdminClient, NewTopic

    from streamer.alerts.framing import alert_headers, now_mjd_tai
    from streamer.alerts.schema import AlertSchema
    from streamer.kafka.producer import KafkaAlertSink
    from streamer.kafka.settings import KafkaSettings

    topic = f"blink.bench.alerts.{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=bootstrap, alerts_topic=topic, alerts_partitions=partitions,
                             compression=compression)
    admin = AdminClient(settings.common_config())
    # Same topic configuration as streamer.kafka.admin.create_topics, but only the one fresh alerts topic.
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                        config={"retention.ms": str(3_600_000),
                                                "max.message.bytes": str(settings.max_message_bytes),
                                                "compression.type": "producer"})])
    fut[topic].result(timeout=30)
    schema = AlertSchema.latest()
    sink = KafkaAlertSink(settings, schema=schema)
    headers = alert_headers(shutter_close_mjd_tai=now_mjd_tai(), replay=False, schema_id=schema.schema_id)
    try:
        sink.publish(with_encoded_history(*batches[0])[:10], headers=headers)  # warm-up: connection, producer id
        sink.n_delivered = 0
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        times0 = os.times()
        sent = k = 0
        while sent < n:
            alerts = with_encoded_history(*batches[k % len(batches)])[: n - sent]
            k += 1
            sink.publish(alerts, headers=headers)
            sent += len(alerts)
        sink.flush()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        times1 = os.times()
        user, system = times1.user - times0.user, times1.system - times0.system
        delivered = sink.n_delivered
    finally:
        sink.close()
        if not keep:
            admin.delete_topics([topic])[topic].result(timeout=30)
    return elapsed, cpu, delivered, topic, (user, system)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--n-alerts", type=int, default=10_000, help="alerts per measurement (default 10000)")
    ap.add_argument("--prv", type=int, default=30,
                    help="previous DiaSources per alert (~12 months of history; default 30)")
    ap.add_argument("--cutout-bytes", type=int, default=20_000, help="bytes per cutout, three per alert")
    ap.add_argument("--pool", type=int, default=500, help="distinct alerts built and cycled over (memory)")
    ap.add_argument("--min-time", type=float, default=0.0,
                    help="repeat each serializer until it ran at least this many seconds")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    ap.add_argument("--no-kafka", action="store_true", help="skip the publishing row")
    ap.add_argument("--batch", type=int, default=500, help="alerts per KafkaAlertSink.publish call (one CCD-visit)")
    ap.add_argument("--partitions", type=int, default=45, help="partitions of the fresh topic")
    ap.add_argument("--compression", nargs="+", default=["lz4", "snappy", "none"],
                    help="producer compressions to publish with (default: lz4 (the worker's) snappy none)")
    ap.add_argument("--keep-topic", action="store_true", help="do not delete the benchmark topic afterwards")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc malloc's defaults (the worker tunes it: streamer.runtime.malloc_tuning)")
    args = ap.parse_args(argv)

    pin = "not pinned" if args.no_pin else pin_to_one_core()
    # The worker's process setting: without it, freed alert buffers are page-faulted back in for every batch.
    malloc = worker_malloc(args.default_malloc)
    from lsst.alert.packet import Schema

    from streamer.alerts.schema import AlertSchema

    blink = AlertSchema.latest()
    parsed = blink.definition
    packet_schema = Schema.from_file()
    console.print(f"[bold]bench_alerts[/bold] | {machine_line()} | {pin} | {malloc}")
    console.print(f"schema {blink.version}; building {args.pool} distinct alerts "
                  f"({args.prv} prvDiaSources, 3 x {args.cutout_bytes} B cutouts)...")
    pool = make_pool(args.pool, args.prv, args.cutout_bytes)

    def fastavro_writer(rec):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, rec)
        return buf.getvalue()

    # Same bytes? (the generated encoder must match fastavro)
    assert blink.serialize(pool[0]) == fastavro_writer(pool[0]) == packet_schema.serialize(pool[0])

    batches = history_batches(pool, args.batch)
    assert blink.serialize(with_encoded_history(*batches[0])[0]) == blink.serialize(pool[0])

    rows = []
    for name, fn in (("Blink, history encoded from APDB rows (the worker's path)", None),
                     ("Blink, history as record dicts", blink.serialize_framed),
                     ("fastavro.schemaless_writer", fastavro_writer),
                     ("lsst.alert.packet Schema.serialize", packet_schema.serialize)):
        if fn is None:
            elapsed, cpu, done, nbytes = time_batches(blink.serialize_framed, batches, args.n_alerts, args.min_time)
        else:
            elapsed, cpu, done, nbytes = time_serializer(fn, pool, args.n_alerts, args.min_time)
        rate = done / elapsed
        rows.append((name, done, elapsed, cpu, nbytes / done, ""))
        console.print(f"  {name}: {rate:,.0f} alerts/s")

    if args.no_kafka:
        rows.append(("KafkaAlertSink.publish (acks=all)", 0, float("nan"), float("nan"), float("nan"),
                     "skipped (--no-kafka)"))
    else:
        up, why = kafka_up(args.bootstrap)
        if not up:
            rows.append(("KafkaAlertSink.publish (acks=all)", 0, float("nan"), float("nan"), float("nan"),
                         f"skipped: no broker at {args.bootstrap} ({why[:60]}); start with ops/kafka.sh start"))
        else:
            for compression in args.compression:
                elapsed, cpu, delivered, topic, (user, system) = bench_kafka(args.bootstrap, batches, args.n_alerts,
                                                             args.partitions, args.keep_topic, compression)
                size = len(blink.serialize_framed(pool[0]))
                rows.append((f"serialize + publish, {compression}", delivered, elapsed, cpu, size,
                             f"CPU {user:.2f} s user + {system:.2f} s system (kernel: sockets, page faults); "
                             f"acks=all, {args.partitions} partitions, batches of {args.batch}, local broker "
                             f"({why}); topic {'kept' if args.keep_topic else 'deleted'}"))

    table = Table(title=f"Alert serialization / publishing, one core (goal {GOAL_PER_S:,.0f} alerts/s/core)",
                  caption="alerts per CPU s: alerts over the CPU time of this process, all its threads "
                          "(librdkafka's compression and I/O included); the broker's own CPU is not counted.")
    table.add_column("path")
    table.add_column("alerts", justify="right")
    table.add_column("wall s", justify="right")
    table.add_column("alerts/s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("alerts per CPU s", justify="right")
    table.add_column("bytes/alert", justify="right")
    table.add_column("vs goal (per CPU s)")
    table.add_column("note")
    for name, done, elapsed, cpu, size, note in rows:
        if done == 0:
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-", note)
            continue
        per_cpu = done / cpu if cpu > 0 else float("nan")
        ok = "[green]ok[/green]" if per_cpu >= GOAL_PER_S else "[red]below[/red]"
        table.add_row(name, f"{done:,}", f"{elapsed:.2f}", f"{done / elapsed:,.0f}", f"{cpu:.2f}",
                      f"{per_cpu:,.0f}", f"{size:,.0f}", f"{ok} ({per_cpu / GOAL_PER_S:.2f}x)", note)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
