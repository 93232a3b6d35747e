"""Kafka adapters of the ports (confluent-kafka / librdkafka).

Topics (names in :class:`KafkaSettings`):

==================  ======================  ==========================  ===========================
topic               value                   key                         why the key
==================  ======================  ==========================  ===========================
blink.exposures     exposureReady (Avro)    eventId                     one exposure, one message
blink.ccd-work      ccdWork (Avro)          :func:`~streamer.events.records.work_key`  same sky+CCD stays ordered
blink.alerts.v11    Confluent-framed alert  diaObjectId (ASCII)         one object's alerts ordered
blink.dead-letter   deadLetter (Avro)       ``<exposureId>-<detector>`` grouping
==================  ======================  ==========================  ===========================

The alert topic carries the major schema version in its name (DMTN-210: one topic per major version).
Consumers commit explicitly after the work (and its alerts) are done: ``enable.auto.offset.store=false``
and a synchronous commit in :meth:`KafkaEventSource.commit` (at-least-once). Producers are idempotent with
``acks=all``; :meth:`KafkaAlertSink.publish` returns only when every alert is acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import InputError, TransientError
from streamer.alerts.framing import HEADER_SCHEMA_ID, alert_key
from streamer.alerts.schema import AlertSchema
from streamer.worker.error_policy import encode_dead_letter
from streamer.events.records import CcdWork, ExposureReady, encode_event, encode_work, fan_out, work_key
from streamer.ports import Envelope, Headers

__all__ = [
    "KafkaAlertSink",
    "KafkaDeadLetterSink",
    "KafkaEventSource",
    "KafkaPublisher",
    "KafkaSettings",
    "create_topics",
    "fan_out",
    "publish_event",
    "publish_work",
]

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


class KafkaSettings(BaseSettings):
    """Connection, topic and client settings; read from ``BLINK_KAFKA_*`` environment variables.

    ``bootstrap_servers`` also reads ``BLINK_KAFKA_BOOTSTRAP``. The password is a ``SecretStr``: it is never
    logged nor shown in ``repr``.
    """

    model_config = SettingsConfigDict(env_prefix="BLINK_KAFKA_", frozen=True, populate_by_name=True, extra="ignore")

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
    ssl_ca_location: str | None = Field(None, description="CA bundle for SSL.")
    group_id: str = Field("blink-workers", description="Consumer group of the workers.")
    client_id: str = Field("blink", description="Client id reported to the brokers.")

    events_topic: str = Field("blink.exposures", description="exposureReady events.")
    work_topic: str = Field("blink.ccd-work", description="ccdWork items (fan-out of events).")
    alerts_topic: str = Field("blink.alerts.v11", description="Alerts, one topic per major schema version.")
    dead_letter_topic: str = Field("blink.dead-letter", description="Dead letters.")

    events_partitions: int = Field(1, ge=1, description="Exposures arrive in order; one partition keeps it.")
    work_partitions: int = Field(64, ge=1, description="At least the number of workers (62 CCDs per exposure).")
    alerts_partitions: int = Field(45, ge=1, description="DMTN-210.")
    dead_letter_partitions: int = Field(1, ge=1, description="Low volume.")
    replication_factor: int = Field(1, ge=1, description="1 on the local broker; 3 in production.")
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
                             description="Producer batch.size: bytes per partition batch (alerts are about 66 kB; "
                                         "librdkafka's 1 MB default cost about 25% more CPU per alert).")
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


def _wrap(exc: KafkaException, what: str) -> TransientError:
    return TransientError(f"{what}: {exc.args[0] if exc.args else exc}", stage="kafka")


def create_topics(settings: KafkaSettings, *, timeout_s: float = 30.0) -> list[str]:
    """Create Blink's topics if they do not exist (idempotent).

    Parameters
    ----------
    settings : KafkaSettings
        Topic names, partitions, replication and retention.
    timeout_s : float, optional
        Time allowed per request.

    Returns
    -------
    list of str
        The topics that were created by this call (empty when all existed).

    Raises
    ------
    TransientError
        The cluster could not be reached or refused to create a topic.
    """
    admin = AdminClient(settings.common_config())
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=settings.replication_factor,
            config={
                "retention.ms": str(int(days * _DAY_MS)),
                "max.message.bytes": str(settings.max_message_bytes),
                "compression.type": "producer",
            },
        )
        for name, (partitions, days) in settings.topic_specs().items()
    ]
    created: list[str] = []
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                log.debug("topic %s exists", name)
                continue
            raise _wrap(exc, f"cannot create topic {name}") from exc
    return created


class KafkaEventSource:
    """Messages of one or more topics, committed explicitly after processing.

    Parameters
    ----------
    settings : KafkaSettings
        Connection and consumer settings.
    topics : sequence of str, optional
        Topics to subscribe to (default: ``settings.work_topic``).
    **overrides
        Extra librdkafka consumer settings (e.g. ``{"group.id": ...}``).

    Notes
    -----
    :meth:`poll` skips empty polls and partition-EOF events, logs other non-fatal errors and returns ``None``,
    and raises :class:`TransientError` on a fatal one. :meth:`commit` stores the offset *after* the message and
    commits synchronously, so a crash before the commit redelivers the message (at-least-once).
    """

    def __init__(self, settings: KafkaSettings, topics: Sequence[str] | None = None, **overrides: Any) -> None:
        self.settings = settings
        self.topics = list(topics) if topics is not None else [settings.work_topic]
        self._consumer = Consumer(settings.consumer_config(**overrides))
        self._consumer.subscribe(self.topics)
        self._closed = False
        self._deferred: dict[tuple[str, int], float] = {}
        """``{(topic, partition): monotonic time to resume}`` of partitions handed back by :meth:`defer`."""

    def poll(self, timeout_s: float = 1.0) -> Envelope | None:
        """Return the next message or ``None``.

        Raises
        ------
        TransientError
            A fatal consumer error.
        """
        if self._closed:
            return None
        self._resume_due()
        if self._deferred:  # wake up in time to resume a deferred partition
            timeout_s = max(0.0, min(timeout_s, min(self._deferred.values()) - time.monotonic()))
        msg = self._consumer.poll(timeout_s)
        if msg is None:
            return None
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            if err.fatal():
                raise TransientError(f"fatal consumer error: {err}", stage="kafka")
            log.warning("consumer error on %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), err)
            return None
        return Envelope(
            value=msg.value() or b"",
            key=msg.key(),
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            headers=tuple(msg.headers() or ()),
        )

    def __iter__(self) -> Iterator[Envelope]:
        """Yield messages until :meth:`close` is called."""
        while not self._closed:
            env = self.poll(1.0)
            if env is not None:
                yield env

    def commit(self, envelope: Envelope) -> None:
        """Store and synchronously commit the offset after ``envelope``.

        Raises
        ------
        TransientError
            The commit failed (e.g. the partition was revoked in a rebalance); the message may be redelivered.
        """
        tp = TopicPartition(envelope.topic, envelope.partition, envelope.offset + 1)
        try:
            self._consumer.store_offsets(offsets=[tp])
            self._consumer.commit(offsets=[tp], asynchronous=False)
        except KafkaException as exc:
            raise _wrap(exc, f"cannot commit {envelope.where()}") from exc

    def defer(self, envelope: Envelope, delay_s: float = 0.5) -> None:
        """Hand a message back without committing it: its partition is paused and rewound to it, and is
        resumed ``delay_s`` later; meanwhile :meth:`poll` serves the other partitions.

        Raises
        ------
        TransientError
            The consumer refused (e.g. the partition was just revoked; its new owner gets the message).
        """
        tp = TopicPartition(envelope.topic, envelope.partition, envelope.offset)
        try:
            self._consumer.pause([tp])
            self._consumer.seek(tp)
        except KafkaException as exc:
            raise _wrap(exc, f"cannot hand back {envelope.where()}") from exc
        self._deferred[(envelope.topic, envelope.partition)] = time.monotonic() + delay_s

    @property
    def has_deferred(self) -> bool:
        """True while some partition waits to be resumed (the source is not idle)."""
        return bool(self._deferred)

    def _resume_due(self) -> None:
        """Resume the deferred partitions whose time has come (those still assigned)."""
        now = time.monotonic()
        due = [key for key, at in self._deferred.items() if at <= now]
        if not due:
            return
        for key in due:
            del self._deferred[key]
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        resume = [TopicPartition(topic, part) for topic, part in due if (topic, part) in assigned]
        if resume:
            self._consumer.resume(resume)

    def owns(self, envelope: Envelope) -> bool:
        """True while ``envelope``'s partition is assigned to this consumer (False after it was revoked or
        lost in a rebalance: its new owner redoes the message from the committed offset)."""
        try:
            return any(tp.topic == envelope.topic and tp.partition == envelope.partition
                       for tp in self._consumer.assignment())
        except KafkaException:
            return True

    def committed_offset(self, topic: str, partition: int, timeout_s: float = 10.0) -> int:
        """The group's committed offset of one partition (-1001 when none).

        Raises
        ------
        TransientError
            The coordinator did not answer.
        """
        try:
            tps = self._consumer.committed([TopicPartition(topic, partition)], timeout=timeout_s)
        except KafkaException as exc:
            raise _wrap(exc, f"committed offset of {topic}[{partition}]") from exc
        if not tps or tps[0].error is not None:
            raise TransientError(f"committed offset of {topic}[{partition}]: "
                                 f"{tps[0].error if tps else 'no answer'}", stage="kafka")
        return tps[0].offset

    def group_metadata(self) -> Any:
        """The consumer group metadata, for ``send_offsets_to_transaction`` (KIP-447 fencing)."""
        return self._consumer.consumer_group_metadata()

    def keepalive(self) -> None:
        """Poll without consuming (all assigned partitions paused), so a long wait between messages does not
        exceed ``max.poll.interval.ms`` and trigger a rebalance."""
        if self._closed:
            return
        assigned = self._consumer.assignment()
        try:
            if assigned:
                self._consumer.pause(assigned)
            msg = self._consumer.poll(0)
            if msg is not None and msg.error() is None:  # cannot happen while paused; never drop silently
                log.warning("keepalive received %s[%s]@%s; it will be redelivered", msg.topic(), msg.partition(),
                            msg.offset())
                self._consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        finally:
            assigned = [tp for tp in self._consumer.assignment() if (tp.topic, tp.partition) not in self._deferred]
            if assigned:
                self._consumer.resume(assigned)

    def lag(self) -> dict[tuple[str, int], int]:
        """Return ``{(topic, partition): lag}`` for the assigned partitions (high watermark - position)."""
        out: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            try:
                _, high = self._consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
                pos = self._consumer.position([tp])[0].offset
            except KafkaException:
                continue
            out[(tp.topic, tp.partition)] = max(0, high - pos) if pos >= 0 else high
        return out

    def close(self) -> None:
        """Leave the group and close the consumer (idempotent)."""
        if not self._closed:
            self._closed = True
            self._consumer.close()


_POLL_EVERY = 1000
"""Serve delivery reports (failures) every this many produced messages between flushes."""


class KafkaPublisher:
    """An idempotent producer that collects delivery errors and waits for acknowledgements.

    Parameters
    ----------
    settings : KafkaSettings
        Connection and producer settings.
    **overrides
        Extra librdkafka producer settings.
    """

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        self.settings = settings
        self._producer = Producer(settings.producer_config(**overrides))
        self._errors: list[str] = []
        self._in_flight = 0
        self.n_delivered = 0

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:  # called for failures only (delivery.report.only.error)
            self._errors.append(f"{msg.topic()}: {err}")

    def produce(self, topic: str, value: bytes, key: bytes | str | None, headers: Headers | None) -> None:
        """Queue one message; on a full queue (``BufferError``) serve delivery reports and retry.

        Delivery reports are served by :meth:`wait` (and every ``_POLL_EVERY`` messages), not after each message:
        a ``poll(0)`` per message cost about a third of librdkafka's CPU per alert.
        """
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list(headers) if headers else None,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # queue full: serve delivery reports, then retry
            except KafkaException as exc:
                raise _wrap(exc, f"cannot produce to {topic}") from exc
        self._in_flight += 1
        if self._in_flight % _POLL_EVERY == 0:
            self._producer.poll(0)

    def wait(self, what: str) -> None:
        """Flush and raise :class:`TransientError` if any message since the last wait was not acknowledged."""
        remaining = self._producer.flush(self.settings.delivery_timeout_s + 5.0)
        errors, self._errors = self._errors, []
        sent, self._in_flight = self._in_flight, 0
        self.n_delivered += max(sent - remaining - len(errors), 0)
        if remaining:
            raise TransientError(f"{what}: {remaining} message(s) not acknowledged in time", stage="kafka")
        if errors:
            raise TransientError(f"{what}: {len(errors)} delivery failure(s), first: {errors[0]}", stage="kafka")

    def flush(self) -> None:
        """Wait for every message in flight.

        Raises
        ------
        TransientError
            A message was not acknowledged.
        """
        self.wait("flush")

    def close(self) -> None:
        """Flush (best effort) and drop the producer."""
        try:
            self.wait("close")
        except TransientError as exc:
            log.error("closing producer: %s", exc)


class KafkaAlertSink(KafkaPublisher):
    """Publishes alerts, Confluent-framed, keyed by ``diaObjectId``.

    Parameters
    ----------
    settings : KafkaSettings
        Connection and producer settings; alerts go to ``settings.alerts_topic``.
    schema : AlertSchema, optional
        Alert schema (default: the latest).
    **overrides
        Extra librdkafka producer settings.
    """

    def __init__(self, settings: KafkaSettings, *, schema: AlertSchema | None = None, **overrides: Any) -> None:
        super().__init__(settings, **overrides)
        self.schema = schema if schema is not None else AlertSchema.latest()
        self.topic = settings.alerts_topic

    def publish(self, alerts: Sequence[Mapping[str, Any]], *, headers: Headers = ()) -> None:
        """Produce every alert and wait until all are acknowledged (``acks=all``).

        Parameters
        ----------
        alerts : sequence of dict
            Alert records.
        headers : sequence of (str, bytes)
            Headers for every alert (see :func:`streamer.alerts.framing.alert_headers`); ``blink-schema-id`` is added
            when absent.

        Raises
        ------
        InputError
            An alert cannot be serialized (nothing is produced for the batch).
        TransientError
            An alert was not acknowledged; do not commit the input.
        """
        hdrs = list(headers)
        if not any(name == HEADER_SCHEMA_ID for name, _ in hdrs):
            hdrs.append((HEADER_SCHEMA_ID, str(self.schema.schema_id).encode("ascii")))
        # Serialize everything first, so a bad alert does not leave half a CCD-visit on the topic.
        messages = [(alert_key(a), self.schema.serialize_framed(a)) for a in alerts]
        t0 = time.perf_counter()
        for key, value in messages:
            self.produce(self.topic, value, key, hdrs)
        self.wait(f"publishing {len(messages)} alerts to {self.topic}")
        log.debug("published %d alerts in %.3f s", len(messages), time.perf_counter() - t0)


class KafkaDeadLetterSink(KafkaPublisher):
    """Dead letters as schemaless Avro on ``settings.dead_letter_topic``, keyed ``<exposureId>-<detector>``."""

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        super().__init__(settings, **overrides)
        self.topic = settings.dead_letter_topic

    def send(self, record: Mapping[str, Any]) -> None:
        """Produce one dead letter and wait for its acknowledgement.

        Raises
        ------
        TransientError
            Not acknowledged.
        """
        key = f"{record.get('exposureId')}-{record.get('detector')}"
        try:
            value = encode_dead_letter(record)
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"bad dead-letter record: {exc}", stage="dead_letter") from exc
        self.produce(self.topic, value, key, [("blink-record", b"blink.v1.deadLetter")])
        self.wait(f"sending a dead letter to {self.topic}")


def publish_event(settings: KafkaSettings, ev: ExposureReady, *, producer: KafkaPublisher | None = None) -> None:
    """Publish one ``exposureReady`` event to ``settings.events_topic`` (key: ``eventId``) and wait for the ack.

    Raises
    ------
    TransientError
        Not acknowledged.
    """
    prod = producer if producer is not None else KafkaPublisher(settings)
    prod.produce(settings.events_topic, encode_event(ev), ev.event_id, None)
    prod.wait(f"publishing event {ev.event_id}")


def publish_work(settings: KafkaSettings, items: Sequence[CcdWork], *, producer: KafkaPublisher | None = None) -> None:
    """Publish work items to ``settings.work_topic`` keyed by :func:`~streamer.events.records.work_key`; wait for acks.

    Typically ``publish_work(settings, fan_out(event))`` in the fan-out service.

    Raises
    ------
    TransientError
        An item was not acknowledged.
    """
    prod = producer if producer is not None else KafkaPublisher(settings)
    for item in items:
        prod.produce(settings.work_topic, encode_work(item), work_key(item.exposure, item.detector), None)
    prod.wait(f"publishing {len(items)} work items")
