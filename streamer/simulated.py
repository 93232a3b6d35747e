"""A ready-to-process simulated data repository: the simulator's world, then Blink's own preparation steps.

The simulator writes what a survey would hold (raws, calibrations, reference-catalog files, events, earlier
epochs and truth); Blink then prepares its inputs from them with the same commands a user runs on real data.
Every caller that wants a simulated night to process (``blink sim``, ``blink run --simulate``, the tests'
fixtures, the benches) goes through :func:`simulated_repository`.
"""

from __future__ import annotations

from pathlib import Path

from schemas import datarepo
from simulator import SimConfig, SimSummary, simulate
from streamer.refcat import build_index
from streamer.templates.build import build_templates_with_progress
from streamer.worker.inputs import DataRepository


def simulated_repository(root: str | Path, config: SimConfig | None = None) -> SimSummary:
    """Simulate a night into ``root`` and prepare it for the worker.

    Parameters
    ----------
    root : path-like
        The data root to write (see :mod:`schemas.datarepo`).
    config : SimConfig, optional
        What to simulate (the default night when omitted).

    Returns
    -------
    SimSummary
        What the simulator made.
    """
    config = config or SimConfig()
    summary = simulate(Path(root), config)
    build_index(Path(root) / datarepo.refcat_source_dir(), root)
    if config.templates == "epochs":  # Blink builds the templates from the earlier epochs
        repo = DataRepository(root)
        inputs = [str(path.resolve().relative_to(repo.root)) for path in summary.template_raw_paths]
        build_templates_with_progress(repo, inputs, show=config.progress)
    return summary
