#!/usr/bin/env python3
"""Wait until a local server answers a real request.

    python ops/wait_ready.py kafka     [--host H] [--port 9092] [--timeout 120] [--pid PID] [--nodes N]
    python ops/wait_ready.py cassandra [--host H] [--port 9042] [--timeout 180] [--pid PID] [--nodes N]
    ... --client-conf FILE   how to connect to a secured server (ops/secure.sh), a JSON object:
        kafka: librdkafka options ({"security.protocol": "SSL", "ssl.ca.location": ...});
        cassandra: {"ssl_ca": CA file, "ssl_cert": client certificate, "ssl_key": its key, "username": ...,
        "password": ...} or, instead of "password", "password_from": [an env file of NAME=VALUE lines, NAME]
        (ops/.run/secure/credentials.env).

kafka:     confluent-kafka AdminClient.list_topics() must return broker metadata (at least N brokers).
cassandra: cassandra-driver must run ``SELECT release_version FROM system.local`` on that very node (and, with
           N > 1, the node must see N - 1 peers in gossip with status NORMAL).

Exit 0 when ready (prints the answer unless --quiet), 1 on timeout, 2 if --pid died.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_env_file(path: str) -> dict[str, str]:
    """The NAME=VALUE lines of an env file (comments and blank lines skipped)."""
    with open(path) as f:
        pairs = (line.strip().split("=", 1) for line in f if "=" in line and not line.lstrip().startswith("#"))
        return {name: value for name, value in pairs}


def probe_kafka(host: str, port: int, timeout: float, nodes: int = 1, client: dict | None = None) -> str:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({
        "bootstrap.servers": f"{host}:{port}",
        "socket.timeout.ms": int(max(timeout, 1) * 1000),
        "log_level": 0,
        "logger": logging.getLogger("kafka-probe"),
        **(client or {}),
    })
    md = admin.list_topics(timeout=timeout)
    if len(md.brokers) < nodes:
        raise RuntimeError(f"{len(md.brokers)} brokers in metadata, expected {nodes}")
    return f"kafka brokers={sorted(md.brokers)} cluster_id={md.cluster_id}"


def cassandra_security(client: dict | None) -> dict:
    """The driver's ``auth_provider`` and ``ssl_context`` arguments for a ``--client-conf`` (empty without one)."""
    if not client:
        return {}
    import ssl

    from cassandra.auth import PlainTextAuthProvider

    kwargs: dict = {}
    if client.get("ssl_ca"):
        kwargs["ssl_context"] = ssl.create_default_context(cafile=client["ssl_ca"])
        if client.get("ssl_cert"):  # a server that requires client certificates
            kwargs["ssl_context"].load_cert_chain(client["ssl_cert"], client.get("ssl_key"))
    if client.get("username"):
        password = client.get("password")
        if "password_from" in client:
            env_file, name = client["password_from"]
            password = read_env_file(env_file)[name]
        kwargs["auth_provider"] = PlainTextAuthProvider(username=client["username"], password=password or "")
    return kwargs


def probe_cassandra(host: str, port: int, timeout: float, nodes: int = 1, client: dict | None = None) -> str:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    only_this_node = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=timeout)
    cluster = Cluster([host], port=port, connect_timeout=timeout, control_connection_timeout=timeout,
                      execution_profiles={EXEC_PROFILE_DEFAULT: only_this_node}, **cassandra_security(client))
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        answer = f"cassandra {host} release_version={row.release_version}"
        if nodes > 1:
            gossip = session.execute("SELECT address, status_with_port FROM system_views.gossip_info").all()
            normal = sorted(r.address for r in gossip if (r.status_with_port or "").startswith("NORMAL"))
            if len(normal) < nodes:
                raise RuntimeError(f"{host} sees {len(normal)} NORMAL nodes {normal}, expected {nodes}")
            answer += f" normal_nodes={normal}"
        return answer
    finally:
        cluster.shutdown()


PROBES = {"kafka": (probe_kafka, 9092), "cassandra": (probe_cassandra, 9042)}


def wait_ready(service: str, host: str = "127.0.0.1", port: int | None = None, *,
               timeout: float = 120.0, pid: int | None = None, quiet: bool = False, nodes: int = 1,
               client: dict | None = None) -> int:
    probe, default_port = PROBES[service]
    port = port or default_port
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while True:
        if not _pid_alive(pid):
            print(f"{service}: process {pid} exited before becoming ready", file=sys.stderr)
            return 2
        remaining = deadline - time.monotonic()
        try:
            answer = probe(host, port, max(1.0, min(5.0, remaining)), nodes, client)
            if not quiet:
                print(answer)
            return 0
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_err = exc
        if time.monotonic() >= deadline:
            print(f"{service}: not ready on {host}:{port} after {timeout:.0f}s: {last_err!r}", file=sys.stderr)
            return 1
        time.sleep(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("service", choices=sorted(PROBES))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--pid", type=int, help="fail fast if this process dies")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--nodes", type=int, default=1, help="cluster size the server must see (ops/cluster.sh)")
    ap.add_argument("--client-conf", help="JSON file: how to connect to a secured server (ops/secure.sh)")
    a = ap.parse_args()
    client = None
    if a.client_conf:
        with open(a.client_conf) as f:
            client = json.load(f)
    logging.basicConfig(level=logging.CRITICAL)  # silence driver/librdkafka retry noise
    return wait_ready(a.service, a.host, a.port, timeout=a.timeout, pid=a.pid, quiet=a.quiet,
                      nodes=a.nodes, client=client)


if __name__ == "__main__":
    sys.exit(main())
