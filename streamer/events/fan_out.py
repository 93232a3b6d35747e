"""The fan-out of an exposure into per-CCD work items, and the Kafka keys that keep overlapping sky in order."""

from __future__ import annotations

from collections.abc import Sequence

from streamer.apdb.sky import ang2pix_nested
from streamer.events.records import DECAM_SCIENCE_DETECTORS, CcdWork, ExposureReady

__all__ = ["WORK_KEY_NSIDE", "fan_out", "sky_cell", "work_key", "work_partition"]

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


_SCATTER = 45
"""Multiplier of the CCD numbers in :func:`work_partition` (coprime with 62: a permutation; of those, the one
that spreads blocks of consecutive CCD numbers best over halves and alternate partitions)."""


def work_partition(ev: ExposureReady, detector: int, n_partitions: int) -> int:
    """Return the work topic's partition of one CCD's work: the CCDs of an exposure spread evenly over the
    partitions, in a scattered order of their numbers, from an offset set by the boresight's sky cell.

    Parameters
    ----------
    ev : ExposureReady
        The event.
    detector : int
        CCDNUM.
    n_partitions : int
        Partitions of the work topic.

    Returns
    -------
    int
        ``(sky cell + ((detector - 1) * 45 % 62) * n_partitions // 62) % n_partitions``.

    Notes
    -----
    The same (sky cell, detector) always lands on the same partition, as with the key of :func:`work_key`,
    so repeated visits of a field are processed in order. Unlike the key's hash, it spreads an exposure's
    62 CCDs evenly: with fewer partitions than CCDs each gets ``62 // n`` or one more, with more the CCDs are
    evenly spaced among them, so workers owning halves or alternate partitions get equal shares of the CCDs
    to within one or two. The scatter (``* 45 % 62``, a permutation of the 62 numbers) keeps a block of
    neighbouring CCD numbers (an event of a few CCDs of the focal plane's centre) from landing on a few
    neighbouring partitions: in CCD order, ``bench_exposure.py --ccds 8`` put 7 of its 8 CCDs on one
    worker. With the key's hash
    a worker could get many more than its share (the bench exposure's 62 CCDs hashed into 64 partitions put
    25 on one half of the partitions and 37 on the other), and the exposure waited for that worker alone.
    """
    n = int(n_partitions)
    n_ccds = len(DECAM_SCIENCE_DETECTORS)
    return (sky_cell(ev.ra, ev.dec) + ((int(detector) - 1) * _SCATTER % n_ccds) * n // n_ccds) % n
