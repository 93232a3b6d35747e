"""Kafka client errors mapped to Blink's: :class:`~pipeline.errors.TransientError` (retry) or
:class:`~streamer.errors.FencedError` (another instance took over: stop)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import BlinkError, TransientError
from streamer.errors import FencedError

__all__ = ["FENCED_CODES", "classify", "is_fenced", "kafka_error", "transient"]

FENCED_CODES = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED)
"""librdkafka error codes of a fenced transactional producer."""


def kafka_error(exc: BaseException) -> KafkaError | None:
    """Return the :class:`~confluent_kafka.KafkaError` a client exception carries, or None."""
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def transient(exc: KafkaException, what: str) -> TransientError:
    """Return a :class:`~pipeline.errors.TransientError` saying ``what`` failed and why (``stage="kafka"``)."""
    return TransientError(f"{what}: {exc.args[0] if exc.args else exc}", stage="kafka")


def is_fenced(exc: BaseException) -> bool:
    """True when ``exc`` says that this transactional producer is fenced (a fatal fencing error)."""
    err = kafka_error(exc)
    return err is not None and err.fatal() and err.code() in FENCED_CODES


def classify(exc: KafkaException, what: str) -> BlinkError:
    """Map a client error to :class:`~streamer.errors.FencedError` (another instance took over: exit) or
    :class:`~pipeline.errors.TransientError` (abort, retry)."""
    err = kafka_error(exc)
    if is_fenced(exc):
        return FencedError(f"{what}: {err}", stage="kafka")
    return TransientError(f"{what}: {err if err is not None else exc}", stage="kafka")
