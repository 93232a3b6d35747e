"""Bad-input corpus through the Kafka worker: every malformed event or unusable input reaches the dead-letter
topic with a clear reason and stage, and a good exposure in the same stream still produces its alerts."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from astropy.io import fits

from streamer.alerts.schema import AlertSchema
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.events.dead_letters import decode_dead_letter
from streamer.events.files import read_event_file
from streamer.events.records import encode_event
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import KafkaPublisher, publish_event
from streamer.service import run_service
from streamer.settings import BlinkSettings
from tests.helpers.kafka_topics import read_topic, unique_kafka_settings

pytestmark = pytest.mark.integration


def _raw_variant(root, name, edit):
    """Copy the first raw, apply ``edit(hdul)`` and write it as ``raw/<name>.fits``; return the relative path."""
    src = sorted((root / "raw").glob("DECam_*.fits"))[0]
    dst = root / "raw" / f"{name}.fits"
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
        edit(hdul)
        hdul.writeto(dst, overwrite=True)
    return f"raw/{name}.fits"


def _ccd_hdu(hdul, ccdnum=28):
    return next(h for h in hdul[1:] if h.header.get("CCDNUM") == ccdnum)


def _bytes_variant(root, name, edit_bytes):
    src = sorted((root / "raw").glob("DECam_*.fits"))[0]
    (root / "raw" / f"{name}.fits").write_bytes(edit_bytes(src.read_bytes()))
    return f"raw/{name}.fits"


def _corrupt(data: bytes) -> bytes:
    out = bytearray(data)
    start = 2880 * 3  # past the primary header: clobber the first extension's header and data
    out[start:start + 2880 * 4] = bytes(range(256)) * (2880 * 4 // 256) + b"\xff" * (2880 * 4 % 256)
    return bytes(out)


@pytest.mark.timeout(300)
def test_bad_inputs_are_dead_lettered_and_good_exposure_goes_through(night_copy, kafka_bootstrap):
    root = night_copy
    good = read_event_file(sorted((root / "events").glob("*.avro"))[0])
    n = iter(range(1, 100))

    def bad_event(**changes):
        k = next(n)
        changes.setdefault("detectors", (28,))
        return dataclasses.replace(good, event_id=f"DECam-bad-{k}", exposure_id=good.exposure_id + 1000 + k,
                                   **changes)

    def variant_event(name, edit, *, renumber=True, **changes):
        """An event for a copy of the first raw changed by ``edit``, whose EXPNUM is the event's (unless not
        ``renumber``): the raw then fails for its own fault, not for naming another exposure."""
        event = bad_event(**changes)

        def edit_and_renumber(hdul):
            edit(hdul)
            if renumber:
                hdul[0].header["EXPNUM"] = event.exposure_id
        return dataclasses.replace(event, raw_path=_raw_variant(root, name, edit_and_renumber))

    def set_primary(**kw):
        def edit(hdul):
            for key, value in kw.items():
                hdul[0].header[key] = value
        return edit

    def set_extension(**kw):
        def edit(hdul):
            for key, value in kw.items():
                _ccd_hdu(hdul).header[key] = value
        return edit

    def nan_image(hdul):
        _ccd_hdu(hdul).data = np.full_like(_ccd_hdu(hdul).data, np.nan, dtype=np.float32)

    shutil.copy(root / "calib" / "flat_r.fits", root / "calib" / "flat_g.fits")  # g: flat but no templates
    header = ("bad_header", "check_header")
    cases = {  # name -> (event or raw bytes, expected dead-letter reason, expected stage)
        "garbage bytes": (b"\x00\x01garbage", "malformed_event", "decode_event"),
        "wrong instrument": (bad_event(instrument="HSC"), "malformed_event", "decode_event"),
        "rawPath escapes root": (bad_event(raw_path="../../etc/passwd"), "malformed_event", "decode_event"),
        "NaN times": (bad_event(midpoint_mjd_tai=float("nan"), shutter_close_mjd_tai=float("nan")),
                      "malformed_event", "decode_event"),
        "missing raw": (bad_event(raw_path="raw/nope.fits"), "bad_input", "read_raw"),
        "truncated FITS": (bad_event(raw_path=_bytes_variant(root, "truncated", lambda b: b[: len(b) // 3])),
                           "bad_input", "read_raw"),
        "corrupt FITS": (bad_event(raw_path=_bytes_variant(root, "corrupt", _corrupt)), "bad_input", "read_raw"),
        "another instrument's FITS": (variant_event("hsc", set_primary(INSTRUME="HSC")), "bad_input", "read_raw"),
        "missing CCD": (variant_event("ccd5", lambda hdul: None, detectors=(5,)), "bad_input", "read_raw"),
        "NaN image": (variant_event("nan", nan_image), "bad_input", "read_raw"),
        "absurd header value": (variant_event("absurd", set_primary(EXPTIME="fast")), "bad_input", "read_raw"),
        "exposure time zero": (variant_event("exptime0", set_primary(EXPTIME=0.0)), *header),
        "exposure time negative": (variant_event("exptime-", set_primary(EXPTIME=-30.0)), *header),
        "observed in 1970": (variant_event("epoch", set_primary(**{"MJD-OBS": 40587.0,
                                                                     "DATE-OBS": "1970-01-01T00:00:00"})), *header),
        "DATE-OBS contradicts MJD-OBS": (variant_event("dateobs", set_primary(**{"DATE-OBS": "2019-04-02T05:06:18"})),
                                         *header),
        "a bias, not a science exposure": (variant_event("bias", set_primary(OBSTYPE="zero")), *header),
        "EXPNUM not the event's": (variant_event("expnum", lambda hdul: None, renumber=False), *header),
        "event an hour off the header": (variant_event("hour", lambda hdul: None,
                                                        midpoint_mjd_tai=good.midpoint_mjd_tai + 1 / 24,
                                                        shutter_close_mjd_tai=good.shutter_close_mjd_tai + 1 / 24),
                                         *header),
        "DATASEC beyond the array": (variant_event("datasec", set_extension(DATASECA="[1081:2204,51:4146]")),
                                     *header),
        "missing calibration": (variant_event("zband", set_primary(FILTER="z DECam SDSS c0004 9260.0 1520.0"),
                                              band="z"), "bad_input", "load_calibrations"),
        "missing template": (variant_event("gband", set_primary(FILTER="g DECam SDSS c0001 4720.0 1520.0"),
                                           band="g"), None, "load_template"),
    }
    kafka = unique_kafka_settings(kafka_bootstrap, "bad")
    create_topics(kafka)
    producer = KafkaPublisher(kafka)
    expected = {}
    for name, (what, reason, stage) in cases.items():
        if isinstance(what, bytes):
            value, exposure_id = what, None
        else:
            value, exposure_id = encode_event(what), what.exposure_id
        producer.produce(kafka.events_topic, value, name, None)
        expected[name] = (exposure_id, reason, stage)
    producer.wait("bad events")
    publish_event(kafka, good)  # last: the bad ones must not block it

    apdb = SqliteApdb(root / "apdb.sqlite")
    apdb.init_schema()
    try:
        results = run_service(BlinkSettings(data_root=root), apdb, kafka, idle_timeout_s=15.0,
                              worker_id="bad-w0")
        dia_sources = apdb.dump_tables()["DiaSource"]
    finally:
        apdb.close()
    ok = [r for r in results if r.error is None]
    assert {r.detector for r in ok} == set(good.detectors or (28, 35)) and all(r.visit == good.exposure_id for r in ok)
    assert len(dia_sources) > 0

    letters = [decode_dead_letter(m.value()) for m in read_topic(kafka_bootstrap, kafka.dead_letter_topic)]
    by_payload = {}
    for rec in letters:
        assert rec["message"] and rec["stage"] and rec["reason"], rec
        by_payload.setdefault(rec["exposureId"], []).append(rec)
    for name, (exposure_id, reason, stage) in expected.items():
        if exposure_id is None:  # undecodable: matched by payload
            recs = [r for r in letters if r["payload"] == cases[name][0]]
        else:
            recs = [r for r in letters if r["exposureId"] == exposure_id or (
                r["exposureId"] is None and r["payload"] == encode_event(cases[name][0]))]
        assert len(recs) == 1, f"{name}: {len(recs)} dead letters"
        rec = recs[0]
        assert rec["stage"] == stage, f"{name}: stage {rec['stage']!r} ({rec['message']})"
        if reason is not None:
            assert rec["reason"] == reason, f"{name}: reason {rec['reason']!r} ({rec['message']})"
        assert rec["sourceTopic"] == kafka.events_topic or rec["sourceTopic"] == kafka.work_topic
    assert len(letters) == len(cases)

    schema = AlertSchema.latest()
    alerts = [schema.deserialize(m.value()) for m in read_topic(kafka_bootstrap, kafka.alerts_topic)]
    assert sorted(a["diaSourceId"] for a in alerts) == sorted(np.asarray(dia_sources["diaSourceId"]).tolist())
    assert {a["diaSource"]["visit"] for a in alerts} == {good.exposure_id}
