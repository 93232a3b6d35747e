"""The secured Kafka and Cassandra of ``ops/secure.sh``: their credentials, and clients as each of their users."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from streamer.kafka.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[2]
SECURE_DIR = Path(os.environ.get("BLINK_OPS_DIR", REPO / "ops" / ".run")) / "secure"
"""Where ``ops/secure.sh up`` writes ``credentials.env`` (mode 0600) and ``tls/``."""

KAFKA_USERS = ("ADMIN", "WORKER", "READER")
"""The Kafka users of credentials.env: a super user (operator, telescope), the workers, an alert broker."""
CASSANDRA_USERS = ("ADMIN", "WORKER")
"""The Cassandra roles of credentials.env: a superuser (operator), the workers."""


class Credentials(dict):
    """``credentials.env`` as a dict whose ``repr`` (in a failed test's report) shows the names only."""

    def __repr__(self) -> str:
        return f"Credentials({', '.join(self)})"


def read_credentials() -> Credentials:
    """The NAME=VALUE lines of ``credentials.env``."""
    lines = (SECURE_DIR / "credentials.env").read_text().splitlines()
    return Credentials(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def secrets(creds: dict[str, str]) -> dict[str, str]:
    """Every password of ``creds``, and every line of the servers' private keys, by name."""
    found = {name: value for name, value in creds.items() if name.endswith("PASSWORD")}
    for key in sorted((SECURE_DIR / "tls").glob("*.key")):
        body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
        found |= {f"{key.name} line {i}": line for i, line in enumerate(body)}
    return found


def kafka_security(creds: dict[str, str], who: str, *, password: str | None = None) -> dict[str, Any]:
    """KafkaSettings options of SASL_SSL as ``who`` (``ADMIN``, ``WORKER``, ``READER``); ``password``: another."""
    return {"bootstrap_servers": creds["BLINK_SECURE_KAFKA_BOOTSTRAP"], "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": creds[f"BLINK_SECURE_KAFKA_{who}_USER"],
            "sasl_password": password or creds[f"BLINK_SECURE_KAFKA_{who}_PASSWORD"],
            "ssl_ca_location": creds["BLINK_SECURE_CA"]}


def as_kafka_user(settings: KafkaSettings, creds: dict[str, str], who: str) -> KafkaSettings:
    """``settings`` (topics, group) on the secured broker as ``who``."""
    return KafkaSettings(**(settings.model_dump(exclude={"sasl_password"}) | kafka_security(creds, who)))


def security_env(creds: dict[str, str], who: str) -> dict[str, str]:
    """The ``BLINK_KAFKA_*`` and ``BLINK_CASSANDRA_*`` variables of a ``blink`` command run as ``who`` on both."""
    kafka = kafka_security(creds, who)
    env = {f"BLINK_KAFKA_{name.upper()}": str(value) for name, value in kafka.items()}
    return env | {"BLINK_CASSANDRA_HOSTS": creds["BLINK_SECURE_CASSANDRA_HOST"],
                  "BLINK_CASSANDRA_USERNAME": creds[f"BLINK_SECURE_CASSANDRA_{who}_USER"],
                  "BLINK_CASSANDRA_PASSWORD": creds[f"BLINK_SECURE_CASSANDRA_{who}_PASSWORD"],
                  "BLINK_CASSANDRA_SSL_CA": creds["BLINK_SECURE_CA"],
                  "BLINK_CASSANDRA_SSL_CERT": creds["BLINK_SECURE_CLIENT_CERT"],
                  "BLINK_CASSANDRA_SSL_KEY": creds["BLINK_SECURE_CLIENT_KEY"]}


def cassandra_apdb(creds: dict[str, str], who: str, keyspace: str, **options: Any):
    """A :class:`~streamer.apdb.cassandra.CassandraApdb` on the secured Cassandra as ``who`` (TLS, with the
    clients' certificate)."""
    from streamer.apdb.cassandra import CassandraApdb

    return CassandraApdb([creds["BLINK_SECURE_CASSANDRA_HOST"]], keyspace=keyspace,
                         username=creds[f"BLINK_SECURE_CASSANDRA_{who}_USER"],
                         password=creds[f"BLINK_SECURE_CASSANDRA_{who}_PASSWORD"], ssl_ca=creds["BLINK_SECURE_CA"],
                         ssl_cert=creds["BLINK_SECURE_CLIENT_CERT"], ssl_key=creds["BLINK_SECURE_CLIENT_KEY"],
                         **options)
