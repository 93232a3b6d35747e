"""APDB load generator: per-CCD read_region and store times.

Fills an APDB (SQLite by default, ``--cassandra`` for the local Cassandra) with N synthetic DiaObjects and
``--sources-per-object`` (10) DiaSources each, spread uniformly over a square sky patch at ``--density``
objects/deg^2, with DiaSource times spread over the 12 months before the benchmark visits. Then, for
``--visits`` CCD-visits at random places in the patch:

* ``read_region``: a circle of ``--radius`` (0.2 deg) around the CCD: DiaObjectLast + 12 months of history;
* ``store``: what one CCD writes: ``--sources-per-ccd`` new DiaSources and DiaObject versions (on objects of
  the region) plus one DiaForcedSource for every DiaObject read.

Finally a small series: read time on one fixed CCD footprint vs the number of visits stored there.
``--compact`` runs ``compact_history`` (``blink apdb compact``) before the timed visits.

Goal: read <= 150 ms and write <= 100 ms per CCD.

Run: ``python bench/bench_apdb.py`` (20k objects / 200k sources: a few minutes);
``-n 1000000`` or ``-n 10000000`` for bigger databases; ``--cassandra`` (``ops/cassandra.sh start``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    FILL_DEC0,
    FILL_RA0,
    FILL_T0,
    OUT_DIR,
    CcdWriter,
    apdb_times_table,
    console,
    fill_chunk_objects,
    fill_chunk_sources,
    fill_visit,
    fill_visit_time,
    listening_pids,
    machine_line,
    median,
    process_cpu_s,
    worker_gc,
    worker_malloc,
)
from astropy.table import Table  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table as RichTable  # noqa: E402

T0, DEC0, RA0 = FILL_T0, FILL_DEC0, FILL_RA0
_STATE_KEY = "bench_apdb_state"  # metadata entry (JSON) kept for --reuse: where the next run starts


def random_fill(table: Table, spec_name: str, rng: np.random.Generator, keep: set[str]) -> Table:
    """Give every nullable float column random values (rows as wide as real ones, not mostly NULL)."""
    from streamer.apdb.columns import TABLES

    n = len(table)
    for c in TABLES[spec_name].columns:
        if c.is_float and c.name not in keep and c.name in table.colnames:
            table[c.name] = rng.normal(100.0, 30.0, n).astype(c.dtype)
    return table


def make_objects(ids, ra, dec, validity, n_sources, rng) -> Table:
    from tests.helpers.apdb_contract import make_objects as _mk

    t = _mk(ids, ra, dec, validity=validity, n_sources=0)
    t["nDiaSources"] = np.asarray(n_sources, np.int32) * np.ones(len(ids), np.int32)
    return random_fill(t, "DiaObject", rng, {"ra", "dec", "validityStartMjdTai"})


def make_sources(ids, object_ids, ra, dec, mjd, visit, detector, rng, forced=False) -> Table:
    from tests.helpers.apdb_contract import make_sources as _mk

    t = _mk(ids, object_ids, ra, dec, mjd, visit=visit, detector=detector, forced=forced)
    t["timeProcessedMjdTai"] = np.asarray(mjd, float) + 0.001
    name = "DiaForcedSource" if forced else "DiaSource"
    return random_fill(t, name, rng, {"ra", "dec", "midpointMjdTai", "timeProcessedMjdTai"})



def open_store(args):
    from streamer.apdb import open_apdb

    if args.cassandra:
        url = args.cassandra
        apdb = open_apdb(url)
        where = url
    else:
        path = Path(args.sqlite) if args.sqlite else OUT_DIR / f"apdb_bench_{args.n_objects}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not args.reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        apdb = open_apdb(f"sqlite:///{path.resolve()}", columns=not args.packed_only)
        where = f"{path} ({'packed rows and keys only' if args.packed_only else 'typed columns beside packed rows'})"
    apdb.init_schema()
    return apdb, where


def fill(apdb, args, side_deg: float, rng) -> tuple[float, int, int]:
    """Store N objects with their history, in chunks (one store call each); returns (s, sources, forced)."""
    from streamer.apdb.columns import empty_table

    n, spo, fpo = args.n_objects, args.sources_per_object, args.forced_per_object
    n_src = n_fs = 0
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("filling APDB", total=n)
        for k, start in enumerate(range(0, n, args.chunk)):
            m = min(args.chunk, n - start)
            ids, ra, dec = fill_chunk_objects(start, m, n, side_deg, rng)
            objs = make_objects(ids, ra, dec, validity=T0 - 1.0, n_sources=spo, rng=rng)
            obj_rep, src_ra, src_dec, mjd = fill_chunk_sources(ids, ra, dec, spo, rng)
            src = make_sources(10**12 + (start * spo) + np.arange(m * spo), obj_rep, src_ra, src_dec, mjd,
                               visit=fill_visit(mjd), detector=0, rng=rng)
            if fpo:
                fobj = np.repeat(ids, fpo)
                fmjd = fill_visit_time(rng.uniform(T0 - 365.0, T0 - 1.0, m * fpo))
                fs = make_sources(2 * 10**12 + start * fpo + np.arange(m * fpo), fobj, np.repeat(ra, fpo),
                                  np.repeat(dec, fpo), fmjd, visit=fill_visit(fmjd), detector=0, rng=rng, forced=True)
            else:
                fs = empty_table("DiaForcedSource")
            apdb.store(visit=100 + k, detector=0, dia_objects=objs, dia_sources=src, dia_forced_sources=fs)
            n_src += len(src)
            n_fs += len(fs)
            progress.advance(task, m)
    return time.perf_counter() - t0, n_src, n_fs


def cassandra_server_pids(url: str) -> list[int]:
    """The processes listening on the native-transport addresses of a ``cassandra://`` URL (its nodes here)."""
    from urllib.parse import urlparse

    netloc = urlparse(url).netloc.rsplit("@", 1)[-1]
    hosts, _, port = netloc.rpartition(":") if ":" in netloc.split(",")[-1] else (netloc, "", "9042")
    return listening_pids((host, int(port or 9042)) for host in hosts.split(",") if host)


