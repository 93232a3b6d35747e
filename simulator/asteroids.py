"""Asteroids: moving point sources that are in no template and never twice at the same place.

Each field has a population of main-belt-like asteroids (``SimConfig.asteroid_density`` per square degree, r
from 19 to 23.5 with counts rising as 10**(0.3 r)), drawn at the night's start over the field and as far around
it as they move during the night; each moves on a straight line in the tangent plane at 0.1 to 0.5 deg/day
(a main-belt asteroid near opposition moves about 0.25 deg/day) in a random direction. An exposure renders
each one trailed along its motion during the exposure (:data:`TRAIL_STEPS` points), so in the difference image
it is a new source in one epoch only: a DiaSource that associates with nothing. Its truth is in
``truth/fluxes.ecsv`` (kind ``asteroid``, one row per exposure and CCD it is on, with its own ``ra``, ``dec``
there), so that scoring counts those DiaSources apart (:func:`simulator.scoring.score_dia_sources`).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table, vstack

from simulator.world import BANDS, Exposure, mag_to_njy, name_tag, power_law_mags, seeded_rng

from . import camera, optics
from .config import SimConfig

RATE_DEG_PER_DAY = (0.1, 0.5)
"""Range of the asteroids' rates of motion."""

MAG_RANGE = (19.0, 23.5)
"""r magnitudes of the asteroids."""

COLOURS = {"g": 0.6, "r": 0.0, "i": -0.15, "z": -0.2, "Y": -0.2}
"""Asteroid (solar-like) colours: band minus r, mag."""

FIELD_HALF_DEG = 1.2
"""Half-size of the region that the focal plane covers about a field's centre (dithers included)."""

ASTEROID_ID_BASE = 1_000_000_000
"""Asteroids' ``source_id`` in the flux truth: this plus their ``asteroid_id`` (no star's or transient's)."""

TRAIL_STEPS = 7
"""Points along the motion during an exposure with which an asteroid is rendered."""


def make_asteroids(cfg: SimConfig, exps: list[Exposure], centers: list[tuple[float, float]]) -> Table:
    """The asteroid population of every field: ``asteroid_id``, ``field_id``, ``ra``, ``dec`` (degrees at
    ``cfg.start_mjd``), ``rate_east``, ``rate_north`` (deg/day on the sky) and ``ref_mag_<band>``."""
    rows = []
    if cfg.asteroid_density > 0 and exps:
        span = max(e.mjd_mid for e in exps) - cfg.start_mjd
        for f, (fra, fdec) in enumerate(centers):
            rng = seeded_rng(cfg.seed, name_tag("astr"), f)
            half = FIELD_HALF_DEG + RATE_DEG_PER_DAY[1] * max(span, 0.0)
            n = int(rng.poisson(cfg.asteroid_density * (2.0 * half) ** 2))
            xi, eta = rng.uniform(-half, half, (2, n))
            ra, dec = optics.tangent_to_sky(np.deg2rad(xi), np.deg2rad(eta), fra, fdec)
            rate = rng.uniform(*RATE_DEG_PER_DAY, n)
            angle = rng.uniform(0.0, 2.0 * np.pi, n)
            r = power_law_mags(rng, n, *MAG_RANGE, 0.3)
            rows.append(dict(field_id=np.full(n, f), ra=ra, dec=dec, rate_east=rate * np.cos(angle),
                             rate_north=rate * np.sin(angle), **{f"ref_mag_{b}": r + COLOURS[b] for b in BANDS}))
    cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]} if rows else {
        "field_id": np.zeros(0, int), **{k: np.zeros(0) for k in ("ra", "dec", "rate_east", "rate_north")},
        **{f"ref_mag_{b}": np.zeros(0) for b in BANDS}}
    table = Table(cols)
    table.add_column(np.arange(1, len(table) + 1, dtype=np.int64), name="asteroid_id", index=0)
    return table


def asteroid_positions(asteroids: Table, mjd, start_mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of every asteroid at ``mjd`` (a scalar, or an array broadcasting against the
    asteroids, e.g. ``(n_steps, 1)``)."""
    dt = np.asarray(mjd, dtype=float) - start_mjd
    east = np.deg2rad(np.asarray(asteroids["rate_east"], float) * dt)
    north = np.deg2rad(np.asarray(asteroids["rate_north"], float) * dt)
    return optics.tangent_to_sky(east, north, np.asarray(asteroids["ra"], float), np.asarray(asteroids["dec"], float))


def trail_points(asteroids: Table, exp: Exposure, start_mjd: float, ccd: camera.SimCcd
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel positions (``TRAIL_STEPS``, n) of the field's asteroids along their motion during ``exp`` on
    ``ccd``, and their fluxes (e, n) in the exposure (0 for other fields' asteroids)."""
    frac = (np.arange(TRAIL_STEPS) + 0.5) / TRAIL_STEPS
    mjd = (exp.mjd_obs + frac * exp.exptime / 86400.0)[:, None]
    ra, dec = asteroid_positions(asteroids, mjd, start_mjd)
    x, y = optics.sky_to_pixel(ccd, ra.ravel(), dec.ravel(), exp.ra, exp.dec)
    mine = np.asarray(asteroids["field_id"]) == exp.field_id
    flux = np.where(mine, exp.flux_e(mag_to_njy(np.asarray(asteroids["ref_mag_" + exp.band], float))), 0.0)
    return x.reshape(ra.shape), y.reshape(ra.shape), flux


def asteroid_truth(asteroids: Table, exps: list[Exposure], ccds: list[int], start_mjd: float) -> Table:
    """Flux-truth rows (the columns of ``truth/fluxes.ecsv``, kind ``asteroid``, ``source_id``
    :data:`ASTEROID_ID_BASE` + ``asteroid_id``) of each asteroid on a CCD of an exposure at its midpoint, with
    its own ``ra``, ``dec`` there; ``delta_flux_njy`` is all its flux (no template has it) and ``snr`` that
    flux's expected S/N against the sky as an untrailed point source."""
    ny, nx = camera.CCD_SHAPE
    rows = []
    for exp in exps:
        mine = np.asarray(asteroids["field_id"]) == exp.field_id
        ra, dec = asteroid_positions(asteroids, exp.mjd_mid, start_mjd)
        flux = mag_to_njy(np.asarray(asteroids["ref_mag_" + exp.band], float))
        flux_e = exp.flux_e(flux)
        snr = flux_e / np.sqrt(exp.background_var() + flux_e)
        for c in ccds:
            x, y = optics.sky_to_pixel(camera.ccd(c), ra, dec, exp.ra, exp.dec)
            on = np.flatnonzero(mine & (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1))
            rows.append(Table({
                "source_id": ASTEROID_ID_BASE + np.asarray(asteroids["asteroid_id"], np.int64)[on],
                "expnum": np.full(on.size, exp.expnum, np.int64), "kind": np.full(on.size, "asteroid"),
                "flux_njy": flux[on], "delta_flux_njy": flux[on], "snr": snr[on],
                "ccdnum": np.full(on.size, c, np.int64), "x": x[on], "y": y[on], "ra": ra[on], "dec": dec[on]}))
    names = ("source_id", "expnum", "kind", "flux_njy", "delta_flux_njy", "snr", "ccdnum", "x", "y", "ra", "dec")
    empty = Table(names=names, dtype=(np.int64, np.int64, str, float, float, float, np.int64) + (float,) * 4)
    return vstack([empty, *rows]) if rows else empty
