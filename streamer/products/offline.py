"""``blink process``: one raw CCD offline, its products written into a folder (:mod:`streamer.products.store`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.ccd import STEPS, CcdRun, PipelineConfig
from streamer.decam.raw_files import read_raw_ccd
from streamer.products.store import run_steps
from streamer.worker.inputs import DataRepository
from streamer.worker.processor import raw_ccd_inputs


def process_raw_ccd(root: str | Path, raw: str | Path, ccdnum: int, out: str | Path, *,
                    steps: Sequence[str] = STEPS, reuse: bool = False,
                    config: PipelineConfig = PipelineConfig()) -> dict[str, str]:
    """Run one CCD of a raw exposure as the worker does (its calibrations, reference stars and templates from
    the data root ``root``; an empty APDB region) and write each step's products into ``out``.

    Parameters
    ----------
    root : path
        The data repository.
    raw : path
        The raw file (absolute, or relative to ``root``).
    ccdnum : int
    out : path
        The products' folder (made if missing).
    steps : sequence of str
        Steps of :data:`pipeline.ccd.STEPS` to run; the products of earlier ones are read from ``out``.
    reuse : bool
        Skip a step whose products are already in ``out``.
    config : PipelineConfig

    Returns
    -------
    dict
        Step -> ``"ran"`` or ``"reused"``.
    """
    repo = DataRepository(root)
    raw_ccd = read_raw_ccd(repo.resolve(raw) if not Path(raw).is_absolute() else Path(raw), int(ccdnum))
    run = CcdRun(raw_ccd_inputs(repo, raw_ccd, with_templates=True), config)
    return run_steps(run, out, steps=steps, reuse=reuse)