def timed_read(apdb, region, mjd):
    """read_region's wall and CPU seconds (this process: all of SQLite's work, the client's share of
    Cassandra's) and its data."""
    t0, c0 = time.perf_counter(), time.process_time()
    data = apdb.read_region(region, mjd)
    return time.perf_counter() - t0, time.process_time() - c0, data


def timed_store(apdb, writer: CcdWriter, data, mjd, detector):
    objs = data.dia_objects
    n_sources = np.asarray(objs["nDiaSources"], np.int32) if len(objs) else np.array([], np.int32)
    objs, src, fs = writer.outputs(np.asarray(objs["diaObjectId"], np.int64), np.asarray(objs["ra"], float),
                                   np.asarray(objs["dec"], float), n_sources, mjd, detector)
    t0, c0 = time.perf_counter(), time.process_time()
    apdb.store(visit=writer.visit, detector=detector, dia_objects=objs, dia_sources=src, dia_forced_sources=fs)
    return time.perf_counter() - t0, time.process_time() - c0, (len(objs), len(src), len(fs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--n-objects", type=int, default=20_000, help="DiaObjects to fill (default 20000)")
    ap.add_argument("--sources-per-object", type=int, default=10, help="DiaSources per DiaObject (default 10)")
    ap.add_argument("--forced-per-object", type=int, default=0,
                    help="DiaForcedSources per DiaObject in the fill (default 0)")
    ap.add_argument("--density", type=float, default=10_000.0,
                    help="DiaObjects per deg^2 (default 10000: ~1250 in a 0.2 deg CCD region)")
    ap.add_argument("--radius", type=float, default=0.2, help="read_region radius, deg (default 0.2)")
    ap.add_argument("--visits", type=int, default=30, help="CCD-visits timed (default 30)")
    ap.add_argument("--sources-per-ccd", type=int, default=100, help="new DiaSources written per CCD-visit")
    ap.add_argument("--series", default="0,5,10,20,40",
                    help="visits stored on one footprint at which read time is measured (default 0,5,10,20,40)")
    ap.add_argument("--chunk", type=int, default=5000, help="objects per store call while filling")
    ap.add_argument("--sqlite", help="SQLite file (default bench/out/apdb_bench_<N>.sqlite, recreated)")
    ap.add_argument("--cassandra", nargs="?", const="cassandra://127.0.0.1:9042/blink_bench",
                    help="use Cassandra (default URL cassandra://127.0.0.1:9042/blink_bench)")
    ap.add_argument("--packed-only", action="store_true",
                    help="SQLite: keep only the key columns beside the packed rows (the layout before the typed, "
                         "SQL-queryable columns), to measure what those cost")
    ap.add_argument("--reuse", action="store_true", help="keep an existing database and skip the fill")
    ap.add_argument("--keep", action="store_true", help="keep the Cassandra keyspace at the end (default: drop it)")
    ap.add_argument("--compact", action="store_true",
                    help="run `blink apdb compact` (compact_history) on the buckets ended before the first visit, "
                         "after the fill and before the timed visits")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc malloc's defaults (the worker tunes it: streamer.runtime.malloc_tuning)")
    ap.add_argument("--default-gc", action="store_true",
                    help="leave Python's collector alone (a started worker tunes it: streamer.runtime.gc_tuning)")
    args = ap.parse_args(argv)
    malloc = worker_malloc(args.default_malloc)

    rng = np.random.default_rng(args.seed)
    side = float(np.sqrt(args.n_objects / args.density))
    apdb, where = open_store(args)
    console.print(f"[bold]bench_apdb[/bold] | {machine_line()} | {where} | {malloc}")
    console.print(f"patch {side:.2f} x {side:.2f} deg at ({RA0}, {DEC0}), {args.density:,.0f} objects/deg^2, "
                  f"{args.n_objects:,} objects, {args.sources_per_object} sources/object")
    if args.reuse:
        fill_s, n_src, n_fs = 0.0, -1, -1
        console.print("reusing the database (no fill)")
    else:
        fill_s, n_src, n_fs = fill(apdb, args, side, rng)
        console.print(f"filled in {fill_s:.1f} s: {args.n_objects:,} objects, {n_src:,} sources, {n_fs:,} forced "
                      f"({(args.n_objects + n_src + n_fs) / fill_s:,.0f} rows/s)")

    if args.compact:
        from streamer.cli import compact_with_progress

        t0 = time.perf_counter()
        counts = compact_with_progress(apdb, T0, console=console)
        console.print(f"compacted the history before MJD {T0} in {time.perf_counter() - t0:.1f} s: "
                      + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

    from streamer.apdb import SkyRegion

    console.print(worker_gc(args.default_gc))  # where a worker has finished starting
    writer = CcdWriter(make_objects, make_sources, rng, args.sources_per_ccd)
    # With --reuse, a run continues where the previous one stopped (kept in the APDB's metadata): later visit
    # times (a visit earlier than stored object versions is a re-processing, which reads each such object's
    # older version in one more round, and that is not what this benchmark measures), new visit and source
    # ids, and other places (a run is not a revisit of the previous run's fields).
    state = json.loads(apdb._read_metadata().get(_STATE_KEY, "{}"))
    t_start = float(state.get("mjd", T0))
    writer.visit = int(state.get("visit", writer.visit))
    writer.next_source = int(state.get("source", writer.next_source))
    writer.next_forced = int(state.get("forced", writer.next_forced))
    rng = np.random.default_rng([args.seed, int(state.get("run", 0))])
    writer.rng = rng
    console.print(f"run {int(state.get('run', 0))} on this database: visits from MJD {t_start:.2f} (the fill's "
                  f"history: {T0 - 365:.0f} to {T0:.0f})")
    margin = min(args.radius, side / 2)
    reads, writes, sizes, wsizes, read_cpu, write_cpu = [], [], [], [], [], []
    servers = cassandra_server_pids(args.cassandra) if args.cassandra else []
    servers_cpu0, wall0 = sum(map(process_cpu_s, servers)), time.perf_counter()
    for i in range(args.visits):
        dec = DEC0 + rng.uniform(-(side / 2 - margin), side / 2 - margin)
        ra = (RA0 + rng.uniform(-(side / 2 - margin), side / 2 - margin) / np.cos(np.radians(dec))) % 360.0
        mjd = t_start + 0.01 * i
        region = SkyRegion(ra, dec, args.radius)
        rt, rc, data = timed_read(apdb, region, mjd)
        wt, wc, wsize = timed_store(apdb, writer, data, mjd, detector=1 + i % 62)
        reads.append(rt)
        writes.append(wt)
        read_cpu.append(rc)
        write_cpu.append(wc)
        sizes.append((len(data.dia_objects), len(data.dia_sources), len(data.dia_forced_sources)))
        wsizes.append(wsize)

    kind = "Cassandra" if args.cassandra else "SQLite"
    title = f"APDB per-CCD times ({kind}, {args.n_objects:,} objects, {args.visits} CCD-visits, r = {args.radius} deg)"
    console.print(apdb_times_table(title, "read_region", reads, writes, sizes, wsizes))
    if servers:  # everything the nodes did meanwhile, compaction and gossip included, per CCD-visit
        servers_ms = (sum(map(process_cpu_s, servers)) - servers_cpu0) / args.visits * 1e3
        console.print(f"Cassandra's CPU ({len(servers)} node process(es) {servers}): {servers_ms:.1f} ms per CCD-visit "
                      f"(read + store), {servers_ms * args.visits / 1e3 / (time.perf_counter() - wall0):.2f} cores "
                      "on average over the timed visits")
    # CPU time is what a loaded machine does not inflate: the figure to compare layouts on a shared VM
    console.print(f"this process's CPU per CCD, median / p95: read_region {median(read_cpu) * 1e3:.1f} / "
                  f"{np.percentile(read_cpu, 95) * 1e3:.1f} ms, store {median(write_cpu) * 1e3:.1f} / "
                  f"{np.percentile(write_cpu, 95) * 1e3:.1f} ms")

    # Series: read time on one footprint vs visits stored there.
    checkpoints = sorted({int(v) for v in args.series.split(",") if v.strip()})
    if checkpoints:
        region = SkyRegion(RA0, DEC0, args.radius)
        s = RichTable(title="read_region vs visits stored on the same CCD footprint (median of 3 reads)")
        for col in ("visits stored", "objects", "sources", "forced", "read median ms", "last store ms"):
            s.add_column(col, justify="right")
        stored, last_store = 0, float("nan")
        mjd = t_start + 0.01 * args.visits
        for target in checkpoints:
            while stored < target:
                _, _, data = timed_read(apdb, region, mjd)
                last_store, _, _ = timed_store(apdb, writer, data, mjd, detector=28)
                stored += 1
                mjd += 0.02
            times = []
            for _ in range(3):
                rt, _, data = timed_read(apdb, region, mjd)
                times.append(rt)
            s.add_row(str(target), f"{len(data.dia_objects):,}", f"{len(data.dia_sources):,}",
                      f"{len(data.dia_forced_sources):,}", f"{median(times) * 1e3:.1f}",
                      "-" if target == 0 else f"{last_store * 1e3:.1f}")
        console.print(s)
    state = {"run": int(state.get("run", 0)) + 1, "visit": writer.visit + 1, "source": writer.next_source,
             "forced": writer.next_forced,
             "mjd": round(t_start + 0.01 * args.visits + 0.02 * max(checkpoints, default=0) + 0.01, 6)}
    apdb._write_metadata(_STATE_KEY, json.dumps(state))
    if args.cassandra and not args.keep:
        apdb.drop_keyspace()
    apdb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
