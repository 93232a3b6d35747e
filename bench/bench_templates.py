"""Templates Blink builds (``blink templates build``) against the simulator's truth-rendered ones, side by side.

For each seed, one simulated night (``--ccds``, ``--epochs``, full density unless ``--small``) with ten earlier
epochs of its fields (``SimConfig(templates="both")``, seeing 0.7-1.2") is processed three times by the
embedded worker: with the truth-rendered tiles (26 mag, 0.9"), with tiles Blink coadds from the first five
earlier epochs, and with tiles coadded from all ten. Every night is scored against the truth: completeness at
true SNR >= 10 and 5.5-10 with Wilson 95% intervals, unmatched DiaSources per CCD-visit before and above the
reliability cut (0.6) with Poisson 95% intervals, and for the built tiles their PSF model against the true
coadd PSF (the simulator's Moffats at the inputs' seeing, combined with the tile's weights) and the build's
cost per tile and per input CCD.

Run: ``python bench/bench_templates.py`` (``--seeds 61 62``, ``--ccds 1 28 35``, ``--epochs 3``, ``--small``,
``--keep``). About 8 minutes per seed on 2 cores at full density; the data go to ``bench/out/templates_*`` and
are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, console, machine_line  # noqa: E402
from rich.table import Table as RichTable  # noqa: E402

from pipeline.reliability import DEFAULT_MIN_RELIABILITY  # noqa: E402

RELIABILITY_CUT = DEFAULT_MIN_RELIABILITY


def _link_night(source: Path, target: Path) -> None:
    """A copy of a simulated night without its templates (files hard-linked: the worker writes only out/)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=os.link,
                    ignore=shutil.ignore_patterns("templates", "out"))


def _template_raws(root: Path, n: int) -> list[str]:
    """The first ``n`` earlier epochs of every band (truth/template_exposures.ecsv), as raw paths."""
    from astropy.table import Table

    from schemas import datarepo

    table = Table.read(root / "truth" / "template_exposures.ecsv")
    chosen = [int(e) for band in sorted(set(table["band"]))
              for e in sorted(table["expnum"][table["band"] == band])[:n]]
    return [str(datarepo.raw_path(e)) for e in chosen]


def _score(root: Path) -> dict[str, float]:
    from simulator.scoring import score_dia_sources
    from streamer.apdb import open_apdb
    from streamer.report.truth import load_truth

    apdb = open_apdb(f"sqlite:///{root / 'out' / 'apdb.sqlite'}")
    dia = apdb.dump_tables()["DiaSource"]
    apdb.close()
    sources, fluxes = load_truth(root)
    per_all, matches = score_dia_sources(dia, sources, fluxes)
    per_cut, _ = score_dia_sources(dia[np.asarray(dia["reliability"], float) >= RELIABILITY_CUT], sources, fluxes)
    key = np.asarray(fluxes["source_id"], np.int64) * 10**8 + np.asarray(fluxes["expnum"], np.int64)
    found = np.isin(key, np.asarray(matches["source_id"], np.int64) * 10**8 + np.asarray(matches["expnum"]))
    snr = np.abs(np.asarray(fluxes["snr"], float))
    out: dict[str, float] = {"visits": len(per_all), "false": int(np.sum(per_all["n_false"])),
                             "false_cut": int(np.sum(per_cut["n_false"]))}
    for name, sel in (("bright", snr >= 10), ("faint", (snr >= 5.5) & (snr < 10))):
        out.update({f"{name}_k": int(found[sel].sum()), f"{name}_n": int(sel.sum())})
    return out


def _psf_ratio(root: Path) -> float:
    """Median over tiles of (PSF model FWHM / true coadd FWHM) at the nodes every input covers."""
    from astropy.io import fits
    from astropy.table import Table

    from pipeline.psf import psf_image_fwhm
    from simulator.template_truth import true_tile_fwhm_arcsec

    truth = Table.read(root / "truth" / "template_exposures.ecsv")
    ratios = []
    for path in sorted((root / "templates").glob("*/tile_*.fits")):
        with fits.open(path) as hdus:
            inputs, nodes, images = Table(hdus["INPUTS"].data), Table(hdus["PSF_NODES"].data), hdus["PSF"].data
        everywhere = np.isclose(np.asarray(nodes["weight"]), np.sum(inputs["weight"]), rtol=1e-6)
        if everywhere.any() and len(inputs) >= 4:
            ratios.append(float(np.median(psf_image_fwhm(images[everywhere]) * 0.263))
                          / true_tile_fwhm_arcsec(inputs, truth))
    return float(np.median(ratios)) if ratios else float("nan")


