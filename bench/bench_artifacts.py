"""False DiaSources and completeness per artifact class: each of the simulator's artifacts switched on alone (a
clean baseline first), then all of them together, before and after the pipeline's fixes.

    python bench/bench_artifacts.py [--small] [--classes NAME ...] [--keep]

Every class is a held-out night (a seed no test uses and nothing is tuned on: i band, the edge CCD 1 and the
central 35, two epochs, 20 transients per CCD, full density unless ``--small``) simulated with that artifact alone
(:data:`CLASSES`; cosmic rays and the PSFs' variation, which every night has, stay on), and processed twice
through the pipeline (no APDB history) with the defaults ("after") and, for the classes the fixes act on
(:data:`FIXED`), with them switched off (``do_crosstalk`` and ``do_drop_streaks`` False: "before"). Scored by
:func:`simulator.scoring.score_dia_sources`: false DiaSources per CCD-visit (matching no injected source nor an
asteroid) with Poisson 95% intervals, completeness at true |SNR| >= 10 and 5.5-10 with Wilson 95% intervals,
before and after the reliability cut (``pipeline.reliability``'s threshold), and DiaSources at asteroids
(counted apart).
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
from _common import OUT_DIR, console
from astropy.table import Table, vstack
from bench_truth import _gather, _interval, _rate
from rich.table import Table as RichTable

from pipeline.ccd import CcdRun, PipelineConfig
from pipeline.reliability import ReliabilityConfig
from simulator import SimConfig
from simulator.scoring import score_dia_sources
from streamer.simulated import simulated_repository

NIGHT = dict(seed=9301, bands=["i"], ccds=[1, 35], n_epochs=2, n_transients=20, seeing_range=(0.9, 1.5),
             airmass_range=(1.0, 1.5))
"""The held-out night of every class (4 CCD-visits)."""

OFF = dict(crosstalk=False, gain_error=0.0, nonlinearity=0.0, brighter_fatter=0.0, sky_gradient=0.0, fringe_scale=0.0,
           satellite_trails=0.0, aircraft_trails=0.0, asteroid_density=0.0, calibration_noise=False,
           flat_illumination_error=0.0, n_unlisted_hot_pixels=0, galaxy_model="simple")
"""Every artifact switched off: the clean baseline."""

ALONE = {
    "crosstalk": dict(crosstalk=True),
    "gain errors 0.3%": dict(gain_error=0.003),
    "non-linearity 1%": dict(nonlinearity=0.01),
    "brighter-fatter 2%": dict(brighter_fatter=0.02),
    "sky gradient 2%": dict(sky_gradient=0.02),
    "fringes (z) x1": dict(fringe_scale=1.0, bands=["z"]),
    "satellite trails (1 per CCD)": dict(satellite_trails=1.0),
    "aircraft trails (0.5 per CCD)": dict(aircraft_trails=0.5),
    "asteroids (100 / deg2)": dict(asteroid_density=100.0),
    "calibration noise": dict(calibration_noise=True),
    "flat illumination 1%": dict(flat_illumination_error=0.01),
    "unlisted hot pixels (20)": dict(n_unlisted_hot_pixels=20),
    "real galaxies (counts, sizes, bulges)": dict(galaxy_model="real"),
}
"""Each artifact alone, on top of :data:`OFF` (trail and asteroid rates higher than a real night's, to measure
them; fringes on a z-band night, the only band but Y that has them)."""

CLASSES = {"baseline": {}, **ALONE,
           "all together": {k: v for options in ALONE.values() for k, v in options.items() if k != "bands"}}
"""The rows of the table: the clean baseline, each artifact alone, then all of them together (i band)."""

FIXED = ("baseline", "crosstalk", "satellite trails (1 per CCD)", "aircraft trails (0.5 per CCD)", "all together")
"""The classes also run "before": those the fixes act on (elsewhere before and after are the same pipeline)."""

BEFORE = PipelineConfig.model_validate({"isr": {"do_crosstalk": False}, "detect": {"do_drop_streaks": False}})
"""The pipeline without this bench's fixes (crosstalk correction, trail rejection)."""


def _score(dia: Table, truth: Table, fluxes: Table, n_visits: int) -> dict[str, str]:
    """The table's cells of one class and pipeline: false per CCD-visit and completeness, before and after the
    reliability cut, and DiaSources at asteroids."""
    threshold = ReliabilityConfig().threshold
    cells = {}
    for label, sel in (("", slice(None)), (" (cut)", np.asarray(dia["reliability"]) >= threshold)):
        at_10, _ = score_dia_sources(dia[sel], truth, fluxes, detectable_snr=10.0)
        at_5, _ = score_dia_sources(dia[sel], truth, fluxes, detectable_snr=5.5)
        k10, n10 = int(at_10["n_found"].sum()), int(at_10["n_injected"].sum())
        k5, n5 = int(at_5["n_found"].sum()) - k10, int(at_5["n_injected"].sum()) - n10
        cells[f"false / CCD-visit{label}"] = _rate(int(at_5["n_false"].sum()), n_visits)
        cells[f"SNR >= 10{label}"] = _interval(k10, n10)
        cells[f"SNR 5.5-10{label}"] = _interval(k5, n5)
        if not label:
            cells["at asteroids"] = str(int(at_5["n_asteroid"].sum()))
    return cells


def _process(root, config: PipelineConfig) -> tuple[Table, int]:
    """Every CCD-visit of the night at ``root`` through the pipeline: its DiaSources and the number of visits."""
    dia = []
    for _, _, inputs in _gather(root):
        dia.append(CcdRun(inputs, config=config).run_all().dia_sources)
    return vstack(dia), len(dia)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small-mode nights (fewer stars and galaxies)")
    parser.add_argument("--classes", nargs="+", choices=list(CLASSES), metavar="NAME", default=list(CLASSES),
                        help="only these classes (quoted names of CLASSES)")
    parser.add_argument("--keep", action="store_true", help="keep the simulated nights in bench/out/artifacts")
    args = parser.parse_args()
    rows = []
    for name in args.classes:
        root = OUT_DIR / "artifacts" / name.split(" ")[0]
        shutil.rmtree(root, ignore_errors=True)
        simulated_repository(root, SimConfig.model_validate({**NIGHT, "small": args.small, **OFF, **CLASSES[name]}))
        truth = Table.read(root / "truth" / "sources.ecsv")
        fluxes = Table.read(root / "truth" / "fluxes.ecsv")
        for when, config in (("before", BEFORE), ("after", PipelineConfig()))[0 if name in FIXED else 1:]:
            dia, n_visits = _process(root, config)
            rows.append({"class": name, "pipeline": when, "visits": str(n_visits),
                         **_score(dia, truth, fluxes, n_visits)})
            console.print(rows[-1])
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    table = RichTable(title=f"Per artifact class ({'small' if args.small else 'full'} density; false: Poisson 95%, "
                            "completeness: Wilson 95%; cut: reliability >= "
                            f"{ReliabilityConfig().threshold})")
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("class", "pipeline") else "right")
    for r in rows:
        table.add_row(*r.values())
    console.print(table)


if __name__ == "__main__":
    main()
