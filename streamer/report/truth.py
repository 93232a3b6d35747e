"""The truth report a scientist reads after a simulated night: what Blink found against what was injected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table
from rich.console import Console
from rich.table import Table as RichTable

from pipeline.reliability import DEFAULT_MIN_RELIABILITY
from simulator.scoring import score_dia_sources
from streamer.report.plots import detection_flags, plot_truth_report
from streamer.settings import BlinkSettings, CassandraSettings


def _percent(value: float) -> str:
    return f"{value:.0%}" if np.isfinite(value) else "-"


def load_truth(root) -> tuple[Table, Table]:
    """Truth sources and per-exposure fluxes of a simulated repository."""
    return (Table.read(root / "truth" / "sources.ecsv", format="ascii.ecsv"),
            Table.read(root / "truth" / "fluxes.ecsv", format="ascii.ecsv"))


def print_truth_report(settings: BlinkSettings, cassandra: CassandraSettings, console: Console | None = None,
                       *, plot_path: Path | None = None, reliability_cut: float = DEFAULT_MIN_RELIABILITY, apdb=None
                       ) -> tuple[Table, Table]:
    """Print per-exposure completeness and false detections, and the flux and position accuracy; write the
    figure of :mod:`streamer.report.plots` to ``plot_path`` (default ``<outputs>/truth_report.png``).

    The APDB is ``apdb`` when given (an open store, left open), else the one the settings name."""
    from streamer.apdb import open_apdb

    console = console or Console()
    if apdb is not None:
        tables = apdb.dump_tables()
    else:
        apdb = open_apdb(settings.resolved_apdb_url(cassandra))
        try:
            tables = apdb.dump_tables()
        finally:
            apdb.close()
    sources, fluxes = load_truth(settings.data_root)
    dia = tables["DiaSource"]
    per_exposure, matches = score_dia_sources(dia, sources, fluxes)
    reliable = dia[np.asarray(dia["reliability"], float) >= reliability_cut] if "reliability" in dia.colnames \
        else dia
    per_exposure_cut, _ = score_dia_sources(reliable, sources, fluxes)
    table = RichTable(title="Blink against the simulator's truth (matches within 1 arcsec)",
                      caption=f"\"above cut\": DiaSources with reliability >= {reliability_cut} (what a "
                              "distribution threshold, min_reliability, of that value would alert)")
    for name in ("exposure", "injected (SNR>=5)", "found", "completeness", "DiaSources", "unmatched",
                 "completeness above cut", "unmatched above cut"):
        table.add_column(name, justify="right")
    for row, cut in zip(per_exposure, per_exposure_cut):
        table.add_row(str(row["expnum"]), str(row["n_injected"]), str(row["n_found"]), _percent(row["completeness"]),
                      str(row["n_dia_sources"]), str(row["n_false"]), _percent(cut["completeness"]),
                      str(cut["n_false"]))
    console.print(table)
    processed = {(int(v), int(d)) for v, d in zip(np.asarray(tables["ApdbVisitDetector"]["visit"]),
                                                  np.asarray(tables["ApdbVisitDetector"]["detector"]))} \
        if "ApdbVisitDetector" in tables else {(int(v), int(d)) for v, d in zip(dia["visit"], dia["detector"])}
    snr, found = detection_flags(fluxes, matches, processed)
    figure = plot_truth_report(snr, found, matches, plot_path or settings.outputs / "truth_report.png")
    console.print(f"figure: {figure}", soft_wrap=True)
    if len(matches):
        good = np.abs(matches["snr_true"]) >= 10
        ratio = np.asarray(matches["psfFlux"])[good] / np.asarray(matches["delta_flux_njy"])[good]
        console.print(f"DiaObjects: {len(tables['DiaObjectLast'])}; matched transients: {len(matches)}; "
                      f"median flux ratio (SNR>=10) {np.median(ratio):.3f}; "
                      f"median offset {np.median(matches['offset_arcsec']):.3f} arcsec")
    return per_exposure, matches
