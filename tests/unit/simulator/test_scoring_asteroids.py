"""DiaSources on asteroids (flux-truth rows of kind ``asteroid`` with their own positions) are counted apart:
neither found nor false.
Exact counts on a hand-made table: one transient found, one DiaSource on an asteroid, one false."""

from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack

from simulator.scoring import label_dia_sources, score_dia_sources


def _tables():
    arcsec = 1.0 / 3600.0
    truth_sources = Table({"source_id": [7], "ra": [10.0], "dec": [-20.0]})
    truth_fluxes = Table({"source_id": [7], "expnum": [1], "ccdnum": [35], "kind": ["transient"],
                          "delta_flux_njy": [500.0], "snr": [20.0]})
    dia = Table({"visit": [1, 1, 1], "detector": [35, 35, 35],
                 "ra": [10.0 + 0.2 * arcsec, 10.01 + 1.2 * arcsec, 10.02], "dec": [-20.0, -20.0, -20.0],
                 "psfFlux": [480.0, 300.0, 100.0], "psfFluxErr": [25.0, 25.0, 25.0]})
    asteroids = Table({"source_id": [1_000_000_003, 1_000_000_004], "expnum": [1, 2], "ccdnum": [35, 35],
                       "kind": ["asteroid", "asteroid"], "delta_flux_njy": [300.0, 300.0], "snr": [12.0, 12.0],
                       "ra": [10.01, 10.02], "dec": [-20.0, -20.0]})
    return dia, truth_sources, truth_fluxes, asteroids


def _with(fluxes: Table, asteroids: Table) -> Table:
    """The flux truth with the asteroids' rows, as the simulator writes it (NaN positions: the source's)."""
    fluxes = fluxes.copy()
    fluxes["ra"], fluxes["dec"] = [np.nan] * len(fluxes), [np.nan] * len(fluxes)
    return vstack([fluxes, asteroids])


def test_a_dia_source_on_an_asteroid_is_neither_found_nor_false():
    dia, sources, fluxes, asteroids = _tables()
    plain, _ = score_dia_sources(dia, sources, fluxes)
    assert (plain["n_found"][0], plain["n_false"][0], plain["n_asteroid"][0]) == (1, 2, 0)
    scored, matches = score_dia_sources(dia, sources, _with(fluxes, asteroids))
    # The asteroid of exposure 2 sits on the third DiaSource's position but in another exposure: still false
    assert (scored["n_found"][0], scored["n_false"][0], scored["n_asteroid"][0]) == (1, 1, 1)
    assert len(matches) == 1 and matches["source_id"][0] == 7
    assert label_dia_sources(dia, sources, _with(fluxes, asteroids)).tolist() == [True, False, False]


def test_a_transient_on_an_asteroid_is_found_first():
    dia, sources, fluxes, asteroids = _tables()
    asteroids["ra"][0] = 10.0     # the asteroid passes the transient: the DiaSource there is the transient's
    scored, _ = score_dia_sources(dia[:1], sources, _with(fluxes, asteroids))
    assert (scored["n_found"][0], scored["n_false"][0], scored["n_asteroid"][0]) == (1, 0, 0)
