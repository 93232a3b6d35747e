"""The worker's one error policy: ``on_error(exc, envelope) -> bool`` (STYLE.md convention 9).

A failure whose cause is the data (bad input, no work, an algorithm that found no result, a bug met on one
CCD) becomes a dead letter (:mod:`streamer.events.dead_letters`) and the message is committed; a fault a
retry may cure (:class:`~pipeline.errors.TransientError`), a fenced producer
(:class:`~streamer.errors.FencedError`) and anything that is not an :class:`Exception` are raised again, so
the message is not committed.
"""

from __future__ import annotations

import logging

from pipeline.errors import NoWorkError, TransientError
from streamer.errors import FencedError
from streamer.events.dead_letters import dead_letter_record
from streamer.ports import DeadLetterSink, Envelope
from streamer.runtime import metrics

__all__ = ["ErrorPolicy"]

log = logging.getLogger(__name__)


class ErrorPolicy:
    """What to do with a failed message: dead-letter it (and go on) or raise.

    Parameters
    ----------
    sink : DeadLetterSink
        Where dead letters go.
    dead_letter_no_work : bool, optional
        Also dead-letter a :class:`~pipeline.errors.NoWorkError` (default, so that every CCD that gave no
        alerts has a record saying why); False: log it and go on.

    Notes
    -----
    Call it as ``on_error(exc, envelope, exposure_id=..., detector=...)``; it returns True when the message
    was handled (the caller commits it and goes on) and raises otherwise. Every dead letter is logged with the
    message's topic, partition and offset (or file), and counted in ``blink_dead_letters_total``.
    """

    def __init__(self, sink: DeadLetterSink, *, dead_letter_no_work: bool = True) -> None:
        self.sink = sink
        self.dead_letter_no_work = dead_letter_no_work

    def __call__(self, exc: BaseException, envelope: Envelope, *, exposure_id: int | None = None,
                 detector: int | None = None) -> bool:
        """Handle the failure ``exc`` of ``envelope`` (of CCD ``detector`` of ``exposure_id``, when known).

        Returns
        -------
        bool
            True: the failure was handled (dead-lettered, or no work); commit the message.

        Raises
        ------
        TransientError, FencedError, BaseException
            ``exc`` itself, when a retry may cure it, the worker must stop, or it is not an ``Exception``.
        """
        if isinstance(exc, (TransientError, FencedError)) or not isinstance(exc, Exception):
            raise exc
        what = f"{envelope.where()} (exposure {exposure_id}, detector {detector})"
        if isinstance(exc, NoWorkError):
            log.info("%s: no work (%s)", what, exc)
            if not self.dead_letter_no_work:
                return True
        record = dead_letter_record(exc, envelope, exposure_id=exposure_id, detector=detector)
        log.error("dead letter (%s, stage %s) for %s: %s: %s", record["reason"], record["stage"], what,
                  record["errorType"], record["message"], exc_info=record["reason"] == "internal_error")
        metrics.DEAD_LETTERS.labels(reason=record["reason"], stage=record["stage"]).inc()
        self.sink.send(record)
        return True
