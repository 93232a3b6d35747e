"""Overlapping CCD-visits through real Kafka partitions and concurrent workers associate in time order.

Twelve exposures, each of one CCD (a different CCD each time, the boresight moved so that every CCD lands on
the same patch of sky, dithered by up to 0.1 deg): their work items are keyed by boresight and CCD, so they
spread over the partitions of the work topic and no partition order can keep them in time order. The workers
are the real :class:`streamer.worker.loop.Worker` loop (fan-out with claims, hand-back of work whose turn has not
come, release after the APDB write) on real Kafka and a real SQLite APDB. The per-CCD science is replaced
by association of the injected transients inside the CCD's disc (``tests.helpers.ordering_night``): what
ordering protects is association, and the full pipeline would take minutes here.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamer.apdb.base import SkyRegion
from streamer.apdb.ordering import SqliteWorkClaims, claim_region
from streamer.apdb.sky import angular_distance_deg
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.apdb.table_rows import tables_equal
from streamer.events.records import ExposureReady
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import publish_event, publish_work
from streamer.kafka.source import KafkaEventSource
from streamer.runtime import metrics
from streamer.worker.commit_modes import AtLeastOnceCommit
from streamer.worker.loop import Worker
from streamer.worker.ordering import ClaimedOrder
from streamer.worker.processor import CcdResult
from tests.helpers.apdb_contract import VISIT_MJD
from tests.helpers.kafka_topics import unique_kafka_settings
from tests.helpers.ordering_night import DEC0, N_TRANSIENTS, RA0, RADIUS, associate_and_store, transient_positions

pytestmark = pytest.mark.integration

DETECTORS = (28, 35, 1, 29, 34, 27, 36, 22, 23, 42, 41, 30)


def _events(tag: str) -> list[ExposureReady]:
    """Exposures in time order; exposure k's CCD ``DETECTORS[k]`` is centred near (RA0, DEC0)."""
    rng = np.random.default_rng(5)
    out = []
    for k, det in enumerate(DETECTORS):
        centre = claim_region(RA0, DEC0, det)  # where the CCD lands with the boresight at (RA0, DEC0)
        dra, ddec = rng.uniform(-0.1, 0.1, 2)
        ra = RA0 - (centre.ra_deg - RA0) + dra / np.cos(np.radians(DEC0))
        dec = DEC0 - (centre.dec_deg - DEC0) + ddec
        mjd = VISIT_MJD + 0.01 * k
        out.append(ExposureReady(event_id=f"{tag}-{k}", instrument="DECam", exposure_id=1000 + k,
                                 raw_path="raw/none.fits.fz", band="r", midpoint_mjd_tai=mjd,
                                 shutter_close_mjd_tai=mjd + 0.0005, ra=float(ra) % 360.0, dec=float(dec),
                                 detectors=(det,)))
    return out


class _AssociationOnly:
    """The processor port of the Worker: association of the truth transients inside the CCD's disc."""

    def __init__(self, path: str, seconds: float) -> None:
        self.apdb = SqliteApdb(path)
        self.seconds = seconds
        self.alert_sink = self
        self.truth = transient_positions()

    def prefetch(self, *_: object) -> None:
        """Nothing to prefetch."""

    def check_exposure(self, *_: object) -> None:
        """No raw to check."""

    def flush(self) -> None:
        """No alerts."""

    def process(self, exposure: ExposureReady, detector: int) -> CcdResult:
        centre = claim_region(exposure.ra, exposure.dec, detector)
        time.sleep(self.seconds)  # a CCD takes time: lets the workers overlap
        associate_and_store(self.apdb, exposure.exposure_id, SkyRegion(centre.ra_deg, centre.dec_deg, RADIUS),
                            exposure.midpoint_mjd_tai, self.truth)
        return CcdResult(exposure.exposure_id, detector, None, 0)


def _run_night(kafka_bootstrap: str, path: str, n_workers: int) -> tuple[dict, float]:
    kafka = unique_kafka_settings(kafka_bootstrap, "order", work_partitions=8)
    tag = kafka.group_id.rsplit("-", 1)[-1]
    create_topics(kafka)
    setup = SqliteApdb(path)
    setup.init_schema()
    for event in _events(tag):
        publish_event(kafka, event)
    deferred_before = metrics.WORK_DEFERRED._value.get()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        source = KafkaEventSource(kafka, topics=[kafka.events_topic, kafka.work_topic],
                                  **{"group.instance.id": f"order-{tag}-{k}"})
        processor = _AssociationOnly(path, seconds=0.3)
        claims = SqliteWorkClaims(path, poll_s=0.01)
        try:
            worker = Worker(source=source, processor=processor, dead_letters=None,  # type: ignore[arg-type]
                            commit=AtLeastOnceCommit(kafka.work_topic, lambda items: publish_work(kafka, items)),
                            order=ClaimedOrder(claims))
            results = worker.run(until_idle=True, idle_timeout_s=8.0)
            errors.extend(r.error for r in results if r.error is not None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            source.close()
            claims.close()
            processor.apdb.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a worker did not finish (deadlocked on a claim?)"
    dump = setup.dump_tables()
    setup.close()
    return dump, metrics.WORK_DEFERRED._value.get() - deferred_before


def test_concurrent_workers_associate_in_time_order(kafka_bootstrap, tmp_path):
    """Two workers: one DiaObject per covered transient, named by its earliest DiaSource; work was handed
    back while earlier overlapping work ran; one worker (owning every partition, so it must hand back and
    go on with its other partitions rather than wait) gives the same tables."""
    two, deferred = _run_night(kafka_bootstrap, str(tmp_path / "two.sqlite"), n_workers=2)
    ra, dec = transient_positions()
    covered = np.zeros(N_TRANSIENTS, bool)
    for event in _events("x"):
        centre = claim_region(event.ra, event.dec, event.detectors[0])
        covered |= angular_distance_deg(ra, dec, centre.ra_deg, centre.dec_deg) <= RADIUS
    assert covered.sum() >= 10
    assert len(two["DiaSource"]) > len(two["DiaObjectLast"])  # transients seen several times
    assert len(two["DiaObjectLast"]) == covered.sum()
    src = two["DiaSource"]
    for oid in two["DiaObjectLast"]["diaObjectId"]:
        mine = src[src["diaObjectId"] == oid]
        assert mine["diaSourceId"][np.argmin(mine["midpointMjdTai"])] == oid
    assert deferred > 0, "no work item was ever handed back: the test did not exercise the ordering"

    one, _ = _run_night(kafka_bootstrap, str(tmp_path / "one.sqlite"), n_workers=1)
    for name in ("DiaObject", "DiaObjectLast", "DiaSource"):
        assert tables_equal(two[name], one[name]), name
