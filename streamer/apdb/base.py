"""The APDB port: what the worker needs from an Alert Production DataBase.

Two adapters implement it and pass the same tests: :mod:`streamer.apdb.sqlite_store` (embedded default) and
:mod:`streamer.apdb.cassandra` (production). Catalogs are :class:`astropy.table.Table` objects whose
column names and types are those of the Rubin alert schema records (diaObject, diaSource, diaForcedSource),
so an alert is a projection of APDB rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from astropy.table import Table

APDB_SCHEMA_VERSION = "4.2.0"
"""Version of the APDB tables; a store refuses to open a database of another major version."""

HISTORY_DAYS = 365.0
"""How far back DiaSource and DiaForcedSource history is read (12 months, as Rubin alerts carry)."""


@dataclass(frozen=True)
class SkyRegion:
    """A circle on the sky: the CCD's footprint plus a margin.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Centre, degrees (ICRS).
    radius_deg : float
        Radius, degrees.
    """

    ra_deg: float
    dec_deg: float
    radius_deg: float


@dataclass(frozen=True)
class RegionData:
    """What one CCD's processing reads from the APDB before association.

    Attributes
    ----------
    dia_objects : Table
        Latest version before the visit of every DiaObject inside the region (DiaObjectLast, or DiaObject
        when a later visit has already stored a newer version).
    dia_sources : Table
        DiaSources of those objects from the 12 months before the visit.
    dia_forced_sources : Table
        DiaForcedSources of those objects from the 12 months before the visit.
    """

    dia_objects: Table
    dia_sources: Table
    dia_forced_sources: Table


@runtime_checkable
class Apdb(Protocol):
    """Operations the worker needs. All writes are idempotent upserts keyed by deterministic ids."""

    def init_schema(self) -> None:
        """Create the tables (versioned); safe to call twice."""

    def check_schema(self) -> None:
        """Raise :class:`pipeline.errors.InputError` when the stored schema version does not match."""

    def read_region(self, region: SkyRegion, visit_mjd_tai: float) -> RegionData:
        """Read the region's DiaObjects as of ``visit_mjd_tai``, and their history before it.

        An object is returned in its latest version with ``validityStartMjdTai < visit_mjd_tai``; objects
        first seen at or after the visit, and newer versions, are invisible; DiaSource and DiaForcedSource
        history is ``[visit_mjd_tai - 365, visit_mjd_tai)``. So re-processing a CCD-visit, even after later
        visits were stored, reads what its first processing read, and the CCDs of one visit never see each
        other's outputs. Time order between overlapping visits is :mod:`streamer.apdb.ordering`'s job.
        """

    def store(
        self,
        *,
        visit: int,
        detector: int,
        dia_objects: Table,
        dia_sources: Table,
        dia_forced_sources: Table,
    ) -> None:
        """Upsert one CCD-visit's outputs: new DiaObject versions (also DiaObjectLast), DiaSources and
        DiaForcedSources. Writing the same CCD twice leaves the tables as one write would."""

    def compact_history(self, before_mjd_tai: float, progress: Callable[[str, int, int], None] | None = None,
                        *, everything: bool = False) -> dict[str, int]:
        """Maintenance: store the DiaSource and DiaForcedSource history of time buckets that ended by
        ``before_mjd_tai`` in the form cheapest to read, with the same contents. Returns counts per table."""

    def read_object(self, dia_object_id: int) -> Table:
        """Every stored version of one DiaObject (DiaObject rows, oldest first; empty when unknown)."""

    def scan_table(self, table: str, batch_rows: int = 50_000) -> Iterator[Table]:
        """Every row of APDB table ``table`` (one version per primary key), as Tables of about ``batch_rows``
        rows in no particular order (for exports: :mod:`streamer.apdb.export`)."""

    def record_provenance(self, key: str, text: str) -> None:
        """Store a run's provenance (:mod:`streamer.runtime.provenance`) as the metadata entry ``key``;
        recording a key again replaces its text."""

    def close(self) -> None:
        """Release connections."""
