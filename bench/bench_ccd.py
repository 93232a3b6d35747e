"""Per-stage timing and peak memory of ``process_ccd`` on one full-size, full-density DECam CCD, one core.

Simulates (once, cached under ``bench/out/``) ``SimConfig(ccds=[28], n_epochs=2, small=False)`` (or uses
``--root``), gathers the inputs of epoch 2 the way the worker does (``CcdProcessor.gather``, empty APDB
region), then runs ``process_ccd`` ``--repeat`` times (default 3) with BLAS/OpenMP pools limited to ``--threads``
(threadpoolctl, default 1), scipy.fft workers set to ``--threads`` (``scipy.fft.set_workers``) and, with one
thread, the process pinned to one CPU. Prints the median of each stage's time
(``outputs.metadata['timings_s']``, wall) and of its CPU time (``time.process_time``, every thread)
against the goals, and the peak memory of one more run under tracemalloc
(Python + NumPy allocations) and the process's max RSS.

Goals: ISR 0.5 s, calibration 1.0 s, subtraction chain (template + subtract + detect/measure + reliability) 2.0 s;
peak memory 1.5 GB (target) / 2 GB (limit).

Run: ``python bench/bench_ccd.py`` (first run simulates: ~30 s); ``--repeat 10``, ``--root DIR``,
``--ccd N``, ``--threads N``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, console, machine_line, max_rss_bytes, median, pin_to_one_core, worker_malloc  # noqa: E402
from rich.table import Table  # noqa: E402

STAGE_GOALS_S = {"isr": 0.5, "calibrate": 1.0}
CHAIN = ("template", "subtract", "detect", "reliability")  # detect includes measurement; reliability: the CNN
CHAIN_GOAL_S = 2.0
MEM_TARGET_B = 1.5e9
MEM_LIMIT_B = 2.0e9
GB = 1e9


class _EmptyApdb:
    """Stands in for the APDB: every region is empty (first visit of a field)."""

    def read_region(self, region, visit_mjd_tai):
        from streamer.worker.processor import empty_region

        return empty_region()


def ensure_data(root: Path | None, ccd: int, n_epochs: int) -> Path:
    from simulator import SimConfig
    from streamer.simulated import simulated_repository

    if root is not None:
        return root
    root = OUT_DIR / f"sim_ccd{ccd}_full"
    if (root / "events").is_dir() and len(list((root / "events").glob("*.avro"))) >= n_epochs:
        return root
    tmp = root.with_name(root.name + ".tmp")
    console.print(f"simulating CCD {ccd}, {n_epochs} epochs, full density into {root} (once)...")
    t0 = time.perf_counter()
    simulated_repository(tmp, SimConfig(ccds=[ccd], n_epochs=n_epochs, small=False))
    tmp.rename(root)
    console.print(f"  simulated in {time.perf_counter() - t0:.1f} s")
    return root


def record_stage_cpu(cpu: dict[str, float]) -> None:
    """Wrap ``pipeline.ccd._stage`` so that each stage's CPU time (``time.process_time``: every thread of
    this process) goes into ``cpu`` too; on a shared machine that is the figure to compare, not the wall."""
    import contextlib

    import pipeline.ccd as ccd_module

    wall_stage = ccd_module._stage

    @contextlib.contextmanager
    def stage(name: str, timings: dict[str, float]):
        start = time.process_time()
        try:
            with wall_stage(name, timings):
                yield
        finally:
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - start

    ccd_module._stage = stage


def gather(root: Path, ccd: int, epoch: int):
    from streamer.events.files import read_event_file
    from streamer.worker.inputs import DataRepository
    from streamer.worker.processor import CcdProcessor

    events = sorted((root / "events").glob("*.avro"))
    if len(events) < epoch:
        raise SystemExit(f"{root} has {len(events)} exposure events, need epoch {epoch}")
    event = read_event_file(events[epoch - 1])
    proc = CcdProcessor(DataRepository(root), _EmptyApdb(), alert_sink=None)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    inputs, _ = proc.gather(event, ccd)
    return event, inputs, time.perf_counter() - t0


def cpu_cell(values: list[float]) -> str:
    return f"{median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def fmt_mem(b: float) -> str:
    return f"{b / GB:.2f} GB"


def mem_verdict(b: float) -> str:
    if b <= MEM_TARGET_B:
        return "[green]ok[/green]"
    if b <= MEM_LIMIT_B:
        return "[yellow]over target[/yellow]"
    return "[red]over limit[/red]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="existing data repository (default: simulate into bench/out/)")
    ap.add_argument("--ccd", type=int, default=28, help="CCDNUM (default 28 = S4)")
    ap.add_argument("--epoch", type=int, default=2, help="which exposure (1-based) to process (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the median is shown (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--no-tracemalloc", action="store_true", help="skip the (slower) tracemalloc run")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc malloc's defaults (the worker tunes it: streamer.runtime.malloc_tuning)")
    args = ap.parse_args(argv)
    # The worker's process setting: without it every CCD-sized array is a fresh mapping, zero-filled page by page.
    malloc = worker_malloc(args.default_malloc)

    from threadpoolctl import threadpool_info, threadpool_limits

    pin = "not pinned" if args.no_pin or args.threads > 1 else pin_to_one_core()
    root = ensure_data(args.root, args.ccd, max(2, args.epoch))
    from pipeline.ccd import PipelineConfig, process_ccd

    config = PipelineConfig()
    event, inputs, gather_s = gather(root, args.ccd, args.epoch)
    console.print(f"[bold]bench_ccd[/bold] | {machine_line()} | {pin} | threads {args.threads} | {malloc}")
    console.print(f"data {root}, exposure {event.exposure_id}, CCD {args.ccd}; inputs gathered in {gather_s:.2f} s "
                  f"({len(inputs.refcat)} reference stars, {len(inputs.template_tiles)} template tiles)")

    runs: list[dict[str, float]] = []
    cpus: list[dict[str, float]] = []
    walls: list[float] = []
    cpu_now: dict[str, float] = {}
    record_stage_cpu(cpu_now)
    import scipy.fft

    with threadpool_limits(limits=args.threads), scipy.fft.set_workers(args.threads):
        pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()) or "none"
        for i in range(args.repeat):
            gc.collect()
            cpu_now.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            out = process_ccd(inputs, config=config)
            walls.append(time.perf_counter() - t0)
            cpu_now["process_ccd"] = time.process_time() - c0
            runs.append(dict(out.metadata["timings_s"]))
            cpus.append(dict(cpu_now))
            n_dia = out.metadata["n_dia_sources"]
            console.print(f"  run {i + 1}: {walls[-1]:.2f} s, {n_dia} DiaSources, {out.metadata['n_forced']} forced")
            del out
        traced_peak = float("nan")
        if not args.no_tracemalloc:
            gc.collect()
            tracemalloc.start()
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            out = process_ccd(inputs, config=config)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            traced_peak = float(peak - base)
            del out
    rss = max_rss_bytes()
    console.print(f"  thread pools: {pools}")

    stages = list(runs[0])
    med = {s: median([r.get(s, 0.0) for r in runs]) for s in stages}
    chain = median([sum(r.get(s, 0.0) for s in CHAIN) for r in runs])
    table = Table(title=f"process_ccd on one full-density DECam CCD ({args.ccd}), {args.threads} thread(s), "
                        f"median of {args.repeat}")
    table.add_column("stage")
    table.add_column("median s", justify="right")
    table.add_column("min s", justify="right")
    table.add_column("max s", justify="right")
    table.add_column("goal s", justify="right")
    table.add_column("verdict")
    table.add_column("CPU s (median, min-max)", justify="right")
    for s in stages:
        vals = [r.get(s, 0.0) for r in runs]
        cpu = [c.get(s, 0.0) for c in cpus]
        goal = STAGE_GOALS_S.get(s)
        over = f"[red]over ({med[s] / goal:.1f}x)[/red]" if goal else ""
        v = "" if goal is None else ("[green]ok[/green]" if med[s] <= goal else over)
        label = s + {"detect": " (incl. measure)", "reliability": " (CNN: stamps + network)"}.get(s, "")
        table.add_row(label, f"{med[s]:.3f}", f"{min(vals):.3f}", f"{max(vals):.3f}",
                      "" if goal is None else f"{goal:.1f}", v, cpu_cell(cpu))
    table.add_section()
    v = "[green]ok[/green]" if chain <= CHAIN_GOAL_S else f"[red]over ({chain / CHAIN_GOAL_S:.1f}x)[/red]"
    table.add_row("subtraction chain (template+subtract+detect+reliability)", f"{chain:.3f}", "", "",
                  f"{CHAIN_GOAL_S:.1f}", v,
                  cpu_cell([sum(c.get(s, 0.0) for s in CHAIN) for c in cpus]))
    table.add_row("total (sum of stages)", f"{median([sum(r.values()) for r in runs]):.3f}", "", "", "", "",
                  cpu_cell([sum(v for k, v in c.items() if k != "process_ccd") for c in cpus]))
    table.add_row("process_ccd wall / CPU", f"{median(walls):.3f}", f"{min(walls):.3f}", f"{max(walls):.3f}", "", "",
                  cpu_cell([c["process_ccd"] for c in cpus]))
    console.print(table)

    mem = Table(title="Peak memory of process_ccd")
    mem.add_column("measure")
    mem.add_column("peak", justify="right")
    mem.add_column("goal (target / limit)", justify="right")
    mem.add_column("verdict")
    goal = f"{MEM_TARGET_B / GB:.1f} / {MEM_LIMIT_B / GB:.1f} GB"
    if traced_peak == traced_peak:
        mem.add_row("tracemalloc peak (allocations during one process_ccd)", fmt_mem(traced_peak), goal,
                    mem_verdict(traced_peak))
    mem.add_row("max RSS of the process (interpreter + inputs + runs)", fmt_mem(rss), goal, mem_verdict(rss))
    console.print(mem)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
