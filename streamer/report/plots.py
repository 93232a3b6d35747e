"""The truth report as a figure: completeness against true SNR, flux pulls, and positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from streamer.inspect import pyplot, save_png


def detection_flags(truth_fluxes: Table, matches: Table, processed_ccds: set[tuple[int, int]]) -> tuple[np.ndarray,
                                                                                                         np.ndarray]:
    """True SNR of every injected variation on a processed CCD, and whether a DiaSource matched it.

    Parameters
    ----------
    truth_fluxes : Table
        ``source_id``, ``expnum``, ``ccdnum``, ``snr`` (expected SNR of the flux change).
    matches : Table
        ``expnum``, ``source_id`` of matched pairs (:func:`simulator.scoring.score_dia_sources`).
    processed_ccds : set of (int, int)
        (expnum, ccdnum) that were processed.
    """
    expnum = np.asarray(truth_fluxes["expnum"], np.int64)
    ccd = np.asarray(truth_fluxes["ccdnum"], np.int64)
    on_processed = np.array([(int(e), int(c)) in processed_ccds for e, c in zip(expnum, ccd)], dtype=bool)
    key = expnum * 10**12 + np.asarray(truth_fluxes["source_id"], np.int64)
    found_keys = np.asarray(matches["expnum"], np.int64) * 10**12 + np.asarray(matches["source_id"], np.int64)
    found = np.isin(key, found_keys)
    return np.abs(np.asarray(truth_fluxes["snr"], float))[on_processed], found[on_processed]


def plot_truth_report(snr: np.ndarray, found: np.ndarray, matches: Table, path: Path) -> Path:
    """Write a three-panel PNG: completeness vs true SNR, PSF-flux pulls, position offsets vs SNR.

    Parameters
    ----------
    snr, found : numpy.ndarray
        From :func:`detection_flags`.
    matches : Table
        ``snr_true``, ``psfFlux``, ``psfFluxErr``, ``delta_flux_njy``, ``offset_arcsec``.
    path : Path
        PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    fig, (ax_c, ax_p, ax_o) = pyplot().subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    edges = np.array([2.0, 3.0, 4.0, 5.0, 5.5, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 1e4])
    idx = np.digitize(snr, edges) - 1
    ok = (idx >= 0) & (idx < edges.size - 1)
    n = np.bincount(idx[ok], minlength=edges.size - 1)
    k = np.bincount(idx[ok], weights=found[ok].astype(float), minlength=edges.size - 1)
    centre = np.sqrt(edges[:-1] * np.minimum(edges[1:], 200.0))
    has = n > 0
    frac = np.where(has, k / np.maximum(n, 1), np.nan)
    err = np.sqrt(frac * (1 - frac) / np.maximum(n, 1))
    ax_c.errorbar(centre[has], frac[has], yerr=err[has], fmt="o-", label="found / injected")
    for level, snr_goal, label in ((0.95, 10.0, "goal 95% above SNR 10"), (0.5, 5.5, "goal 50% at SNR 5.5")):
        ax_c.plot([snr_goal, 200.0], [level, level], ":", color="grey")
        ax_c.text(snr_goal, level - 0.06, label, fontsize=8, color="grey")
    ax_c.set(xscale="log", xlabel="true SNR of the flux change", ylabel="completeness", ylim=(0, 1.05),
             title=f"completeness ({int(found.sum())} of {len(found)} injected)")
    for count, x in zip(n[has], centre[has]):
        ax_c.annotate(str(count), (x, 0.02), fontsize=7, ha="center", color="grey")

    flux = np.asarray(matches["psfFlux"], float)
    flux_err = np.asarray(matches["psfFluxErr"], float)
    true = np.asarray(matches["delta_flux_njy"], float)
    good = np.isfinite(flux) & np.isfinite(flux_err) & (flux_err > 0)
    pulls = (flux[good] - true[good]) / flux_err[good]
    if pulls.size:
        ax_p.hist(np.clip(pulls, -6, 6), bins=np.linspace(-6, 6, 49), density=True, alpha=0.7, label="measured")
        grid = np.linspace(-6, 6, 200)
        ax_p.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k--", label="unit Gaussian")
        width = 0.7413 * np.subtract(*np.percentile(pulls, [75, 25]))
        ax_p.set_title(f"PSF-flux pulls: median {np.median(pulls):+.2f}, robust width {width:.2f} (n={pulls.size})")
    ax_p.set(xlabel="(measured - true) / error", ylabel="density")
    ax_p.legend(fontsize=8)

    snr_true = np.abs(np.asarray(matches["snr_true"], float))
    ax_o.scatter(np.clip(snr_true, 1, 1e4), np.asarray(matches["offset_arcsec"], float), s=6, alpha=0.6)
    ax_o.axhline(0.1, color="grey", ls=":")
    ax_o.text(20, 0.11, "goal 0.1\" at SNR >= 20", fontsize=8, color="grey")
    ax_o.set(xscale="log", xlabel="true SNR", ylabel="offset from the truth (arcsec)", title="positions")

    return save_png(fig, path)


__all__ = ["detection_flags", "plot_truth_report"]
