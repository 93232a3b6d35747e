"""Avro schema definitions in one canonical key order, so that the schema text written into files is the same
in every process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_key_order"]


def canonical_key_order(definition: Any) -> Any:
    """A copy of a schema definition with every object's keys in sorted order (lists keep theirs).

    ``fastavro.schema.load_schema`` and ``lsst-alert-packet`` build a definition's objects in an order that
    depends on Python's string hashing, so the schema text that Avro container files carry changed from process
    to process; sorted keys make it the same everywhere without changing what the schema says.
    """
    if isinstance(definition, Mapping):
        return {key: canonical_key_order(definition[key]) for key in sorted(definition)}
    if isinstance(definition, list):
        return [canonical_key_order(item) for item in definition]
    return definition
