"""The Kafka event source: messages of the workers' topics, committed explicitly after processing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import TransientError
from streamer.kafka.errors import transient
from streamer.kafka.settings import KafkaSettings
from streamer.ports import Envelope

__all__ = ["KafkaEventSource"]

log = logging.getLogger(__name__)


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
            raise transient(exc, f"cannot commit {envelope.where()}") from exc

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
            raise transient(exc, f"cannot hand back {envelope.where()}") from exc
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
            raise transient(exc, f"committed offset of {topic}[{partition}]") from exc
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
        """Return ``{(topic, partition): lag}`` for the assigned partitions (high watermark - position).

        The high watermarks are those the client's fetches last brought back (``cached=True``; librdkafka
        updates them with every fetch response, about every ``fetch.wait.max.ms`` on an idle partition), so
        no request goes to the broker: a ListOffsets round trip per partition (``cached=False``) held the
        worker's loop between CCDs, 0.1-0.3 s a partition on a loaded 2-core machine
        (``bench/profile_exposure.py --wall``). A partition not fetched from yet is left out.
        """
        out: dict[tuple[str, int], int] = {}
        try:
            positions = self._consumer.position(self._consumer.assignment())
        except KafkaException:
            return out
        for tp in positions:
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            out[(tp.topic, tp.partition)] = max(0, high - tp.offset) if tp.offset >= 0 else high
        return out

    def close(self) -> None:
        """Leave the group and close the consumer (idempotent)."""
        if not self._closed:
            self._closed = True
            self._consumer.close()
