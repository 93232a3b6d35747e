"""The night report as one self-contained HTML page (figures embedded as base64 PNG, no script, no link out)."""

from __future__ import annotations

import base64
from collections import Counter
from html import escape
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time

from streamer.report import night_plots
from streamer.report.night import NightFacts

__all__ = ["LATENCY_GOAL_S", "alert_latencies", "render_night", "write_night_report"]

LATENCY_GOAL_S = 60.0
"""Rubin's goal: alerts out within 60 s of the shutter closing."""

REPLAY_AFTER_S = 86400.0
"""A night whose median latency exceeds this was replayed (or simulated): its latency is measured from when
the worker took up each exposure instead."""

_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #2a7a2a; } .bad { color: #b22; } .note { color: #666; font-size: 0.9em; }
figure { display: inline-block; margin: 0.4em; } img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    def cell(v: object) -> str:
        numeric = isinstance(v, (int, float, np.number))
        return f'<td class="n">{escape(str(v))}</td>' if numeric else f"<td>{escape(str(v))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _iso(mjd_tai: float) -> str:
    return Time(mjd_tai, format="mjd", scale="tai").utc.isot[:19] + " UTC" if np.isfinite(mjd_tai) else "-"


def alert_latencies(timings: Table) -> tuple[np.ndarray, str]:
    """Seconds to alert of each CCD-visit, and from when they are counted.

    From the shutter close; for a replayed or simulated night (median above :data:`REPLAY_AFTER_S`), from when
    the worker started the exposure's first CCD, which is what a live night's shutter close would be.
    """
    if not len(timings):
        return np.zeros(0), "from shutter close"
    latency = np.asarray(timings["latency_s"], float)
    if np.median(latency) <= REPLAY_AFTER_S:
        return latency, "from shutter close"
    visit = np.asarray(timings["visit"], np.int64)
    started = np.asarray(timings["started_mjd_tai"], float)
    first = {v: started[visit == v].min() for v in np.unique(visit)}
    taken_up = np.array([first[v] for v in visit])
    return (np.asarray(timings["published_mjd_tai"], float) - taken_up) * 86400.0, \
        "replay: from the worker's start of the exposure"


def _summary(facts: NightFacts) -> str:
    t = facts.timings
    n_alerts = int(np.sum(t["n_alerts"])) if len(t) else 0
    n_new = int(np.sum(t["n_new_dia_objects"])) if len(t) else 0
    failed = {(d.get("exposureId"), d.get("detector")) for d in facts.dead_letters if d.get("detector") is not None}
    rows = [["exposures processed", len(np.unique(t["visit"])) if len(t) else 0],
            ["CCDs processed", len(t)], ["CCDs dead-lettered", len(failed)], ["alerts", n_alerts],
            ["DiaSources", len(facts.dia_sources)], ["new DiaObjects", n_new],
            ["dead letters", len(facts.dead_letters)]]
    where = [[k, v] for k, v in facts.where.items()]
    lo, hi = facts.window
    return (f"<p>Shutter closes from {escape(_iso(lo))} to {escape(_iso(hi))} (MJD TAI {lo:.5f} to {hi:.5f}).</p>"
            + _table(["", "count"], rows) + _table(["read from", ""], where))


def _dead_letters(facts: NightFacts) -> str:
    if not facts.dead_letters:
        return '<p class="ok">No dead letters.</p>'
    counts = Counter((d.get("reason", "?"), d.get("stage", "?")) for d in facts.dead_letters)
    by = _table(["reason", "stage", "dead letters"], [[r, s, n] for (r, s), n in sorted(counts.items())])
    rows = [[d.get("exposureId") if d.get("exposureId") is not None else "-",
             d.get("detector") if d.get("detector") is not None else "-", d.get("reason", ""), d.get("stage", ""),
             str(d.get("message", ""))[:200]] for d in facts.dead_letters[:50]]
    more = f'<p class="note">{len(facts.dead_letters) - 50} more not listed.</p>' if len(facts.dead_letters) > 50 \
        else ""
    return by + _table(["exposure", "CCD", "reason", "stage", "message"], rows) + more


