"""Alert sizes against Rubin's 82 kB, on full-density DECam CCD-visits with 12 months of history, and what the
cutouts cost to make and the alerts to serialize.

Simulates once (cached under ``bench/out/``) ``SimConfig(ccds=--ccds, n_epochs=--epochs, small=False)`` (full
star and galaxy density), or uses ``--root``; processes epochs 2.. of each CCD with ``process_ccd`` (one core,
empty APDB region) for each ``--flux-quantization`` (``none``: lossless float32 cutout images); gives every
alert a history of ``--prv-sources`` previous DiaSources and ``--prv-forced`` previous DiaForcedSources (12
months of the field's visits: copies of the alert's own DiaSource row, earlier), encoded the worker's way
(``streamer.alerts.builder.build_alerts`` from APDB tables); serializes each alert with
``AlertSchema.serialize_framed`` and prints the sizes (p50, p99, max, the three cutouts apart), the
cutouts stage's time per alert, and alerts built and serialized per CPU second (goal 5,000).

Run: ``python bench/bench_alert_size.py`` (first run simulates: about a minute); ``--prv-sources 150``,
``--flux-quantization 16 8 none``, ``--root DIR --ccds 28 --epochs 3``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import OUT_DIR, console, machine_line, pin_to_one_core, worker_malloc  # noqa: E402
from rich.table import Table  # noqa: E402

BUDGET_B = 82_000
SERIALIZER_GOAL_PER_S = 5000.0
CADENCE_DAYS = 3.0


def ensure_data(root: Path | None, ccds: list[int], n_epochs: int) -> Path:
    """The data repository: ``root``, or a full-density simulation cached under ``bench/out/``."""
    from simulator import SimConfig
    from streamer.simulated import simulated_repository

    if root is not None:
        return root
    root = OUT_DIR / f"sim_ccds{'-'.join(map(str, ccds))}_e{n_epochs}_full"
    if (root / "events").is_dir():
        return root
    tmp = root.with_name(root.name + ".tmp")
    console.print(f"simulating CCDs {ccds}, {n_epochs} epochs, full density into {root} (once)...")
    simulated_repository(tmp, SimConfig(ccds=ccds, n_epochs=n_epochs, small=False))
    tmp.rename(root)
    return root


def history(dia_sources, n_sources: int, n_forced: int):
    """A RegionData whose every DiaObject of ``dia_sources`` has ``n_sources`` earlier DiaSources and
    ``n_forced`` earlier DiaForcedSources, one visit every ``CADENCE_DAYS`` (copies of its new DiaSource)."""
    from astropy.table import Table as AstropyTable

    from streamer.apdb.base import RegionData
    from streamer.apdb.columns import empty_table

    def earlier(n: int):
        rows = dia_sources[np.repeat(np.arange(len(dia_sources)), n)]
        back = np.tile(np.arange(1, n + 1), len(dia_sources))
        rows["midpointMjdTai"] = rows["midpointMjdTai"] - CADENCE_DAYS * back
        rows["visit"] = rows["visit"] - back
        return rows, back

    sources, back = earlier(n_sources)
    sources["diaSourceId"] = sources["diaSourceId"] - (back << 20)
    forced_rows, back = earlier(n_forced)
    forced = AstropyTable({name: forced_rows[name] for name in empty_table("DiaForcedSource").colnames
                           if name in forced_rows.colnames})
    forced["diaForcedSourceId"] = forced_rows["diaSourceId"] - (back << 20)
    return RegionData(empty_table("DiaObjectLast"), sources, forced)


def measure_visit(inputs, quantization: float | None, n_sources: int, n_forced: int, schema) -> dict[str, list]:
    """Process one CCD-visit; the framed size of each alert and of its cutouts, the cutouts stage's time, and
    the CCD's outputs with its history (to time the alert building again)."""
    from pipeline.ccd import PipelineConfig, process_ccd
    from streamer.alerts.builder import build_alerts

    out = process_ccd(inputs, config=PipelineConfig(cutout_flux_quantization=quantization))
    region = history(out.dia_sources, n_sources, n_forced)
    alerts = build_alerts(out, region)
    cutouts = [sum(len(a[k]) for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")) for a in alerts]
    return {"alert": [len(schema.serialize_framed(a)) for a in alerts], "cutouts": cutouts, "n": [len(alerts)],
            "cutouts_s": [out.metadata["timings_s"]["cutouts"]], "ccds": [(out, region)]}


def alerts_per_cpu_s(ccds, schema, min_time_s: float = 2.0) -> float:
    """Alerts built (history encoded, the worker's ``build_alerts``) and serialized per CPU second."""
    from streamer.alerts.builder import build_alerts

    done, cpu0 = 0, time.process_time()
    while time.process_time() - cpu0 < min_time_s:
        for out, region in ccds:
            for alert in build_alerts(out, region):
                schema.serialize_framed(alert)
                done += 1
    return done / (time.process_time() - cpu0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="existing data repository (default: simulate into bench/out/)")
    ap.add_argument("--ccds", type=int, nargs="+", default=[28, 35], help="CCDNUMs (default 28 35)")
    ap.add_argument("--epochs", type=int, default=4, help="exposures; epochs 2.. are processed (default 4)")
    ap.add_argument("--prv-sources", type=int, default=100,
                    help="previous DiaSources per alert (default 100: a detection at each of 12 months of visits "
                         "of a field observed every 3 days for its season)")
    ap.add_argument("--prv-forced", type=int, default=100, help="previous DiaForcedSources per alert (default 100)")
    ap.add_argument("--flux-quantization", nargs="+", default=["16", "none"],
                    help="cutout IMAGE steps per noise sigma to compare; none: lossless (default 16 none)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = ap.parse_args(argv)
    pin = "not pinned" if args.no_pin else pin_to_one_core()
    malloc = worker_malloc()
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_ccd import gather

    from streamer.alerts.schema import AlertSchema

    root = ensure_data(args.root, args.ccds, args.epochs)
    schema = AlertSchema.latest()
    console.print(f"[bold]bench_alert_size[/bold] | {machine_line()} | {pin} | {malloc}")
    console.print(f"data {root}; CCDs {args.ccds}, epochs 2..{args.epochs}; history {args.prv_sources} DiaSources "
                  f"+ {args.prv_forced} DiaForcedSources per alert; schema {schema.version}")
    visits = [gather(root, ccd, epoch)[1] for ccd in args.ccds for epoch in range(2, args.epochs + 1)]
    table = Table(title=f"Alert sizes (framed Avro, bytes; budget {BUDGET_B:,} at p99) and costs, one core")
    for col in ("cutout IMAGE", "alerts", "alert p50", "alert p99", "alert max", "p99 vs budget",
                "3 cutouts p50", "3 cutouts p99", "cutouts stage ms/alert", "build + serialize alerts/CPU s"):
        table.add_column(col, justify="right")
    for q in args.flux_quantization:
        quantization = None if q.lower() == "none" else float(q)
        got: dict[str, list] = {}
        with threadpool_limits(limits=1):
            for inputs in visits:
                for k, v in measure_visit(inputs, quantization, args.prv_sources, args.prv_forced, schema).items():
                    got.setdefault(k, []).extend(v)
        sizes, cutouts, n = np.array(got["alert"]), np.array(got["cutouts"]), sum(got["n"])
        p50, p99 = np.percentile(sizes, [50, 99])
        ok = "[green]ok[/green]" if p99 <= BUDGET_B else "[red]over[/red]"
        label = "lossless float32" if quantization is None else f"sigma / {quantization:g}"
        table.add_row(label, f"{n:,}", f"{p50:,.0f}", f"{p99:,.0f}", f"{sizes.max():,}", f"{ok} ({p99 / BUDGET_B:.2f})",
                      f"{np.percentile(cutouts, 50):,.0f}", f"{np.percentile(cutouts, 99):,.0f}",
                      f"{1e3 * sum(got['cutouts_s']) / n:.2f}", f"{alerts_per_cpu_s(got['ccds'], schema):,.0f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
