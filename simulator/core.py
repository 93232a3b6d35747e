"""The DECam simulator: raws, calibrations, reference catalog, templates, events and truth.

Signal model of one CCD (trimmed frame, electrons ``e``):

    true_e     = sky_e + stars + galaxies + transients          (what ISR must recover)
    detected   = Poisson(flat * true_e) + cosmic rays, clipped at the full well with bleed trails
    raw ADU    = bias_level(amp) + drift(amp, file row) + bias2d + detected / gain(amp) + read noise / gain

so ``(raw - per-row overscan) -> trim -> - bias2d -> / flat -> * gain`` gives ``true_e`` + noise.
``zero_point`` (truth/exposures.ecsv) is the AB magnitude of 1 such electron; nJy = e * 10**(-0.4 (zp - 31.4)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simulator.epochs import make_template_exposures, write_template_truth
from simulator.instcal import write_instcal
from simulator.sources import make_sources, tile_plan
from simulator.world import make_exposures
from simulator.writers import (
    write_calibs,
    write_event,
    write_psf_truth,
    write_raw,
    write_refcat,
    write_templates,
    write_truth,
)

from .config import SimConfig


@dataclass
class SimSummary:
    """What ``simulate`` made."""

    root: Path
    expnums: list[int]
    raw_paths: list[Path]
    n_exposures: int
    n_ccds: int
    n_transients: int
    n_template_tiles: int
    fields: list[tuple[float, float]] = field(default_factory=list)
    template_raw_paths: list[Path] = field(default_factory=list)
    """Raws of the earlier epochs (``templates="epochs"``) that ``blink templates build`` coadds."""


def simulate(root, config: SimConfig | None = None, **overrides) -> SimSummary:
    """Simulate a data repository at ``root`` (see :mod:`schemas.datarepo`)."""
    cfg = config or SimConfig()
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    exps, centers = make_exposures(cfg)
    template_exps = make_template_exposures(cfg, centers) if cfg.templates != "truth" else []
    tiles = tile_plan(cfg, exps + template_exps, centers)
    src = make_sources(cfg, exps, centers, tiles)
    truth_tiles = cfg.templates in ("truth", "both")
    total = (len(exps) + len(template_exps)) * len(cfg.ccds) + len(tiles) * len(cfg.bands) * truth_tiles + 2
    progress = None
    if cfg.progress:
        from rich.progress import Progress

        progress = Progress()
        progress.start()
        task = progress.add_task("blink sim", total=total)
        step = lambda: progress.advance(task)  # noqa: E731
    else:
        step = None
    try:
        write_calibs(root, cfg)
        write_refcat(root, src, cfg)
        if truth_tiles:
            write_templates(root, cfg, tiles, src, step)
        template_raws = [write_raw(root, cfg, exp, src, step) for exp in template_exps]
        write_template_truth(root, template_exps)
        raws = []
        for exp in exps:
            raws.append((write_instcal if cfg.instcal else write_raw)(root, cfg, exp, src, step))
            write_event(root, cfg, exp)
        write_truth(root, exps, src, cfg)
        write_psf_truth(root, cfg, exps + template_exps)
    finally:
        if progress is not None:
            progress.stop()
    return SimSummary(root=root, expnums=[e.expnum for e in exps], raw_paths=raws, n_exposures=len(exps),
                      n_ccds=len(cfg.ccds), n_transients=len(src.lightcurves), n_template_tiles=len(tiles),
                      fields=centers, template_raw_paths=template_raws)
