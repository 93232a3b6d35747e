"""One CCD end to end: gather its inputs, run the pipeline, write the APDB, publish its alerts.

The pure pipeline (:func:`pipeline.ccd.process_ccd`) sits between two I/O edges: the data repository, the raw
file and the APDB region before it; the APDB upserts and the alert sink after it. The loop that feeds it is
:mod:`streamer.worker.loop`.

An event's ``product`` says what its path names: a raw (read with its bias, flat and defects, then ISR), or a
Community Pipeline InstCal image (``instcal``: the ``ooi`` file, its ``oow`` weight and ``ood`` mask found
beside it by the CP's names; no calibration frames). Both are checked against the event, and every later
stage (calibration, subtraction, association, APDB, alerts) is the same.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from pipeline.ccd import CcdRun, PipelineConfig
from pipeline.decam.header import ccd_footprint, check_against_event, read_exposure_info
from pipeline.decam.instcal import InstCalCcd, InstCalInputs, check_instcal_primary, instcal_footprint
from pipeline.errors import InputError
from pipeline.threads import using as pipeline_threads
from pipeline.types import CcdInputs, CcdOutputs, ExposureInfo, RawCcd
from streamer.alerts.builder import build_alerts
from streamer.alerts.framing import alert_headers, now_mjd_tai
from streamer.alerts.schema import AlertSchema
from streamer.apdb.base import Apdb, RegionData, SkyRegion
from streamer.apdb.ccd_timings import CcdTiming, CcdTimingLog
from streamer.apdb.columns import empty_table
from streamer.decam.camera_tables import decam_camera
from streamer.decam.instcal_files import STAGE as INSTCAL_STAGE
from streamer.decam.instcal_files import instcal_paths, read_instcal_ccd
from streamer.decam.raw_files import list_ccds, read_primary_header, read_raw_ccd
from streamer.events.records import INSTCAL_PRODUCT, ExposureReady
from streamer.ports import AlertSink
from streamer.reliability_model import shipped_model
from streamer.runtime import metrics
from streamer.worker.inputs import DataRepository

__all__ = ["CcdProcessor", "CcdResult", "empty_region", "instcal_files_in", "read_instcal_input"]


@dataclass
class CcdResult:
    """What processing one CCD produced (for logs, tests and the truth report)."""

    visit: int
    detector: int
    outputs: CcdOutputs | None
    n_alerts: int
    error: BaseException | None = None
    seconds: float = 0.0
    """Inputs to alerts handed to the sink (acknowledged, or produced into the open transaction)."""


class Processor(Protocol):
    """What the worker asks of a CCD processor (:class:`CcdProcessor`; tests give it fakes)."""

    alert_sink: AlertSink

    def check_exposure(self, event: ExposureReady) -> None:
        """Refuse an exposure whose raw header cannot describe it (before any CCD of it is claimed or read)."""

    def raw_ccds(self, event: ExposureReady) -> tuple[int, ...]:
        """The CCDNUMs of the event's raw file (for an event that names none)."""

    def prefetch(self, event: ExposureReady, detector: int) -> None:
        """Start reading a CCD's inputs in the background."""

    def process(self, event: ExposureReady, detector: int) -> CcdResult:
        """Process one CCD end to end."""


