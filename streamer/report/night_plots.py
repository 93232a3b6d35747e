"""The night report's figures, each as PNG bytes: latency histogram, stage timings, sky map, cutout triplet
and light curve."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table

from streamer.inspect import png_bytes as _png
from streamer.inspect import pyplot as _pyplot

__all__ = ["cutouts_png", "latency_png", "light_curve_png", "sky_map_png", "stages_png",
           "LATENCY_PERCENTILES"]

LATENCY_PERCENTILES = (50.0, 90.0, 99.0)
"""Percentiles of the latency the report prints and draws."""


def latency_png(latency_s: np.ndarray, goal_s: float, basis: str) -> bytes:
    """Histogram of the latencies with their percentiles and the goal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    values = np.asarray(latency_s, float)
    values = values[np.isfinite(values)]
    top = max(goal_s * 1.2, float(values.max()) * 1.05 if values.size else 1.0)
    ax.hist(values, bins=np.linspace(0, top, 41), color="#4c72b0", alpha=0.8)
    ax.axvline(goal_s, color="#c44e52", lw=2, label=f"goal {goal_s:.0f} s")
    for q, style in zip(LATENCY_PERCENTILES, (":", "--", "-.")):
        if values.size:
            v = float(np.percentile(values, q))
            ax.axvline(v, color="k", ls=style, lw=1, label=f"p{q:.0f} {v:.1f} s")
    ax.set(xlabel=f"latency to alert, s ({basis})", ylabel="CCD-visits")
    ax.legend(fontsize=8)
    return _png(fig)


def stages_png(stage_s: dict[str, np.ndarray]) -> bytes:
    """Seconds per pipeline stage over the night's CCDs: range (thin), 10th-90th percentile (thick), median (dot)."""
    plt = _pyplot()
    names = list(stage_s)
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(names), 3) + 1.2), constrained_layout=True)
    for row, name in enumerate(names):
        v = np.asarray(stage_s[name], float)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        p10, p50, p90 = np.percentile(v, [10, 50, 90])
        ax.hlines(row, v.min(), v.max(), color="grey", lw=1)
        ax.hlines(row, p10, p90, color="#4c72b0", lw=6)
        ax.plot([p50], [row], "o", color="k", ms=5)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="seconds per CCD", title="pipeline stages (median, 10-90%, range)", ylim=(len(names) - 0.5, -0.5))
    return _png(fig)


def sky_map_png(dia_sources: Table, new_objects: Table) -> bytes:
    """The night's DiaSources on the sky, coloured by reliability, the new objects shown circled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5), constrained_layout=True)
    if len(dia_sources):
        ra = np.asarray(dia_sources["ra"], float)
        colour = np.asarray(dia_sources["reliability"], float) if "reliability" in dia_sources.colnames \
            else np.zeros(len(ra))
        points = ax.scatter(ra, np.asarray(dia_sources["dec"], float), c=colour, s=6, cmap="viridis", vmin=0,
                            vmax=1)
        fig.colorbar(points, ax=ax, label="reliability")
    if len(new_objects):
        ax.scatter(np.asarray(new_objects["ra"], float), np.asarray(new_objects["dec"], float), s=120,
                   facecolors="none", edgecolors="#c44e52", label="brightest new DiaObjects")
        ax.legend(fontsize=8, loc="upper right")
    ax.set(xlabel="RA (deg)", ylabel="Dec (deg)", title=f"{len(dia_sources)} DiaSources")
    ax.invert_xaxis()
    ax.set_aspect(1.0 / max(np.cos(np.radians(float(np.median(dia_sources["dec"])))) if len(dia_sources) else 1.0,
                            0.1), adjustable="datalim")
    return _png(fig)


def cutouts_png(triplet: Sequence[bytes | None]) -> bytes:
    """Science, template and difference cutouts side by side, small
    (:func:`streamer.inspect.alert_view.cutout_triplet_figure`)."""
    from streamer.inspect.alert_view import cutout_triplet_figure

    return _png(cutout_triplet_figure(triplet, size_in=(6.6, 2.5), colour_bars=False))


def light_curve_png(dia_sources: Table, forced: Table, title: str) -> bytes:
    """An object's light curve, small (:func:`streamer.inspect.light_curve.light_curve_figure`)."""
    from streamer.inspect.light_curve import light_curve_figure

    return _png(light_curve_figure(dia_sources, forced, title=title, size_in=(5.0, 2.5)))
