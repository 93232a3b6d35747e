"""Dead letters: records of work that could not be processed (``schemas/dead_letter.avsc``).

A dead letter keeps the original message bytes unchanged plus why, where and when it failed, so it can be
inspected and replayed. The policy that decides what becomes one is :mod:`streamer.worker.error_policy`; the
sinks that keep them are :mod:`streamer.embedded.sinks` (JSON lines) and :mod:`streamer.kafka.producer` (a
topic).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

import schemas
from pipeline.errors import BlinkError, InputError
from streamer.alerts.framing import now_mjd_tai
from streamer.events.records import DECODE_STAGE
from streamer.ports import Envelope

__all__ = [
    "dead_letter_reason",
    "dead_letter_record",
    "dead_letter_schema",
    "decode_dead_letter",
    "encode_dead_letter",
]


@lru_cache(maxsize=1)
def dead_letter_schema() -> dict[str, Any]:
    """Return the parsed ``deadLetter`` Avro schema (cached)."""
    path = Path(schemas.__file__).parent / "dead_letter.avsc"
    return fastavro.schema.parse_schema(fastavro.schema.load_schema(path, _write_hint=False))


def dead_letter_reason(exc: BaseException) -> str:
    """Return the ``reason`` a dead letter of ``exc`` carries.

    Returns
    -------
    str
        ``malformed_event`` for an ``InputError(stage="decode_event")``; the error's ``reason`` for the other
        Blink errors with data at fault (``bad_input``, ``bad_header``, ``no_work``, ``algorithm_failed``); else
        ``internal_error``.
    """
    if isinstance(exc, InputError) and exc.stage == DECODE_STAGE:
        return "malformed_event"
    if isinstance(exc, BlinkError) and exc.reason in ("bad_input", "bad_header", "no_work", "algorithm_failed"):
        return exc.reason
    return "internal_error"


def dead_letter_record(
    exc: BaseException,
    envelope: Envelope,
    *,
    exposure_id: int | None = None,
    detector: int | None = None,
    failed_at_mjd_tai: float | None = None,
) -> dict[str, Any]:
    """Build a dead-letter record for a failed message.

    Parameters
    ----------
    exc : BaseException
        The failure.
    envelope : Envelope
        The message that failed; its value is kept unchanged as ``payload``.
    exposure_id, detector : int, optional
        What was being processed, when known.
    failed_at_mjd_tai : float, optional
        Failure time, MJD (TAI); default now.

    Returns
    -------
    dict
        A ``blink.v1.deadLetter`` record; ``reason`` is :func:`dead_letter_reason`'s.
    """
    return {
        "reason": dead_letter_reason(exc),
        "message": str(exc) or type(exc).__name__,
        "stage": getattr(exc, "stage", "unknown"),
        "errorType": type(exc).__name__,
        "exposureId": exposure_id,
        "detector": detector,
        "sourceTopic": envelope.topic if envelope.topic is not None else (
            str(envelope.path) if envelope.path is not None else None
        ),
        "sourcePartition": envelope.partition,
        "sourceOffset": envelope.offset,
        "failedAtMjdTai": now_mjd_tai() if failed_at_mjd_tai is None else float(failed_at_mjd_tai),
        "payload": bytes(envelope.value),
    }


def encode_dead_letter(record: Mapping[str, Any]) -> bytes:
    """Encode a dead-letter record as schemaless Avro.

    Raises
    ------
    InputError
        The record does not follow the schema (``stage="dead_letter"``).
    """
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, dead_letter_schema(), dict(record))
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"bad dead-letter record: {exc}", stage="dead_letter") from exc
    return buf.getvalue()


def decode_dead_letter(data: bytes) -> dict[str, Any]:
    """Decode a schemaless Avro dead-letter record.

    Raises
    ------
    InputError
        The bytes are not a dead-letter record.
    """
    try:
        return fastavro.schemaless_reader(io.BytesIO(data), dead_letter_schema(), None)
    except Exception as exc:  # fastavro raises many types on garbage
        raise InputError(f"not a dead-letter record: {type(exc).__name__}: {exc}",
                         stage="decode_dead_letter") from exc
