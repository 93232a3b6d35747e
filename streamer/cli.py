"""The ``blink`` command: simulate, run the worker, manage the APDB and topics, report against truth."""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path
from typing import Literal

from streamer.runtime.logs import setup_logging
from streamer.settings import BlinkSettings, CassandraSettings, InvalidSettings, ServiceSettings, load_settings

log = logging.getLogger("blink")


def cmd_refcat(args: argparse.Namespace) -> int:
    """Index a folder of Gaia-archive files into the data root's reference catalog."""
    from streamer.refcat import build_index

    root = args.out if args.out else load_settings(None).blink.data_root
    build_index(args.src_dir, root, progress=True)
    return 0


def cmd_templates_build(args: argparse.Namespace) -> int:
    """Coadd exposures of the data root into template tiles (incremental: inputs already in a tile are kept)."""
    from streamer.templates.build import build_templates_with_progress, expand_inputs
    from streamer.worker.inputs import DataRepository

    service = _settings(args)
    repo = DataRepository(service.blink.data_root)
    inputs = expand_inputs(repo, args.inputs)
    if not inputs:
        log.error("no exposure matches %s under %s", " ".join(args.inputs), repo.root)
        return 2
    summary = build_templates_with_progress(repo, inputs, pipeline=service.pipeline,
                                            config=service.pipeline.coadd, band=args.band)
    log.info("templates: %d tiles written, %d CCD-visits added, %d left out, %d failed", len(summary.tiles_written),
             summary.inputs_added, summary.inputs_skipped, len(summary.failures))
    return 1 if summary.failures and not summary.inputs_added else 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, help="data repository (default ./blink-data or BLINK_DATA_ROOT)")
    p.add_argument("--config", type=Path, help="YAML or JSON settings file")
    p.add_argument("--apdb", help="APDB URL: sqlite:///path or cassandra://host[,host][:port]/keyspace")
    p.add_argument("--cassandra-hosts", help="Cassandra contact points (uses the Cassandra APDB)")
    p.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (consume and publish on Kafka)")
    p.add_argument("--log-format", choices=["text", "json"], help="console text or JSON lines")
    p.add_argument("-v", "--verbose", action="store_true")


def _settings(args: argparse.Namespace) -> ServiceSettings:
    """The settings in force for a command: its flags, then ``BLINK_*`` variables, then ``--config``."""
    blink: dict[str, object] = {}
    if args.root:
        blink["data_root"] = args.root
    if args.apdb:
        blink["apdb_url"] = args.apdb
    if args.log_format:
        blink["log_format"] = args.log_format
    if args.kafka_bootstrap:
        blink["source"] = "kafka"
    if getattr(args, "metrics_port", None):
        blink["metrics_port"] = args.metrics_port
    if getattr(args, "threads", None):
        blink["pipeline_threads"] = args.threads
    cassandra = {"hosts": args.cassandra_hosts} if args.cassandra_hosts else {}
    kafka = {"bootstrap_servers": args.kafka_bootstrap} if args.kafka_bootstrap else {}
    return load_settings(getattr(args, "config", None), blink=blink, cassandra=cassandra, kafka=kafka)


def cmd_sim(args: argparse.Namespace) -> int:
    """Write a simulated data repository."""
    from simulator import SimConfig
    from streamer.simulated import simulated_repository

    settings = _settings(args).blink
    config = SimConfig(seed=args.seed, n_epochs=args.epochs, ccds=args.ccds, small=not args.full,
                       templates=args.templates, instcal=args.instcal, compress=args.compress, progress=True)
    summary = simulated_repository(settings.data_root, config)
    log.info("simulated %d exposures x %d CCDs (%d transients) into %s", summary.n_exposures, summary.n_ccds,
             summary.n_transients, summary.root)
    return 0


