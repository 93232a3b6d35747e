"""The fan-out of an exposure into per-CCD work items, and the Kafka keys that keep overlapping sky in order."""

from __future__ import annotations

from collections.abc import Sequence

from streamer.apdb.sky import ang2pix_nested
from streamer.events.records import DECAM_SCIENCE_DETECTORS, CcdWork, ExposureReady

__all__ = ["WORK_KEY_NSIDE", "fan_out", "sky_cell", "work_key"]

WORK_KEY_NSIDE = 16
"""HEALPix nside of the sky cells used in work keys: 3072 cells of about 3.7 degrees."""


def fan_out(ev: ExposureReady, *, all_detectors: Sequence[int] = DECAM_SCIENCE_DETECTORS) -> list[CcdWork]:
    """Split an exposure into one work item per CCD.

    Parameters
    ----------
    ev : ExposureReady
        The event.
    all_detectors : sequence of int, optional
        Detectors used when ``ev.detectors`` is ``None`` (default: the 62 science CCDs).

    Returns
    -------
    list of CcdWork
        In the event's detector order (or ``all_detectors`` order).
    """
    detectors = ev.detectors if ev.detectors is not None else tuple(all_detectors)
    return [CcdWork(exposure=ev, detector=int(d)) for d in detectors]


def sky_cell(ra_deg: float, dec_deg: float, nside: int = WORK_KEY_NSIDE) -> int:
    """Return the HEALPix NESTED pixel index of a sky position.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Position, degrees.
    nside : int, optional
        HEALPix resolution, a power of two (default :data:`WORK_KEY_NSIDE`).

    Returns
    -------
    int
        Pixel index in ``[0, 12 * nside**2)``.

    Raises
    ------
    ValueError
        ``nside`` is not a power of two.

    Notes
    -----
    The APDB's pixelization (:func:`streamer.apdb.sky.ang2pix_nested`), so a work key's cell and an APDB
    partition are the same numbering.
    """
    return int(ang2pix_nested(nside, ra_deg, dec_deg)[0])


def work_key(ev: ExposureReady, detector: int) -> str:
    """Return the Kafka key of one CCD's work: ``"sky-<cell>-ccd-<detector>"``.

    Parameters
    ----------
    ev : ExposureReady
        The event.
    detector : int
        CCDNUM.

    Returns
    -------
    str
        E.g. ``"sky-1234-ccd-07"``; ``cell`` is the nside-16 NESTED HEALPix cell of the boresight.

    Notes
    -----
    Kafka keeps order only within a partition, and association depends on processing order. Keying by the
    boresight's coarse sky cell *and* the detector puts the same CCD of repeated visits of one field (the
    usual DECam cadence, with dithers much smaller than a 3.7-degree cell) on the same partition, so they are
    processed in order, while the 62 CCDs of one exposure spread over many partitions and run in parallel.
    A key of the sky cell alone would order everything but serialise a whole exposure on one consumer.
    Not covered: large dithers that put a *different* CCD over the same sky, and pointings that straddle a
    cell edge; the APDB layer must tolerate those (Rubin has the same limit, DMTN-260).
    """
    return f"sky-{sky_cell(ev.ra, ev.dec)}-ccd-{int(detector):02d}"
