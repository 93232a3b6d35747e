"""Small helpers shared by the hand-run benchmarks (not part of the test suite)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
from pathlib import Path

from rich.console import Console

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"  # git-ignored cache (simulated data, databases)
# Wide tables also when piped to a file (rich would wrap to 80 columns otherwise).
console = Console() if sys.stdout.isatty() else Console(width=180)


def pin_to_one_core() -> str:
    """Pin this process (and the threads it starts later) to one CPU; returns a description."""
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError) as exc:  # not Linux
        return f"not pinned ({exc})"


def median(values) -> float:
    return float(statistics.median(values))


def p95(values) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = max(0, min(len(vals) - 1, int(round(0.95 * (len(vals) - 1)))))
    return float(vals[k])


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if platform.system() == "Darwin" else rss * 1024)


def verdict(value: float, goal: float) -> str:
    return "[green]ok[/green]" if value <= goal else "[red]over[/red]"


def machine_line() -> str:
    return f"{platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | Python {platform.python_version()}"
