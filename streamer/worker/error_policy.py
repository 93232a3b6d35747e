"""Dead letters: records of work that could not be processed, and the ``on_error`` policy that makes them.

A dead letter (``schemas/dead_letter.avsc``) keeps the original message bytes unchanged plus why, where and
when it failed, so it can be inspected and replayed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

import schemas
from pipeline.errors import BlinkError, InputError, NoWorkError, TransientError
from streamer.alerts.framing import now_mjd_tai
from streamer.ports import DeadLetterSink, Envelope

__all__ = [
    "ErrorHandler",
    "decode_dead_letter",
    "dead_letter_record",
    "dead_letter_schema",
    "encode_dead_letter",
    "make_error_handler",
]

log = logging.getLogger(__name__)

ErrorHandler = Callable[[BaseException, Envelope], bool]
"""``on_error(exc, envelope) -> bool``: True when the failure was handled (commit and go on)."""


@lru_cache(maxsize=1)
def dead_letter_schema() -> dict[str, Any]:
    """Return the parsed ``deadLetter`` Avro schema (cached)."""
    path = Path(schemas.__file__).parent / "dead_letter.avsc"
    return fastavro.schema.parse_schema(fastavro.schema.load_schema(path, _write_hint=False))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InputError) and exc.stage == "decode_event":
        return "malformed_event"
    if isinstance(exc, BlinkError) and exc.reason in ("bad_input", "no_work", "algorithm_failed"):
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
        A ``blink.v1.deadLetter`` record. ``reason`` is ``malformed_event`` for an
        ``InputError(stage="decode_event")``, the error's ``reason`` for other Blink errors, else
        ``internal_error``.
    """
    return {
        "reason": _reason(exc),
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
    """Encode a dead-letter record as schemaless Avro."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, dead_letter_schema(), dict(record))
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
        raise InputError(f"not a dead-letter record: {type(exc).__name__}: {exc}", stage="decode_dead_letter") from exc


def make_error_handler(
    sink: DeadLetterSink,
    *,
    context: Callable[[Envelope], tuple[int | None, int | None]] | None = None,
    dead_letter_no_work: bool = False,
) -> ErrorHandler:
    """Return the standard ``on_error(exc, envelope) -> bool`` policy (STYLE.md convention 9).

    Parameters
    ----------
    sink : DeadLetterSink
        Where dead letters go.
    context : callable, optional
        ``envelope -> (exposure_id, detector)`` to fill those fields (e.g. from a decoded work item); must not
        raise.
    dead_letter_no_work : bool, optional
        Also record :class:`NoWorkError` (default: log it and move on; it is not a failure).

    Returns
    -------
    callable
        ``on_error``: returns True when the message was handled (dead-lettered or no work), so the caller
        commits it and goes on; re-raises :class:`TransientError` (a retry may cure it: do not commit) and
        anything that is not an :class:`Exception` (``KeyboardInterrupt``, ``SystemExit``).
    """

    def on_error(exc: BaseException, envelope: Envelope) -> bool:
        if isinstance(exc, TransientError) or not isinstance(exc, Exception):
            log.warning("transient failure on %s: %s; not committing", envelope.where(), exc)
            raise exc
        exposure_id, detector = context(envelope) if context is not None else (None, None)
        if isinstance(exc, NoWorkError) and not dead_letter_no_work:
            log.info("no work for %s (exposure %s, detector %s): %s", envelope.where(), exposure_id, detector, exc)
            return True
        record = dead_letter_record(exc, envelope, exposure_id=exposure_id, detector=detector)
        log.error(
            "dead-lettering %s (exposure %s, detector %s): %s in stage %s: %s",
            envelope.where(), exposure_id, detector, record["errorType"], record["stage"], record["message"],
            exc_info=record["reason"] == "internal_error",
        )
        sink.send(record)
        return True

    return on_error
