"""Scoring DiaSources against the simulator's truth: completeness, false detections, flux and position.

Pure: truth tables and a DiaSource table in, a per-exposure score table and per-match details out.
"""

from __future__ import annotations

import numpy as np
from astropy.coordinates import angular_separation
from astropy.table import Table, join
from scipy.optimize import linear_sum_assignment


def match_pairs(ra1, dec1, ra2, dec2, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches within ``radius_arcsec`` that minimise the summed separation (an optimal assignment,
    :func:`scipy.optimize.linear_sum_assignment`, on the separations of every pair; a scoring table is small).

    Returns
    -------
    i1, i2 : numpy.ndarray
        Indices of the matched pairs into the first and second lists of positions (degrees).
    """
    if len(ra1) == 0 or len(ra2) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    rad = np.radians
    sep = np.degrees(angular_separation(rad(np.asarray(ra1, float))[:, None], rad(np.asarray(dec1, float))[:, None],
                                        rad(np.asarray(ra2, float))[None, :], rad(np.asarray(dec2, float))[None, :]))
    sep_arcsec = sep * 3600.0
    # Pairs beyond the radius cost more than any set of pairs within it, so they are chosen only when unavoidable
    cost = np.where(sep_arcsec <= radius_arcsec, sep_arcsec, radius_arcsec * (1.0 + min(sep.shape)))
    i1, i2 = linear_sum_assignment(cost)
    keep = sep_arcsec[i1, i2] <= radius_arcsec
    return i1[keep], i2[keep]


def score_dia_sources(dia_sources: Table, truth_sources: Table, truth_fluxes: Table, *,
                      radius_arcsec: float = 1.0, detectable_snr: float = 5.0,
                      asteroid_radius_arcsec: float = 2.0) -> tuple[Table, Table]:
    """Match DiaSources to injected variable sources, exposure by exposure.

    Parameters
    ----------
    dia_sources : Table
        ``visit``, ``detector``, ``ra``, ``dec``, ``psfFlux``, ``psfFluxErr``.
    truth_sources : Table
        ``source_id``, ``ra``, ``dec``, ``kind``.
    truth_fluxes : Table
        ``source_id``, ``expnum``, ``ccdnum``, ``delta_flux_njy`` (flux minus template flux), ``snr``; rows of
        ``kind`` ``asteroid`` (with their own ``ra``, ``dec`` in that exposure) are moving sources: DiaSources
        that match no varying source but one of them (within ``asteroid_radius_arcsec``) are counted apart,
        neither found nor false.

    Returns
    -------
    per_exposure : Table
        expnum, n_injected (|expected SNR| >= detectable_snr), n_found, completeness, n_dia_sources,
        n_false (DiaSources matching no varying truth source nor an asteroid), n_asteroid.
    matches : Table
        One row per matched pair: expnum, source_id, kind, snr_true, delta_flux_njy, psfFlux, psfFluxErr,
        offset_arcsec.
    """
    moving = np.asarray(truth_fluxes["kind"]).astype(str) == "asteroid" if "kind" in truth_fluxes.colnames else (
        np.zeros(len(truth_fluxes), bool))
    rocks = truth_fluxes[moving]
    fixed = truth_fluxes[~moving]
    fixed.remove_columns([c for c in ("ra", "dec") if c in fixed.colnames])
    fluxes = join(fixed, truth_sources["source_id", "ra", "dec"], keys="source_id")
    rows, matched_rows = [], []
    for expnum in np.unique(np.asarray(fluxes["expnum"])):
        truth = fluxes[np.asarray(fluxes["expnum"]) == expnum]
        found = dia_sources[np.asarray(dia_sources["visit"]) == expnum]
        found = found[np.isin(np.asarray(found["detector"]), np.unique(np.asarray(truth["ccdnum"])))]
        s, t = match_pairs(found["ra"], found["dec"], truth["ra"], truth["dec"], radius_arcsec)
        detectable = np.abs(np.asarray(truth["snr"], float)) >= detectable_snr
        hit = np.zeros(len(truth), bool)
        hit[t] = True
        n_injected = int(detectable.sum())
        n_found = int((hit & detectable).sum())
        n_asteroid = 0
        if len(rocks):
            here = rocks[np.asarray(rocks["expnum"]) == expnum]
            rest = np.setdiff1d(np.arange(len(found)), s)
            n_asteroid = len(match_pairs(found["ra"][rest], found["dec"][rest], here["ra"], here["dec"],
                                         asteroid_radius_arcsec)[0])
        rows.append((int(expnum), n_injected, n_found, n_found / n_injected if n_injected else np.nan,
                     len(found), len(found) - len(s) - n_asteroid, n_asteroid))
        if len(s):
            offset = np.degrees(angular_separation(*(np.radians(np.asarray(c, float)) for c in (
                found["ra"][s], found["dec"][s], truth["ra"][t], truth["dec"][t])))) * 3600.0
            matched_rows.append(Table({
                "expnum": np.full(len(s), expnum), "source_id": np.asarray(truth["source_id"][t]),
                "kind": np.asarray(truth["kind"][t]), "snr_true": np.asarray(truth["snr"][t], float),
                "delta_flux_njy": np.asarray(truth["delta_flux_njy"][t], float),
                "psfFlux": np.asarray(found["psfFlux"][s], float),
                "psfFluxErr": np.asarray(found["psfFluxErr"][s], float),
                "offset_arcsec": offset}))
    per_exposure = Table(rows=rows or None, names=["expnum", "n_injected", "n_found", "completeness",
                                                   "n_dia_sources", "n_false", "n_asteroid"],
                         dtype=[np.int64, int, int, float, int, int, int])
    from astropy.table import vstack

    matches = vstack(matched_rows) if matched_rows else Table(
        names=["expnum", "source_id", "kind", "snr_true", "delta_flux_njy", "psfFlux", "psfFluxErr", "offset_arcsec"],
        dtype=[np.int64, np.int64, str, float, float, float, float, float])
    return per_exposure, matches


def label_dia_sources(dia_sources: Table, truth_sources: Table, truth_fluxes: Table, *,
                      radius_arcsec: float = 1.0) -> np.ndarray:
    """True for each DiaSource that matches (one to one, within ``radius_arcsec``) an injected variable
    source of the same exposure and CCD: the "real" label for training and scoring reliability.

    Returns
    -------
    numpy.ndarray
        (n,) bool, in the order of ``dia_sources``.
    """
    is_real = np.zeros(len(dia_sources), bool)
    if len(dia_sources) == 0 or len(truth_fluxes) == 0:
        return is_real
    own = [c for c in ("ra", "dec") if c in truth_fluxes.colnames]   # asteroids': they join no source
    fluxes = join(truth_fluxes[[c for c in truth_fluxes.colnames if c not in own]],
                  truth_sources["source_id", "ra", "dec"], keys="source_id")
    visits = np.asarray(dia_sources["visit"])
    detectors = np.asarray(dia_sources["detector"])
    for expnum in np.unique(visits):
        truth = fluxes[np.asarray(fluxes["expnum"]) == expnum]
        if len(truth) == 0:
            continue
        rows = np.flatnonzero((visits == expnum) & np.isin(detectors, np.unique(np.asarray(truth["ccdnum"]))))
        found = dia_sources[rows]
        s, _ = match_pairs(found["ra"], found["dec"], truth["ra"], truth["dec"], radius_arcsec)
        is_real[rows[np.asarray(s, int)]] = True
    return is_real
