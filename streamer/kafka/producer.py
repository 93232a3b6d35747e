"""Producing to Kafka: the messages Blink sends, one produce loop, and the sinks and publishers built on it.

:func:`alert_messages`, :func:`dead_letter_message`, :func:`work_messages` and :func:`event_message` build
every message Blink produces (topic, value, key, headers); :class:`ProduceQueue` is the one loop that queues
them on a librdkafka producer (a full queue is served and retried until a deadline) and collects delivery
failures. :class:`KafkaPublisher` and its sinks wait for the acknowledgements (``acks=all``, idempotent) before
returning; :class:`streamer.kafka.transactions.KafkaTransactions` uses the same messages and loop inside
transactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from pipeline.errors import TransientError
from streamer.alerts.framing import HEADER_PRODUCER_TIMESTAMP, HEADER_SCHEMA_ID, alert_key
from streamer.alerts.schema import AlertSchema
from streamer.events.dead_letters import encode_dead_letter
from streamer.events.fan_out import work_key, work_partition
from streamer.events.records import CcdWork, ExposureReady, encode_event, encode_work
from streamer.kafka.errors import transient
from streamer.kafka.settings import KafkaSettings
from streamer.ports import Headers

__all__ = [
    "DEAD_LETTER_HEADERS",
    "KafkaAlertSink",
    "KafkaDeadLetterSink",
    "KafkaPublisher",
    "Message",
    "ProduceQueue",
    "alert_messages",
    "dead_letter_message",
    "event_message",
    "publish_event",
    "publish_work",
    "topic_partitions",
    "work_messages",
]

log = logging.getLogger(__name__)

POLL_EVERY = 1000
"""Serve delivery reports (failures) every this many queued messages between flushes."""

DEAD_LETTER_HEADERS: Headers = (("blink-record", b"blink.v1.deadLetter"),)
"""Headers of every dead letter."""


# --------------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    """One message to produce."""

    topic: str
    value: bytes
    key: bytes | str | None = None
    headers: Headers | None = None
    partition: int | None = None
    """None: the partitioner's choice from the key."""


