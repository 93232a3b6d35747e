"""Errors of the streaming service (the pipeline's are in :mod:`pipeline.errors`)."""

from __future__ import annotations

from pipeline.errors import BlinkError

__all__ = ["FencedError"]


class FencedError(BlinkError):
    """This worker's transactional producer was fenced (a newer instance with the same id, or its partitions
    were reassigned): it must stop without committing anything more."""

    reason = "internal_error"
