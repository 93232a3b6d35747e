"""The night report's figures, each as PNG bytes: latency histogram, stage timings, sky map, cutout triplet
and light curve."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from astropy.table import Table

__all__ = ["cutout_image", "cutouts_png", "latency_png", "light_curve_png", "sky_map_png", "stages_png",
           "LATENCY_PERCENTILES"]

LATENCY_PERCENTILES = (50.0, 90.0, 99.0)
"""Percentiles of the latency the report prints and draws."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return buf.getvalue()


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


def cutout_image(fits_bytes: bytes | None) -> np.ndarray | None:
    """The image plane of an alert cutout (:func:`streamer.inspect.alert_view.read_cutout`); None when the
    alert has none or the bytes hold no image."""
    if not fits_bytes:
        return None
    from pipeline.errors import InputError
    from streamer.inspect.alert_view import read_cutout

    try:
        return np.asarray(read_cutout(fits_bytes).image, float)
    except InputError:
        return None


def cutouts_png(triplet: Sequence[bytes | None]) -> bytes:
    """Science, template and difference cutouts side by side (1st-99th percentile stretch each)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(6.6, 2.5), constrained_layout=True)
    for ax, data, name in zip(axes, triplet, ("science", "template", "difference")):
        image = cutout_image(data)
        if image is not None:
            finite = image[np.isfinite(image)]
            low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
            ax.imshow(image, origin="lower", cmap="gray", vmin=low, vmax=high if high > low else low + 1)
        else:
            ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=name, xticks=[], yticks=[])
    return _png(fig)


def light_curve_png(dia_sources: Table, forced: Table, title: str) -> bytes:
    """Difference-image PSF flux against time: DiaSources (filled) and forced photometry (open), by band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.5), constrained_layout=True)
    times = [np.asarray(t["midpointMjdTai"], float) for t in (dia_sources, forced) if len(t)]
    day = float(np.floor(np.min(np.concatenate(times)))) if times else 0.0
    for table, marker, kind in ((dia_sources, "o", "DiaSource"), (forced, "s", "forced")):
        if not len(table):
            continue
        bands = np.asarray(table["band"]).astype(str) if "band" in table.colnames else np.full(len(table), "?")
        for band in np.unique(bands):
            row = bands == band
            ax.errorbar(np.asarray(table["midpointMjdTai"], float)[row] - day, np.asarray(table["psfFlux"], float)[row],
                        yerr=np.asarray(table["psfFluxErr"], float)[row], fmt=marker, ms=4,
                        mfc="none" if kind == "forced" else None, label=f"{kind} {band}")
    ax.axhline(0, color="grey", lw=0.5)
    if times:
        lo, hi = float(np.min(np.concatenate(times))) - day, float(np.max(np.concatenate(times))) - day
        pad = max(0.05 * (hi - lo), 0.02)  # a night's few points still get a readable axis
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(_pyplot().MaxNLocator(4))
    ax.set(xlabel=f"MJD (TAI) - {day:.0f}", ylabel="psfFlux (nJy)", title=title)
    if len(dia_sources) or len(forced):
        ax.legend(fontsize=7)
    return _png(fig)
