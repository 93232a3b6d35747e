"""Science against the simulator's truth on nights no test uses: astrometry, zero points, completeness, false
DiaSources, with their uncertainties.

    python bench/bench_truth.py [--small] [--keep] [--sim OPTION=VALUE ...]

Each night is simulated into ``bench/out/truth/`` (deleted afterwards unless ``--keep``), every CCD-visit is
processed through ``process_ccd`` (no APDB history) and scored:

* astrometry: RMS offset of bright isolated stars (SNR > 100, PSF stars) from their true positions, and RMS
  distance of the fitted WCS from the true one over a grid covering the whole CCD (which the fit's stars do
  not all constrain);
* zero point minus the true zero point (mmag);
* completeness of the injected variable sources at true |SNR| >= 10 and in 5.5-10, with Wilson 95% intervals;
* false DiaSources (matching no injected variable) per CCD-visit, with Poisson 95% intervals, before and
  after the reliability cut.
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
from _common import OUT_DIR, console
from astropy.io import fits
from astropy.stats import binom_conf_interval, poisson_conf_interval
from astropy.table import Table, vstack
from astropy.wcs import WCS
from rich.table import Table as RichTable

from pipeline.ccd import CcdRun
from pipeline.reliability import DEFAULT_MIN_RELIABILITY
from schemas import datarepo
from simulator import SimConfig
from simulator.scoring import score_dia_sources
from streamer.simulated import simulated_repository

NIGHTS = {
    "g-edge": dict(seed=9101, bands=["g"], ccds=[1, 35], seeing_range=(0.9, 1.4), airmass_range=(1.0, 1.4)),
    "z-poor": dict(seed=9102, bands=["z"], ccds=[1, 28], seeing_range=(1.6, 2.2), airmass_range=(1.6, 2.0)),
    "r-good": dict(seed=9103, bands=["r"], ccds=[28, 35], seeing_range=(0.7, 0.9), airmass_range=(1.0, 1.2)),
    "i-mid": dict(seed=9104, bands=["i"], ccds=[1, 35], seeing_range=(1.0, 1.6), airmass_range=(1.1, 1.6)),
}
"""Held-out nights (seeds no test uses): g, r, i and z, the edge CCD 1 and central ones, seeing 0.7-2.2"."""


def _gather(root):
    from streamer.events.files import read_event_file
    from streamer.worker.inputs import DataRepository
    from streamer.worker.processor import CcdProcessor, empty_region

    class _EmptyApdb:
        def read_region(self, region, visit_mjd_tai):
            return empty_region()

    proc = CcdProcessor(DataRepository(root), _EmptyApdb(), alert_sink=None)  # type: ignore[arg-type]
    ccds = sorted(set(np.asarray(Table.read(root / "truth" / "fluxes.ecsv")["ccdnum"]).tolist()) - {-1})
    for path in sorted((root / "events").glob("*.avro")):
        event = read_event_file(path)
        for ccd in ccds:
            yield event.exposure_id, ccd, proc.gather(event, ccd)[0]


def _astrometry(run: CcdRun, truth_wcs: WCS, truth: Table) -> tuple[float, float, int]:
    """(bright-star RMS, whole-CCD RMS, number of bright stars), mas."""
    wcs, src = run.exposure.wcs, run.sources
    gx, gy = np.meshgrid(np.linspace(0, 2047, 16), np.linspace(0, 4095, 32))
    fr, fd = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    tr, td = truth_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    grid = np.hypot((fr - tr) * np.cos(np.radians(td)), fd - td) * 3.6e6
    stars = truth[np.asarray(truth["kind"]) == "star"]
    tx, ty = truth_wcs.all_world2pix(np.asarray(stars["ra"]), np.asarray(stars["dec"]), 0)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([tx, ty]))
    lonely = np.array([len(p) == 1 for p in tree.query_ball_point(np.column_stack([tx, ty]), r=15.0)])
    bright = np.asarray(src["is_psf_star"]) & (np.asarray(src["snr"]) > 100)
    dist, idx = tree.query(np.column_stack([np.asarray(src["x"])[bright], np.asarray(src["y"])[bright]]),
                           distance_upper_bound=1.0)
    ok = np.isfinite(dist)
    ok[ok] &= lonely[idx[ok]]
    x, y = np.asarray(src["x"])[bright][ok], np.asarray(src["y"])[bright][ok]
    ra, dec = wcs.all_pix2world(x, y, 0)
    t = stars[idx[ok]]
    off = np.hypot((ra - np.asarray(t["ra"])) * np.cos(np.radians(dec)), dec - np.asarray(t["dec"])) * 3.6e6
    return float(np.sqrt(np.mean(off**2))) if off.size else np.nan, float(np.sqrt(np.mean(grid**2))), int(off.size)


