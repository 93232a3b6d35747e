"""Exception hierarchy shared by every Blink stage."""

from __future__ import annotations


class BlinkError(Exception):
    """Base class of every error Blink raises on purpose.

    Parameters
    ----------
    message : str
        What went wrong, for a person.
    stage : str, optional
        The pipeline or service stage that raised it (``"isr"``, ``"calibrate"``, ``"read_raw"``...).
    """

    reason: str = "error"

    def __init__(self, message: str, *, stage: str = "unknown") -> None:
        super().__init__(message)
        self.stage = stage


class InputError(BlinkError, ValueError):
    """The input is unusable: corrupt or truncated FITS, malformed event, missing calibration, NaNs."""

    reason = "bad_input"


class HeaderError(InputError):
    """A header that cannot describe a science exposure: checked before any pixel is read.

    Non-positive or absurd exposure times, observation times outside DECam's life or disagreeing with the
    exposure-ready event, an OBSTYPE that is not a science exposure, an EXPNUM that is not the event's, or
    section keywords that do not fit the array. The message names the keyword and its value.
    """

    reason = "bad_header"


class TemplatePsfError(InputError):
    """A template tile without a usable PSF model (no PSF images, or images that are not finite, centred
    and positive): the subtraction would have nothing to match. Dead-lettered as ``bad_input`` with its
    own ``errorType``."""


class NoWorkError(BlinkError):
    """There is nothing to do (e.g. a CCD with no template coverage); not a failure."""

    reason = "no_work"


class AlgorithmError(BlinkError):
    """An algorithm could not reach a result on valid input (e.g. astrometric fit diverged)."""

    reason = "algorithm_failed"


class TransientError(BlinkError):
    """A fault outside the data (a timeout, an unavailable server) that a retry may cure."""

    reason = "transient"
