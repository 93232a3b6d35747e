"""Small helpers shared by the hand-run benchmarks (not part of the test suite)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

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


def worker_malloc(default: bool = False) -> str:
    """Tune glibc malloc as the worker does by default (``streamer.runtime.malloc_tuning``), unless ``default``;
    a line saying which."""
    from streamer.runtime.malloc_tuning import DEFAULT_TRIM_THRESHOLD_MB, keep_freed_memory

    if default or not keep_freed_memory():
        return "glibc malloc defaults"
    return f"glibc malloc as the worker (trim threshold {DEFAULT_TRIM_THRESHOLD_MB} MB, large arrays in the heap)"


def worker_gc(default: bool = False) -> str:
    """Tune Python's collector as a started worker does (``streamer.runtime.gc_tuning``), unless ``default``; a line
    saying which. Call it where a worker would have finished starting."""
    from streamer.runtime.gc_tuning import DEFAULT_GEN0_THRESHOLD, freeze_startup_objects

    if default:
        return "Python gc defaults"
    frozen = freeze_startup_objects()
    return (f"Python gc as the worker ({frozen:,} start-up objects frozen, young collections every "
            f"{DEFAULT_GEN0_THRESHOLD:,})")


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
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} | {cpu} | {os.cpu_count()} CPUs | Python {platform.python_version()}"


APDB_READ_GOAL_S = 0.150
APDB_WRITE_GOAL_S = 0.100


def apdb_times_table(title: str, read_label: str, reads: list[float], writes: list[float],
                     read_sizes: list[tuple[int, int, int]], write_sizes: list[tuple[int, int, int]]) -> Table:
    """The per-CCD read/store table of the APDB benchmarks (median, p95, max against the issue's goals)."""
    t = Table(title=title)
    for col, j in (("operation", "left"), ("rows per CCD (mean obj/src/forced)", "right"), ("median ms", "right"),
                   ("p95 ms", "right"), ("max ms", "right"), ("goal ms", "right"), ("verdict", "left")):
        t.add_column(col, justify=j)
    for label, times, sizes, goal in ((read_label, reads, read_sizes, APDB_READ_GOAL_S),
                                      ("store", writes, write_sizes, APDB_WRITE_GOAL_S)):
        mean = [sum(s[k] for s in sizes) / len(sizes) for k in range(3)] if sizes else [0.0, 0.0, 0.0]
        worst = max(times) if times else float("nan")
        t.add_row(label, " / ".join(f"{v:,.0f}" for v in mean), f"{median(times) * 1e3:.1f}",
                  f"{p95(times) * 1e3:.1f}", f"{worst * 1e3:.1f}", f"{goal * 1e3:.0f}",
                  verdict(p95(times), goal) + " (p95)")
    return t


# The synthetic APDB load shared by bench_apdb.py and bench_apdb_dax.py (same geometry, same random draws).
FILL_T0 = 61000.0  # MJD TAI of the first benchmark visit; the fill's history lies in [T0 - 365, T0)
FILL_DEC0 = -30.0
FILL_RA0 = 150.0
FILL_VISITS_PER_YEAR = 100  # visits of each field in the fill's 12 months (Rubin's WFD: about 80 a year)
_FILL_VISIT_DAYS = 364.0 / FILL_VISITS_PER_YEAR


def fill_visit(mjd: np.ndarray) -> np.ndarray:
    """Visit number of fill sources at ``mjd`` (their field's visit; 10000 + index in the 12 months)."""
    return 10_000 + np.round((np.asarray(mjd) - (FILL_T0 - 365.0)) / _FILL_VISIT_DAYS).astype(np.int64)


def patch_positions(n: int, side_deg: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions over the square benchmark patch around (FILL_RA0, FILL_DEC0)."""
    dec = FILL_DEC0 + rng.uniform(-side_deg / 2, side_deg / 2, n)
    ra = FILL_RA0 + rng.uniform(-side_deg / 2, side_deg / 2, n) / np.cos(np.radians(dec))
    return ra % 360.0, dec


def fill_chunk_objects(start: int, m: int, n: int, side_deg: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids and positions of fill chunk ``[start, start + m)`` of ``n``: one dec strip of the patch, so a chunk
    writes few partitions."""
    ids = np.arange(start, start + m, dtype=np.int64) + 1
    ra, dec = patch_positions(m, side_deg, rng)
    lo_frac, hi_frac = start / n, (start + m) / n
    dec = FILL_DEC0 - side_deg / 2 + side_deg * (lo_frac + (hi_frac - lo_frac) * rng.uniform(0, 1, m))
    return ids, ra, dec


def fill_chunk_sources(ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, per_object: int, rng
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``per_object`` DiaSources per object: (object ids, ra, dec with 0.1" jitter, times over the 12 months
    before FILL_T0).

    The times are those of the field's visits (:data:`FILL_VISITS_PER_YEAR`, evenly spaced): an object has
    DiaSources on some of the visits of its field, as in a survey, so sources of neighbouring objects share
    visits (:func:`fill_visit` numbers them)."""
    m = len(ids)
    jit = rng.normal(0, 0.1 / 3600, (2, m * per_object))
    mjd = rng.uniform(FILL_T0 - 365.0, FILL_T0 - 1.0, m * per_object)
    return (np.repeat(ids, per_object), np.repeat(ra, per_object) + jit[0], np.repeat(dec, per_object) + jit[1],
            fill_visit_time(mjd))


def fill_visit_time(mjd: np.ndarray) -> np.ndarray:
    """The time of the fill visit during which ``mjd`` falls (visits every 3.64 days over the 12 months)."""
    return FILL_T0 - 365.0 + np.floor((np.asarray(mjd) - (FILL_T0 - 365.0)) / _FILL_VISIT_DAYS) * _FILL_VISIT_DAYS


class CcdWriter:
    """Builds what one CCD-visit writes from the objects it read, for bench_apdb.py and bench_apdb_dax.py (the
    same random draws): new DiaSources (and new DiaObject versions) for ``sources_per_ccd`` of the objects,
    and a forced source for every object.

    Parameters
    ----------
    make_objects, make_sources : callable
        The bench's catalog builders: ``make_objects(ids, ra, dec, validity=, n_sources=, rng=)`` and
        ``make_sources(ids, object_ids, ra, dec, mjd, visit=, detector=, rng=, forced=)``.
    rng : numpy.random.Generator
    sources_per_ccd : int
    """

    def __init__(self, make_objects, make_sources, rng, sources_per_ccd: int) -> None:
        self.make_objects, self.make_sources = make_objects, make_sources
        self.rng = rng
        self.sources_per_ccd = sources_per_ccd
        self.next_source = 5 * 10**12
        self.next_forced = 6 * 10**12
        self.visit = 1_000_000

    def outputs(self, ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, n_sources: np.ndarray, mjd: float,
                detector: int):
        """(new DiaObject versions, DiaSources, DiaForcedSources) of the next CCD-visit over these objects."""
        n_obj = len(ids)
        self.visit += 1
        pick = np.sort(self.rng.choice(n_obj, size=min(self.sources_per_ccd, n_obj), replace=False)) \
            if n_obj else np.array([], int)
        new_objs = self.make_objects(ids[pick], ra[pick], dec[pick], validity=mjd, n_sources=n_sources[pick] + 1,
                                     rng=self.rng)
        k = len(pick)
        src = self.make_sources(self.next_source + np.arange(k), ids[pick], ra[pick], dec[pick], mjd,
                                visit=self.visit, detector=detector, rng=self.rng)
        self.next_source += k
        fs = self.make_sources(self.next_forced + np.arange(n_obj), ids, ra, dec, mjd, visit=self.visit,
                               detector=detector, rng=self.rng, forced=True)
        self.next_forced += n_obj
        return new_objs, src, fs


def listening_pids(addresses) -> list[int]:
    """Pids of the processes listening on any of the ``(host, port)`` addresses; a server bound to every
    address of a port counts for each host (the machine may run other servers of the same kind on other
    loopback addresses, e.g. the local cluster on 127.0.0.2-4)."""
    import psutil

    wanted = {(host, int(port)) for host, port in addresses}
    ports = {port for _, port in wanted}
    out = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.pid or conn.laddr.port not in ports:
            continue
        ip = conn.laddr.ip.removeprefix("::ffff:")
        if ip in ("0.0.0.0", "::") or (ip, conn.laddr.port) in wanted:
            out.add(conn.pid)
    return sorted(out)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far; 0 when it is gone."""
    import psutil

    try:
        return float(sum(psutil.Process(pid).cpu_times()[:2]))
    except psutil.NoSuchProcess:
        return 0.0
