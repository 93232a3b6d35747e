"""One CCD's products in a folder, per step of :data:`pipeline.ccd.STEPS`, and the offline run that writes them.

Files: ``postISRCCD.fits`` (isr), ``calexp.fits`` and ``src.parquet`` (calibrate), ``difference.fits``
(diffim), ``diaSrc.parquet`` (detect: before association), ``diaSource.parquet``, ``diaObject.parquet`` and
``diaForcedSource.parquet`` (associate), ``timings.json`` (each step: ran or reused, stage seconds) and
``config.json`` (the PipelineConfig).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.ccd import STEPS, Association, CcdRun, Difference
from streamer.products.fits_io import (
    read_calexp,
    read_difference,
    read_masked_image,
    write_calexp,
    write_difference,
    write_masked_image,
)
from streamer.products.tables import read_parquet, write_parquet

FILES = {"isr": ("postISRCCD.fits",), "calibrate": ("calexp.fits", "src.parquet"), "diffim": ("difference.fits",),
         "detect": ("diaSrc.parquet",),
         "associate": ("diaSource.parquet", "diaObject.parquet", "diaForcedSource.parquet")}
"""The files each step writes."""


def has_products(folder: Path, step: str) -> bool:
    """Whether every file of ``step`` is in ``folder``."""
    return all((folder / name).is_file() for name in FILES[step])


def write_step(folder: Path, run: CcdRun, step: str) -> None:
    """Write the product of ``step`` that ``run`` holds."""
    folder.mkdir(parents=True, exist_ok=True)
    if step == "isr" and run.isr_image is not None:
        write_masked_image(folder / "postISRCCD.fits", run.isr_image)
    elif step == "calibrate" and run.exposure is not None and run.sources is not None:
        write_calexp(folder / "calexp.fits", run.exposure)
        write_parquet(run.sources, folder / "src.parquet")
    elif step == "diffim" and run.difference is not None and run.exposure is not None:
        write_difference(folder / "difference.fits", run.difference.subtraction, wcs=run.exposure.wcs,
                         template_fwhm_arcsec=run.difference.template_fwhm_arcsec)
    elif step == "detect" and run.detections is not None:
        write_parquet(run.detections, folder / "diaSrc.parquet")
    elif step == "associate" and run.association is not None:
        found = run.association
        for name, table in (("diaSource", found.dia_sources), ("diaObject", found.dia_objects),
                            ("diaForcedSource", found.dia_forced_sources)):
            table.meta["n_new_dia_objects"] = found.n_new_dia_objects
            write_parquet(table, folder / f"{name}.parquet")


def read_step(folder: Path, run: CcdRun, step: str) -> None:
    """Fill ``run`` with the product of ``step`` read from ``folder``."""
    if step == "isr":
        run.isr_image = read_masked_image(folder / "postISRCCD.fits")
    elif step == "calibrate":
        run.exposure, run.sources = read_calexp(folder / "calexp.fits"), read_parquet(folder / "src.parquet")
    elif step == "diffim":
        run.difference = Difference(*read_difference(folder / "difference.fits"))
    elif step == "detect":
        run.detections = read_parquet(folder / "diaSrc.parquet")
    elif step == "associate":
        tables = [read_parquet(folder / name) for name in FILES["associate"]]
        run.association = Association(*tables, int(tables[0].meta.get("n_new_dia_objects", 0)))


def write_run_record(folder: Path, run: CcdRun, steps: dict[str, str], seconds: float) -> None:
    """``timings.json`` (each step's state, every stage's seconds, the whole run's) and ``config.json``."""
    record = {"steps": steps, "stage_s": dict(run.timings), "total_s": seconds}
    (folder / "timings.json").write_text(json.dumps(record, indent=2))
    (folder / "config.json").write_text(run.config.model_dump_json(indent=2))


def write_run(folder: str | Path, run: CcdRun, seconds: float) -> None:
    """Write every product of a finished run (the worker's, for a CCD whose products it keeps)."""
    folder = Path(folder)
    for step in STEPS:
        write_step(folder, run, step)
    write_run_record(folder, run, dict.fromkeys(STEPS, "ran"), seconds)


def run_steps(run: CcdRun, folder: str | Path, *, steps: Sequence[str] = STEPS, reuse: bool = False) -> dict[str, str]:
    """Run ``steps`` of ``run`` in pipeline order, writing each one's product into ``folder``.

    A step not asked for, or asked for with ``reuse`` and whose files are there, is not run: a later step
    that needs its product reads it from ``folder``.

    Returns
    -------
    dict
        Step -> ``"ran"`` or ``"reused"`` (steps asked for only).

    Raises
    ------
    ValueError
        A step that is not one of :data:`pipeline.ccd.STEPS`.
    """
    folder, start = Path(folder), time.perf_counter()
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown step {', '.join(unknown)} (steps: {', '.join(STEPS)})")
    first = min(STEPS.index(s) for s in steps)
    state: dict[str, str] = {}
    for index, step in enumerate(STEPS[first:], first):
        if step not in steps:
            continue
        if reuse and has_products(folder, step):
            state[step] = "reused"
            continue
        for earlier in STEPS[:index]:
            if (earlier != "isr" or step == "calibrate") and _missing(run, earlier) and has_products(folder, earlier):
                read_step(folder, run, earlier)
        run.run(step)
        write_step(folder, run, step)
        state[step] = "ran"
    write_run_record(folder, run, state, time.perf_counter() - start)
    return state


def _missing(run: CcdRun, step: str) -> bool:
    field = {"isr": "isr_image", "calibrate": "exposure", "diffim": "difference", "detect": "detections",
             "associate": "association"}[step]
    return getattr(run, field) is None


__all__ = ["FILES", "has_products", "read_step", "run_steps", "write_run", "write_run_record", "write_step"]
