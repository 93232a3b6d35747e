"""Exactly-once on Kafka: every output of one input message and that message's offset in one transaction.

For each consumed message (an exposure-ready event or one CCD's work item) the worker opens a transaction,
produces what the message gives (work items, alerts or a dead letter), adds the consumer's next offset with
``send_offsets_to_transaction`` and commits (the pattern of confluent-kafka-python's
``examples/eos_transactions.py``). A crash anywhere before the commit aborts everything: a
``read_committed`` consumer of the alert topic never sees the alerts of a CCD whose input offset was not
committed, and the message is processed again after the restart.

Fencing: the ``transactional.id`` is ``<prefix>.<worker_id>``, stable across restarts of the same worker
instance, so a restarted instance fences its zombie predecessor; the consumer group metadata passed with the
offsets (KIP-447) fences a worker that lost its partitions in a rebalance.

The APDB write happens before the commit and is an idempotent upsert keyed by deterministic ids, so
re-processing after an abort leaves the APDB as one write would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from pipeline.errors import BlinkError, InputError, TransientError
from streamer.alerts import HEADER_SCHEMA_ID, AlertSchema, alert_key
from streamer.deadletter import encode_dead_letter
from streamer.errors import FencedError
from streamer.events import CcdWork, encode_work, work_key
from streamer.kafka_io import KafkaEventSource, KafkaSettings
from streamer.ports import Envelope, Headers

__all__ = ["FencedError", "KafkaTransactions", "transactional_id"]

log = logging.getLogger(__name__)


def _classify(exc: KafkaException, what: str) -> BlinkError:
    """Map a client error to :class:`FencedError` (fatal: exit) or :class:`TransientError` (abort, retry)."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError) and (err.fatal() or err.code() in (
            KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)):
        return FencedError(f"{what}: {err}", stage="kafka")
    return TransientError(f"{what}: {err if err is not None else exc}", stage="kafka")


def transactional_id(settings: KafkaSettings, worker_id: str) -> str:
    """Return the ``transactional.id`` of worker ``worker_id``: ``<group_id>.<worker_id>`` (restart-stable)."""
    return f"{settings.group_id}.{worker_id}"


