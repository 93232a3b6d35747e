"""Checks of a processed night against the simulator's truth, shared by the walking-skeleton and stream tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table
from lsst.alert.packet import Schema

from simulator.scoring import score_dia_sources

MIN_COMPLETENESS_SNR10 = 0.8
"""Least fraction of injected transients with expected |SNR| >= 10 that must be found (skeleton level)."""

MAX_MATCH_ARCSEC = 0.5
"""Largest median offset of matched DiaSources from the injected positions."""


def check_against_truth(root: Path, dia_sources: Table) -> Table:
    """DiaSources land on the injected transients: completeness above SNR 10 and small offsets."""
    truth_sources = Table.read(root / "truth" / "sources.ecsv", format="ascii.ecsv")
    truth_fluxes = Table.read(root / "truth" / "fluxes.ecsv", format="ascii.ecsv")
    assert len(dia_sources) > 0, "no DiaSource was written"
    _, matches = score_dia_sources(dia_sources, truth_sources, truth_fluxes, detectable_snr=10.0)
    bright = np.abs(np.asarray(truth_fluxes["snr"], float)) >= 10
    n_bright = int(bright.sum())
    assert n_bright > 0, "the simulation injected no bright transient"
    n_found = int((np.abs(np.asarray(matches["snr_true"], float)) >= 10).sum())
    assert n_found / n_bright >= MIN_COMPLETENESS_SNR10, f"found {n_found} of {n_bright} bright transients"
    assert np.median(matches["offset_arcsec"]) < MAX_MATCH_ARCSEC
    return matches


def check_alerts(alerts: list[dict], dia_sources: Table) -> None:
    """Every DiaSource has one alert, each alert validates against lsst-alert-packet's latest schema."""
    schema = Schema.from_file()
    assert len(alerts) == len(dia_sources)
    assert sorted(a["diaSourceId"] for a in alerts) == sorted(np.asarray(dia_sources["diaSourceId"]).tolist())
    for alert in alerts[:50]:
        schema.validate(alert)
        assert alert["diaObject"]["diaObjectId"] == alert["diaSource"]["diaObjectId"]
        assert alert["cutoutDifference"] and alert["cutoutScience"] and alert["cutoutTemplate"]
        assert alert["diaSource"]["visit"] >= 0 and 1 <= alert["diaSource"]["detector"] <= 62