def _open_apdb(settings: BlinkSettings, cassandra: CassandraSettings, *, init: bool | Literal["if-needed"]):
    """Open the APDB in force; ``init``: create or upgrade its schema (True), only when it is not this code's
    exactly (``"if-needed"``: a worker, whose role on a secured Cassandra may read and write but not change a
    schema), or only check it (False)."""
    from urllib.parse import parse_qs, urlparse

    from streamer.apdb import open_apdb

    url = settings.resolved_apdb_url(cassandra)
    options = {}
    if url.startswith("cassandra://"):
        # The URL's ?replication_factor=3&consistency=QUORUM stand unless a setting names them.
        query = parse_qs(urlparse(url).query)
        options = {name: getattr(cassandra, name)
                   for name in ("replication_factor", "replication_datacenters", "consistency")
                   if name in cassandra.model_fields_set or name not in query}
        if cassandra.username:
            options["username"] = cassandra.username
            options["password"] = cassandra.password.get_secret_value() if cassandra.password else None
        options |= {name: getattr(cassandra, name) for name in ("ssl_ca", "ssl_cert", "ssl_key")
                    if getattr(cassandra, name)}
    else:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    apdb = open_apdb(url, **options)
    if init is True or (init == "if-needed" and not apdb.schema_is_current()):
        apdb.init_schema()
        _create_worker_tables(apdb)
        if url.startswith("cassandra://") and cassandra.worker_role:
            from streamer.apdb.cassandra.grants import grant_worker

            grant_worker(apdb, cassandra.worker_role)
    else:
        apdb.check_schema()
    return apdb


def _create_worker_tables(apdb) -> None:
    """Create the tables a worker opens at start (sky claims, CCD timings) with the APDB, before any worker runs.

    On a Cassandra cluster, workers that create one table at the same time through different nodes race: a
    worker's next statement can meet a node that does not know the table yet (``table ApdbWorkClaim does not
    exist`` on the three-node cluster of ops/cluster.sh), and two creations of one table may give it two ids.
    """
    from streamer.apdb.ccd_timings import open_ccd_timings
    from streamer.apdb.ordering import open_claims

    open_claims(apdb).close()
    open_ccd_timings(apdb).close()


def cmd_apdb_init(args: argparse.Namespace) -> int:
    """Create the APDB tables (idempotent)."""
    service = _settings(args)
    settings, cassandra = service.blink, service.cassandra
    apdb = _open_apdb(settings, cassandra, init=True)
    apdb.close()
    log.info("APDB ready at %s", settings.resolved_apdb_url(cassandra).split("@")[-1])
    return 0


def compact_with_progress(apdb, before_mjd_tai: float, everything: bool = False, console=None) -> dict[str, int]:
    """``apdb.compact_history`` with a rich progress bar per table (also used by ``bench/bench_apdb.py``)."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def advance(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = progress.add_task(f"compacting {table}", total=total)
            progress.update(tasks[table], completed=done)

        return apdb.compact_history(before_mjd_tai, progress=advance, everything=everything)


def cmd_apdb_compact(args: argparse.Namespace) -> int:
    """Compact the history of finished time buckets (maintenance; run daily, one at a time)."""
    from astropy.time import Time

    service = _settings(args)
    settings, cassandra = service.blink, service.cassandra
    # by default a day after a bucket ends, so that late CCD-visits (a backlog) land before it is compacted
    before = args.before if args.before is not None else float(Time.now().tai.mjd) - 1.0
    apdb = _open_apdb(settings, cassandra, init=False)
    try:
        counts = compact_with_progress(apdb, before, everything=args.all)
    finally:
        apdb.close()
    log.info("compacted the history before MJD %.2f TAI: %s", before,
             ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return 0


def cmd_apdb_export(args: argparse.Namespace) -> int:
    """Write DiaObject, DiaSource and DiaForcedSource (all, a time range or a sky region) to Parquet files."""
    from streamer.apdb.base import SkyRegion
    from streamer.apdb.export import EXPORT_TABLES, ExportSelection, export_with_progress

    sky = (args.ra, args.dec, args.radius_deg)
    if any(v is not None for v in sky) and any(v is None for v in sky):
        log.error("a sky region needs all of --ra, --dec and --radius-deg")
        return 2
    region = SkyRegion(*sky) if sky[0] is not None else None
    selection = ExportSelection(mjd_min_tai=args.mjd_min, mjd_max_tai=args.mjd_max, region=region)
    service = _settings(args)
    apdb = _open_apdb(service.blink, service.cassandra, init=False)
    try:
        written = export_with_progress(apdb, args.out, selection=selection,
                                       tables=args.tables or EXPORT_TABLES, batch_rows=args.batch_rows)
    finally:
        apdb.close()
    for t in written:
        log.info("%s: %d of %d rows -> %s", t.table, t.n_rows, t.n_scanned, t.path)
    return 0


def cmd_lightcurve(args: argparse.Namespace) -> int:
    """Print a DiaObject's summary and history, and draw its light curve."""
    from streamer.inspect.light_curve import plot_light_curve, print_object_history, read_object_history

    service = _settings(args)
    apdb = _open_apdb(service.blink, service.cassandra, init=False)
    try:
        history = read_object_history(apdb, args.dia_object_id)
    finally:
        apdb.close()
    print_object_history(history)
    out = args.out or Path(f"lightcurve_{args.dia_object_id}.png")
    plot_light_curve(history.dia_sources, history.dia_forced_sources, out, title=f"DiaObject {args.dia_object_id}")
    log.info("light curve: %s", out)
    return 0


