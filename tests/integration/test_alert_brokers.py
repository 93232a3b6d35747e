"""Brokers read Blink's alerts as they read Rubin's, with their own clients, on one night published to Kafka:

- lsst-alert-stream's ``AlertConsumer`` (Rubin's reference consumer, read_committed): every cutout gunzipped
  and opened with astropy, its flux, variance, mask, PSF and WCS checked against the DiaSource row the APDB
  holds; each message has Rubin's ``producer_timestamp`` header;
- hop-client (SCiMMA/Hopskotch): ``hop.io.Stream`` reads the topic; Blink's messages carry no ``_format``
  header, so hop hands them over as ``Blob``; the broker then does what a Confluent-framed stream asks of it:
  reads the schema id in the frame and fetches that schema from the registry;
- fink-client: its ``AlertConsumer`` decodes only Fink's own re-published streams (schema JSON in the message
  key, no wire header), so Fink's path for a survey's alerts is taken instead: the wire header stripped, the
  body read with the survey's schema by fink-client's own decoder, and the alerts turned into an Arrow table
  by fink-client's ``avro_to_arrow``.

The three clients must see the same alerts, one per DiaSource of the APDB, with the same values."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from pipeline.masks import UNUSABLE, MaskBit
from streamer.alerts.framing import HEADER_PRODUCER_TIMESTAMP, headers_dict, unframe
from streamer.apdb.columns import DIA_SOURCE
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.apdb.table_rows import table_to_records
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import publish_event
from streamer.service import run_service
from streamer.settings import BlinkSettings
from tests.helpers.kafka_topics import read_topic, read_with_alert_stream, unique_kafka_settings
from tests.helpers.night_files import link_fits

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


@dataclass(frozen=True)
class PublishedNight:
    """One night processed by the service into a private alert topic, and its APDB rows."""

    kafka_bootstrap: str
    alerts_topic: str
    rows: dict[int, dict]
    started_ms: int
    finished_ms: int


@pytest.fixture(scope="module")
def published_night(small_night, tmp_path_factory, kafka_bootstrap) -> PublishedNight:
    """The first epoch of the small night through ``run_service`` (one worker) to Kafka, once for all clients."""
    root = tmp_path_factory.mktemp("brokers") / "night"
    shutil.copytree(small_night, root, ignore=shutil.ignore_patterns("out"), copy_function=link_fits)
    kafka = unique_kafka_settings(kafka_bootstrap, "brokers")
    mp = pytest.MonkeyPatch()
    for name in ("group_id", "events_topic", "work_topic", "alerts_topic", "dead_letter_topic"):
        mp.setenv(f"BLINK_KAFKA_{name.upper()}", str(getattr(kafka, name)))
    create_topics(kafka)
    started_ms = time.time_ns() // 1_000_000
    publish_event(kafka, read_event_file(sorted((root / "events").glob("*.avro"))[0]))
    apdb = SqliteApdb(root / "apdb.sqlite")
    apdb.init_schema()
    try:
        results = run_service(BlinkSettings(data_root=root), apdb, kafka, idle_timeout_s=10.0,
                              worker_id="brokers-w0")
        assert results and all(r.error is None for r in results), [repr(r.error) for r in results]
        rows = {r["diaSourceId"]: r for r in table_to_records(DIA_SOURCE, apdb.dump_tables()["DiaSource"])}
    finally:
        apdb.close()
        mp.undo()
    assert rows
    return PublishedNight(kafka_bootstrap, kafka.alerts_topic, rows, started_ms, time.time_ns() // 1_000_000)


@pytest.mark.timeout(300)
def test_lsst_alert_stream_decodes_the_stream_and_every_cutout(published_night):
    import lsst.alert.stream  # noqa: F401  (a test dependency: its consumer must be exercised, never skipped)
    rows = published_night.rows
    alerts = read_with_alert_stream(published_night.kafka_bootstrap, published_night.alerts_topic)
    assert alerts and sorted(a["diaSourceId"] for a, _ in alerts) == sorted(rows)
    for alert, headers in alerts:
        assert published_night.started_ms <= int(headers[HEADER_PRODUCER_TIMESTAMP]) <= published_night.finished_ms
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


def _registry_schema(schema_id: int) -> dict:
    """The schema a broker fetches for the frame's id: from the registry the workers publish to (``GET
    /schemas/ids/{id}`` of the Confluent API), else, without a registry, the schema lsst-alert-packet ships
    for that version."""
    url = os.environ.get("BLINK_REGISTRY_URL")
    if url:
        with urllib.request.urlopen(f"{url.rstrip('/')}/schemas/ids/{schema_id}", timeout=10) as answer:
            return json.loads(json.load(answer)["schema"])
    from lsst.alert.packet import get_schema_path

    major, minor = divmod(schema_id, 100)
    return json.loads(Path(get_schema_path(major, minor), f"lsst.v{major}_{minor}.alert.avsc").read_text())


def _raw_messages_with_hop(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every message of ``topic`` through hop-client's ``Stream`` (from the earliest offset, until the end of
    the stream), as the ``Blob`` hop makes of a message without its ``_format`` header. hop's consumer does not
    set ``isolation.level``; the night's transactions are all committed before this reads."""
    from hop import Stream, models
    from hop.io import StartPosition

    stream = Stream(auth=False, start_at=StartPosition.EARLIEST, until_eos=True)
    messages = []
    with stream.open(f"kafka://{bootstrap}/{topic}", "r", group_id=f"hop-{time.time_ns()}") as consumer:
        for payload, metadata in consumer.read(metadata=True):
            assert isinstance(payload, models.Blob), type(payload)
            messages.append((payload.content, headers_dict(metadata.headers)))
    return messages