def alert_messages(topic: str, schema: AlertSchema, alerts: Sequence[Mapping[str, Any]],
                   headers: Headers = ()) -> list[Message]:
    """The messages of a batch of alerts: Confluent-framed values keyed by ``diaObjectId``.

    Parameters
    ----------
    topic : str
        The alert topic.
    schema : AlertSchema
        The schema the alerts are serialized and framed with.
    alerts : sequence of dict
        Alert records.
    headers : sequence of (str, bytes)
        Headers for every alert (see :func:`streamer.alerts.framing.alert_headers`); ``blink-schema-id`` is
        added when absent, and ``producer_timestamp`` (now, ms since the Unix epoch) to every message.

    Returns
    -------
    list of Message
        Every alert serialized (so a bad alert leaves nothing of its CCD-visit half produced).

    Raises
    ------
    InputError
        An alert cannot be serialized.
    """
    hdrs = list(headers)
    if not any(name == HEADER_SCHEMA_ID for name, _ in hdrs):
        hdrs.append((HEADER_SCHEMA_ID, str(schema.schema_id).encode("ascii")))
    hdrs = [h for h in hdrs if h[0] != HEADER_PRODUCER_TIMESTAMP]
    hdrs.append((HEADER_PRODUCER_TIMESTAMP, str(time.time_ns() // 1_000_000).encode("ascii")))
    return [Message(topic, schema.serialize_framed(a), alert_key(a), hdrs) for a in alerts]


def dead_letter_message(topic: str, record: Mapping[str, Any]) -> Message:
    """The message of a dead letter: schemaless Avro keyed ``<exposureId>-<detector>``.

    Raises
    ------
    InputError
        The record does not follow ``schemas/dead_letter.avsc``.
    """
    key = f"{record.get('exposureId')}-{record.get('detector')}"
    return Message(topic, encode_dead_letter(record), key, DEAD_LETTER_HEADERS)


def work_messages(topic: str, items: Iterable[CcdWork], partitions: int | None = None) -> list[Message]:
    """The messages of work items, keyed by :func:`~streamer.events.fan_out.work_key`, on the partitions
    :func:`~streamer.events.fan_out.work_partition` gives when the topic's ``partitions`` are known (else the
    partitioner's, from the key)."""
    return [Message(topic, encode_work(item), work_key(item.exposure, item.detector),
                    partition=None if not partitions else work_partition(item.exposure, item.detector, partitions))
            for item in items]


def topic_partitions(client: Any, topic: str, timeout_s: float = 10.0, *,
                     known: dict[str, int] | None = None) -> int | None:
    """The number of partitions of ``topic`` from a producer's (or consumer's) metadata; None when unknown.

    ``known`` remembers the counts found (a topic's partitions are only ever added, and a count that is
    too small still names existing partitions)."""
    if known is not None and topic in known:
        return known[topic]
    try:
        meta = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException:
        return None
    if meta is None or meta.error is not None or not meta.partitions:
        return None
    if known is not None:
        known[topic] = len(meta.partitions)
    return len(meta.partitions)


def event_message(topic: str, ev: ExposureReady, headers: Headers | None = None) -> Message:
    """The message of an exposure-ready event, keyed by its ``eventId``."""
    return Message(topic, encode_event(ev), ev.event_id, headers)


# --------------------------------------------------------------------------------------------------- loop
class ProduceQueue:
    """Queues messages on a librdkafka producer and collects delivery failures: the one produce loop.

    Parameters
    ----------
    producer : confluent_kafka.Producer
        A producer configured with ``delivery.report.only.error`` (see :meth:`KafkaSettings.producer_config`).
    full_queue_timeout_s : float
        How long :meth:`put` serves delivery reports and retries while the local queue is full.

    Notes
    -----
    Delivery reports are served by the owner's flush or commit (and every :data:`POLL_EVERY` messages), not
    after each message: a ``poll(0)`` per message cost about a third of librdkafka's CPU per alert.
    """

    def __init__(self, producer: Producer, *, full_queue_timeout_s: float) -> None:
        self.producer = producer
        self.full_queue_timeout_s = full_queue_timeout_s
        self._errors: list[str] = []
        self._n_queued = 0

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:  # called for failures only (delivery.report.only.error)
            self._errors.append(f"{msg.topic()}: {err}")

    def put(self, message: Message) -> None:
        """Queue one message; on a full queue (``BufferError``) serve delivery reports and retry.

        Raises
        ------
        TransientError
            The queue stayed full for ``full_queue_timeout_s``.
        KafkaException
            The client refused the message (the owner classifies it).
        """
        headers = list(message.headers) if message.headers else None
        where = {} if message.partition is None else {"partition": message.partition}
        deadline = time.monotonic() + self.full_queue_timeout_s
        while True:
            try:
                self.producer.produce(message.topic, value=message.value, key=message.key, headers=headers,
                                      on_delivery=self._on_delivery, **where)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise TransientError(f"produce to {message.topic}: the queue stays full",
                                         stage="kafka") from None
                self.producer.poll(0.1)  # queue full: serve delivery reports, then retry
        self._n_queued += 1
        if self._n_queued % POLL_EVERY == 0:
            self.producer.poll(0)

    def take(self) -> tuple[int, list[str]]:
        """Return ``(messages queued, delivery failures)`` since the last call, and start counting anew."""
        queued, self._n_queued = self._n_queued, 0
        errors, self._errors = self._errors, []
        return queued, errors


# --------------------------------------------------------------------------------------------------- sinks
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
        self._queue = ProduceQueue(self._producer, full_queue_timeout_s=settings.delivery_timeout_s)
        self._partitions: dict[str, int] = {}
        self.n_delivered = 0

    def produce_all(self, messages: Iterable[Message]) -> None:
        """Queue messages (acknowledged by the next :meth:`wait`).

        Raises
        ------
        TransientError
            The client refused a message, or its queue stayed full.
        """
        for message in messages:
            try:
                self._queue.put(message)
            except KafkaException as exc:
                raise transient(exc, f"cannot produce to {message.topic}") from exc

    def partitions(self, topic: str) -> int | None:
        """Partitions of ``topic`` (:func:`topic_partitions`; remembered once known)."""
        return topic_partitions(self._producer, topic, self.settings.delivery_timeout_s, known=self._partitions)

    def produce(self, topic: str, value: bytes, key: bytes | str | None, headers: Headers | None) -> None:
        """Queue one message (see :meth:`produce_all`)."""
        self.produce_all([Message(topic, value, key, headers)])

    def wait(self, what: str) -> None:
        """Flush and raise :class:`TransientError` if any message since the last wait was not acknowledged."""
        remaining = self._producer.flush(self.settings.delivery_timeout_s + 5.0)
        sent, errors = self._queue.take()
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
            Headers for every alert (see :func:`alert_messages`).

        Raises
        ------
        InputError
            An alert cannot be serialized (nothing is produced for the batch).
        TransientError
            An alert was not acknowledged; do not commit the input.
        """
        messages = alert_messages(self.topic, self.schema, alerts, headers)
        t0 = time.perf_counter()
        self.produce_all(messages)
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
        InputError
            The record does not follow the dead-letter schema.
        TransientError
            Not acknowledged.
        """
        self.produce_all([dead_letter_message(self.topic, record)])
        self.wait(f"sending a dead letter to {self.topic}")


def publish_event(settings: KafkaSettings, ev: ExposureReady, *, producer: KafkaPublisher | None = None) -> None:
    """Publish one ``exposureReady`` event to ``settings.events_topic`` (key: ``eventId``) and wait for the ack.

    Raises
    ------
    TransientError
        Not acknowledged.
    """
    prod = producer if producer is not None else KafkaPublisher(settings)
    prod.produce_all([event_message(settings.events_topic, ev)])
    prod.wait(f"publishing event {ev.event_id}")


def publish_work(settings: KafkaSettings, items: Sequence[CcdWork], *, producer: KafkaPublisher | None = None) -> None:
    """Publish work items to ``settings.work_topic`` (see :func:`work_messages`) and wait for the acks.

    Typically ``publish_work(settings, fan_out(event))`` in the fan-out.

    Raises
    ------
    TransientError
        An item was not acknowledged.
    """
    prod = producer if producer is not None else KafkaPublisher(settings)
    prod.produce_all(work_messages(settings.work_topic, items, prod.partitions(settings.work_topic)))
    prod.wait(f"publishing {len(items)} work items")
