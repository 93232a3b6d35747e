"""Earlier epochs of the simulated fields, for Blink to build its templates from.

A survey builds its templates from its own earlier exposures; so does a simulated night with
``SimConfig(templates="epochs")``: before the night, each field is observed ``n_template_epochs`` times in each
band (dithered like the night, in the seeing of ``template_seeing_range``, at low airmass, weeks apart).
Their raws go to ``raw/`` like any other exposure, without events (they are not the night's work); static
sources are as in the night, variable stars at their mean, transients and supernovae not yet there. Their
conditions are written to ``truth/template_exposures.ecsv`` (the same columns as ``truth/exposures.ecsv``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from astropy.table import Table

from schemas import datarepo

from .config import SimConfig
from .world import Exposure, make_exposures, seeded_rng


def make_template_exposures(cfg: SimConfig, centers: list[tuple[float, float]]) -> list[Exposure]:
    """The earlier epochs of every field: ``n_template_epochs`` per band, before ``start_mjd``, numbered just
    before ``first_expnum``."""
    n = cfg.n_template_epochs * len(cfg.bands)
    if cfg.first_expnum - n * cfg.n_fields < 1:
        raise ValueError(f"first_expnum {cfg.first_expnum} leaves no room for {n * cfg.n_fields} template epochs")
    earlier = cfg.model_copy(update=dict(
        n_epochs=n, seed=int(seeded_rng(cfg.seed, 7).integers(2**31)), field_centers=centers,
        seeing_range=cfg.template_seeing_range, airmass_range=(1.0, min(1.3, cfg.airmass_range[1])),
        start_mjd=cfg.start_mjd - 30.0 * n - 60.0, first_expnum=cfg.first_expnum - n * cfg.n_fields))
    exposures, _ = make_exposures(earlier)
    # Weeks apart rather than nights: the epochs span months, as a survey's do.
    return [replace(e, mjd_obs=round(e.mjd_obs + 25.0 * e.epoch, 8)) for e in exposures]


def write_template_truth(root: Path, exposures: list[Exposure]) -> None:
    """The template epochs' conditions (``truth/template_exposures.ecsv``)."""
    rows = [(e.expnum, e.mjd_mid, e.band, e.airmass, e.seeing, e.zero_point, e.field_id, e.epoch) for e in exposures]
    table = Table(rows=rows, names=("expnum", "mjd", "band", "airmass", "seeing_fwhm_arcsec", "zero_point",
                                    "field_id", "epoch"))
    path = root / datarepo.truth_dir() / "template_exposures.ecsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.write(path, format="ascii.ecsv", overwrite=True)