def _night(name: str, overrides: dict, small: bool) -> tuple[list[dict], Table, Table, Table]:
    root = OUT_DIR / "truth" / name
    shutil.rmtree(root, ignore_errors=True)
    simulated_repository(root, SimConfig.model_validate(dict(n_epochs=2, small=small, n_transients=20, **overrides)))
    exposures = Table.read(root / "truth" / "exposures.ecsv")
    truth = Table.read(root / "truth" / "sources.ecsv")
    zp_true = {int(e): float(z) for e, z in zip(exposures["expnum"], exposures["zero_point"])}
    rows, dia = [], []
    for expnum, ccd, inputs in _gather(root):
        run = CcdRun(inputs)
        out = run.run_all()
        with fits.open(root / datarepo.truth_wcs_path(expnum)) as h:
            truth_wcs = WCS([x for x in h[1:] if x.header["CCDNUM"] == ccd][0].header)
        star_rms, grid_rms, n_bright = _astrometry(run, truth_wcs, truth)
        rows.append(dict(night=name, expnum=expnum, ccd=ccd, star_rms=star_rms, grid_rms=grid_rms,
                         n_bright=n_bright, zp_mmag=(run.exposure.zero_point - zp_true[expnum]) * 1000.0))
        dia.append(out.dia_sources)
    return rows, vstack(dia), truth, Table.read(root / "truth" / "fluxes.ecsv")


def _interval(k: int, n: int) -> str:
    if n == 0:
        return "-"
    lo, hi = binom_conf_interval(k, n, confidence_level=0.95, interval="wilson")
    return f"{k}/{n} = {k / n:.1%} [{lo:.1%}, {hi:.1%}]"


def _rate(k: int, n: int) -> str:
    lo, hi = poisson_conf_interval(k, interval="frequentist-confidence") / n
    return f"{k / n:.1f} [{lo:.1f}, {hi:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small-mode nights (fewer stars and galaxies)")
    parser.add_argument("--keep", action="store_true", help="keep the simulated nights in bench/out/truth")
    parser.add_argument("--sim", action="append", default=[], metavar="OPTION=VALUE",
                        help="a SimConfig option for every night (an effect switched on: calibration_noise=true)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.sim)
    per_ccd, found_10, found_5, n_false, n_false_cut, n_visits = [], [0, 0], [0, 0], 0, 0, 0
    threshold = DEFAULT_MIN_RELIABILITY
    for name, overrides in NIGHTS.items():
        rows, dia, truth, fluxes = _night(name, {**overrides, **extra}, args.small)
        per_ccd += rows
        n_visits += len(rows)
        per_exposure, matches = score_dia_sources(dia, truth, fluxes, detectable_snr=5.5)
        cut, _ = score_dia_sources(dia[np.asarray(dia["reliability"]) >= threshold], truth, fluxes, detectable_snr=5.5)
        n_false += int(per_exposure["n_false"].sum())
        n_false_cut += int(cut["n_false"].sum())
        snr = np.abs(np.asarray(fluxes["snr"], float))
        hit_keys = set(zip(np.asarray(matches["expnum"]).tolist(), np.asarray(matches["source_id"]).tolist()))
        hit = np.array([k in hit_keys for k in zip(np.asarray(fluxes["expnum"]).tolist(),
                                                    np.asarray(fluxes["source_id"]).tolist())], bool)
        for acc, sel in ((found_10, snr >= 10), (found_5, (snr >= 5.5) & (snr < 10))):
            acc[0] += int(hit[sel].sum())
            acc[1] += int(sel.sum())
    table = RichTable(title="Per CCD-visit: astrometry (mas) and zero point (mmag) against the truth")
    for col in ("night", "visit", "CCD", "bright stars", "bright-star RMS", "whole-CCD RMS", "ZP - true"):
        table.add_column(col, justify="right")
    for r in per_ccd:
        table.add_row(r["night"], str(r["expnum"]), str(r["ccd"]), str(r["n_bright"]), f"{r['star_rms']:.1f}",
                      f"{r['grid_rms']:.1f}", f"{r['zp_mmag']:+.1f}")
    console.print(table)
    star = np.array([r["star_rms"] for r in per_ccd])
    grid = np.array([r["grid_rms"] for r in per_ccd])
    zp = np.array([r["zp_mmag"] for r in per_ccd])
    summary = RichTable(title=f"{n_visits} CCD-visits ({'small' if args.small else 'full'} density"
                              f"{''.join(', ' + item for item in args.sim)})")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_row("bright-star astrometry RMS, median (max), mas",
                    f"{np.nanmedian(star):.1f} ({np.nanmax(star):.1f})")
    summary.add_row("whole-CCD WCS RMS, median (max), mas", f"{np.median(grid):.1f} ({grid.max():.1f})")
    summary.add_row("zero point - truth: mean +/- sd, max |.| (mmag)",
                    f"{zp.mean():+.1f} +/- {zp.std(ddof=1):.1f}, {np.abs(zp).max():.1f}")
    summary.add_row("completeness, true |SNR| >= 10 (Wilson 95%)", _interval(*found_10))
    summary.add_row("completeness, true |SNR| 5.5-10 (Wilson 95%)", _interval(*found_5))
    summary.add_row("false DiaSources per CCD-visit (Poisson 95%)", _rate(n_false, n_visits))
    summary.add_row(f"false per CCD-visit, reliability >= {threshold}", _rate(n_false_cut, n_visits))
    console.print(summary)
    if not args.keep:
        shutil.rmtree(OUT_DIR / "truth", ignore_errors=True)


if __name__ == "__main__":
    main()