def cmd_alerts_show(args: argparse.Namespace) -> int:
    """Decode alerts from an Avro alert file (or folder) or a Kafka topic; summarise them and draw their cutouts."""
    from streamer.inspect.alert_view import load_alerts, plot_cutout_triplet, print_alerts

    kafka = _settings(args).kafka if args.kafka_bootstrap else None
    alerts, where = load_alerts(args.source, kafka=kafka, max_alerts=args.max)
    print_alerts(alerts, title=where)
    if args.png_dir:
        for alert in alerts:
            plot_cutout_triplet(alert, args.png_dir / f"{alert['diaSourceId']}.png")
        log.info("%d cutout triplets in %s", len(alerts), args.png_dir)
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    """Create the Kafka topics (idempotent), and the ACLs that the settings ask for."""
    from streamer.kafka.acls import configured_acls, create_acls
    from streamer.kafka.admin import create_topics

    kafka = _settings(args).kafka
    created = create_topics(kafka)
    log.info("topics ready: %s", ", ".join(created) if created else "(all existed)")
    create_acls(kafka, configured_acls(kafka))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish the data repository's exposure-ready events to Kafka (as a telescope would)."""
    from streamer.events.files import read_event_file
    from streamer.kafka.producer import publish_event

    service = _settings(args)
    settings, kafka = service.blink, service.kafka
    files = sorted((settings.data_root / "events").glob("*.avro"))
    for path in files:
        publish_event(kafka, read_event_file(path))
    log.info("published %d events to %s", len(files), kafka.events_topic)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the worker: embedded (local folders, SQLite) by default, Kafka and Cassandra when configured."""
    from streamer.service import run_service

    service = _settings(args)
    settings, cassandra, kafka = service.blink, service.cassandra, service.kafka_source
    if args.simulate and not (settings.data_root / "events").is_dir():
        from simulator import SimConfig
        from streamer.simulated import simulated_repository

        night = {k: v for k, v in (("n_epochs", args.epochs), ("ccds", args.ccds)) if v is not None}
        simulated_repository(settings.data_root, SimConfig(seed=args.seed, small=True, progress=True,
                                                           templates="epochs", **night))
    apdb = _open_apdb(settings, cassandra, init="if-needed")
    if args.workers > 1:  # each worker process records the provenance of its run
        apdb.close()
        if kafka is None:
            log.error("--workers N needs Kafka (--kafka-bootstrap or source: kafka); the embedded mode has one worker")
            return 2
        from streamer.runtime.supervisor import run_workers
        from streamer.service import default_worker_id

        rc = run_workers(args.argv, args.workers, args.worker_id or default_worker_id())
        if args.report or args.simulate:
            from streamer.report.truth import print_truth_report

            print_truth_report(settings, cassandra)
        return rc
    try:
        from streamer.runtime.provenance import record_run_provenance

        record_run_provenance(service.effective(), apdb,
                              folder=service.blink.outputs if kafka is None else None)
        results = run_service(settings, apdb, kafka, forever=args.forever, workers=args.workers,
                              exactly_once=not args.at_least_once, worker_id=args.worker_id)
    finally:
        apdb.close()
    if args.report or args.simulate:
        from streamer.report.truth import print_truth_report

        print_truth_report(settings, cassandra)
    failed = [r for r in results if r.error is not None and r.error.__class__.__name__ != "NoWorkError"]
    return 1 if (failed and args.strict) else 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the settings in force (defaults included, secrets masked) as a YAML settings file."""
    sys.stdout.write(_settings(args).to_yaml())
    return 0