class CcdProcessor:
    """Processes one CCD end to end (pure pipeline between two I/O edges).

    Parameters
    ----------
    repo : DataRepository
    apdb : Apdb
    alert_sink : AlertSink
    config : PipelineConfig
    threads : int
        Threads the pipeline uses for a CCD (:func:`pipeline.threads.using`).
    timings : CcdTimingLog, optional
        Where each finished CCD's latency and stage timings are recorded (:mod:`streamer.apdb.ccd_timings`).
    keep_products : tuple, optional
        (CCDNUMs, folder): those CCDs' step products are written into ``folder/<visit>-<ccd>`` after their alerts
        are published (:mod:`streamer.products.store`, as ``blink process`` writes them).
    min_reliability : float, optional
        DiaSources below this reliability are stored but not alerted (:func:`streamer.alerts.builder.build_alerts`).
    """

    def __init__(self, repo: DataRepository, apdb: Apdb, alert_sink: AlertSink,
                 config: PipelineConfig = PipelineConfig(), threads: int = 1, *,
                 timings: CcdTimingLog | None = None,
                 keep_products: tuple[tuple[int, ...], Path] | None = None, min_reliability: float = 0.0) -> None:
        self.repo = repo
        self.apdb = apdb
        self.alert_sink = alert_sink
        self.config = config
        self.threads = max(1, int(threads))
        self.timings = timings
        self.keep_products = keep_products
        self.min_reliability = float(min_reliability)
        self.schema = AlertSchema.latest()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._prefetched: dict[tuple[int, int], Future] = {}

    def raw_ccds(self, event: ExposureReady) -> tuple[int, ...]:
        """The CCDNUMs of the event's raw file (or InstCal image), in file order."""
        return tuple(list_ccds(self.repo.resolve(event.raw_path)))

    def check_exposure(self, event: ExposureReady) -> None:
        """Check the raw's (or InstCal image's) primary header against the event before any CCD of it is
        claimed or read.

        Raises
        ------
        HeaderError
            The header cannot describe a science exposure, or describes another exposure than the event's.
        InputError
            The raw is missing or its primary header unreadable; an InstCal event's files are missing or its
            image is not a CP InstCal product (``stage="read_instcal"``).
        """
        if event.product == INSTCAL_PRODUCT:
            image, _, _ = instcal_files_in(self.repo, event.raw_path)
            primary = read_primary_header(image)
            check_instcal_primary(primary, name=event.raw_path)
        else:
            primary = read_primary_header(self.repo.resolve(event.raw_path))
        info = read_exposure_info(primary)
        check_against_event(info, exposure_id=event.exposure_id, band=event.band,
                            midpoint_mjd_tai=event.midpoint_mjd_tai)

    def load_static(self, event: ExposureReady, detector: int) -> CcdInputs | InstCalInputs:
        """Read the inputs of one CCD that do not depend on the APDB (raw and calibrations or the InstCal CCD,
        references, templates); the APDB region is left empty, to be read just before processing."""
        if event.product == INSTCAL_PRODUCT:
            return self._load_instcal(event, detector)
        raw_path = self.repo.resolve(event.raw_path)
        raw = read_raw_ccd(raw_path, detector)
        info = raw.info
        check_against_event(info, exposure_id=event.exposure_id, band=event.band,
                            midpoint_mjd_tai=event.midpoint_mjd_tai)
        return raw_ccd_inputs(self.repo, raw, with_templates=True)

    def _load_instcal(self, event: ExposureReady, detector: int) -> InstCalInputs:
        """The static inputs of one CCD of an InstCal exposure: the CCD (checked against the event), the
        references and template tiles its TPV footprint meets."""
        ccd = read_instcal_input(self.repo, event.raw_path, detector)
        check_against_event(ccd.info, exposure_id=event.exposure_id, band=event.band,
                            midpoint_mjd_tai=event.midpoint_mjd_tai)
        ra, dec, radius = instcal_footprint(ccd)
        empty = empty_region()
        return InstCalInputs(instcal=ccd, refcat=self.repo.refcat_in(ra, dec, radius + 0.02),
                             template_tiles=self.repo.templates_in(ccd.info.band, ra, dec, radius),
                             dia_objects=empty.dia_objects, dia_sources=empty.dia_sources,
                             dia_forced_sources=empty.dia_forced_sources, reliability_model=shipped_model())

    def prefetch(self, event: ExposureReady, detector: int) -> None:
        """Start reading a CCD's static inputs in the background (while the current CCD runs), as Rubin's
        prompt-processing workers preload calibrations and templates before the pixels are needed."""
        key = (event.exposure_id, detector)
        if key not in self._prefetched:
            self._prefetched[key] = self._pool.submit(self.load_static, event, detector)

    def gather(self, event: ExposureReady, detector: int) -> tuple[CcdInputs, RegionData]:
        """Every input of one CCD: the static ones (prefetched when available) and the APDB region, read
        now so that the CCD sees every earlier CCD's writes."""
        future = self._prefetched.pop((event.exposure_id, detector), None)
        static = future.result() if future is not None else self.load_static(event, detector)
        (ra, dec, radius), info = _footprint_and_info(static)
        region = self.apdb.read_region(SkyRegion(ra, dec, radius), info.mjd_mid_tai)
        inputs = replace(static, dia_objects=region.dia_objects, dia_sources=region.dia_sources,
                         dia_forced_sources=region.dia_forced_sources)
        return inputs, region

    def process(self, event: ExposureReady, detector: int) -> CcdResult:
        """Process one CCD: inputs -> pipeline -> APDB -> alerts (acknowledged)."""
        start, started_mjd_tai = time.perf_counter(), now_mjd_tai()
        inputs, region = self.gather(event, detector)
        keep = self.keep_products is not None and detector in self.keep_products[0]
        run = CcdRun(inputs, self.config)
        with pipeline_threads(self.threads):
            outputs = run.run_all(keep_isr_image=keep)
        self.apdb.store(visit=event.exposure_id, detector=detector, dia_objects=outputs.dia_objects,
                        dia_sources=outputs.dia_sources, dia_forced_sources=outputs.dia_forced_sources)
        alerts = build_alerts(outputs, region, min_reliability=self.min_reliability)
        headers = alert_headers(shutter_close_mjd_tai=event.shutter_close_mjd_tai, replay=event.replay,
                                schema_id=self.schema.schema_id)
        self.alert_sink.publish(alerts, headers=headers)
        seconds = time.perf_counter() - start
        stage_s = outputs.metadata.get("timings_s", {})
        metrics.observe_ccd(stage_s, seconds, len(alerts), event.shutter_close_mjd_tai)
        if self.timings is not None:
            self.timings.record(CcdTiming(
                visit=event.exposure_id, detector=detector, shutter_close_mjd_tai=event.shutter_close_mjd_tai,
                started_mjd_tai=started_mjd_tai, published_mjd_tai=now_mjd_tai(), total_s=seconds,
                n_alerts=len(alerts), n_dia_sources=len(outputs.dia_sources),
                n_new_dia_objects=int(outputs.metadata.get("n_new_dia_objects", 0)), stage_s=dict(stage_s)))
        if keep and self.keep_products is not None:
            from streamer.products.store import write_run

            write_run(self.keep_products[1] / f"{event.exposure_id}-{detector:02d}", run, seconds)
        return CcdResult(event.exposure_id, detector, outputs, len(alerts), seconds=seconds)


