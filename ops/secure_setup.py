#!/usr/bin/env python3
"""The users, roles, ACLs and grants of the secured servers of ops/secure.sh (run by ``ops/secure.sh up``).

    python ops/secure_setup.py SECURE_DIR

SECURE_DIR (``ops/.run/secure``) holds ``credentials.env`` (the generated passwords), ``tls/`` and the probes'
client configurations. Kafka: the SCRAM-SHA-512 users of credentials.env, created through the SSL listener as
the broker itself (its client certificate: a super user), then Blink's default topics with the ACLs of
``streamer.kafka.acls`` (``blink topics create`` as blink-admin). Cassandra: the superuser blink_admin replaces
the default ``cassandra`` role (which can no longer log in), the role blink_worker, then the APDB keyspace
``blink_apdb`` with the workers' grants (``blink apdb init`` as blink_admin). No password is printed or logged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from wait_ready import cassandra_security, read_env_file


def kafka_users(secure: Path, creds: dict[str, str]) -> None:
    """Create (or reset) the SCRAM-SHA-512 users, then wait until blink-admin can log in with its password."""
    from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    internal = json.loads((secure / "kafka-probe.json").read_text())
    port = os.environ.get("BLINK_SECURE_KAFKA_INTERNAL_PORT", "9095")
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", **internal})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    upserts = [UserScramCredentialUpsertion(creds[f"BLINK_SECURE_KAFKA_{who}_USER"], info,
                                            creds[f"BLINK_SECURE_KAFKA_{who}_PASSWORD"].encode())
               for who in ("ADMIN", "WORKER", "READER")]
    for user, future in admin.alter_user_scram_credentials(upserts, request_timeout=30).items():
        future.result(timeout=30)
    as_admin = AdminClient({"bootstrap.servers": creds["BLINK_SECURE_KAFKA_BOOTSTRAP"], "security.protocol": "SASL_SSL",
                            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": creds["BLINK_SECURE_KAFKA_ADMIN_USER"],
                            "sasl.password": creds["BLINK_SECURE_KAFKA_ADMIN_PASSWORD"],
                            "ssl.ca.location": creds["BLINK_SECURE_CA"], "log_level": 0})
    deadline = time.monotonic() + 30
    while True:  # the credentials reach the broker through the metadata log
        try:
            as_admin.list_topics(timeout=5)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def cassandra_roles(secure: Path, creds: dict[str, str]) -> None:
    """Replace the default superuser by blink_admin and create blink_worker (no permission yet)."""
    from cassandra.cluster import Cluster

    host, ca = creds["BLINK_SECURE_CASSANDRA_HOST"], creds["BLINK_SECURE_CA"]
    admin, worker = creds["BLINK_SECURE_CASSANDRA_ADMIN_USER"], creds["BLINK_SECURE_CASSANDRA_WORKER_USER"]

    def session(username: str, password: str | None = None, password_from: str | None = None):
        client = {"ssl_ca": ca, "ssl_cert": creds["BLINK_SECURE_CLIENT_CERT"],
                  "ssl_key": creds["BLINK_SECURE_CLIENT_KEY"], "username": username, "password": password}
        if password_from:
            client["password_from"] = [str(secure / "credentials.env"), password_from]
        return Cluster([host], **cassandra_security(client)).connect()

    def literal(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    default = session("cassandra", "cassandra")
    default.execute(f'CREATE ROLE IF NOT EXISTS "{admin}" WITH PASSWORD = '
                    f'{literal(creds["BLINK_SECURE_CASSANDRA_ADMIN_PASSWORD"])} AND SUPERUSER = true AND LOGIN = true')
    default.cluster.shutdown()
    as_admin = session(admin, password_from="BLINK_SECURE_CASSANDRA_ADMIN_PASSWORD")
    as_admin.execute("ALTER ROLE cassandra WITH SUPERUSER = false AND LOGIN = false")
    as_admin.execute(f'CREATE ROLE IF NOT EXISTS "{worker}" WITH PASSWORD = '
                     f'{literal(creds["BLINK_SECURE_CASSANDRA_WORKER_PASSWORD"])} AND LOGIN = true')
    as_admin.cluster.shutdown()
    (secure / "cassandra-probe.json").write_text(json.dumps({
        "ssl_ca": ca, "ssl_cert": creds["BLINK_SECURE_CLIENT_CERT"], "ssl_key": creds["BLINK_SECURE_CLIENT_KEY"],
        "username": admin,
        "password_from": [str(secure / "credentials.env"), "BLINK_SECURE_CASSANDRA_ADMIN_PASSWORD"]}) + "\n")


def admin_env(creds: dict[str, str]) -> dict[str, str]:
    """A ``blink`` command's environment as the admin user of both servers, granting the workers' rights."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLINK_")}
    return env | {
        "BLINK_KAFKA_BOOTSTRAP": creds["BLINK_SECURE_KAFKA_BOOTSTRAP"], "BLINK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BLINK_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "BLINK_KAFKA_SASL_USERNAME": creds["BLINK_SECURE_KAFKA_ADMIN_USER"],
        "BLINK_KAFKA_SASL_PASSWORD": creds["BLINK_SECURE_KAFKA_ADMIN_PASSWORD"],
        "BLINK_KAFKA_SSL_CA_LOCATION": creds["BLINK_SECURE_CA"],
        "BLINK_KAFKA_ACL_WORKER_USER": creds["BLINK_SECURE_KAFKA_WORKER_USER"],
        "BLINK_KAFKA_ACL_ALERT_READER_USERS": json.dumps([creds["BLINK_SECURE_KAFKA_READER_USER"]]),
        "BLINK_CASSANDRA_HOSTS": creds["BLINK_SECURE_CASSANDRA_HOST"],
        "BLINK_CASSANDRA_USERNAME": creds["BLINK_SECURE_CASSANDRA_ADMIN_USER"],
        "BLINK_CASSANDRA_PASSWORD": creds["BLINK_SECURE_CASSANDRA_ADMIN_PASSWORD"],
        "BLINK_CASSANDRA_SSL_CA": creds["BLINK_SECURE_CA"],
        "BLINK_CASSANDRA_SSL_CERT": creds["BLINK_SECURE_CLIENT_CERT"],
        "BLINK_CASSANDRA_SSL_KEY": creds["BLINK_SECURE_CLIENT_KEY"],
        "BLINK_CASSANDRA_WORKER_ROLE": creds["BLINK_SECURE_CASSANDRA_WORKER_USER"]}


def main() -> int:
    secure = Path(sys.argv[1])
    creds = read_env_file(str(secure / "credentials.env"))
    kafka_users(secure, creds)
    cassandra_roles(secure, creds)
    for command in (["topics", "create"], ["apdb", "init"]):
        subprocess.run([sys.executable, "-m", "streamer.cli", *command], env=admin_env(creds), check=True,
                       timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