def _kafka_settings(args: argparse.Namespace):
    return _settings(args).kafka


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-publish exposure-ready events of a time or offset range with replay=true."""
    from streamer.kafka.operator_tools import replay_events

    if all(v is None for v in (args.from_mjd, args.to_mjd, args.from_offset, args.to_offset)) and not args.all:
        log.error("give a range (--from-mjd/--to-mjd or --from-offset/--to-offset) or --all")
        return 2
    events = replay_events(_kafka_settings(args), from_mjd=args.from_mjd, to_mjd=args.to_mjd,
                           from_offset=args.from_offset, to_offset=args.to_offset, dry_run=args.dry_run)
    for ev in events:
        log.info("%s exposure %d (%s, shutter close %.6f)", "would replay" if args.dry_run else "replayed",
                 ev.exposure_id, ev.event_id, ev.shutter_close_mjd_tai)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print lag and throughput per partition of the workers' consumer group."""
    from streamer.kafka.operator_tools import group_status, print_status

    kafka = _kafka_settings(args)
    print_status(group_status(kafka, sample_s=args.sample_s), kafka.group_id)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Compare the APDB with the simulator's truth (``--night``: write the night report instead)."""
    from streamer.report.truth import print_truth_report

    if args.night:
        return cmd_report_night(args)
    service = _settings(args)
    print_truth_report(service.blink, service.cassandra)
    return 0


def cmd_report_night(args: argparse.Namespace) -> int:
    """Write the night report: one self-contained HTML page (streamer.report.html)."""
    from streamer.report.html import write_night_report
    from streamer.report.night import gather_night

    service = _settings(args)
    apdb = _open_apdb(service.blink, service.cassandra, init=False)
    try:
        facts = gather_night(service, from_mjd_tai=args.from_mjd, to_mjd_tai=args.to_mjd, n_objects=args.objects,
                             apdb=apdb)
    finally:
        apdb.close()
    path = write_night_report(facts, args.out or service.blink.outputs / "night_report.html")
    log.info("night report: %d CCD-visits, %d DiaSources, %d dead letters -> %s", len(facts.timings),
             len(facts.dia_sources), len(facts.dead_letters), path)
    return 0


def _add_night_report_flags(p: argparse.ArgumentParser) -> None:
    """Flags of ``blink report --night``."""
    p.add_argument("--night", action="store_true", help="write the night report (HTML: exposures, alerts, dead "
                   "letters, latency, stage timings, sky map, new DiaObjects; truth panels for a simulated night)")
    p.add_argument("--out", type=Path, help="with --night: the HTML file (default <outputs>/night_report.html)")
    p.add_argument("--from-mjd", type=float, help="with --night: first shutter close (MJD TAI; default 18 h before "
                   "the last CCD-visit recorded)")
    p.add_argument("--to-mjd", type=float, help="with --night: last shutter close (MJD TAI)")
    p.add_argument("--objects", type=int, default=6, help="with --night: brightest new DiaObjects shown")


def _add_worker_flags(p: argparse.ArgumentParser) -> None:
    """Flags of ``blink run`` that are settings (``blink config show`` takes them too)."""
    p.add_argument("--threads", type=int, help="threads per worker for a CCD's pipeline (default 1 or "
                                               "BLINK_PIPELINE_THREADS; 2 on an idle 2-core machine)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics and /healthz")


def _add_sim_and_run(sub) -> None:
    p = sub.add_parser("sim", help="simulate a night of DECam exposures with truth")
    _add_common(p)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ccds", type=int, nargs="+", default=[1, 28, 35])
    p.add_argument("--full", action="store_true", help="full star density (default: small mode)")
    p.add_argument("--compress", action="store_true", help="fpack-compress the raws")
    p.add_argument("--instcal", action="store_true", help="write Community Pipeline InstCal products (ooi, oow, "
                                                          "ood) for the night instead of raws")
    p.add_argument("--templates", choices=["epochs", "truth", "both"], default="epochs",
                   help="epochs: simulate earlier epochs and build the templates from them with blink templates "
                        "build (default); truth: render the template tiles from the truth (a test fixture); "
                        "both: the earlier epochs and the truth tiles")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("run", help="run the alert-production worker")
    _add_common(p)
    p.add_argument("--simulate", action="store_true", help="simulate a small night first if the root is empty, "
                                                             "then print a report against the truth")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, help="with --simulate: epochs of the night (default 3, as blink sim)")
    p.add_argument("--ccds", type=int, nargs="+", help="with --simulate: CCDNUMs simulated (default 1 28 35)")
    p.add_argument("--forever", action="store_true", help="keep consuming (default: stop when idle)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (Kafka mode): each its own consumer of the group; SIGTERM is forwarded")
    _add_worker_flags(p)
    p.add_argument("--report", action="store_true", help="print the truth report at the end")
    p.add_argument("--strict", action="store_true", help="exit 1 if any CCD failed")
    p.add_argument("--worker-id", help="stable name of this worker instance (transactional.id suffix; "
                                       "default BLINK_WORKER_ID or the host name)")
    p.add_argument("--at-least-once", action="store_true",
                   help="Kafka mode without transactions (wait for acks, then commit offsets)")
    p.set_defaults(func=cmd_run)


