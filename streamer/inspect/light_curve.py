"""One DiaObject as a scientist looks at it (``blink lightcurve``): its versions, its DiaSource and
DiaForcedSource history, a summary and a light-curve figure.

The history is read through the :class:`~streamer.apdb.base.Apdb` port alone, so both stores answer:
:meth:`~streamer.apdb.base.Apdb.read_object` gives the object's versions, and region reads at the object's
position, one per :data:`~streamer.apdb.base.HISTORY_DAYS` window from its first version on, give its sources
(the stores index history by sky position and time, not by object).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table, unique, vstack

from pipeline.errors import InputError
from streamer.alerts.framing import now_mjd_tai
from streamer.apdb.base import HISTORY_DAYS, Apdb, SkyRegion
from streamer.apdb.columns import DIA_FORCED_SOURCE, DIA_SOURCE, TABLES, empty_table
from streamer.inspect import pyplot, save_png, wide_console

__all__ = ["BAND_COLOURS", "ObjectHistory", "light_curve_figure", "plot_light_curve", "print_object_history",
           "read_object_history"]

BAND_COLOURS = {"u": "#56b4e9", "g": "#008060", "r": "#e69f00", "i": "#d55e00", "z": "#cc79a7", "y": "#4b0092",
                "Y": "#4b0092", "VR": "#999933", "N964": "#444444"}
"""Colour of each band in the figures (Okabe-Ito colour-blind-safe palette; other bands grey)."""

_SEARCH_RADIUS_DEG = 5.0 / 3600.0
"""Region read around the object's latest position: its earlier versions and sources lie within 1 arcsec."""


@dataclass(frozen=True)
class ObjectHistory:
    """What the APDB holds about one DiaObject.

    Attributes
    ----------
    versions : Table
        DiaObject rows, oldest first (one per visit that updated the object).
    dia_sources : Table
        Its DiaSources, by ``midpointMjdTai``.
    dia_forced_sources : Table
        Its DiaForcedSources, by ``midpointMjdTai``.
    """

    versions: Table
    dia_sources: Table
    dia_forced_sources: Table

    @property
    def dia_object_id(self) -> int:
        """The object's id."""
        return int(self.versions["diaObjectId"][0])

    @property
    def latest(self) -> Table:
        """The latest version, as a one-row Table."""
        return self.versions[-1:]


def read_object_history(apdb: Apdb, dia_object_id: int, *, until_mjd_tai: float | None = None) -> ObjectHistory:
    """Read one DiaObject's versions and its whole DiaSource and DiaForcedSource history.

    Parameters
    ----------
    apdb : Apdb
        An open store.
    dia_object_id : int
        The object.
    until_mjd_tai : float, optional
        Latest source time to look for, MJD (TAI); default: now, or a year after the latest version if later.

    Returns
    -------
    ObjectHistory

    Raises
    ------
    InputError
        The APDB holds no such DiaObject.
    """
    versions = apdb.read_object(int(dia_object_id))
    if not len(versions):
        raise InputError(f"no DiaObject {dia_object_id} in the APDB", stage="lightcurve")
    validity = np.asarray(versions["validityStartMjdTai"], float)
    first, latest = float(validity.min()), float(validity.max())
    until = until_mjd_tai if until_mjd_tai is not None else max(now_mjd_tai(), latest + HISTORY_DAYS)
    region = SkyRegion(float(versions["ra"][-1]), float(versions["dec"][-1]), _SEARCH_RADIUS_DEG)
    parts: dict[str, list[Table]] = {DIA_SOURCE: [], DIA_FORCED_SOURCE: []}
    # windows [visit - HISTORY_DAYS, visit): the first starts at the object's first version, inclusive
    for k in range(max(1, math.ceil((until - first) / HISTORY_DAYS + 1e-9))):
        data = apdb.read_region(region, first + (k + 1) * HISTORY_DAYS)
        for name, rows in ((DIA_SOURCE, data.dia_sources), (DIA_FORCED_SOURCE, data.dia_forced_sources)):
            mine = np.asarray(rows["diaObjectId"], np.int64) == int(dia_object_id)
            if mine.any():
                parts[name].append(rows[mine])
    tables = {}
    for name, found in parts.items():
        table = vstack(found, metadata_conflicts="silent") if found else empty_table(name)
        table = unique(table, keys=TABLES[name].primary_key[0]) if len(table) else table
        table.sort("midpointMjdTai")
        tables[name] = table
    return ObjectHistory(versions=versions, dia_sources=tables[DIA_SOURCE],
                         dia_forced_sources=tables[DIA_FORCED_SOURCE])


def _fmt(value: object, spec: str = ".3f") -> str:
    if value is None or np.ma.is_masked(value):
        return "-"
    if isinstance(value, (float, np.floating)):
        return "-" if not np.isfinite(value) else format(float(value), spec)
    return str(value)


