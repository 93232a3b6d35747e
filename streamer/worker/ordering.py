"""The order in which a worker takes work items: as they come, or overlapping sky in time order.

:class:`ClaimedOrder` wires the work claims of :mod:`streamer.apdb.ordering` into the worker: the fan-out
claims each item's sky before publishing it, a worker hands an item back while earlier overlapping work is
unfinished, and releases the claim once the item is done. :class:`Unordered` is the same interface doing
nothing (embedded mode, or ``ordered_association`` off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from streamer.apdb.base import SkyRegion
from streamer.apdb.ordering import WorkClaims, claim_region
from streamer.events.records import CcdWork

__all__ = ["ClaimedOrder", "Unordered", "WorkOrder", "claim_of"]

T = TypeVar("T")

Retried = Callable[[str, Callable[[], T]], T]
"""``retried(what, call)``: ``call`` under the worker's retry policy."""


class WorkOrder(Protocol):
    """When a work item may be processed."""

    def register(self, items: Iterable[CcdWork], retried: Retried) -> None:
        """Fan-out: claim the items' sky before they are published (the fan-out sees exposures in time order)."""
        ...

    def is_turn(self, item: CcdWork, retried: Retried) -> bool:
        """True when no earlier overlapping work is unfinished."""
        ...

    def done(self, item: CcdWork, retried: Retried) -> None:
        """Release the item's claim (after its APDB write or its dead letter)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


class Unordered:
    """Work items are taken as they come (no ordering across partitions)."""

    def register(self, items: Iterable[CcdWork], retried: Retried) -> None:
        """Nothing to claim."""

    def is_turn(self, item: CcdWork, retried: Retried) -> bool:
        """Always True."""
        return True

    def done(self, item: CcdWork, retried: Retried) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to release."""


def claim_of(item: CcdWork) -> tuple[str, SkyRegion, float] | None:
    """Return ``(work id, claim region, mjd)`` of a work item.

    Returns
    -------
    tuple or None
        None for a detector the camera does not know (the pipeline dead-letters it).
    """
    try:
        region = claim_region(item.exposure.ra, item.exposure.dec, item.detector)
    except KeyError:
        return None
    return f"{item.exposure.exposure_id}-{item.detector}", region, float(item.exposure.midpoint_mjd_tai)


class ClaimedOrder:
    """Overlapping CCD-visits are associated in time order, whatever worker gets them.

    Parameters
    ----------
    claims : WorkClaims
        The claims store (:func:`streamer.apdb.ordering.open_claims`); closed by :meth:`close`.
    """

    def __init__(self, claims: WorkClaims) -> None:
        self.claims = claims

    def register(self, items: Iterable[CcdWork], retried: Retried) -> None:
        """Claim each item's sky (retried: an APDB outage must not stop the fan-out)."""
        for claim in filter(None, map(claim_of, items)):
            retried(f"claim of {claim[0]}", lambda c=claim: self.claims.register(*c))

    def is_turn(self, item: CcdWork, retried: Retried) -> bool:
        """True when no claim earlier than the item's remains on its sky."""
        claim = claim_of(item)
        return claim is None or retried(f"claims of {claim[0]}", lambda: self.claims.is_turn(claim[1], claim[2]))

    def done(self, item: CcdWork, retried: Retried) -> None:
        """Delete the item's claims."""
        claim = claim_of(item)
        if claim is not None:
            retried(f"release of {claim[0]}", lambda: self.claims.done(*claim))

    def close(self) -> None:
        """Close the claims store."""
        self.claims.close()