def _run(root: Path) -> float:
    from streamer.cli import main

    start = time.perf_counter()
    if main(["run", "--root", str(root)]) != 0:
        raise RuntimeError(f"blink run failed on {root}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[61, 62])
    ap.add_argument("--ccds", type=int, nargs="+", default=[1, 28, 35])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="small mode (fewer stars and galaxies)")
    ap.add_argument("--keep", action="store_true", help="keep the simulated nights")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from astropy.stats import binom_conf_interval, poisson_conf_interval

    from simulator import SimConfig
    from streamer.simulated import simulated_repository
    from streamer.templates.build import build_templates_with_progress
    from streamer.worker.inputs import DataRepository

    console.print(f"[bold]bench_templates[/bold] | {machine_line()} | CCDs {args.ccds}, {args.epochs} epochs, "
                  f"{'small' if args.small else 'full density'}, seeds {args.seeds}")
    rows: dict[str, list[dict[str, float]]] = {"truth": [], "built 5": [], "built 10": []}
    costs: list[tuple[str, float, int, int]] = []
    made: list[Path] = []
    for seed in args.seeds:
        base = OUT_DIR / f"templates_seed{seed}"
        made.append(base)
        truth_root = base / "truth"
        if not (truth_root / "events").is_dir():
            shutil.rmtree(base, ignore_errors=True)
            t0 = time.perf_counter()
            simulated_repository(truth_root, SimConfig(seed=seed, ccds=args.ccds, n_epochs=args.epochs,
                                                       small=args.small, templates="both", n_template_epochs=10))
            console.print(f"seed {seed}: simulated in {time.perf_counter() - t0:.0f} s")
        shutil.rmtree(truth_root / "out", ignore_errors=True)
        console.print(f"seed {seed}: truth templates, worker {_run(truth_root):.0f} s")
        rows["truth"].append(_score(truth_root))
        for n in (5, 10):
            root = base / f"built{n}"
            _link_night(truth_root, root)
            repo = DataRepository(root)
            inputs = _template_raws(root, n)
            t0 = time.perf_counter()
            summary = build_templates_with_progress(repo, inputs)
            build_s = time.perf_counter() - t0
            costs.append((f"built {n}", build_s, len(summary.tiles_written), summary.inputs_added))
            console.print(f"seed {seed}: built {n}: {len(summary.tiles_written)} tiles from {summary.inputs_added} "
                          f"CCD-visits in {build_s:.0f} s, worker {_run(root):.0f} s")
            score = _score(root)
            score["psf_ratio"] = _psf_ratio(root)
            rows[f"built {n}"].append(score)
    table = RichTable(title="Built templates against truth-rendered ones (same nights; 95% intervals)")
    for name in ("templates", "complete SNR>=10", "complete 5.5-10", "false / CCD-visit", "false above cut",
                 "PSF model / truth"):
        table.add_column(name, justify="right")
    for name, scores in rows.items():
        k_b, n_b = sum(s["bright_k"] for s in scores), sum(s["bright_n"] for s in scores)
        k_f, n_f = sum(s["faint_k"] for s in scores), sum(s["faint_n"] for s in scores)

        def pct(k: int, n: int) -> str:
            lo, hi = binom_conf_interval(k, n, interval="wilson") if n else (np.nan, np.nan)
            return f"{100 * k / max(n, 1):.1f}% [{100 * lo:.0f}-{100 * hi:.0f}] ({k}/{n})"

        def rate(key: str) -> str:
            n_visits = sum(s["visits"] for s in scores)
            total = sum(s[key] for s in scores)
            lo, hi = poisson_conf_interval(total, interval="frequentist-confidence")
            return f"{total / n_visits:.1f} [{lo / n_visits:.1f}-{hi / n_visits:.1f}]"

        psf = np.median([s["psf_ratio"] for s in scores]) if "psf_ratio" in scores[0] else np.nan
        table.add_row(name, pct(k_b, n_b), pct(k_f, n_f), rate("false"), rate("false_cut"),
                      "-" if np.isnan(psf) else f"{psf:.3f}")
    console.print(table)
    cost = RichTable(title="Cost of blink templates build (this machine; ISR + calibration + warp + coadd)")
    for name in ("build", "seconds", "tiles", "CCD-visits", "s per tile", "s per CCD-visit"):
        cost.add_column(name, justify="right")
    for name, seconds, tiles, inputs in costs:
        cost.add_row(name, f"{seconds:.0f}", str(tiles), str(inputs), f"{seconds / max(tiles, 1):.1f}",
                     f"{seconds / max(inputs, 1):.1f}")
    console.print(cost)
    if not args.keep:
        for base in made:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