def _summary_rows(history: ObjectHistory) -> list[tuple[str, str]]:
    obj = history.latest[0]
    rows = [("diaObjectId", str(history.dia_object_id)), ("versions", str(len(history.versions))),
            ("ra, dec (deg)", f"{float(obj['ra']):.7f}, {float(obj['dec']):+.7f}"),
            ("nDiaSources", _fmt(obj["nDiaSources"])),
            ("first, last DiaSource (MJD TAI)", f"{_fmt(obj['firstDiaSourceMjdTai'], '.5f')}, "
                                                 f"{_fmt(obj['lastDiaSourceMjdTai'], '.5f')}"),
            ("DiaSources, DiaForcedSources stored", f"{len(history.dia_sources)}, {len(history.dia_forced_sources)}")]
    for band in "ugrizy":
        mean, err = obj[f"{band}_psfFluxMean"], obj[f"{band}_psfFluxMeanErr"]
        if np.isfinite(float(mean)):
            rows.append((f"{band}_psfFluxMean (nJy)", f"{_fmt(mean, '.1f')} ± {_fmt(err, '.1f')} "
                                                      f"(n={_fmt(obj[f'{band}_psfFluxNdata'])})"))
    return rows


def print_object_history(history: ObjectHistory, console=None) -> None:
    """Print the object's summary and its sources, oldest first, as rich tables."""
    from rich.table import Table as RichTable

    console = console or wide_console()
    summary = RichTable(title=f"DiaObject {history.dia_object_id}", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    for name, value in _summary_rows(history):
        summary.add_row(name, value)
    console.print(summary)
    table = RichTable(title="history (DiaSource: detected on the difference image; forced: DiaForcedSource)")
    for name in ("MJD TAI", "kind", "band", "visit", "detector", "psfFlux (nJy)", "psfFluxErr", "SNR", "id"):
        table.add_column(name, justify="right")
    rows = [(float(s["midpointMjdTai"]), "DiaSource", s, "diaSourceId") for s in history.dia_sources]
    rows += [(float(s["midpointMjdTai"]), "forced", s, "diaForcedSourceId") for s in history.dia_forced_sources]
    for mjd, kind, s, key in sorted(rows, key=lambda r: (r[0], r[1])):
        flux, err = float(s["psfFlux"]), float(s["psfFluxErr"])
        snr = flux / err if np.isfinite(flux) and np.isfinite(err) and err > 0 else float("nan")
        table.add_row(f"{mjd:.5f}", kind, _fmt(s["band"]), str(s["visit"]), str(s["detector"]), _fmt(flux, ".1f"),
                      _fmt(err, ".1f"), _fmt(snr, ".1f"), str(s[key]))
    console.print(table)


def light_curve_figure(dia_sources: Table, dia_forced_sources: Table, *, title: str = "",
                       size_in: tuple[float, float] = (8.0, 4.5)):
    """A light curve: PSF flux (nJy) with 1-sigma error bars against MJD (TAI), one colour per band;
    DiaSources filled, DiaForcedSources as larger open circles.

    Parameters
    ----------
    dia_sources, dia_forced_sources : Table
        The object's sources (``midpointMjdTai``, ``psfFlux``, ``psfFluxErr``, ``band``); either may be empty.
    title : str, optional
        Figure title.
    size_in : (float, float), optional
        Figure width and height in inches (the night report draws them small).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (the caller saves and closes it).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size_in, constrained_layout=True)
    small = size_in[0] < 6
    # forced photometry drawn last, as larger open circles: visible around a DiaSource of the same visit
    for rows, kind, filled in ((dia_sources, "DiaSource", True), (dia_forced_sources, "forced", False)):
        bands = np.asarray(np.ma.filled(rows["band"], ""), str) if len(rows) else np.zeros(0, str)
        for band in sorted(set(bands.tolist())):
            pick = bands == band
            colour = BAND_COLOURS.get(band, "grey")
            ax.errorbar(np.asarray(rows["midpointMjdTai"], float)[pick], np.asarray(rows["psfFlux"], float)[pick],
                        yerr=np.asarray(rows["psfFluxErr"], float)[pick], fmt="o",
                        ms=(3 if small else 5) if filled else (6 if small else 9), capsize=2, color=colour,
                        mfc=colour if filled else "none", label=f"{band} {kind} ({int(pick.sum())})")
    times = np.concatenate([np.zeros(0)] + [np.asarray(t["midpointMjdTai"], float)
                                            for t in (dia_sources, dia_forced_sources) if len(t)])
    if times.size:  # a few points of one night still get a readable axis (matplotlib would span years)
        pad = max(0.05 * float(np.ptp(times)), 0.02)
        ax.set_xlim(float(times.min()) - pad, float(times.max()) + pad)
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.xaxis.set_major_locator(plt.MaxNLocator(4 if small else 8))
    ax.set(xlabel="MJD (TAI)", ylabel="PSF flux on the difference image (nJy)" if not small else "psfFlux (nJy)",
           title=title)
    if len(dia_sources) or len(dia_forced_sources):
        ax.legend(fontsize=7 if small else 8)
    else:
        ax.text(0.5, 0.5, "no DiaSource or DiaForcedSource stored", transform=ax.transAxes, ha="center")
    return fig


def plot_light_curve(dia_sources: Table, dia_forced_sources: Table, path: str | Path, *, title: str = "") -> Path:
    """Write :func:`light_curve_figure` of the object's sources to the PNG ``path`` (folders created); return it."""
    return save_png(light_curve_figure(dia_sources, dia_forced_sources, title=title), path)
