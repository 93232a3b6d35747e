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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from pipeline.errors import BlinkError, TransientError
from streamer.alerts.schema import AlertSchema
from streamer.errors import FencedError
from streamer.events.records import CcdWork
from streamer.kafka.errors import classify, is_fenced, kafka_error
from streamer.kafka.producer import (
    Message,
    ProduceQueue,
    alert_messages,
    dead_letter_message,
    topic_partitions,
    work_messages,
)
from streamer.kafka.settings import KafkaSettings
from streamer.kafka.source import KafkaEventSource
from streamer.ports import Envelope, Headers

__all__ = ["KafkaTransactions", "transactional_id"]

log = logging.getLogger(__name__)


CALL_TIMEOUT_S = 10.0
"""librdkafka timeout of one transactional call (begin/send_offsets/commit/abort): short, so a broker restart
costs a few retries rather than a minute per call."""
HARD_GRACE_S = 10.0
"""A call that has not returned ``HARD_GRACE_S`` after its own timeout is abandoned (librdkafka can block past
its timeout, e.g. in ``send_offsets_to_transaction`` after a broker restart): the producer is recreated."""


class _Hung(Exception):
    """A client call did not return by its hard deadline."""


def _with_deadline(what: str, fn: Callable[[], Any], deadline_s: float) -> Any:
    """Run ``fn`` in a helper thread and wait at most ``deadline_s`` (the calling thread keeps serving signal
    handlers meanwhile). Raise :class:`_Hung` when it has not returned in time (the thread is left behind)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["exc"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"kafka-{what}", daemon=True).start()
    end = time.monotonic() + deadline_s
    while not done.wait(min(0.5, max(end - time.monotonic(), 0.0))):
        if time.monotonic() >= end:
            raise _Hung(f"{what} did not return in {deadline_s:.0f} s")
    if "exc" in box:
        raise box["exc"]
    return box.get("value")


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
    call_timeout_s : float
        Timeout of each transactional call.

    Notes
    -----
    Use as ``begin()`` -> ``publish``/``send``/``publish_work`` -> ``commit(envelope)``, or ``abort()`` on
    any error. Outside a transaction, ``publish`` and ``send`` raise ``RuntimeError``.

    Recovery: every transactional call runs with a short timeout and a hard deadline. A retriable or abortable
    error aborts the transaction (:class:`TransientError`: the worker redoes the message in a new one). A
    non-fencing fatal error, a failed abort or a call past its hard deadline marks the producer broken; the next
    :meth:`begin` recreates it with the same ``transactional.id`` (``init_transactions`` fences the old one and
    finishes or aborts its transaction). When a commit's outcome is unknown, :meth:`was_committed` asks the
    group's committed offset before the message is redone, so committed work is neither lost nor duplicated.
    """

    def __init__(self, settings: KafkaSettings, source: KafkaEventSource, *, worker_id: str = "0",
                 schema: AlertSchema | None = None, transaction_timeout_s: float = 300.0,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.settings = settings
        self.source = source
        self.schema = schema if schema is not None else AlertSchema.latest()
        self.transactional_id = transactional_id(settings, worker_id)
        self.call_timeout_s = call_timeout_s
        self._conf = settings.producer_config(**{
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": int(max(transaction_timeout_s, settings.delivery_timeout_s) * 1000),
        })
        self._producer: Producer | None = None
        self._queue: ProduceQueue | None = None
        self._open = False
        self._abort_pending = False
        self._broken = True
        self._uncertain: tuple[str, int, int] | None = None  # (topic, partition, next offset) of an unknown commit
        self._partitions: dict[str, int] = {}
        self.n_committed = 0
        self.n_recreated = 0
        self._ensure_producer(timeout_s=max(settings.delivery_timeout_s, call_timeout_s))

    # -- transaction control -------------------------------------------------------------------------------
    def _ensure_producer(self, timeout_s: float | None = None) -> None:
        """(Re)create the producer and ``init_transactions`` when it is missing or broken."""
        if not self._broken and self._producer is not None:
            return
        if self._producer is not None:
            log.warning("recreating the transactional producer %s", self.transactional_id)
            self.n_recreated += 1
        # A hung call may still hold the old producer: drop it without flushing (its transaction is fenced
        # and aborted by the new producer's init_transactions).
        self._producer = self._queue = None
        self._open = False
        self._abort_pending = False
        producer = Producer(self._conf)
        timeout_s = timeout_s if timeout_s is not None else self.call_timeout_s
        try:
            _with_deadline("init_transactions", lambda: producer.init_transactions(timeout_s),
                           timeout_s + HARD_GRACE_S)
        except _Hung as exc:
            raise TransientError(f"init_transactions: {exc}", stage="kafka") from exc
        except KafkaException as exc:
            raise classify(exc, "init_transactions") from exc
        self._producer = producer
        self._queue = ProduceQueue(producer, full_queue_timeout_s=self.settings.delivery_timeout_s)
        self._broken = False

    def _call(self, what: str, fn: Callable[[Producer, float], Any]) -> Any:
        """Call ``fn(producer, timeout)`` with a hard deadline; classify errors; mark the producer broken on a
        hang or a non-fencing fatal error."""
        producer = self._producer
        if producer is None or self._broken:
            raise TransientError(f"{what}: the producer is being recreated", stage="kafka")
        timeout = self.call_timeout_s
        try:
            return _with_deadline(what, lambda: fn(producer, timeout), timeout + HARD_GRACE_S)
        except _Hung as exc:
            log.error("%s; abandoning the producer", exc)
            self._broken = True
            raise TransientError(str(exc), stage="kafka") from exc
        except KafkaException as exc:
            blink = classify(exc, what)
            err = kafka_error(exc)
            if isinstance(blink, TransientError) and (err is None or err.fatal()):
                self._broken = True
            raise blink from exc

    def begin(self) -> None:
        """Open a transaction (aborting one left open, or recreating a broken producer).

        Raises
        ------
        TransientError
            The producer cannot be made ready yet, or the broker refused; retry later.
        """
        if not self._broken and (self._open or self._abort_pending):
            self._open = True
            self.abort()
        self._ensure_producer()
        self._queue.take()  # count and report this transaction's messages only
        self._call("begin_transaction", lambda p, t: p.begin_transaction())
        self._open = True

    def was_committed(self, envelope: Envelope) -> bool:
        """True when an earlier commit of ``envelope`` whose outcome was unknown did commit (the message must
        then not be redone); False otherwise (also when no commit was uncertain).

        Raises
        ------
        TransientError
            The outcome cannot be determined yet (broker unreachable); retry later.
        """
        if self._uncertain is None:
            return False
        topic, partition, next_offset = self._uncertain
        if (topic, partition, next_offset) != (envelope.topic, envelope.partition, envelope.offset + 1):
            self._uncertain = None
            return False
        self._ensure_producer()  # init_transactions completes (or aborts) the pending transaction
        committed = self.source.committed_offset(topic, partition, self.call_timeout_s)
        self._uncertain = None
        if committed >= next_offset:
            log.warning("%s: the commit whose outcome was unknown did commit", envelope.where())
            self.n_committed += 1
            return True
        return False

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
            metadata = self.source.group_metadata()
            self._call("send_offsets_to_transaction",
                       lambda p, t: p.send_offsets_to_transaction(offsets, metadata, t))
            self._commit_with_retries(envelope)
        except TransientError:
            self.abort()
            raise
        _, errors = self._queue.take() if self._queue is not None else (0, [])
        if errors:  # delivery reports are served by commit_transaction; failures abort it first
            log.warning("transaction committed with delivery errors reported: %s", errors[0])
        self._open = False
        self.n_committed += 1

    def _commit_with_retries(self, envelope: Envelope) -> None:
        for attempt in range(3):
            try:
                self._call("commit_transaction", lambda p, t: p.commit_transaction(t))
                return
            except TransientError as exc:
                err = kafka_error(exc.__cause__) if isinstance(exc.__cause__, KafkaException) else None
                if err is not None and err.txn_requires_abort():
                    raise  # certainly not committed: abort and redo
                if err is not None and err.retriable() and not self._broken and attempt < 2:
                    log.warning("commit_transaction: %s; retrying", err)
                    time.sleep(0.5)
                    continue
                # Outcome unknown (timed out, hung or fatal): recreate the producer, then ask the group.
                self._broken = True
                self._uncertain = (envelope.topic, envelope.partition, envelope.offset + 1)
                raise

    def abort(self) -> None:
        """Abort the open transaction (no-op when none is open). A failed abort marks the producer broken: it
        is recreated (which aborts the transaction) by the next :meth:`begin`."""
        if not self._open:
            return
        self._open = False
        self._abort_pending = False
        if self._broken or self._producer is None:
            return
        try:
            self._call("abort_transaction", lambda p, t: p.abort_transaction(t))
        except FencedError:
            raise
        except TransientError as exc:
            log.warning("%s; the producer will be recreated", exc)
            self._broken = True

    # -- outputs ---------------------------------------------------------------------------------------------
    def _produce(self, messages: list[Message]) -> None:
        """Queue messages into the open transaction (the one produce loop, :class:`ProduceQueue`)."""
        if not self._open or self._queue is None:
            raise RuntimeError("produce outside a transaction")
        for message in messages:
            try:
                self._queue.put(message)
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is not None and err.fatal() and not is_fenced(exc):
                    self._broken = True
                raise classify(exc, f"produce to {message.topic}") from exc

    def publish(self, alerts: Sequence[Mapping[str, Any]], *, headers: Headers = ()) -> None:
        """Produce alerts into the open transaction (durable and visible only at :meth:`commit`).

        Raises
        ------
        InputError
            An alert cannot be serialized (nothing of the batch is produced).
        """
        self._produce(alert_messages(self.settings.alerts_topic, self.schema, alerts, headers))

    def send(self, record: Mapping[str, Any]) -> None:
        """Produce one dead letter into the open transaction.

        Raises
        ------
        InputError
            The record does not follow the dead-letter schema.
        """
        self._produce([dead_letter_message(self.settings.dead_letter_topic, record)])

    def publish_work(self, items: Sequence[CcdWork]) -> None:
        """Produce the work items of a fanned-out exposure into the open transaction."""
        topic = self.settings.work_topic
        n = topic_partitions(self._producer, topic, self.call_timeout_s, known=self._partitions) \
            if self._producer is not None else None
        self._produce(work_messages(topic, items, n))

    def flush(self) -> None:
        """Nothing to wait for outside a transaction (commit flushes)."""

    def close(self) -> None:
        """Abort any open transaction and drop the producer."""
        try:
            self.abort()
        except BlinkError as exc:
            log.error("closing transactional producer: %s", exc)
        producer, self._producer = self._producer, None
        if producer is not None and not self._broken:
            try:
                _with_deadline("flush", lambda: producer.flush(5.0), 10.0)
            except _Hung:
                log.error("closing transactional producer: flush hung")
