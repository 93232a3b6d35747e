"""Trails on a difference image are found from the detections' footprints (``pipeline.streaks``): on a noise
image of unit variance with a satellite trail of the simulator's and 30 point sources at SNR 100-300 (PSF sigma
2 px), every detection within 12 px of the trail is dropped and every point source away from it is kept."""

from __future__ import annotations

import numpy as np
import sep

from pipeline.streaks import on_streaks, streak_lines
from simulator.render import add_point_sources
from simulator.trails import satellite_trail


def test_detections_on_a_trail_are_found_and_point_sources_kept():
    rng = np.random.default_rng(3)
    shape = (1024, 1024)
    img = rng.normal(0.0, 1.0, shape).astype(np.float32)
    trail, p = satellite_trail(shape, np.random.default_rng(8))
    img += trail * np.float32(40.0 / trail.max())                     # 40 sigma at its peak
    x, y = rng.uniform(40, 984, (2, 30))
    sigma = 2.0
    nea = 4 * np.pi * sigma**2
    add_point_sources(img, x, y, rng.uniform(100, 300, 30) * np.sqrt(nea), sigma * 2.3548)
    found = sep.extract(img, 5.0, minarea=3, deblend_cont=0.05)
    moments = {k: found[k] for k in ("x2", "y2", "xy")}
    lines = streak_lines(moments, found["x"], found["y"], psf_sigma_pix=sigma)
    assert len(lines) >= 1
    assert np.all(np.abs(np.cos(lines[:, 2] - p["angle"])) > 0.99)      # the trail's direction
    dropped = on_streaks(found["x"], found["y"], lines)
    across = lambda u, v: (u - p["x0"]) * np.sin(p["angle"]) - (v - p["y0"]) * np.cos(p["angle"])  # noqa: E731
    on_trail = np.abs(across(found["x"], found["y"])) < 12
    assert on_trail.sum() >= 1 and np.all(dropped[on_trail])
    alone = np.sort(np.hypot(x[:, None] - x[None], y[:, None] - y[None]), axis=1)[:, 1] > 10   # no blends
    away = (np.abs(across(x, y)) > 30) & alone           # beyond the trail's own footprint
    d = np.hypot(found["x"][:, None] - x[away][None], found["y"][:, None] - y[away][None])
    kept = (d[~dropped] < 2).any(axis=0)
    assert kept.all(), f"{(~kept).sum()} point sources away from the trail dropped"
