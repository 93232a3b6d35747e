"""Train the DiaSource reliability model on the simulator's truth and print the learned weights.

Simulates (once, cached under ``bench/out/``) a training night with a seed the tests do not use, runs
``process_ccd`` on every CCD-exposure, labels each DiaSource real (matched within 1 arcsec to an injected
variable source) or bogus, fits ``pipeline.reliability.train_reliability`` on half of the CCD-exposures and
reports ROC-ish numbers on the other half (AUC, completeness of real DiaSources and bogus per CCD at the
threshold). The printed tuple is what ``pipeline/reliability.py`` commits as ``_TRAINED_WEIGHTS``.

Run: ``python bench/train_reliability.py`` (first run simulates and processes: a few minutes on 2 cores);
``--root DIR`` reuses a repository; ``--seed``, ``--epochs``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, console  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class _EmptyApdb:
    def read_region(self, region, visit_mjd_tai):
        from streamer.worker.processor import empty_region

        return empty_region()


def process_repository(root: Path, config=None) -> Table:
    """All DiaSources of a simulated repository (every exposure, every CCD), APDB empty."""
    from pipeline.ccd import PipelineConfig, process_ccd
    from streamer.events.files import read_event_file
    from streamer.worker.inputs import DataRepository
    from streamer.worker.processor import CcdProcessor

    config = config or PipelineConfig()
    proc = CcdProcessor(DataRepository(root), _EmptyApdb(), alert_sink=None)  # type: ignore[arg-type]
    truth = Table.read(root / "truth" / "fluxes.ecsv", format="ascii.ecsv")
    ccds = sorted(set(np.asarray(truth["ccdnum"]).tolist()))
    tables = []
    for path in sorted((root / "events").glob("*.avro")):
        event = read_event_file(path)
        for ccd in ccds:
            inputs, _ = proc.gather(event, ccd)
            tables.append(process_ccd(inputs, config=config).dia_sources)
    return vstack(tables)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="existing simulated repository")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from pipeline.reliability import FEATURES, ReliabilityConfig, roc_auc, score, train_reliability
    from simulator import SimConfig
    from simulator.scoring import label_dia_sources
    from streamer.simulated import simulated_repository

    root = args.root
    if root is None:
        root = OUT_DIR / f"sim_reliability_seed{args.seed}"
        if not (root / "truth" / "fluxes.ecsv").exists():
            console.print(f"simulating the training night into {root} (once)...")
            simulated_repository(root, SimConfig(seed=args.seed, n_epochs=args.epochs, ccds=[28, 35],
                                                 small=True, n_transients=30))
    cache = root / "dia_sources_trained_on.ecsv"
    if cache.exists() and cache.stat().st_mtime > max(p.stat().st_mtime for p in (REPO / "pipeline").glob("*.py")):
        dia = Table.read(cache, format="ascii.ecsv")
    else:
        dia = process_repository(root)
        dia.write(cache, format="ascii.ecsv", overwrite=True)
    truth_sources = Table.read(root / "truth" / "sources.ecsv", format="ascii.ecsv")
    truth_fluxes = Table.read(root / "truth" / "fluxes.ecsv", format="ascii.ecsv")
    is_real = label_dia_sources(dia, truth_sources, truth_fluxes)
    unit = np.asarray(dia["visit"], np.int64) * 100 + np.asarray(dia["detector"], np.int64)
    units = np.unique(unit)
    train = np.isin(unit, units[::2])
    test = ~train
    threshold = ReliabilityConfig().threshold
    result = train_reliability(dia[train], is_real[train], threshold=threshold)
    full = train_reliability(dia, is_real, threshold=threshold)
    baseline = ReliabilityConfig()
    console.print(f"{len(dia)} DiaSources on {units.size} CCD-exposures: {int(is_real.sum())} real, "
                  f"{int((~is_real).sum())} bogus; train on {np.unique(unit[train]).size} CCD-exposures, test on "
                  f"{np.unique(unit[test]).size}")
    for name, config in (("committed defaults", baseline), ("trained on half", result.config),
                         ("trained on all", full.config)):
        p = score(dia[test], config=config)
        cut = p >= config.threshold
        n_units = max(np.unique(unit[test]).size, 1)
        console.print(f"  {name:20s} test AUC {roc_auc(p, is_real[test]):.3f} | at p >= {config.threshold}: "
                      f"real kept {int((cut & is_real[test]).sum())}/{int(is_real[test].sum())}, bogus kept "
                      f"{int((cut & ~is_real[test]).sum())}/{int((~is_real[test]).sum())} "
                      f"({(cut & ~is_real[test]).sum() / n_units:.2f} per CCD)")
    console.print("weights (trained on all; intercept, then " + ", ".join(FEATURES) + "):")
    console.print("_TRAINED_WEIGHTS = (" + ", ".join(f"{w:.4g}" for w in full.config.weights) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