def _add_kafka_tools(sub) -> None:
    p = sub.add_parser("replay", help="re-publish exposure-ready events with replay=true")
    _add_common(p)
    p.add_argument("--from-mjd", type=float, help="shutter close >= this MJD (TAI)")
    p.add_argument("--to-mjd", type=float, help="shutter close <= this MJD (TAI)")
    p.add_argument("--from-offset", type=int, help="first offset of the events topic")
    p.add_argument("--to-offset", type=int, help="last offset (inclusive)")
    p.add_argument("--all", action="store_true", help="every event of the topic")
    p.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("status", help="consumer lag and throughput per partition")
    _add_common(p)
    p.add_argument("--sample-s", type=float, default=2.0, help="throughput sampling window, s")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("topics", help="Kafka topic administration")
    topics_sub = p.add_subparsers(dest="topics_command", required=True)
    q = topics_sub.add_parser("create", help="create the topics (safe to run twice)")
    _add_common(q)
    q.set_defaults(func=cmd_topics_create)

    p = sub.add_parser("publish", help="publish the repository's exposure-ready events to Kafka")
    _add_common(p)
    p.set_defaults(func=cmd_publish)


def _add_admin(sub) -> None:
    p = sub.add_parser("apdb", help="APDB administration")
    apdb_sub = p.add_subparsers(dest="apdb_command", required=True)
    q = apdb_sub.add_parser("init", help="create the APDB tables (safe to run twice)")
    _add_common(q)
    q.set_defaults(func=cmd_apdb_init)
    q = apdb_sub.add_parser("compact", help="rewrite the DiaSource/DiaForcedSource history of finished time "
                            "buckets as few blobs (faster region reads; same contents). Run daily, one at a time")
    _add_common(q)
    q.add_argument("--before", type=float, default=None,
                   help="compact the buckets that ended by this MJD (TAI); default: a day ago")
    q.add_argument("--all", action="store_true",
                   help="also redo the buckets compacted by earlier runs (after a replay of an old night)")
    q.set_defaults(func=cmd_apdb_compact)
    _add_apdb_export(apdb_sub)

    p = sub.add_parser("report", help="compare the APDB with the simulator's truth; --night: the night report")
    _add_common(p)
    _add_night_report_flags(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config", help="settings")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    q = config_sub.add_parser("show", help="print the settings in force (defaults included, secrets masked) as "
                              "YAML; takes the same --config, flags and BLINK_* variables as blink run")
    _add_common(q)
    _add_worker_flags(q)
    q.set_defaults(func=cmd_config_show)


def _add_apdb_export(apdb_sub) -> None:
    q = apdb_sub.add_parser("export", help="write DiaObject, DiaSource and DiaForcedSource to Parquet (Rubin column "
                            "names and types), all of them, a time range or a sky region")
    _add_common(q)
    q.add_argument("out", type=Path, help="folder for <table>.parquet")
    q.add_argument("--mjd-min", type=float, help="from this MJD (TAI), inclusive: midpointMjdTai of sources, "
                                                 "validityStartMjdTai of DiaObject versions")
    q.add_argument("--mjd-max", type=float, help="to this MJD (TAI), exclusive")
    q.add_argument("--ra", type=float, help="sky region centre, degrees")
    q.add_argument("--dec", type=float, help="sky region centre, degrees")
    q.add_argument("--radius-deg", type=float, help="sky region radius, degrees")
    q.add_argument("--tables", nargs="+", choices=["DiaObject", "DiaObjectLast", "DiaSource", "DiaForcedSource"],
                   help="tables to write (default: DiaObject with every version, DiaSource, DiaForcedSource)")
    q.add_argument("--batch-rows", type=int, default=50_000, help="rows read per batch")
    q.set_defaults(func=cmd_apdb_export)


