"""One CCD end to end: gather its inputs, run the pipeline, write the APDB, publish its alerts.

The pure pipeline (:func:`pipeline.ccd.process_ccd`) sits between two I/O edges: the data repository, the raw
file and the APDB region before it; the APDB upserts and the alert sink after it. The loop that feeds it is
:mod:`streamer.worker.loop`.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from pipeline.ccd import PipelineConfig, process_ccd
from pipeline.decam.header import ccd_footprint, check_against_event, read_exposure_info
from pipeline.threads import using as pipeline_threads
from pipeline.types import CcdInputs, CcdOutputs
from streamer.alerts.builder import build_alerts
from streamer.alerts.framing import alert_headers
from streamer.alerts.schema import AlertSchema
from streamer.apdb.base import Apdb, RegionData, SkyRegion
from streamer.apdb.columns import empty_table
from streamer.decam.camera_tables import decam_camera
from streamer.decam.raw_files import list_ccds, read_primary_header, read_raw_ccd
from streamer.events.records import ExposureReady
from streamer.ports import AlertSink
from streamer.runtime import metrics
from streamer.worker.inputs import DataRepository

__all__ = ["CcdProcessor", "CcdResult", "empty_region"]


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
    """

    def __init__(self, repo: DataRepository, apdb: Apdb, alert_sink: AlertSink,
                 config: PipelineConfig = PipelineConfig(), threads: int = 1) -> None:
        self.repo = repo
        self.apdb = apdb
        self.alert_sink = alert_sink
        self.config = config
        self.threads = max(1, int(threads))
        self.schema = AlertSchema.latest()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._prefetched: dict[tuple[int, int], Future] = {}

    def raw_ccds(self, event: ExposureReady) -> tuple[int, ...]:
        """The CCDNUMs of the event's raw file, in file order."""
        return tuple(list_ccds(self.repo.resolve(event.raw_path)))

    def check_exposure(self, event: ExposureReady) -> None:
        """Check the raw's primary header against the event before any CCD of it is claimed or read.

        Raises
        ------
        HeaderError
            The header cannot describe a science exposure, or describes another exposure than the event's.
        InputError
            The raw is missing or its primary header unreadable.
        """
        info = read_exposure_info(read_primary_header(self.repo.resolve(event.raw_path)))
        check_against_event(info, exposure_id=event.exposure_id, band=event.band,
                            midpoint_mjd_tai=event.midpoint_mjd_tai)

    def load_static(self, event: ExposureReady, detector: int) -> CcdInputs:
        """Read the inputs of one CCD that do not depend on the APDB (raw, calibrations, references,
        templates); the APDB region is left empty, to be read just before processing."""
        raw_path = self.repo.resolve(event.raw_path)
        raw = read_raw_ccd(raw_path, detector)
        info = raw.info
        check_against_event(info, exposure_id=event.exposure_id, band=event.band,
                            midpoint_mjd_tai=event.midpoint_mjd_tai)
        ra, dec, radius = ccd_footprint(raw.header)
        empty = empty_region()
        return CcdInputs(
            raw=raw,
            bias=self.repo.bias(detector),
            flat=self.repo.flat(info.band, detector),
            refcat=self.repo.refcat_in(ra, dec, radius + 0.02),
            template_tiles=self.repo.templates_in(info.band, ra, dec, radius),
            dia_objects=empty.dia_objects,
            dia_sources=empty.dia_sources,
            dia_forced_sources=empty.dia_forced_sources,
            ccd=decam_camera().ccd(detector),
            defects=self.repo.defects(detector, info.mjd_mid_tai),
        )

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
        ra, dec, radius = ccd_footprint(static.raw.header)
        region = self.apdb.read_region(SkyRegion(ra, dec, radius), static.raw.info.mjd_mid_tai)
        inputs = replace(static, dia_objects=region.dia_objects, dia_sources=region.dia_sources,
                         dia_forced_sources=region.dia_forced_sources)
        return inputs, region

    def process(self, event: ExposureReady, detector: int) -> CcdResult:
        """Process one CCD: inputs -> pipeline -> APDB -> alerts (acknowledged)."""
        start = time.perf_counter()
        inputs, region = self.gather(event, detector)
        with pipeline_threads(self.threads):
            outputs = process_ccd(inputs, config=self.config)
        self.apdb.store(visit=event.exposure_id, detector=detector, dia_objects=outputs.dia_objects,
                        dia_sources=outputs.dia_sources, dia_forced_sources=outputs.dia_forced_sources)
        alerts = build_alerts(outputs, region)
        headers = alert_headers(shutter_close_mjd_tai=event.shutter_close_mjd_tai, replay=event.replay,
                                schema_id=self.schema.schema_id)
        self.alert_sink.publish(alerts, headers=headers)
        seconds = time.perf_counter() - start
        metrics.observe_ccd(outputs.metadata.get("timings_s", {}), seconds, len(alerts),
                            event.shutter_close_mjd_tai)
        return CcdResult(event.exposure_id, detector, outputs, len(alerts), seconds=seconds)


def empty_region() -> RegionData:
    """An APDB region with no rows (typed tables): what a CCD's static inputs carry until the region is read."""
    return RegionData(empty_table("DiaObjectLast"), empty_table("DiaSource"), empty_table("DiaForcedSource"))
