"""The bench_apdb.py load, run through LSST's ``lsst.dax.apdb`` ApdbCassandra (issue #5).

Runs with its own virtualenv (lsst-dax-apdb from PyPI; it is not a Blink dependency), against the same
Cassandra as ``bench_apdb.py --cassandra``::

    python3.11 -m venv /work/venvs/daxapdb
    /work/venvs/daxapdb/bin/pip install lsst-dax-apdb==30.2026.4100 cassandra-driver numpy astropy rich
    bash ops/cassandra.sh start
    /work/venvs/daxapdb/bin/python bench/bench_apdb_dax.py -n 100000 --visits 30

Same synthetic load as ``bench/bench_apdb.py``: N DiaObjects uniformly over a square patch at ``--density``
objects/deg^2 around (150, -30), ``--sources-per-object`` (10) DiaSources each spread over the 12 months before
the benchmark visits, every float column filled. Then, for ``--visits`` CCD-visits at random places:

* read: ``getDiaObjects`` of a ``--radius`` (0.2 deg) circle, trimmed to the circle, then ``getDiaSources`` and
  ``getDiaForcedSources`` of those objects over the 365 days before the visit;
* store: ``store(visit_time, objects, sources, forced_sources)`` with ``--sources-per-ccd`` new DiaSources and
  DiaObject versions (on objects read) plus one DiaForcedSource for every object read.

The table (median / p95 / max ms) goes to the terminal and to ``bench/out/apdb_dax_<N>.txt``. The keyspace
(``dax_bench``) is dropped at the end unless ``--keep`` (then ``--reuse`` skips init and fill).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
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
    fill_chunk_objects,
    fill_chunk_sources,
    machine_line,
    median,
)
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table as RichTable  # noqa: E402

T0, DEC0, RA0 = FILL_T0, FILL_DEC0, FILL_RA0
HISTORY_DAYS = 365.0

console = Console(record=True) if sys.stdout.isatty() else Console(record=True, width=180)


# ---------------------------------------------------------------------------- synthetic catalogs
def tai(mjd: float):
    import astropy.time

    return astropy.time.Time(mjd, format="mjd", scale="tai")


def frame(table_def, n: int, rng, fixed: dict):
    """DataFrame with every column of the dax schema table: floats random (as bench_apdb.py's random_fill),
    integers 0, booleans False, band 'g', other strings null; ``fixed`` overrides."""
    import pandas as pd

    cols = {}
    for c in table_def.columns:
        if c.name in fixed:
            cols[c.name] = fixed[c.name]
            continue
        kind = str(getattr(c.datatype, "value", c.datatype))
        if kind in ("float", "double"):
            cols[c.name] = rng.normal(100.0, 30.0, n).astype(np.float32 if kind == "float" else np.float64)
        elif kind == "boolean":
            cols[c.name] = np.zeros(n, bool)
        elif kind in ("short", "int", "long", "byte"):
            cols[c.name] = np.zeros(n, {"short": np.int16, "byte": np.int8, "int": np.int32}.get(kind, np.int64))
        elif kind == "char":
            cols[c.name] = np.full(n, "g", object)
        else:  # string, timestamp, ...: null
            cols[c.name] = np.full(n, None, object)
    return pd.DataFrame({k: np.broadcast_to(v, (n,)) if np.ndim(v) == 0 else v for k, v in cols.items()})


class Catalogs:
    def __init__(self, apdb) -> None:
        from lsst.dax.apdb import ApdbTables

        self.obj = apdb.tableDef(ApdbTables.DiaObject)
        self.src = apdb.tableDef(ApdbTables.DiaSource)
        self.fsrc = apdb.tableDef(ApdbTables.DiaForcedSource)

    def objects(self, ids, ra, dec, validity, n_sources, rng):
        n = len(ids)
        return frame(self.obj, n, rng, {"diaObjectId": np.asarray(ids, np.int64), "ra": np.asarray(ra) % 360.0,
                                        "dec": np.asarray(dec, float),
                                        "validityStartMjdTai": np.full(n, validity, float),
                                        "nDiaSources": (np.asarray(n_sources, np.int32)
                                                        * np.ones(n, np.int32))})

    def sources(self, ids, object_ids, ra, dec, mjd, visit, detector, rng, forced=False):
        n = len(ids)
        key = "diaForcedSourceId" if forced else "diaSourceId"
        mjd = np.asarray(mjd, float) * np.ones(n)
        return frame(self.fsrc if forced else self.src, n, rng,
                     {key: np.asarray(ids, np.int64), "diaObjectId": np.asarray(object_ids, np.int64),
                      "ra": np.asarray(ra, float) % 360.0, "dec": np.asarray(dec, float), "midpointMjdTai": mjd,
                      "timeProcessedMjdTai": mjd + 0.001, "visit": np.full(n, visit, np.int64),
                      "detector": np.full(n, detector, np.int16)})



# ---------------------------------------------------------------------------- APDB
def make_config(args):
    """ApdbCassandraConfig as ``ApdbCassandra.init_database`` builds it, plus the options of this script."""
    from lsst.dax.apdb.cassandra import ApdbCassandraConfig

    config = ApdbCassandraConfig(contact_points=(args.host,), keyspace=args.keyspace)
    cc = config.connection_config
    cc.port = args.port
    cc.read_consistency = cc.write_consistency = args.consistency
    cc.protocol_version = args.protocol_version
    cc.extra_parameters = {"idle_heartbeat_interval": 0, "idle_heartbeat_timeout": 30,
                           "control_connection_timeout": 100}
    p = config.partitioning
    p.part_pixelization = args.pixelization
    p.part_pix_level = args.pix_level
    p.time_partition_tables = args.time_partition_tables
    if args.time_partition_tables:  # only the partitions this run writes, not 2018-2030 (~270 tables)
        p.time_partition_start = tai(T0 - HISTORY_DAYS - 31).isot[:19]
        p.time_partition_end = tai(T0 + 90).isot[:19]
    # The server here fails batches above 640 KiB (batch_size_fail_threshold in ops/cassandra.sh); the
    # default 1 MB estimate bound would let a large single-partition batch through.
    config.batch_size_limit = args.batch_size_limit
    p.query_per_spatial_part = args.query_per_spatial_part
    p.query_per_time_part = args.query_per_time_part
    return config


def drop_keyspace(args) -> None:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=120)
    cluster = Cluster([args.host], port=args.port, protocol_version=args.protocol_version,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        cluster.connect().execute(f'DROP KEYSPACE IF EXISTS "{args.keyspace}"')
    finally:
        cluster.shutdown()


def open_apdb(args):
    from lsst.dax.apdb import Apdb
    from lsst.dax.apdb.cassandra import ApdbCassandra

    config = make_config(args)
    if not args.reuse:
        drop_keyspace(args)
        init = ApdbCassandra.init_database(
            (args.host,), args.keyspace, port=args.port, part_pixelization=args.pixelization,
            part_pix_level=args.pix_level, time_partition_tables=args.time_partition_tables,
            time_partition_start=config.partitioning.time_partition_start,
            time_partition_end=config.partitioning.time_partition_end, read_consistency=args.consistency,
            write_consistency=args.consistency, replication_factor=1)
        init.connection_config.protocol_version = args.protocol_version
        init.batch_size_limit = args.batch_size_limit
        init.partitioning.query_per_spatial_part = args.query_per_spatial_part
        init.partitioning.query_per_time_part = args.query_per_time_part
        config = init
    return Apdb.from_config(config), config


def fill(apdb, cats: Catalogs, args, side_deg: float, rng) -> tuple[float, int]:
    """Store N objects with their history in chunks (one store call each, objects of a chunk in one strip)."""
    n, spo = args.n_objects, args.sources_per_object
    n_src = 0
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("filling APDB (dax)", total=n)
        for k, start in enumerate(range(0, n, args.chunk)):
            m = min(args.chunk, n - start)
            ids, ra, dec = fill_chunk_objects(start, m, n, side_deg, rng)
            objs = cats.objects(ids, ra, dec, validity=T0 - 1.0, n_sources=spo, rng=rng)
            obj_rep, src_ra, src_dec, mjd = fill_chunk_sources(ids, ra, dec, spo, rng)
            src = cats.sources(10**12 + start * spo + np.arange(m * spo), obj_rep, src_ra, src_dec, mjd,
                               visit=100 + k, detector=0, rng=rng)
            apdb.store(tai(T0 - 1.0), objs, src, None)
            n_src += len(src)
            progress.advance(task, m)
    return time.perf_counter() - t0, n_src


def circle(ra: float, dec: float, radius: float):
    from lsst import sphgeom

    center = sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(ra, dec))
    return sphgeom.Circle(center, sphgeom.Angle.fromDegrees(radius))


def in_circle(ra, dec, ra0: float, dec0: float, radius: float) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    ra0, dec0 = np.radians(ra0), np.radians(dec0)
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * np.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
    return 2 * np.degrees(np.arcsin(np.sqrt(np.clip(h, 0, 1)))) <= radius


def timed_read(apdb, ra: float, dec: float, radius: float, mjd: float):
    """What one CCD reads: objects in the circle, then their 12-month source and forced-source history."""
    visit_time, start_time = tai(mjd), tai(mjd - HISTORY_DAYS)
    t0 = time.perf_counter()
    region = circle(ra, dec, radius)
    objs = apdb.getDiaObjects(region)  # every object of the pixels covering the circle
    objs = objs[in_circle(objs["ra"], objs["dec"], ra, dec, radius)]
    ids = objs["diaObjectId"].to_numpy()
    src = apdb.getDiaSources(region, ids, visit_time, start_time=start_time)
    fsrc = apdb.getDiaForcedSources(region, ids, visit_time, start_time=start_time)
    return time.perf_counter() - t0, (objs, src, fsrc)


def timed_store(apdb, writer: CcdWriter, objs, mjd: float, detector: int):
    new_objs, src, fs = writer.outputs(objs["diaObjectId"].to_numpy(np.int64), objs["ra"].to_numpy(float),
                                       objs["dec"].to_numpy(float), objs["nDiaSources"].to_numpy(np.int32), mjd,
                                       detector)
    t0 = time.perf_counter()
    apdb.store(tai(mjd), new_objs, src, fs)
    return time.perf_counter() - t0, (len(new_objs), len(src), len(fs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--n-objects", type=int, default=100_000, help="DiaObjects to fill (default 100000)")
    ap.add_argument("--sources-per-object", type=int, default=10, help="DiaSources per DiaObject (default 10)")
    ap.add_argument("--density", type=float, default=10_000.0, help="DiaObjects per deg^2 (default 10000)")
    ap.add_argument("--radius", type=float, default=0.2, help="read radius, deg (default 0.2)")
    ap.add_argument("--visits", type=int, default=30, help="CCD-visits timed (default 30)")
    ap.add_argument("--sources-per-ccd", type=int, default=100, help="new DiaSources written per CCD-visit")
    ap.add_argument("--series", default="",
                    help="visits stored on one footprint at which the read is timed, e.g. 0,5,10,20 (default: none)")
    ap.add_argument("--chunk", type=int, default=5000, help="objects per store call while filling")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9042)
    ap.add_argument("--keyspace", default="dax_bench")
    ap.add_argument("--pixelization", default="mq3c", help="part_pixelization (dax default mq3c)")
    ap.add_argument("--pix-level", type=int, default=11, help="part_pix_level (dax default 11)")
    ap.add_argument("--time-partition-tables", action="store_true",
                    help="one DiaSource/DiaForcedSource table per 30-day partition (default: one table with "
                         "apdb_time_part in the partition key, as apdb-cli create-cassandra and Blink)")
    ap.add_argument("--query-per-spatial-part", action="store_true",
                    help="one query per spatial partition (dax default: one query with apdb_part IN (...))")
    ap.add_argument("--query-per-time-part", action="store_true",
                    help="one query per time partition (dax default: apdb_time_part IN (...))")
    ap.add_argument("--consistency", default="QUORUM", help="read and write consistency (dax default QUORUM)")
    ap.add_argument("--protocol-version", type=int, default=4, help="native protocol (dax default 4)")
    ap.add_argument("--batch-size-limit", type=int, default=500_000,
                    help="batch_size_limit, bytes (default 500000: below this server's 640 KiB fail threshold)")
    ap.add_argument("--reuse", action="store_true", help="keep an existing keyspace and skip init and fill")
    ap.add_argument("--keep", action="store_true", help="keep the keyspace at the end (default: drop it)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="Writing into the last temporal partition")
    from importlib.metadata import version

    rng = np.random.default_rng(args.seed)
    side = float(np.sqrt(args.n_objects / args.density))
    apdb, config = open_apdb(args)
    cats = Catalogs(apdb)
    where = f"cassandra://{args.host}:{args.port}/{args.keyspace}"
    p = config.partitioning
    console.print(f"[bold]bench_apdb_dax[/bold] | {machine_line()} | {where}")
    console.print(f"lsst-dax-apdb {version('lsst-dax-apdb')}, lsst-sdm-schemas {version('lsst-sdm-schemas')} "
                  f"(APDB schema {apdb.schema.schemaVersion()}), cassandra-driver {version('cassandra-driver')} | "
                  f"{p.part_pixelization} level {p.part_pix_level}, {p.time_partition_days}-day time partitions "
                  f"({'per-partition tables' if p.time_partition_tables else 'apdb_time_part column'}), "
                  f"consistency {args.consistency}, protocol v{args.protocol_version}, "
                  f"batch_size_limit {config.batch_size_limit:,}, query per spatial/time part "
                  f"{p.query_per_spatial_part}/{p.query_per_time_part}, read_concurrency "
                  f"{config.connection_config.read_concurrency}")
    console.print(f"patch {side:.2f} x {side:.2f} deg at ({RA0}, {DEC0}), {args.density:,.0f} objects/deg^2, "
                  f"{args.n_objects:,} objects, {args.sources_per_object} sources/object")
    if args.reuse:
        console.print("reusing the keyspace (no fill)")
    else:
        fill_s, n_src = fill(apdb, cats, args, side, rng)
        console.print(f"filled in {fill_s:.1f} s: {args.n_objects:,} objects, {n_src:,} sources, 0 forced "
                      f"({(args.n_objects + n_src) / fill_s:,.0f} rows/s)")

    writer = CcdWriter(cats.objects, cats.sources, rng, args.sources_per_ccd)
    margin = min(args.radius, side / 2)
    reads, writes, sizes, wsizes = [], [], [], []
    for i in range(args.visits):
        dec = DEC0 + rng.uniform(-(side / 2 - margin), side / 2 - margin)
        ra = (RA0 + rng.uniform(-(side / 2 - margin), side / 2 - margin) / np.cos(np.radians(dec))) % 360.0
        mjd = T0 + 0.01 * i
        rt, (objs, src, fsrc) = timed_read(apdb, ra, dec, args.radius, mjd)
        wt, wsize = timed_store(apdb, writer, objs, mjd, detector=1 + i % 62)
        reads.append(rt)
        writes.append(wt)
        sizes.append((len(objs), len(src), len(fsrc)))
        wsizes.append(wsize)

    title = (f"APDB per-CCD times (dax-apdb ApdbCassandra, {args.n_objects:,} objects, {args.visits} CCD-visits, "
             f"r = {args.radius} deg)")
    console.print(apdb_times_table(title, "read", reads, writes, sizes, wsizes))

    checkpoints = sorted({int(v) for v in args.series.split(",") if v.strip()})
    if checkpoints:
        s = RichTable(title="read vs visits stored on the same CCD footprint (median of 3 reads)")
        for col in ("visits stored", "objects", "sources", "forced", "read median ms", "last store ms"):
            s.add_column(col, justify="right")
        stored, last_store = 0, float("nan")
        mjd = T0 + 1.0
        for target in checkpoints:
            while stored < target:
                _, (objs, _, _) = timed_read(apdb, RA0, DEC0, args.radius, mjd)
                last_store, _ = timed_store(apdb, writer, objs, mjd, detector=28)
                stored += 1
                mjd += 1.0
            times = []
            for _ in range(3):
                rt, data = timed_read(apdb, RA0, DEC0, args.radius, mjd)
                times.append(rt)
            s.add_row(str(target), *(f"{len(d):,}" for d in data), f"{median(times) * 1e3:.1f}",
                      "-" if target == 0 else f"{last_store * 1e3:.1f}")
        console.print(s)

    if not args.keep:
        drop_keyspace(args)
        console.print(f"dropped keyspace {args.keyspace}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"apdb_dax_{args.n_objects}.txt"
    console.save_text(str(out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
