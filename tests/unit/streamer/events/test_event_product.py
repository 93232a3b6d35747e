"""The exposure-ready event's ``product`` (raw | instcal): its default, round trips, checks, and messages and
files written before the field existed."""

from __future__ import annotations

import io

import fastavro
import pytest

from pipeline.errors import InputError
from streamer.events.files import read_event_file, write_event_file
from streamer.events.records import (
    INSTCAL_PRODUCT,
    RAW_PRODUCT,
    CcdWork,
    decode_event,
    decode_work,
    encode_event,
    encode_work,
    event_from_record,
    event_to_record,
    exposure_ready_schema,
)
from tests.helpers.events import make_event

INSTCAL_PATH = "instcal/c4d_240101_000000_ooi_r_v1.fits.fz"


def _first_version(schema: dict) -> dict:
    """The exposureReady schema as it was before ``product``."""
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] != "product"]}


def test_default_is_raw():
    assert make_event().product == RAW_PRODUCT
    rec = event_to_record(make_event())
    assert rec["product"] == "raw"
    del rec["product"]
    assert event_from_record(rec).product == RAW_PRODUCT
    (field,) = [f for f in exposure_ready_schema()["fields"] if f["name"] == "product"]
    assert field["default"] == "raw" and field["type"]["symbols"] == ["raw", "instcal"]


def test_instcal_round_trips_on_the_wire_and_in_files(tmp_path):
    ev = make_event(product=INSTCAL_PRODUCT, raw_path=INSTCAL_PATH)
    assert decode_event(encode_event(ev)) == ev
    work = CcdWork(exposure=ev, detector=5)
    assert decode_work(encode_work(work)) == work
    path = write_event_file(tmp_path / "e.avro", ev, sync_marker=b"0123456789abcdef")
    assert read_event_file(path) == ev
    assert write_event_file(tmp_path / "f.avro", ev, sync_marker=b"0123456789abcdef").read_bytes() == \
        path.read_bytes()


@pytest.mark.parametrize(("changes", "match"), [
    ({"product": "calexp"}, "calexp"),
    ({"product": INSTCAL_PRODUCT}, "not a CP image name"),   # the weight and mask are found by the CP's names
    ({"product": INSTCAL_PRODUCT, "raw_path": "instcal/c4d_240101_000000_oow_r_v1.fits.fz"}, "not a CP image"),
])
def test_bad_products_are_input_errors(changes, match):
    with pytest.raises(InputError, match=match) as info:
        decode_event(encode_event(make_event(**changes)))
    assert info.value.stage in ("decode_event", "encode_event")
    rec = event_to_record(make_event())
    rec.update({"product": changes["product"], "rawPath": changes.get("raw_path", rec["rawPath"])})
    with pytest.raises(InputError, match=match):
        event_from_record(rec)


@pytest.mark.parametrize("detector", [1, 2, 62])
def test_messages_written_before_the_field_read_as_raws(detector):
    """Schemaless messages of the first schema version (no ``product``) decode as raws, events and work items
    alike (a work item's detector follows the event: whatever byte it is, the message reads whole only as the
    first version)."""
    ev = make_event(detectors=None)
    old = _first_version(exposure_ready_schema())
    record = {k: v for k, v in event_to_record(ev).items() if k != "product"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), record)
    assert decode_event(buf.getvalue()) == ev
    work_schema = {"type": "record", "name": "ccdWork", "namespace": "blink.v1",
                   "fields": [{"name": "exposure", "type": old}, {"name": "detector", "type": "int"}]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(work_schema), {"exposure": record, "detector": detector})
    assert decode_work(buf.getvalue()) == CcdWork(exposure=ev, detector=detector)


def test_event_files_written_before_the_field_read_as_raws(tmp_path):
    ev = make_event()
    record = {k: v for k, v in event_to_record(ev).items() if k != "product"}
    path = tmp_path / "old.avro"
    with open(path, "wb") as fo:
        fastavro.writer(fo, fastavro.parse_schema(_first_version(exposure_ready_schema())), [record])
    assert read_event_file(path) == ev
