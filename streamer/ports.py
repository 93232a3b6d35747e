"""The I/O ports of a Blink worker: where events come from and where alerts and dead letters go.

Two adapters implement each port: :mod:`streamer.embedded` (files, no servers; the embedded default) and
:mod:`streamer.kafka` (production). Tests fake them through these Protocols. A port declares every call the
worker makes; an adapter for which a call means nothing implements it as a no-op.

The consumer loop (STYLE.md, conventions 8 and 9) reads::

    while running:
        env = source.poll(1.0)
        if env is None:
            continue
        try:
            work = decode(env.value)             # InputError(stage="decode_event") when malformed
            alerts = process(work)
            sink.publish(alerts, headers=...)    # returns once the broker acknowledged every alert
        except Exception as exc:
            if not on_error(exc, env):           # dead-letter it (True) or re-raise
                raise
        source.commit(env)                       # only after the alerts are durable
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["AlertSink", "DeadLetterSink", "Envelope", "EventSource", "Headers", "Transactions"]

Headers = Sequence[tuple[str, bytes]]
"""Kafka-style headers: ``[(name, value), ...]``."""


@dataclass(frozen=True)
class Envelope:
    """One message as a source delivered it: the raw value plus where it came from.

    Attributes
    ----------
    value : bytes
        The message body, unchanged (schemaless Avro for Kafka, an Avro container file for local files).
    key : bytes or None
        The message key.
    topic, partition, offset : str, int, int or None
        Kafka coordinates (``None`` for files).
    path : Path or None
        The event file (``None`` for Kafka).
    headers : tuple of (str, bytes)
        Message headers.
    """

    value: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    path: Path | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    def where(self) -> str:
        """Return ``"topic[partition]@offset"`` or the file path, for logs and dead letters."""
        if self.path is not None:
            return str(self.path)
        return f"{self.topic}[{self.partition}]@{self.offset}"


@runtime_checkable
class EventSource(Protocol):
    """Delivers messages one at a time; a message counts as done only once :meth:`commit` is called.

    A message delivered but not committed is delivered again after a restart (at-least-once).
    """

    def poll(self, timeout_s: float = 1.0) -> Envelope | None:
        """Return the next message, or ``None`` if none arrived within ``timeout_s`` seconds."""
        ...

    def commit(self, envelope: Envelope) -> None:
        """Mark ``envelope`` (and, for Kafka, everything before it in its partition) as done, durably."""
        ...

    def __iter__(self) -> Iterator[Envelope]:
        """Yield messages until the source is exhausted (files) or stopped with ``close()``."""
        ...

    def defer(self, envelope: Envelope, delay_s: float = 0.5) -> None:
        """Hand ``envelope`` back uncommitted, to be delivered again about ``delay_s`` seconds later."""
        ...

    @property
    def has_deferred(self) -> bool:
        """True while a message handed back by :meth:`defer` waits to be delivered again."""
        ...

    def owns(self, envelope: Envelope) -> bool:
        """True while this source may still commit ``envelope`` (False once a rebalance gave it away)."""
        ...

    def keepalive(self) -> None:
        """Show the source's server that the worker is alive during a long wait, without consuming."""
        ...

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages not yet consumed, ``{(topic, partition): count}`` (empty when the source has no such
        measure)."""
        ...

    def close(self) -> None:
        """Release the source; uncommitted messages will be delivered again."""
        ...


@runtime_checkable
class AlertSink(Protocol):
    """Publishes alert records."""

    def publish(self, alerts: Sequence[Mapping[str, Any]], *, headers: Headers = ()) -> None:
        """Publish ``alerts`` and return only once every one is durably stored/acknowledged.

        Raises
        ------
        TransientError
            At least one alert was not acknowledged; the caller must not commit its input.
        InputError
            An alert cannot be serialized.
        """
        ...

    def flush(self) -> None:
        """Wait for anything still in flight."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


@runtime_checkable
class DeadLetterSink(Protocol):
    """Keeps work that could not be processed, with the reason (``schemas/dead_letter.avsc`` records)."""

    def send(self, record: Mapping[str, Any]) -> None:
        """Store one dead-letter record durably before returning."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class Transactions(Protocol):
    """A transactional producer bound to the source's consumer (exactly-once): outputs and the input offset
    commit together. Between :meth:`begin` and :meth:`commit` it is also the alert and dead-letter sink."""

    def begin(self) -> None:
        """Open a transaction.

        Raises
        ------
        TransientError
            The producer is not ready yet; retry later.
        """
        ...

    def publish_work(self, items: Sequence[Any]) -> None:
        """Produce the work items of a fanned-out exposure into the open transaction."""
        ...

    def commit(self, envelope: Envelope) -> None:
        """Add the offset after ``envelope`` to the transaction and commit it.

        Raises
        ------
        TransientError
            Not committed (aborted); the message must be processed again.
        """
        ...

    def abort(self) -> None:
        """Abort the open transaction (no-op when none is open)."""
        ...

    def was_committed(self, envelope: Envelope) -> bool:
        """True when an earlier commit of ``envelope`` whose outcome was unknown did commit."""
        ...
