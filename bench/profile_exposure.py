"""Where every core-second of one exposure goes: ``bench_exposure.py`` with the machine's CPU accounted for.

Runs one exposure as ``bench/bench_exposure.py`` does (``blink run --forever --workers N`` on the running
servers, its own topics and keyspace), and over the window from the event's publication to the last committed
alert reads, from ``/proc``:

* every worker thread's CPU time and run-queue wait (``/proc/<pid>/task/<tid>/stat`` and ``schedstat``): the
  Python threads (names from ``py-spy dump``), librdkafka's (``rdk:*``) and the other native ones (OpenBLAS);
* the CPU of the three servers (the processes listening on the Kafka, Cassandra and registry ports),
  of the supervisor, of this process (the alert reader) and of py-spy;
* the machine's busy and idle time (``/proc/stat``), so that what is left is other processes (the machine
  may be shared) and idle.

The Python threads' CPU is split among the pipeline's stages and the I/O edges (raw read and decode,
calibration and template reads, APDB read and write, alert building and serialization, Kafka produce,
transactions and polling, Python's garbage collector) in proportion to py-spy's samples of the first worker
(``py-spy record --native --format raw``: only threads on a CPU are sampled; a sample is attributed to the
deepest frame that a rule in :data:`RULES` names). The second worker is sampled into a flame graph SVG
(``--flamegraph``). ``--no-py-spy`` accounts without sampling (the /proc rows only, no overhead).

Prints the accounting table (core-seconds, per CCD, share of the window's capacity), the workers' main
threads' time split (on CPU, waiting for a CPU, blocked) and the stage wall times the workers recorded
(``ApdbCcdTiming``), with ``uptime``'s load before and after.

Run: ``python bench/profile_exposure.py --ccds 8`` (needs ``py-spy``: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import OUT_DIR, console, listening_pids, machine_line, median, process_cpu_s  # noqa: E402
from bench.bench_exposure import ensure_exposure, run_once  # noqa: E402
from streamer.alerts.framing import now_mjd_tai  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

RULES: list[tuple[str, str, str]] = [
    # (category, function regex, file regex); a sample goes to the deepest frame that a rule matches.
    ("Python GC", r"^(gc_collect_main|collect_with_callback|gc_collect)$", r"libpython|python3"),
    ("isr", r"^_isr$", r"pipeline/ccd\.py"),
    ("calibrate", r"^_calibrate$", r"pipeline/ccd\.py"),
    ("subtract", r"^_diffim$", r"pipeline/ccd\.py"),
    ("template warp", r"^warp_template$", r"pipeline/"),
    ("detect + measure + reliability", r"^_detect$", r"pipeline/ccd\.py"),
    ("associate", r"^_associate$", r"pipeline/ccd\.py"),
    ("forced photometry", r"^forced_photometry$", r"pipeline/"),
    ("cutouts", r"^make_cutouts$", r"pipeline/"),
    ("pipeline (other)", r"^(run_all|outputs)$", r"pipeline/ccd\.py"),
    ("raw read + decode", r"^read_raw_ccd$", r"streamer/decam/raw_files"),
    ("calibration reads", r"^(bias|flat|defects|_calib_plane)$", r"streamer/worker/inputs"),
    ("template tile reads", r"^templates_in$", r"streamer/worker/inputs"),
    ("reference catalog reads", r"^refcat_in$", r"streamer/worker/inputs"),
    ("APDB read", r"^read_region$", r"streamer/apdb"),
    ("APDB write", r"^store$", r"streamer/apdb"),
    ("CCD timing record", r"^record$", r"streamer/apdb/ccd_timings"),
    ("alert building", r"^build_alerts$", r"streamer/alerts"),
    ("Kafka produce", r"^(publish|_produce|put|produce_all|produce)$", r"streamer/kafka"),
    ("alert serialization", r"^(alert_messages|serialize\w*)$", r"streamer/(kafka/producer|alerts)"),
    ("Kafka transactions", r"^(begin|commit|abort|was_committed|_commit_with_retries|_call|target)$",
     r"streamer/kafka/transactions"),
    ("Kafka poll + commit", r"^(poll|keepalive|commit|owns|lag|_resume_due)$", r"streamer/kafka/source"),
]
_RULES = [(name, re.compile(fn), re.compile(path)) for name, fn, path in RULES]
_FRAME = re.compile(r"^(.*) \(([^()]*?)(?::\d+)?\)$")
_DRIVER = re.compile(r"cassandra/")
_WAITING = re.compile(r"^(PyThread_acquire_lock_timed|take_gil|select|poll|epoll_wait|ppoll|nanosleep|clock_nanosleep|"
                      r"pthread_cond_\w*wait|sem_\w*wait|__futex\w*|recv\w*|accept\w*|read|time_sleep|"
                      r"ev_run)$")
"""Native frames of a thread that waits (py-spy --native samples idle threads too): such samples are dropped."""
STAGE_ORDER = [r[0] for r in RULES] + ["Cassandra driver (other)", "other Python (loop, logging, ...)"]


def read_stat(path: str) -> list[str]:
    """Fields of a /proc stat file after the command name (field 3 onward)."""
    with open(path) as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def cpu_s(stat: list[str]) -> float:
    """utime + stime of a /proc stat (fields 14 and 15), seconds."""
    return (int(stat[11]) + int(stat[12])) / CLK_TCK


def page_faults(pid: int) -> tuple[int, int]:
    """(minor, major) page faults of a process so far (/proc stat fields 10 and 12)."""
    try:
        stat = read_stat(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    return int(stat[7]), int(stat[9])


def thread_times(pid: int) -> dict[int, tuple[str, float, float]]:
    """``{tid: (comm, cpu s, run-queue wait s)}`` of a process's live threads."""
    out: dict[int, tuple[str, float, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
            with open(f"{base}/schedstat") as f:
                wait_ns = int(f.read().split()[1])
            out[int(tid)] = (comm, cpu_s(read_stat(f"{base}/stat")), wait_ns / 1e9)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return out


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(read_stat(f"/proc/{entry}/stat")[1]) == pid:
                    out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def find_servers(ports: dict[str, int]) -> dict[str, int]:
    """The server processes by name, found by the port each listens on (``{"Kafka": 9092, ...}``)."""
    found = {name: listening_pids([("127.0.0.1", port)]) for name, port in ports.items()}
    return {name: pids[0] for name, pids in found.items() if pids}


def machine_times() -> tuple[float, float]:
    """(busy, idle) core-seconds of the whole machine since boot (/proc/stat; iowait counts as idle)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = vals
    return (user + nice + system + irq + softirq + steal) / CLK_TCK, (idle + iowait) / CLK_TCK


def all_processes() -> dict[int, tuple[str, float]]:
    """``{pid: (command name, cpu s)}`` of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
                name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
                out[int(entry)] = (name, cpu_s(fields))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    return out


def others(mon: Monitor, top: int = 4) -> str:
    """The processes outside the run that used the most CPU in the window."""
    ours = set(mon.workers) | set(mon.servers.values()) | {mon.supervisor, os.getpid()} | {s.pid for s in mon.spies}
    used = [(cpu - mon.first["all"].get(pid, (name, 0.0))[1], name, pid) for pid, (name, cpu) in mon.last["all"].items()
            if pid not in ours]
    return ", ".join(f"{name} ({pid}) {d:.1f} s" for d, name, pid in sorted(used, reverse=True)[:top] if d > 0.05)


def timeline(mon: Monitor) -> str:
    """When the CCDs ran, from the workers' rows: the first start after the event, the gaps between a worker's
    CCDs (a CCD is chained to the earliest-ending one before it), and the tail after the last CCD of the
    earlier worker to finish."""
    rows = sorted((t.started_mjd_tai, t.published_mjd_tai) for t in mon.timings)
    if not rows:
        return "no CCD timings"
    s = [(a - mon.first["mjd"]) * 86400.0 for a, _ in rows]
    e = [(b - mon.first["mjd"]) * 86400.0 for _, b in rows]
    ends: list[float] = []  # per worker chain: the end of its last CCD
    gaps = 0.0
    for a, b in zip(s, e):
        free = [k for k, end in enumerate(ends) if end <= a + 0.05]
        if free and len(ends) >= len(mon.workers):
            k = min(free, key=lambda k: a - ends[k])
            gaps += a - ends[k]
            ends[k] = b
        else:
            ends.append(b)
    tail = max(ends) - min(ends) if len(ends) > 1 else 0.0
    n_gaps = max(len(s) - len(mon.workers), 1)
    return (f"first CCD started {s[0]:.2f} s after the event (the last worker's first: "
            f"{sorted(s)[len(mon.workers) - 1]:.2f} s); gaps between a worker's CCDs {gaps:.2f} s in all "
            f"({gaps / n_gaps:.3f} s each); the last CCD ended {max(e):.2f} s after the event, {tail:.2f} s after "
            f"the other worker's last\nCCDs (start-end, s after the event): "
            + " ".join(f"{a:.1f}-{b:.1f}" for a, b in zip(s, e)))


def python_threads(pid: int) -> dict[int, str]:
    """``{tid: Python thread name}`` from ``py-spy dump``."""
    out = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    return {int(m[0]): m[1] for m in re.findall(r'^Thread (\d+) \([a-z]+\): "(.*)"', out, re.M)}


def uptime() -> str:
    with open("/proc/loadavg") as f:
        return "load average " + ", ".join(f.read().split()[:3])


def categorize(stack: str) -> str | None:
    """The category of one collapsed py-spy stack (root first, frames separated by ';'); None for a thread that
    waits."""
    best, driver = None, False
    frames = [m for m in map(_FRAME.match, stack.split(";")) if m is not None]
    if any(_WAITING.match(m[1]) for m in frames[-4:]):
        return None
    for m in frames:
        fn, path = m[1].rsplit(".", 1)[-1], m[2]
        driver = driver or bool(_DRIVER.search(path))
        for name, fre, pre in _RULES:
            if fre.search(fn) and pre.search(path):
                best = name
                break
    if best is not None:
        return best
    return "Cassandra driver (other)" if driver else "other Python (loop, logging, ...)"


def read_samples(path: Path) -> Counter:
    """Samples per category of a ``py-spy --format raw`` file."""
    counts: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[categorize(stack) or "waiting"] += int(n)
    return counts


class Monitor:
    """Snapshots of /proc at the window's start and stop, and py-spy on the workers in between."""

    def __init__(self, rate_hz: int, py_spy: bool, flamegraph: Path, tag: str, *, ports: dict[str, int],
                 wall: bool = False) -> None:
        self.rate_hz, self.py_spy, self.flamegraph, self.tag, self.wall = rate_hz, py_spy, flamegraph, tag, wall
        self.ports = ports
        self.spies: list[subprocess.Popen] = []
        self.raw = OUT_DIR / f"profile_{tag}.txt"

    def _snapshot(self) -> dict:
        return {"t": time.monotonic(), "mjd": now_mjd_tai(), "machine": machine_times(), "all": all_processes(),
                "workers": {w: (process_cpu_s(w), thread_times(w)) for w in self.workers},
                "faults": {w: page_faults(w) for w in self.workers},
                "supervisor": process_cpu_s(self.supervisor), "self": process_cpu_s(os.getpid()),
                "servers": {n: process_cpu_s(p) for n, p in self.servers.items()},
                "spies": sum(process_cpu_s(s.pid) for s in self.spies)}

    def start(self, supervisor: int) -> None:
        self.supervisor = supervisor
        self.workers = [p for p in children(supervisor) if "streamer.cli" in cmdline(p)]
        self.servers = find_servers(self.ports)
        self.python_tids = {w: python_threads(w) for w in self.workers} if shutil.which("py-spy") else {}
        self.load_before = uptime()
        if self.py_spy:
            base = ["py-spy", "record", "--rate", str(self.rate_hz), "--pid"]
            mode = ["--idle"] if self.wall else ["--native"]
            self.spies.append(subprocess.Popen(base + [str(self.workers[0]), *mode, "--format", "raw", "-o",
                                                       str(self.raw)], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
            if len(self.workers) > 1:
                self.spies.append(subprocess.Popen(base + [str(self.workers[1]), "--format", "flamegraph", "-o",
                                                           str(self.flamegraph)], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
            time.sleep(1.0)  # py-spy attaches
        self.first = self._snapshot()

    def stop(self, keyspace: str, e2e_s: float) -> None:
        self.last = self._snapshot()
        self.load_after = uptime()
        self.e2e_s, self.keyspace = e2e_s, keyspace
        for spy in self.spies:
            spy.send_signal(signal.SIGINT)
        for spy in self.spies:
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
        self.timings = read_timings(keyspace)


def read_timings(keyspace: str) -> list:
    """The workers' ``ApdbCcdTiming`` rows of the run (before the bench drops the keyspace)."""
    from streamer.apdb.cassandra import CassandraApdb
    from streamer.apdb.ccd_timings import open_ccd_timings

    apdb = CassandraApdb(["127.0.0.1"], int(os.environ.get("BLINK_CASSANDRA_PORT", "9042")), keyspace=keyspace,
                         consistency="ONE")
    try:
        return open_ccd_timings(apdb).read()
    finally:
        apdb.close()


def main_thread_wall(path: Path, top: int = 8) -> tuple[Counter, Counter]:
    """Samples of the main thread (``py-spy --idle``: every sample, waiting or not) by category, and the
    samples outside a CCD (not under ``CcdProcessor.process``) by their innermost Blink function."""
    inside: Counter = Counter()
    outside: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if "_run_module_as_main" not in stack or not n.isdigit():
            continue
        if "CcdProcessor.process" in stack:
            inside[categorize(stack) or "waiting"] += int(n)
            continue
        ours = [f.split(" (")[0] for f in stack.split(";") if "streamer/" in f]
        outside[ours[-1] if ours else "?"] += int(n)
    return inside, outside


def thread_split(mon: Monitor) -> dict[str, float]:
    """Core-seconds of the window by kind of worker thread (summed over the workers), and the main threads'
    run-queue wait."""
    out: Counter = Counter()
    for w in mon.workers:
        total = mon.last["workers"][w][0] - mon.first["workers"][w][0]
        t0, t1 = mon.first["workers"][w][1], mon.last["workers"][w][1]
        names = mon.python_tids.get(w, {})
        native = 0.0
        for tid, (comm, cpu, wait) in t1.items():
            d_cpu = cpu - t0.get(tid, (comm, 0.0, 0.0))[1]
            d_wait = wait - t0.get(tid, (comm, 0.0, 0.0))[2]
            if names.get(tid) == "MainThread":
                out["main thread"] += d_cpu
                out["main thread run-queue wait"] += d_wait
            elif comm.startswith("rdk:"):
                out["librdkafka threads"] += d_cpu
                native += d_cpu
            elif tid in t0 and tid not in names:
                out["other native threads (OpenBLAS, ...)"] += d_cpu
                native += d_cpu
        out["Python threads"] += total - native
        out["worker total"] += total
    return dict(out)


def accounting(mon: Monitor, n_ccds: int) -> tuple[list[tuple[str, float]], float]:
    """Rows (label, core-seconds) that add up to the window's capacity, and that capacity."""
    busy = mon.last["machine"][0] - mon.first["machine"][0]
    idle = mon.last["machine"][1] - mon.first["machine"][1]
    threads = thread_split(mon)
    rows: list[tuple[str, float]] = []
    samples = read_samples(mon.raw) if mon.py_spy and not mon.wall and mon.raw.exists() else Counter()
    n = sum(v for k, v in samples.items() if k != "waiting")
    python_s = threads.get("Python threads", 0.0)
    if n:
        for name in STAGE_ORDER:
            if samples.get(name):
                rows.append((f"worker: {name}", python_s * samples[name] / n))
    else:
        rows.append(("worker: Python threads (not sampled)", python_s))
    rows.append(("worker: librdkafka threads", threads.get("librdkafka threads", 0.0)))
    rows.append(("worker: other native threads (OpenBLAS, ...)", threads.get("other native threads (OpenBLAS, ...)",
                                                                             0.0)))
    for name in mon.servers:
        rows.append((f"server: {name}", mon.last["servers"][name] - mon.first["servers"][name]))
    rows.append(("supervisor + alert reader (this bench)", mon.last["supervisor"] - mon.first["supervisor"]
                 + mon.last["self"] - mon.first["self"]))
    rows.append(("py-spy", mon.last["spies"] - mon.first["spies"]))
    ours = sum(v for _, v in rows)
    rows.append(("other processes (shared machine, kernel threads)", busy - ours))
    rows.append(("idle", idle))
    return rows, busy + idle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ccds", type=int, default=8, help="CCDs of the exposure (62 = a whole DECam exposure)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="pipeline threads per worker (blink run --threads)")
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second (default 50)")
    ap.add_argument("--no-py-spy", action="store_true", help="account from /proc only (no sampling)")
    ap.add_argument("--wall", action="store_true",
                    help="sample the first worker's wall time (py-spy --idle, no native frames): where its main "
                         "thread waits, inside and between CCDs (the CPU split is then not available)")
    ap.add_argument("--flamegraph", type=Path,
                    default=BENCH_DIR / f"flamegraph_exposure_{datetime.date.today().isoformat()}.svg",
                    help="flame graph SVG of the second worker (default bench/flamegraph_exposure_<date>.svg)")
    ap.add_argument("--kafka-bootstrap", default=os.environ.get("BLINK_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--cassandra-port", type=int, default=int(os.environ.get("BLINK_CASSANDRA_PORT", "9042")))
    ap.add_argument("--registry-port", type=int, default=8081, help="the schema registry's port (its CPU is counted)")
    ap.add_argument("--timeout-s", type=float, default=900.0)
    args = ap.parse_args(argv)
    if not args.no_py_spy and shutil.which("py-spy") is None:
        raise SystemExit("py-spy not found: pip install -e '.[bench]' (or --no-py-spy)")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    root = ensure_exposure(args.ccds)
    mon = Monitor(args.rate, not args.no_py_spy, args.flamegraph, datetime.datetime.now().strftime("%H%M%S"),
                  ports={"Kafka": int(args.kafka_bootstrap.rsplit(":", 1)[1]), "Cassandra": args.cassandra_port,
                         "registry": args.registry_port}, wall=args.wall)
    result = run_once(root, args.workers, args.kafka_bootstrap, args.cassandra_port, args.ccds, args.timeout_s,
                      threads=args.threads, monitor=mon)
    rows, capacity = accounting(mon, args.ccds)
    window = mon.last["t"] - mon.first["t"]
    n_done = len(result["per_ccd"]) + result["dead_letters"]
    table = Table(title=f"core-seconds of one exposure of {args.ccds} CCDs, {args.workers} workers x {args.threads} "
                        f"thread(s): window {window:.1f} s x {capacity / window:.2f} cores = {capacity:.1f} core-s")
    for col in ("where", "core-s", "per CCD", "share"):
        table.add_column(col, justify="left" if col == "where" else "right")
    for label, v in rows:
        table.add_row(label, f"{v:.2f}", f"{v / max(n_done, 1):.3f}", f"{100 * v / capacity:.1f}%")
    table.add_section()
    table.add_row("sum", f"{sum(v for _, v in rows):.2f}", "", f"{100 * sum(v for _, v in rows) / capacity:.1f}%")
    console.print(table)

    threads = thread_split(mon)
    per = Table(title="the workers' main threads over the window (summed over workers)")
    for col in ("", "s", "per CCD"):
        per.add_column(col, justify="left" if not col else "right")
    main_wall = window * len(mon.workers)
    ccd_s = sum(result["per_ccd"])
    for label, v in (("wall (window x workers)", main_wall), ("inside CCDs ('alerts in X s' summed)", ccd_s),
                     ("on a CPU", threads.get("main thread", 0.0)),
                     ("waiting for a CPU (run queue)", threads.get("main thread run-queue wait", 0.0)),
                     ("blocked (I/O, locks, idle between CCDs)", main_wall - threads.get("main thread", 0.0)
                      - threads.get("main thread run-queue wait", 0.0)),
                     ("worker processes' CPU, all threads", threads.get("worker total", 0.0)),
                     *((f"{kind} page faults (count)", float(sum(mon.last["faults"][w][k] - mon.first["faults"][w][k]
                                                                   for w in mon.workers)))
                       for k, kind in ((0, "minor"), (1, "major")))):
        per.add_row(label, f"{v:.2f}", f"{v / max(n_done, 1):.3f}")
    console.print(per)

    stages = list(dict.fromkeys(s for t in mon.timings for s in t.stage_s))
    st = Table(title="stage wall times the workers recorded (ApdbCcdTiming), median over CCDs, s")
    for col in ["total", *stages, "sum of stages"]:
        st.add_column(col, justify="right")
    if mon.timings:
        st.add_row(f"{median([t.total_s for t in mon.timings]):.2f}",
                   *[f"{median([t.stage_s.get(s, 0.0) for t in mon.timings]):.2f}" for s in stages],
                   f"{median([sum(t.stage_s.values()) for t in mon.timings]):.2f}")
    console.print(st)
    console.print(timeline(mon))
    console.print(f"other processes: {others(mon)}")
    console.print(f"event -> last alert {result['e2e_s']:.1f} s; {result['alerts']} / {result['expected']} alerts; "
                  f"CCD p50 {median(result['per_ccd']):.2f} s; {uptime()} (before: {mon.load_before})")
    if mon.py_spy and mon.wall:
        inside, outside = main_thread_wall(mon.raw)
        n_in, n_out = sum(inside.values()), sum(outside.values())
        console.print(f"main thread of worker {mon.workers[0]}, wall samples: {n_in} inside CCDs, {n_out} outside")
        console.print("  inside: " + ", ".join(f"{k} {100 * v / n_in:.1f}%" for k, v in inside.most_common(12)))
        console.print("  outside: " + ", ".join(f"{k} {v}" for k, v in outside.most_common(10)))
    if mon.py_spy:
        console.print(f"py-spy: {sum(read_samples(mon.raw).values())} samples of worker {mon.workers[0]} at "
                      f"{args.rate} Hz in {mon.raw}; flame graph of worker {mon.workers[-1]}: {args.flamegraph}")
    console.print(machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
