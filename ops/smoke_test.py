#!/usr/bin/env python3
"""End-to-end smoke test of the local servers started by ops/up.sh.

    python ops/smoke_test.py            # create topic, produce+consume, create keyspace+table, write+read
    python ops/smoke_test.py --check    # only verify that what a previous run wrote is still there

Honours BLINK_KAFKA_PORT / BLINK_CASSANDRA_PORT.  Exit 0 on success.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from cassandra.cluster import Cluster
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

HOST = "127.0.0.1"
KAFKA = f"{HOST}:{os.environ.get('BLINK_KAFKA_PORT', '9092')}"
CASSANDRA_PORT = int(os.environ.get("BLINK_CASSANDRA_PORT", "9042"))
TOPIC = "blink-ops-smoke"
KEYSPACE = "blink_ops_smoke"


def kafka_roundtrip(check_only: bool) -> None:
    admin = AdminClient({"bootstrap.servers": KAFKA})
    if not check_only and TOPIC not in admin.list_topics(timeout=10).topics:
        fut = admin.create_topics([NewTopic(TOPIC, num_partitions=4, replication_factor=1)])[TOPIC]
        fut.result(timeout=30)
    md = admin.list_topics(timeout=10)
    assert TOPIC in md.topics, f"topic {TOPIC} missing: {sorted(md.topics)}"
    print(f"kafka: topic {TOPIC} has {len(md.topics[TOPIC].partitions)} partitions")
    if check_only:
        # earlier messages must still be there
        c = Consumer({"bootstrap.servers": KAFKA, "group.id": f"smoke-{uuid.uuid4()}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([TOPIC])
        got = None
        deadline = time.time() + 30
        while got is None and time.time() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got = m.value()
        c.close()
        assert got is not None, "no persisted message found after restart"
        print(f"kafka: persisted message found: {got!r}")
        return
    payload = f"hello {uuid.uuid4()}".encode()
    p = Producer({"bootstrap.servers": KAFKA, "acks": "all"})
    p.produce(TOPIC, key=b"k", value=payload)
    assert p.flush(15) == 0, "produce not acknowledged"
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": f"smoke-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([TOPIC])
    deadline = time.time() + 30
    seen = False
    while not seen and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            raise RuntimeError(m.error())
        seen = m.value() == payload
    c.close()
    assert seen, "produced message not consumed within 30s"
    print(f"kafka: produced and consumed {payload!r}")


def cassandra_roundtrip(check_only: bool) -> None:
    cluster = Cluster([HOST], port=CASSANDRA_PORT)
    s = cluster.connect()
    try:
        print("cassandra: release_version", s.execute("SELECT release_version FROM system.local").one()[0])
        if not check_only:
            s.execute(f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
                      "{'class': 'SimpleStrategy', 'replication_factor': 1}")
            s.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.t (id uuid PRIMARY KEY, v text)")
            s.execute(f"INSERT INTO {KEYSPACE}.t (id, v) VALUES (%s, %s)", (uuid.uuid4(), "hello"))
        n = s.execute(f"SELECT count(*) FROM {KEYSPACE}.t").one()[0]
        assert n >= 1, "no rows"
        print(f"cassandra: {KEYSPACE}.t has {n} row(s)")
    finally:
        cluster.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="only verify persisted data")
    ap.add_argument("--only", choices=["kafka", "cassandra"])
    a = ap.parse_args()
    if a.only in (None, "kafka"):
        kafka_roundtrip(a.check)
    if a.only in (None, "cassandra"):
        cassandra_roundtrip(a.check)
    print("smoke test OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