def _add_inspect(sub) -> None:
    p = sub.add_parser("lightcurve", help="a DiaObject's summary, DiaSource and DiaForcedSource history, and light "
                       "curve (PNG)")
    _add_common(p)
    p.add_argument("dia_object_id", type=int, metavar="DIAOBJECTID")
    p.add_argument("--out", type=Path, help="PNG to write (default lightcurve_<DIAOBJECTID>.png)")
    p.set_defaults(func=cmd_lightcurve)
    p = sub.add_parser("alerts", help="alerts")
    alerts_sub = p.add_subparsers(dest="alerts_command", required=True)
    q = alerts_sub.add_parser("show", help="decode alerts (Avro alert file or folder, or a Kafka topic with "
                              "--kafka-bootstrap), summarise them and draw their cutout triplets")
    _add_common(q)
    q.add_argument("source", metavar="FILE_OR_TOPIC")
    q.add_argument("--max", type=int, help="at most this many alerts")
    q.add_argument("--png-dir", type=Path, help="write <diaSourceId>.png cutout triplets here")
    q.set_defaults(func=cmd_alerts_show)


def cmd_process(args: argparse.Namespace) -> int:
    """Run one raw CCD offline and write its intermediate products (streamer.products) into --out."""
    from streamer.products.offline import process_raw_ccd

    service = _settings(args)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    kwargs = {"steps": steps} if steps else {}
    # a path the shell completed (relative to the working folder) is taken as it is; else it names a raw of the root
    raw = Path(args.raw).resolve() if Path(args.raw).exists() else args.raw
    state = process_raw_ccd(service.blink.data_root, raw, args.ccd, args.out, reuse=args.reuse,
                            config=service.pipeline, **kwargs)
    log.info("CCD %d of %s: %s -> %s", args.ccd, args.raw, ", ".join(f"{k} {v}" for k, v in state.items()), args.out)
    return 0


def _add_process(sub) -> None:
    from pipeline.ccd import STEPS

    p = sub.add_parser("process", help="run one CCD offline and write its calibrated exposure, difference image, "
                                       "DiaSources, timings and configuration (FITS, Parquet)")
    _add_common(p)
    p.add_argument("raw", help="raw exposure: a path from here, or relative to the data root")
    p.add_argument("--ccd", type=int, required=True, help="CCDNUM")
    p.add_argument("--out", type=Path, required=True, help="products folder")
    p.add_argument("--steps", help=f"comma-separated steps of {','.join(STEPS)} (default all; earlier products are "
                                   "read from --out)")
    p.add_argument("--reuse", action="store_true", help="skip a step whose products are already in --out")
    p.set_defaults(func=cmd_process)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``blink``."""
    parser = argparse.ArgumentParser(prog="blink", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sim_and_run(sub)
    _add_kafka_tools(sub)
    _add_admin(sub)
    _add_inspect(sub)
    _add_process(sub)
    p = sub.add_parser("refcat", help="index a folder of Gaia-archive files (FITS/CSV/ECSV) as the reference catalog")
    p.add_argument("src_dir", type=Path, help="folder of Gaia-archive files")
    p.add_argument("--out", "--root", dest="out", type=Path, help="data root to write refcat/ into (default "
                   "./blink-data or BLINK_DATA_ROOT)")
    p.add_argument("--log-format", choices=["text", "json"], help="console text or JSON lines")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_refcat)
    p = sub.add_parser("templates", help="template tiles")
    templates_sub = p.add_subparsers(dest="templates_command", required=True)
    q = templates_sub.add_parser("build", help="coadd exposures into template tiles on the sky map (incremental)")
    _add_common(q)
    q.add_argument("inputs", nargs="+", help="exposures (raw paths or glob patterns, relative to the data root)")
    q.add_argument("--band", help="only inputs of this band")
    q.set_defaults(func=cmd_templates_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``blink`` command."""
    args = build_parser().parse_args(argv)
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack (diagnosing a stuck worker)
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (io.UnsupportedOperation, AttributeError, ValueError):  # stderr without a file (captured)
            pass
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    setup_logging(args.log_format or "text", logging.DEBUG if args.verbose else logging.INFO)
    from pipeline.errors import BlinkError

    try:
        return int(args.func(args) or 0)
    except InvalidSettings as err:
        log.error("%s", err)
        return 2
    except BlinkError as err:
        log.error("%s (stage %s)", err, err.stage)
        return 2


if __name__ == "__main__":
    sys.exit(main())
