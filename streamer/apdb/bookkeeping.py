"""What both APDB stores keep beside the catalog tables: the metadata and visit-detector tables, and the
check of a database's schema version and layout against what a client expects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from astropy.table import Table

from pipeline.errors import InputError

__all__ = ["METADATA_TABLE", "VISIT_DETECTOR_TABLE", "VISIT_DETECTOR_COLUMNS", "major_minor", "check_versions",
           "schema_is_current", "bookkeeping_tables"]

METADATA_TABLE = "ApdbMetadata"
"""Key/value table: ``schema_version``, ``alert_schema_version`` and store configuration."""
VISIT_DETECTOR_TABLE = "ApdbVisitDetector"
"""One row per stored CCD-visit, written last: its presence means the CCD-visit is complete."""
VISIT_DETECTOR_COLUMNS = ["visit", "detector", "n_dia_objects", "n_dia_sources", "n_dia_forced_sources"]
"""Columns of :data:`VISIT_DETECTOR_TABLE`."""


def major_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a schema version such as ``"4.1.0"``."""
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check_versions(stored: dict[str, str], expected: dict[str, str], where: str) -> None:
    """Compare stored metadata with what this code expects.

    Parameters
    ----------
    stored : dict
        Metadata read from the database (empty when the schema was never initialised).
    expected : dict
        Metadata this client writes; ``schema_version`` must match in its major part, every other key
        exactly.
    where : str
        The database, for messages.

    Raises
    ------
    InputError
        Saying which value differs, or that the schema was never initialised.
    """
    if "schema_version" not in stored:
        raise InputError(f"APDB at {where} has no schema version: run init_schema first", stage="apdb")
    have, want = stored["schema_version"], expected["schema_version"]
    if have.split(".")[0] != want.split(".")[0]:
        raise InputError(
            f"APDB at {where} has schema version {have}, this code needs {want} (major versions differ); "
            "migrate the database or use a matching Blink version", stage="apdb")
    for key, value in expected.items():
        if key != "schema_version" and stored.get(key) != value:
            raise InputError(
                f"APDB at {where} was created with {key}={stored.get(key)!r}, this client uses {value!r}",
                stage="apdb")


def schema_is_current(stored: Mapping[str, str], expected: Mapping[str, str]) -> bool:
    """True when the stored metadata hold exactly the ``expected`` entries (``schema_version`` included): the
    store's ``init_schema`` would change nothing, so a client without the right to change a schema (a worker's
    role on a secured Cassandra) need not run it."""
    return all(stored.get(key) == value for key, value in expected.items())


def bookkeeping_tables(visit_detector_rows: Sequence[Sequence[Any]], metadata: Mapping[str, str],
                       ) -> dict[str, Table]:
    """The visit-detector and metadata tables of a store's ``dump_tables``.

    Parameters
    ----------
    visit_detector_rows : sequence of sequence
        :data:`VISIT_DETECTOR_TABLE` rows, in :data:`VISIT_DETECTOR_COLUMNS` order, sorted.
    metadata : mapping
        The metadata entries (sorted here by name).

    Returns
    -------
    dict of str to Table
        ``{VISIT_DETECTOR_TABLE: ..., METADATA_TABLE: ...}``.
    """
    return {
        VISIT_DETECTOR_TABLE: Table(rows=visit_detector_rows or None, names=VISIT_DETECTOR_COLUMNS,
                                    dtype=[np.int64] * len(VISIT_DETECTOR_COLUMNS)),
        METADATA_TABLE: Table(rows=sorted(metadata.items()) or None, names=["name", "value"], dtype=[str, str]),
    }
