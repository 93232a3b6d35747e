"""Brokers read Blink's alerts as they read Rubin's: the stream decoded with lsst-alert-stream's ``AlertConsumer``,
every cutout gunzipped and opened with astropy, and its flux, variance, mask, PSF and WCS checked against the
DiaSource row the APDB holds; each message has Rubin's ``producer_timestamp`` header."""

from __future__ import annotations

import gzip
import io
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from pipeline.masks import UNUSABLE, MaskBit
from streamer.alerts.framing import HEADER_PRODUCER_TIMESTAMP
from streamer.apdb.columns import DIA_SOURCE
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.apdb.table_rows import table_to_records
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import publish_event
from streamer.service import run_service
from streamer.settings import BlinkSettings
from tests.helpers.kafka_topics import read_with_alert_stream, unique_kafka_settings

pytestmark = pytest.mark.integration

BUDGET_B = 82_000
CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def _open(data: bytes) -> fits.HDUList:
    """A broker's way: gunzip (the ZTF convention), then astropy."""
    assert data[:2] == b"\x1f\x8b", "cutouts are gzipped FITS"
    return fits.open(io.BytesIO(gzip.decompress(data)))


def _check_planes_and_wcs(hdus: fits.HDUList, row: dict) -> tuple[int, int]:
    """IMAGE, MASK and VARIANCE of one size (at least 30 x 30) whose WCS puts the row's pixel at its (ra, dec);
    returns the stamp's first parent pixel (x0, y0)."""
    shape = hdus["IMAGE"].data.shape
    assert shape[0] >= 30 and shape[1] >= 30
    assert hdus["MASK"].data.shape == shape == hdus["VARIANCE"].data.shape
    assert hdus["IMAGE"].data.dtype.kind == "f" and hdus["MASK"].data.dtype.kind == "i"
    header = hdus["IMAGE"].header
    x0, y0 = int(header["CRVAL1A"]), int(header["CRVAL2A"])
    ra, dec = WCS(header).all_pix2world([row["x"] - x0], [row["y"] - y0], 0)
    # the same TAN-SIP as the DiaSource's position was computed with: agreement to float32 pixels (< 1 mas)
    assert abs((ra[0] - row["ra"]) * np.cos(np.radians(row["dec"]))) * 3.6e6 < 1.0
    assert abs(dec[0] - row["dec"]) * 3.6e6 < 1.0
    return x0, y0


def _check_difference(hdus: fits.HDUList, row: dict, x0: int, y0: int) -> None:
    """The PSF flux fitted on the stamp (its PSF, variance and mask) is the row's, within the differences of
    the two fits (the pipeline's PSF is placed at the centroid, the stamp's at the nearest pixel, and its fit
    radius is smaller; on the small night: within 1.3 sigma, errors within 7%); the mask has the row's pixel
    flags."""
    psf = hdus["PSF"].data
    h = psf.shape[0] // 2
    cx, cy = int(np.rint(row["x"])) - x0, int(np.rint(row["y"])) - y0
    box = np.s_[cy - h:cy + h + 1, cx - h:cx + h + 1]
    image, variance, mask = hdus["IMAGE"].data[box], hdus["VARIANCE"].data[box], hdus["MASK"].data[box]
    good = ((mask & int(UNUSABLE)) == 0) & np.isfinite(image) & (variance > 0)
    if good.sum() < 10:
        return
    w = psf[good] / variance[good]
    flux, err = np.sum(w * image[good]) / np.sum(w * psf[good]), 1 / np.sqrt(np.sum(w * psf[good]))
    assert err == pytest.approx(row["psfFluxErr"], rel=0.1)
    assert abs(flux - row["psfFlux"]) < 2.5 * row["psfFluxErr"] + 0.05 * abs(row["psfFlux"])
    flags = hdus["MASK"].data[cy - 3:cy + 4, cx - 3:cx + 4]  # pipeline.measure.pixel_flags: a 7 x 7 box
    for bit, flag in ((MaskBit.SAT, "pixelFlags_saturated"), (MaskBit.CR, "pixelFlags_cr"),
                      (MaskBit.BAD, "pixelFlags_bad"), (MaskBit.INTRP, "pixelFlags_interpolated")):
        assert bool(np.any(flags & int(bit))) == bool(row[flag]), flag
    assert bool(flags[3, 3] & int(MaskBit.SAT)) == bool(row["pixelFlags_saturatedCenter"])


@pytest.mark.timeout(300)
def test_brokers_decode_the_stream_and_every_cutout(night_copy, kafka_bootstrap, monkeypatch):
    import lsst.alert.stream  # noqa: F401  (a test dependency: its consumer must be exercised, never skipped)
    kafka = unique_kafka_settings(kafka_bootstrap, "brokers")
    for name in ("group_id", "events_topic", "work_topic", "alerts_topic", "dead_letter_topic"):
        monkeypatch.setenv(f"BLINK_KAFKA_{name.upper()}", str(getattr(kafka, name)))
    create_topics(kafka)
    started_ms = time.time_ns() // 1_000_000
    publish_event(kafka, read_event_file(sorted((night_copy / "events").glob("*.avro"))[0]))
    apdb = SqliteApdb(night_copy / "apdb.sqlite")
    apdb.init_schema()
    try:
        results = run_service(BlinkSettings(data_root=night_copy), apdb, kafka, idle_timeout_s=10.0,
                              worker_id="brokers-w0")
        assert results and all(r.error is None for r in results), [repr(r.error) for r in results]
        rows = {r["diaSourceId"]: r for r in table_to_records(DIA_SOURCE, apdb.dump_tables()["DiaSource"])}
    finally:
        apdb.close()

    alerts = read_with_alert_stream(kafka_bootstrap, kafka.alerts_topic)
    assert alerts and sorted(a["diaSourceId"] for a, _ in alerts) == sorted(rows)
    for alert, headers in alerts:
        assert started_ms <= int(headers[HEADER_PRODUCER_TIMESTAMP]) <= time.time_ns() // 1_000_000
        row = rows[alert["diaSourceId"]]
        assert alert["diaSource"]["psfFlux"] == pytest.approx(row["psfFlux"], rel=1e-6)
        opened = [_open(alert[name]) for name in CUTOUTS]
        try:
            corners = [_check_planes_and_wcs(hdus, row) for hdus in opened]
            assert len(set(corners)) == 1, "the three stamps cover the same pixels"
            assert 0.85 < opened[2]["PSF"].data.sum() < 1.05  # the PSF model truncated to the stamp
            _check_difference(opened[2], row, *corners[0])
        finally:
            for hdus in opened:
                hdus.close()
        assert sum(len(alert[name]) for name in CUTOUTS) < BUDGET_B