class KafkaTransactions:
    """A transactional producer bound to a consumer; acts as the alert sink and the dead-letter sink.

    Parameters
    ----------
    settings : KafkaSettings
        Topics and client settings.
    source : KafkaEventSource
        The consumer whose offsets are committed inside the transactions.
    worker_id : str
        Stable name of this worker instance (``transactional.id`` suffix).
    schema : AlertSchema, optional
        Alert schema (default: the latest).
    transaction_timeout_s : float
        Broker-side timeout of an open transaction (must exceed the processing time of one CCD).

    Notes
    -----
    Use as ``begin()`` -> ``publish``/``send``/``publish_work`` -> ``commit(envelope)``, or ``abort()`` on
    any error. Outside a transaction, ``publish`` and ``send`` raise ``RuntimeError``.
    """

    def __init__(self, settings: KafkaSettings, source: KafkaEventSource, *, worker_id: str = "0",
                 schema: AlertSchema | None = None, transaction_timeout_s: float = 600.0) -> None:
        self.settings = settings
        self.source = source
        self.schema = schema if schema is not None else AlertSchema.latest()
        self.transactional_id = transactional_id(settings, worker_id)
        conf = settings.producer_config(**{
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": int(transaction_timeout_s * 1000),
        })
        self._producer = Producer(conf)
        self._errors: list[str] = []
        self._open = False
        self._abort_pending = False
        self.n_committed = 0
        self._call("init_transactions", lambda: self._producer.init_transactions(settings.delivery_timeout_s))

    # -- transaction control -------------------------------------------------------------------------------
    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except KafkaException as exc:
            raise _classify(exc, what) from exc

    def begin(self) -> None:
        """Open a transaction (aborting one left open, or finishing an abort that failed, e.g. while the
        broker was down).

        Raises
        ------
        TransientError
            The previous transaction could not be aborted yet, or the broker refused; retry later.
        """
        if self._open or self._abort_pending:
            self._open = True
            self.abort()
            if self._abort_pending:
                raise TransientError("the previous transaction is not aborted yet", stage="kafka")
        self._errors = []
        self._call("begin_transaction", self._producer.begin_transaction)
        self._open = True

    def commit(self, envelope: Envelope) -> None:
        """Add the offset after ``envelope`` to the transaction and commit it.

        Raises
        ------
        TransientError
            The commit failed; the transaction was aborted and the message must be processed again.
        FencedError
            This producer is fenced; the worker must exit.
        """
        if not self._open:
            raise RuntimeError("commit() without begin()")
        offsets = [TopicPartition(envelope.topic, envelope.partition, envelope.offset + 1)]
        try:
            self._call("send_offsets_to_transaction", lambda: self._producer.send_offsets_to_transaction(
                offsets, self.source.group_metadata(), self.settings.delivery_timeout_s))
            self._commit_with_retries()
        except TransientError:
            self.abort()
            raise
        if self._errors:  # delivery reports are served by commit_transaction; failures abort it first
            errors, self._errors = self._errors, []
            log.warning("transaction committed with delivery errors reported: %s", errors[0])
        self._open = False
        self.n_committed += 1

    def _commit_with_retries(self) -> None:
        for attempt in range(5):
            try:
                self._producer.commit_transaction(self.settings.delivery_timeout_s)
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.retriable() and attempt < 4:
                    log.warning("commit_transaction: %s; retrying", err)
                    time.sleep(0.5)
                    continue
                if isinstance(err, KafkaError) and err.txn_requires_abort():
                    raise TransientError(f"commit_transaction: {err}", stage="kafka") from exc
                raise _classify(exc, "commit_transaction") from exc

    def abort(self) -> None:
        """Abort the open transaction (no-op when none is open)."""
        if not self._open:
            return
        self._open = False
        self._abort_pending = False
        try:
            self._producer.abort_transaction(self.settings.delivery_timeout_s)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.fatal():
                raise FencedError(f"abort_transaction: {err}", stage="kafka") from exc
            # Typically a timeout while the broker is unreachable: the abort must be called again before the
            # next begin_transaction (librdkafka keeps the transaction in its aborting state).
            self._abort_pending = bool(isinstance(err, KafkaError) and (err.retriable() or err.code() in (
                KafkaError._TIMED_OUT, KafkaError._TRANSPORT)))
            log.warning("abort_transaction: %s%s", err, " (will retry)" if self._abort_pending else "")

    # -- outputs ---------------------------------------------------------------------------------------------
    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def _produce(self, topic: str, value: bytes, key: bytes | str | None, headers: Headers | None) -> None:
        if not self._open:
            raise RuntimeError("produce outside a transaction")
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=list(headers) if headers else None,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise _classify(exc, f"produce to {topic}") from exc
        self._producer.poll(0)

    def publish(self, alerts: Sequence[Mapping[str, Any]], *, headers: Headers = ()) -> None:
        """Produce alerts into the open transaction (durable and visible only at :meth:`commit`).

        Raises
        ------
        InputError
            An alert cannot be serialized (nothing of the batch is produced).
        """
        hdrs = list(headers)
        if not any(name == HEADER_SCHEMA_ID for name, _ in hdrs):
            hdrs.append((HEADER_SCHEMA_ID, str(self.schema.schema_id).encode("ascii")))
        messages = [(alert_key(a), self.schema.serialize_framed(a)) for a in alerts]
        for key, value in messages:
            self._produce(self.settings.alerts_topic, value, key, hdrs)

    def send(self, record: Mapping[str, Any]) -> None:
        """Produce one dead letter into the open transaction."""
        key = f"{record.get('exposureId')}-{record.get('detector')}"
        try:
            value = encode_dead_letter(record)
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"bad dead-letter record: {exc}", stage="dead_letter") from exc
        self._produce(self.settings.dead_letter_topic, value, key, [("blink-record", b"blink.v1.deadLetter")])

    def publish_work(self, items: Sequence[CcdWork]) -> None:
        """Produce the work items of a fanned-out exposure into the open transaction."""
        for item in items:
            self._produce(self.settings.work_topic, encode_work(item), work_key(item.exposure, item.detector),
                          None)

    def flush(self) -> None:
        """Nothing to wait for outside a transaction (commit flushes)."""

    def close(self) -> None:
        """Abort any open transaction and drop the producer."""
        try:
            self.abort()
        except BlinkError as exc:
            log.error("closing transactional producer: %s", exc)
        self._producer.flush(5.0)
