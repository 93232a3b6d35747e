"""Kafka connection, topic and client settings (``BLINK_KAFKA_*``), and the librdkafka configurations built from them.

Topics:

==================  ======================  ==========================  ===========================
topic               value                   key                         why the key
==================  ======================  ==========================  ===========================
blink.exposures     exposureReady (Avro)    eventId                     one exposure, one message
blink.ccd-work      ccdWork (Avro)          ``sky-<cell>-ccd-<nn>``     same sky+CCD stays ordered
blink.alerts.v11    Confluent-framed alert  diaObjectId (ASCII)         one object's alerts ordered
blink.dead-letter   deadLetter (Avro)       ``<exposureId>-<detector>`` grouping
==================  ======================  ==========================  ===========================

The work key is :func:`streamer.events.fan_out.work_key`. The alert topic carries the major schema version in
its name (DMTN-210: one topic per major version). Consumers commit explicitly after the work (and its alerts)
are done (``enable.auto.offset.store=false``); producers are idempotent with ``acks=all``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.apdb.columns import ALERT_SCHEMA_VERSION
from streamer.runtime.secret_files import password_from_file

__all__ = ["ALERTS_TOPIC", "KafkaSettings"]

SCHEMA_MAJOR_VERSION = int(ALERT_SCHEMA_VERSION.split(".")[0])
ALERTS_TOPIC = f"blink.alerts.v{SCHEMA_MAJOR_VERSION}"
"""The default alert topic: named by the major version of the alert schema the workers write (DMTN-210)."""
_VERSIONED_TOPIC = re.compile(r"[._-]v(\d+)$")


class KafkaSettings(BaseSettings):
    """Connection, topic and client settings; read from ``BLINK_KAFKA_*`` environment variables.

    ``bootstrap_servers`` also reads ``BLINK_KAFKA_BOOTSTRAP``. The password is a ``SecretStr``: it is never
    logged nor shown in ``repr``.
    """

    model_config = SettingsConfigDict(env_prefix="BLINK_KAFKA_", frozen=True, populate_by_name=True, extra="forbid")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("bootstrap_servers", "BLINK_KAFKA_BOOTSTRAP", "BLINK_KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="librdkafka security.protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism, when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    sasl_password_file: Path | None = Field(None, description="File holding the SASL password (a mounted secret), "
                                                              "read at start when sasl_password is not set.")
    ssl_ca_location: str | None = Field(None, description="CA bundle (PEM) that signed the brokers' certificates, "
                                                          "for SSL and SASL_SSL (ops/secure.sh: "
                                                          "ops/.run/secure/tls/ca.pem); None: the system's.")
    ssl_certificate_location: str | None = Field(None, description="Client certificate (PEM), for a listener that "
                                                                   "requires one (SSL with ssl.client.auth=required).")
    ssl_key_location: str | None = Field(None, description="Private key (PEM, unencrypted) of the client certificate.")
    acl_worker_user: str | None = Field(
        None, description="`blink topics create` grants this user the workers' ACLs (streamer.kafka.acls): read "
                          "events and work, write work, alerts and dead letters, its group and transactional ids.")
    acl_alert_reader_users: tuple[str, ...] = Field(
        (), description="`blink topics create` lets each of these users (alert brokers) read the alert topic, in "
                        "consumer groups whose names start with the user name (JSON list in the environment).")
    group_id: str = Field("blink-workers", description="Consumer group of the workers.")
    client_id: str = Field("blink", description="Client id reported to the brokers.")

    events_topic: str = Field("blink.exposures", description="exposureReady events.")
    work_topic: str = Field("blink.ccd-work", description="ccdWork items (fan-out of events).")
    alerts_topic: str = Field(ALERTS_TOPIC, description="Alerts, one topic per major schema version: a name that "
                                                       "ends in a version (.vN, -vN, _vN) must be the schema's.")
    dead_letter_topic: str = Field("blink.dead-letter", description="Dead letters.")

    events_partitions: int = Field(1, ge=1, description="Exposures arrive in order; one partition keeps it.")
    work_partitions: int = Field(64, ge=1, description="At least the number of workers (62 CCDs per exposure).")
    alerts_partitions: int = Field(45, ge=1, description="DMTN-210.")
    dead_letter_partitions: int = Field(1, ge=1, description="Low volume.")
    replication_factor: int = Field(1, ge=1, description="1 on the local broker; 3 in production.")
    min_insync_replicas: int = Field(
        1, ge=1, description="Topic min.insync.replicas: an acks=all write (every producer here, the transactional "
                             "one too) needs this many in-sync replicas, else it is refused and retried. 1 on the "
                             "local broker; 2 with replication 3 (one broker may be down, none lost).")
    alerts_retention_days: float = Field(7.0, gt=0, description="DMTN-210: 7 to 30 days.")
    events_retention_days: float = Field(30.0, gt=0, description="Replays need the events.")
    work_retention_days: float = Field(2.0, gt=0, description="Work is consumed within minutes.")
    dead_letter_retention_days: float = Field(30.0, gt=0, description="Time for a person to look.")
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Topic max.message.bytes (DMTN-210).")

    compression: Literal["snappy", "zstd", "lz4", "gzip", "none"] = Field(
        "lz4", description="Producer compression (all four are built into the installed librdkafka). lz4: the "
                           "cheapest per alert in bench_alerts.py (the cutouts barely compress; snappy cost 10% "
                           "more CPU).")
    linger_ms: float = Field(5.0, ge=0, description="Producer batching delay, ms.")
    batch_bytes: int = Field(4 * 1024 * 1024, ge=1024,
                             description="Producer batch.size: bytes per partition batch (alerts are about 52 kB, "
                                         "60 kB at p99; librdkafka's 1 MB default cost about 25% more CPU per alert).")
    delivery_timeout_s: float = Field(60.0, gt=0, description="Give up on an unacknowledged message after this.")
    max_poll_interval_s: float = Field(900.0, gt=0, description="Longest processing of one message, s.")
    session_timeout_s: float = Field(45.0, gt=0, description="Consumer liveness timeout, s.")
    auto_offset_reset: Literal["earliest", "latest"] = Field("earliest", description="Where a new group starts.")
    schema_registry_url: str | None = Field(
        None, validation_alias=AliasChoices("schema_registry_url", "BLINK_KAFKA_SCHEMA_REGISTRY_URL",
                                            "BLINK_REGISTRY_URL"),
        description="Confluent-compatible schema registry API (Apicurio: http://host:8081/apis/ccompat/v7); "
                    "workers publish the alert schema there under its framing id at start-up. None: no "
                    "registry (the schema files ship with lsst-alert-packet and in schemas/).")
    static_membership: bool = Field(True, description="Join the group as a static member named by the worker "
                                                      "id (group.instance.id): a restarted worker gets its "
                                                      "partitions back without a rebalance; a worker that is "
                                                      "gone for good releases them after session_timeout_s.")

    @model_validator(mode="before")
    @classmethod
    def _sasl_password_from_its_file(cls, data: Any) -> Any:
        return password_from_file(data, "sasl_password", "sasl_password_file")

    @model_validator(mode="after")
    def _insync_within_replication(self) -> KafkaSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas {self.min_insync_replicas} exceeds replication_factor "
                             f"{self.replication_factor}: no write could ever succeed")
        return self

    @model_validator(mode="after")
    def _alerts_topic_of_this_schema(self) -> KafkaSettings:
        named = _VERSIONED_TOPIC.search(self.alerts_topic)
        if named and int(named.group(1)) != SCHEMA_MAJOR_VERSION:
            raise ValueError(f"alerts_topic {self.alerts_topic!r} is named for schema major version {named.group(1)}"
                             f", but the workers write schema {ALERT_SCHEMA_VERSION}: brokers reading that topic "
                             f"expect the old major version (use {ALERTS_TOPIC!r})")
        return self

    def common_config(self) -> dict[str, Any]:
        """Return the librdkafka settings shared by every client (connection and security)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
            # Recover quickly from a broker restart: retry connections every 0.1-1 s (default backoff grows
            # to 10 s) and give up on an unanswered request after 10 s (default 60 s).
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "socket.timeout.ms": 10000,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = self.ssl_certificate_location
        if self.ssl_key_location:
            conf["ssl.key.location"] = self.ssl_key_location
        return conf

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Return an idempotent, ``acks=all`` producer configuration."""
        conf = self.common_config() | {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.compression,
            "linger.ms": self.linger_ms,
            "batch.size": min(self.batch_bytes, self.max_message_bytes),
            "delivery.timeout.ms": int(self.delivery_timeout_s * 1000),
            "message.max.bytes": self.max_message_bytes,
            # Delivery callbacks for failures only; successes are counted at flush (a Python call per
            # message cost about 10% of publishing).
            "delivery.report.only.error": True,
        }
        return conf | overrides

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        """Return a consumer configuration with explicit offset storage and commits."""
        conf = self.common_config() | {
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.auto_offset_reset,
            "max.poll.interval.ms": int(self.max_poll_interval_s * 1000),
            "session.timeout.ms": int(self.session_timeout_s * 1000),
            "partition.assignment.strategy": "cooperative-sticky",
        }
        return conf | overrides

    def topic_specs(self) -> dict[str, tuple[int, float]]:
        """Return ``{topic: (partitions, retention_days)}``."""
        return {
            self.events_topic: (self.events_partitions, self.events_retention_days),
            self.work_topic: (self.work_partitions, self.work_retention_days),
            self.alerts_topic: (self.alerts_partitions, self.alerts_retention_days),
            self.dead_letter_topic: (self.dead_letter_partitions, self.dead_letter_retention_days),
        }