def _latency(facts: NightFacts) -> str:
    latency, basis = alert_latencies(facts.timings)
    if not latency.size:
        return '<p class="note">No CCD-visit timings recorded for this night.</p>'
    within = float(np.mean(latency <= LATENCY_GOAL_S))
    rows = [[f"p{q:.0f}", round(float(np.percentile(latency, q)), 2)] for q in night_plots.LATENCY_PERCENTILES]
    rows += [["max", round(float(latency.max()), 2)], [f"within {LATENCY_GOAL_S:.0f} s", f"{within:.1%}"]]
    verdict = "ok" if np.percentile(latency, 99) <= LATENCY_GOAL_S else "bad"
    return (f'<p>Latency {escape(basis)}; goal {LATENCY_GOAL_S:.0f} s: <span class="{verdict}">p99 '
            f'{np.percentile(latency, 99):.1f} s</span>.</p>' + _table(["latency", "s"], rows)
            + _img(night_plots.latency_png(latency, LATENCY_GOAL_S, basis), "latency histogram"))


def _stages(facts: NightFacts) -> str:
    t = facts.timings
    stages = {c[len("stage_"):-len("_s")]: np.asarray(t[c], float) for c in t.colnames if c.startswith("stage_")}
    if not stages:
        return '<p class="note">No stage timings recorded for this night.</p>'
    stages["whole CCD"] = np.asarray(t["total_s"], float)

    def stats(v: np.ndarray) -> list[object]:
        v = v[np.isfinite(v)]
        return [round(float(np.median(v)), 3), round(float(np.percentile(v, 90)), 3), round(float(v.max()), 3)] \
            if v.size else ["-", "-", "-"]

    rows = [[name, *stats(v)] for name, v in stages.items()]
    return _table(["stage", "median s", "p90 s", "max s"], rows) + _img(night_plots.stages_png(stages),
                                                                          "stage timings")


def _objects(facts: NightFacts) -> str:
    new = facts.new_objects
    if not len(new):
        return '<p class="note">No new DiaObject this night.</p>'
    rows = [[int(o["diaObjectId"]), round(float(o["ra"]), 6), round(float(o["dec"]), 6),
             round(float(o["peakPsfFlux"]), 1), int(o["nDiaSources"])] for o in new]
    parts = [_table(["diaObjectId", "ra", "dec", "peak psfFlux (nJy)", "nDiaSources"], rows)]
    for o in new:
        oid = int(o["diaObjectId"])
        sources, forced = facts.light_curves.get(oid, (Table(), Table()))
        triplet = facts.cutouts.get(oid, (None, None, None))
        title = f"DiaObject {oid}"
        parts.append(f'<div class="object"><h3>{escape(title)}</h3>'
                     f'<figure>{_img(night_plots.cutouts_png(triplet), f"cutouts of {title}")}</figure>'
                     f'<figure>{_img(night_plots.light_curve_png(sources, forced, title), f"light curve of {title}")}'
                     "</figure></div>")
    return "".join(parts)


def _truth(facts: NightFacts) -> str:
    if facts.truth is None:
        return ""
    return ("<h2>Against the simulator's truth</h2>" + _img(facts.truth.figure_png, "truth report")
            + f"<pre>{escape(facts.truth.text)}</pre>")


def render_night(facts: NightFacts, title: str = "Blink night report") -> str:
    """The page (HTML5, inline style, every figure a ``data:`` PNG)."""
    sky = _img(night_plots.sky_map_png(facts.dia_sources, facts.new_objects), "sky map of the DiaSources")
    body = (f"<h1>{escape(title)}</h1>{_summary(facts)}<h2>Dead letters</h2>{_dead_letters(facts)}"
            f"<h2>Latency to alert</h2>{_latency(facts)}<h2>Stage timings per CCD</h2>{_stages(facts)}"
            f"<h2>Sky map</h2>{sky}<h2>Brightest new DiaObjects</h2>{_objects(facts)}{_truth(facts)}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body>{body}</body></html>\n')


def write_night_report(facts: NightFacts, path: Path) -> Path:
    """Write the page to ``path`` (folders created) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_night(facts), encoding="utf-8")
    return path