@pytest.mark.timeout(120)
def test_hop_client_reads_the_stream_with_the_registry_schema(published_night):
    import fastavro

    messages = _raw_messages_with_hop(published_night.kafka_bootstrap, published_night.alerts_topic)
    ids = {unframe(content)[0] for content, _ in messages}
    assert len(ids) == 1, ids
    schema = fastavro.parse_schema(_registry_schema(ids.pop()))
    alerts = [fastavro.schemaless_reader(io.BytesIO(unframe(content)[1]), schema) for content, _ in messages]
    assert sorted(a["diaSourceId"] for a in alerts) == sorted(published_night.rows)
    for alert, (_, headers) in zip(alerts, messages):
        row = published_night.rows[alert["diaSourceId"]]
        assert alert["diaSource"]["psfFlux"] == pytest.approx(row["psfFlux"], rel=1e-6)
        assert (alert["diaSource"]["ra"], alert["diaSource"]["dec"]) == pytest.approx((row["ra"], row["dec"]),
                                                                                     abs=1e-9)
        assert HEADER_PRODUCER_TIMESTAMP in headers
        with _open(alert["cutoutDifference"]) as hdus:
            _check_planes_and_wcs(hdus, row)


def _without_logical_types(schema):
    """``schema`` with every ``{"type": T, "logicalType": ...}`` replaced by ``T``."""
    if isinstance(schema, list):
        return [_without_logical_types(t) for t in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and isinstance(schema.get("type"), str):
            return schema["type"]
        return {k: _without_logical_types(v) for k, v in schema.items()}
    return schema


@pytest.mark.timeout(120)
def test_fink_client_decodes_and_tabulates_the_alerts(published_night):
    import fastavro
    from fink_client.avro2arrow import avro_to_arrow
    from fink_client.avro_utils import _decode_avro_alert
    from lsst.alert.packet import Schema

    schema = Schema.from_file()
    messages = read_topic(published_night.kafka_bootstrap, published_night.alerts_topic)
    alerts = [_decode_avro_alert(io.BytesIO(unframe(m.value())[1]), schema.definition) for m in messages]
    assert sorted(a["diaSourceId"] for a in alerts) == sorted(published_night.rows)
    # fink-client's converter wants every named type written out where it is used, as Fink's own schema files
    # have them (fastavro expands the references of Rubin's schema: prvDiaSources repeats diaSource's record),
    # and it does not know logical types (12.3 raises on the timestamp-micros of schema 11's MPCORB and
    # ssSource records): they are read as the long they are.
    table, _ = avro_to_arrow(_without_logical_types(fastavro.schema.expand_schema(schema.definition)), alerts)
    assert table.num_rows == len(published_night.rows)
    by_id = {source_id: i for i, source_id in enumerate(table.column("diaSourceId").to_pylist())}
    sources = table.column("diaSource").combine_chunks()
    for source_id, row in published_night.rows.items():
        source = sources[by_id[source_id]].as_py()
        assert source["psfFlux"] == pytest.approx(row["psfFlux"], rel=1e-6)
        assert source["midpointMjdTai"] == pytest.approx(row["midpointMjdTai"], abs=1e-9)
