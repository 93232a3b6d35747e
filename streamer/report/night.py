"""What happened in a night, gathered from where each fact lives, for the night report (:mod:`streamer.report.html`).

* CCD-visits processed, their alerts, latencies and stage timings: the APDB's ``ApdbCcdTiming`` table
  (:mod:`streamer.apdb.ccd_timings`), written by every worker.
* DiaSources of the night, new DiaObjects and their light curves: the APDB catalog tables (``scan_table``).
* Cutouts: the alerts, in the embedded alert files (``<outputs>/alerts``) or the Kafka alert topic.
* Dead letters: the embedded dead-letter file or the Kafka dead-letter topic.
* Truth, for a simulated night: the truth report (:mod:`streamer.report.truth`).

The night is the ``[from_mjd_tai, to_mjd_tai]`` range of shutter-close times; by default the
:data:`NIGHT_DAYS` before the last CCD-visit recorded.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table, vstack

from streamer.apdb.ccd_timings import open_ccd_timings, timings_table
from streamer.apdb.columns import empty_table
from streamer.settings import ServiceSettings

__all__ = ["NIGHT_DAYS", "NightFacts", "TruthPanels", "gather_night", "new_objects_of"]

log = logging.getLogger(__name__)

NIGHT_DAYS = 0.75
"""Length of the default night (18 h of shutter-close times, ending at the last CCD-visit recorded)."""


@dataclass
class TruthPanels:
    """The truth report of a simulated night: its figure (PNG) and its printed table."""

    figure_png: bytes
    text: str


@dataclass
class NightFacts:
    """Everything the night report shows.

    Attributes
    ----------
    window : (float, float)
        Shutter-close range of the night, MJD (TAI).
    where : dict of str to str
        Where each fact was read (APDB, alerts, dead letters), for the page's header.
    timings : Table
        One row per CCD-visit (:func:`streamer.apdb.ccd_timings.timings_table`).
    dia_sources : Table
        The night's DiaSources.
    new_objects : Table
        The brightest DiaObjects first seen in the night (DiaObjectLast rows, brightest first), with
        ``peakPsfFlux`` and ``peakDiaSourceId`` (their brightest DiaSource of the night).
    light_curves : dict of int to (Table, Table)
        ``diaObjectId`` -> (its DiaSources, its DiaForcedSources).
    cutouts : dict of int to tuple
        ``diaObjectId`` -> (science, template, difference) FITS bytes of its brightest DiaSource's alert.
    dead_letters : list of dict
        The night's dead letters (``schemas/dead_letter.avsc`` records, payload left out).
    truth : TruthPanels or None
        Only for a simulated night (``<data_root>/truth``).
    """

    window: tuple[float, float]
    where: dict[str, str]
    timings: Table
    dia_sources: Table
    new_objects: Table
    light_curves: dict[int, tuple[Table, Table]] = field(default_factory=dict)
    cutouts: dict[int, tuple[Any, Any, Any]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    truth: TruthPanels | None = None


def _scan(apdb, table: str, keep: Callable[[Table], np.ndarray]) -> Table:
    """The rows of APDB table ``table`` that ``keep`` selects, read batch by batch."""
    parts = [part for batch in apdb.scan_table(table) if len(part := batch[keep(batch)])]
    return vstack(parts, metadata_conflicts="silent") if parts else empty_table(table)


def new_objects_of(dia_sources: Table, objects: Table, night_start_mjd_tai: float, n: int) -> Table:
    """The ``n`` brightest DiaObjects first seen in the night.

    Parameters
    ----------
    dia_sources : Table
        The night's DiaSources.
    objects : Table
        DiaObjectLast rows of the objects of ``dia_sources``.
    night_start_mjd_tai : float
        An object whose ``firstDiaSourceMjdTai`` is at or after this is new.
    n : int
        How many.

    Returns
    -------
    Table
        ``objects`` rows, brightest (largest night DiaSource ``psfFlux``) first, with ``peakPsfFlux`` and
        ``peakDiaSourceId``.
    """
    if not len(objects) or not len(dia_sources):
        return objects[:0]
    new = objects[np.asarray(objects["firstDiaSourceMjdTai"], float) >= night_start_mjd_tai - 1e-6]
    flux = np.nan_to_num(np.asarray(dia_sources["psfFlux"], float), nan=-np.inf)
    order = np.lexsort((-flux, np.asarray(dia_sources["diaObjectId"], np.int64)))
    ids = np.asarray(dia_sources["diaObjectId"], np.int64)[order]
    first = np.r_[True, ids[1:] != ids[:-1]]
    peak_ids, peak_rows = ids[first], order[first]
    at = np.searchsorted(peak_ids, np.asarray(new["diaObjectId"], np.int64))
    at = np.clip(at, 0, max(len(peak_ids) - 1, 0))
    new["peakPsfFlux"] = flux[peak_rows[at]]
    new["peakDiaSourceId"] = np.asarray(dia_sources["diaSourceId"], np.int64)[peak_rows[at]]
    new.sort("peakPsfFlux", reverse=True)
    return new[:n]


def _window(timings, dia_sources_of_last: float | None, from_mjd: float | None, to_mjd: float | None
            ) -> tuple[float, float]:
    last = max((t.shutter_close_mjd_tai for t in timings), default=dia_sources_of_last)
    if to_mjd is None:
        to_mjd = (last + 1e-6) if last is not None else math.inf
    if from_mjd is None:
        from_mjd = to_mjd - NIGHT_DAYS if math.isfinite(to_mjd) else -math.inf
    return float(from_mjd), float(to_mjd)


def _latest_midpoint(apdb) -> float | None:
    latest = [float(np.max(b["midpointMjdTai"])) for b in apdb.scan_table("DiaSource") if len(b)]
    return max(latest) if latest else None


def _truth_panels(service: ServiceSettings, apdb) -> TruthPanels | None:
    if not (service.blink.data_root / "truth" / "sources.ecsv").is_file():
        return None
    from rich.console import Console

    from streamer.report.truth import print_truth_report

    text = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "truth_report.png"
        print_truth_report(service.blink, service.cassandra, Console(file=text, width=150, color_system=None),
                           plot_path=png, apdb=apdb)
        return TruthPanels(png.read_bytes(), text.getvalue())


def gather_night(service: ServiceSettings, *, from_mjd_tai: float | None = None, to_mjd_tai: float | None = None,
                 n_objects: int = 6, apdb=None) -> NightFacts:
    """Read what the night report shows, from the deployment ``service`` describes (embedded or
    Kafka/Cassandra).

    Parameters
    ----------
    service : ServiceSettings
        The settings in force (as for ``blink run``).
    from_mjd_tai, to_mjd_tai : float, optional
        Shutter-close range of the night; default the :data:`NIGHT_DAYS` before the last CCD-visit recorded.
    n_objects : int
        How many of the brightest new DiaObjects to show with cutouts and light curves.
    apdb : Apdb, optional
        An open store (default: opened from the settings, and closed here).
    """
    from streamer.apdb import open_apdb
    from streamer.report.night_sources import read_cutouts, read_night_dead_letters

    settings, url = service.blink, service.blink.resolved_apdb_url(service.cassandra)
    own = apdb is None
    apdb = open_apdb(url) if own else apdb
    try:
        log_ = open_ccd_timings(apdb)
        every = log_.read()
        from_mjd, to_mjd = _window(every, None if every else _latest_midpoint(apdb), from_mjd_tai, to_mjd_tai)
        night = [t for t in every if from_mjd <= t.shutter_close_mjd_tai <= to_mjd]
        log_.close()
        visits = np.array(sorted({t.visit for t in night}), np.int64)

        def in_night(b: Table) -> np.ndarray:
            if len(visits):
                return np.isin(np.asarray(b["visit"], np.int64), visits)
            mid = np.asarray(b["midpointMjdTai"], float)
            return (mid >= from_mjd - 0.01) & (mid <= to_mjd)

        dia_sources = _scan(apdb, "DiaSource", in_night)
        ids = np.unique(np.asarray(dia_sources["diaObjectId"], np.int64))
        objects = _scan(apdb, "DiaObjectLast", lambda b: np.isin(np.asarray(b["diaObjectId"], np.int64), ids))
        start = float(np.min(dia_sources["midpointMjdTai"])) if len(dia_sources) else from_mjd
        new = new_objects_of(dia_sources, objects, start, n_objects)
        chosen = np.asarray(new["diaObjectId"], np.int64)
        forced = _scan(apdb, "DiaForcedSource", lambda b: np.isin(np.asarray(b["diaObjectId"], np.int64), chosen))
        truth = _truth_panels(service, apdb)
    finally:
        if own:
            apdb.close()
    src_ids = np.asarray(dia_sources["diaObjectId"], np.int64)
    frc_ids = np.asarray(forced["diaObjectId"], np.int64)
    curves = {int(i): (dia_sources[src_ids == i], forced[frc_ids == i]) for i in chosen}
    kafka = service.kafka_source
    peaks = {int(o): int(s) for o, s in zip(chosen, np.asarray(new["peakDiaSourceId"], np.int64))}
    peak_visits = {int(s["diaSourceId"]): (int(s["visit"]), int(s["detector"])) for s in dia_sources
                   if int(s["diaSourceId"]) in set(peaks.values())}
    since = min((t.started_mjd_tai for t in night), default=None)
    cutouts, alerts_where = read_cutouts(settings, kafka, {o: (s, *peak_visits[s]) for o, s in peaks.items()},
                                         since_mjd_tai=since)
    dead, dead_where = read_night_dead_letters(settings, kafka, night)
    where = {"APDB": url.split("@")[-1], "alerts": alerts_where, "dead letters": dead_where}
    return NightFacts(window=(from_mjd, to_mjd), where=where, timings=timings_table(night),
                      dia_sources=dia_sources, new_objects=new, light_curves=curves, cutouts=cutouts,
                      dead_letters=dead, truth=truth)
