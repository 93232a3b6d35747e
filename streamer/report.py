"""The truth report a scientist reads after a simulated night: what Blink found against what was injected."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from rich.console import Console
from rich.table import Table as RichTable

from pipeline.sim.scoring import score_dia_sources
from streamer.config import BlinkSettings, CassandraSettings


def load_truth(root) -> tuple[Table, Table]:
    """Truth sources and per-exposure fluxes of a simulated repository."""
    return (Table.read(root / "truth" / "sources.ecsv", format="ascii.ecsv"),
            Table.read(root / "truth" / "fluxes.ecsv", format="ascii.ecsv"))


def print_truth_report(settings: BlinkSettings, cassandra: CassandraSettings, console: Console | None = None
                       ) -> tuple[Table, Table]:
    """Print per-exposure completeness and false detections, and the flux and position accuracy."""
    from streamer.apdb import open_apdb

    console = console or Console()
    apdb = open_apdb(settings.resolved_apdb_url(cassandra))
    try:
        tables = apdb.dump_tables()
    finally:
        apdb.close()
    sources, fluxes = load_truth(settings.data_root)
    dia = tables["DiaSource"]
    per_exposure, matches = score_dia_sources(dia, sources, fluxes)
    table = RichTable(title="Blink against the simulator's truth (matches within 1 arcsec)")
    for name in ("exposure", "injected (SNR>=5)", "found", "completeness", "DiaSources", "unmatched"):
        table.add_column(name, justify="right")
    for row in per_exposure:
        table.add_row(str(row["expnum"]), str(row["n_injected"]), str(row["n_found"]),
                      f"{row['completeness']:.0%}" if np.isfinite(row["completeness"]) else "-",
                      str(row["n_dia_sources"]), str(row["n_false"]))
    console.print(table)
    if len(matches):
        good = np.abs(matches["snr_true"]) >= 10
        ratio = np.asarray(matches["psfFlux"])[good] / np.asarray(matches["delta_flux_njy"])[good]
        console.print(f"DiaObjects: {len(tables['DiaObjectLast'])}; matched transients: {len(matches)}; "
                      f"median flux ratio (SNR>=10) {np.median(ratio):.3f}; "
                      f"median offset {np.median(matches['offset_arcsec']):.3f} arcsec")
    return per_exposure, matches