def instcal_files_in(repo: DataRepository, relative: str) -> tuple[Path, Path, Path]:
    """The ``ooi``, ``oow`` and ``ood`` files of the CP exposure whose image is ``relative`` (named by the CP's
    convention, each resolved inside the data root).

    Raises
    ------
    InputError
        Not a CP name, a path outside the root, or a missing file (``stage="read_instcal"``).
    """
    image, weight, mask = (repo.resolve(p) for p in instcal_paths(relative))
    missing = [p.name for p in (image, weight, mask) if not p.is_file()]
    if missing:
        raise InputError(f"InstCal exposure {relative}: missing {', '.join(missing)}", stage=INSTCAL_STAGE)
    return image, weight, mask


def read_instcal_input(repo: DataRepository, relative: str, ccdnum: int) -> InstCalCcd:
    """One CCD of the CP InstCal exposure whose image is ``relative`` in the data root (image, weight, mask).

    Raises
    ------
    InputError
        Missing, corrupt or inconsistent files, or the CCD absent (``stage="read_instcal"``).
    """
    image, weight, mask = instcal_files_in(repo, relative)
    return read_instcal_ccd(image, int(ccdnum), weight_path=weight, mask_path=mask)


def _footprint_and_info(static: CcdInputs | InstCalInputs) -> tuple[tuple[float, float, float], ExposureInfo]:
    """A CCD's sky footprint (centre and radius, degrees) and exposure facts, from either product."""
    if isinstance(static, InstCalInputs):
        return instcal_footprint(static.instcal), static.instcal.info
    return ccd_footprint(static.raw.header), static.raw.info


def raw_ccd_inputs(repo: DataRepository, raw: RawCcd, *, with_templates: bool) -> CcdInputs:
    """A raw CCD's static pipeline inputs: its calibrations, camera description, defects and the reference
    stars of its footprint, the template tiles its footprint meets (``with_templates``; a template build has
    none) and an empty APDB region.

    The calibrations are read first, so that a CCD missing both calibration and template reports the
    calibration (``stage="load_calibrations"``) before the template (``stage="load_template"``).
    """
    detector, info = raw.ccdnum, raw.info
    ra, dec, radius = ccd_footprint(raw.header)
    bias, flat = repo.bias(detector), repo.flat(info.band, detector)
    template_tiles = repo.templates_in(info.band, ra, dec, radius) if with_templates else []
    empty = empty_region()
    return CcdInputs(raw=raw, bias=bias, flat=flat,
                     refcat=repo.refcat_in(ra, dec, radius + 0.02), template_tiles=template_tiles,
                     dia_objects=empty.dia_objects, dia_sources=empty.dia_sources,
                     dia_forced_sources=empty.dia_forced_sources, ccd=decam_camera().ccd(detector),
                     defects=repo.defects(detector, info.mjd_mid_tai), reliability_model=shipped_model())


def empty_region() -> RegionData:
    """An APDB region with no rows (typed tables): what a CCD's static inputs carry until the region is read."""
    return RegionData(empty_table("DiaObjectLast"), empty_table("DiaSource"), empty_table("DiaForcedSource"))
