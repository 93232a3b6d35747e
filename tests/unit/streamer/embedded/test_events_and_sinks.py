"""Tests of streamer.embedded (event source, sinks), the dead letters, the error policy and the ports."""

from __future__ import annotations

import fastavro
import pytest

from pipeline.errors import AlgorithmError, InputError, NoWorkError, TransientError
from streamer.alerts.framing import alert_headers
from streamer.alerts.schema import AlertSchema, sample_alert
from streamer.embedded.events import LocalEventSource
from streamer.embedded.sinks import LocalAlertSink, LocalDeadLetterSink, alert_file_name, read_dead_letters
from streamer.errors import FencedError
from streamer.events.dead_letters import dead_letter_record, decode_dead_letter, encode_dead_letter
from streamer.events.files import write_event_file
from streamer.events.records import decode_event
from streamer.ports import AlertSink, DeadLetterSink, Envelope, EventSource
from streamer.worker.error_policy import ErrorPolicy
from tests.helpers.events import make_event


def test_adapters_satisfy_ports(tmp_path):
    assert isinstance(LocalEventSource(tmp_path), EventSource)
    assert isinstance(LocalAlertSink(tmp_path / "a"), AlertSink)
    assert isinstance(LocalDeadLetterSink(tmp_path / "d"), DeadLetterSink)


def test_event_source_order_commit_and_restart(tmp_path):
    for i in (3, 1, 2):
        write_event_file(tmp_path / f"{i:04d}.avro", make_event(event_id=f"e{i}", exposure_id=i))
    (tmp_path / "notes.txt").write_text("ignored")
    src = LocalEventSource(tmp_path)
    envs = list(src)
    assert [decode_event(e.value).exposure_id for e in envs] == [1, 2, 3]
    assert src.poll() is None  # delivered ones are not delivered again in the same session
    src.commit(envs[0])
    src.commit(envs[0])  # idempotent
    src.close()
    # Restart: the committed file is skipped, the delivered-but-uncommitted ones come back.
    src2 = LocalEventSource(tmp_path)
    assert [e.path.name for e in src2] == ["0002.avro", "0003.avro"]
    assert (tmp_path / ".committed").read_text() == "0001.avro\n"
    # New files dropped later are picked up.
    write_event_file(tmp_path / "0004.avro", make_event(event_id="e4", exposure_id=4))
    assert src2.poll().path.name == "0004.avro"


def test_event_source_state_dir_and_corrupt_file(tmp_path):
    events = tmp_path / "events"
    events.mkdir()
    (events / "bad.avro").write_bytes(b"not avro at all")
    src = LocalEventSource(events, state_dir=tmp_path / "state")
    env = src.poll()
    assert env.where().endswith("bad.avro")
    with pytest.raises(InputError, match="decode|Avro|truncated"):
        decode_event(env.value)
    src.commit(env)
    assert (tmp_path / "state" / ".committed").exists()
    with pytest.raises(InputError, match="does not exist"):
        LocalEventSource(tmp_path / "missing")


def _alerts(visit: int, detector: int, n: int) -> list[dict]:
    return [
        sample_alert(dia_object_id=1000 + i, dia_source_id=5000 + i, visit=visit, detector=detector,
                     n_prv_dia_sources=2, cutout_nbytes=100)
        for i in range(n)
    ]


def test_alert_sink_files_deterministic_and_readable(tmp_path):
    sink = LocalAlertSink(tmp_path)
    alerts = _alerts(123, 4, 5) + _alerts(123, 7, 2)
    sink.publish(alerts, headers=alert_headers(shutter_close_mjd_tai=60000.0, replay=False, schema_id=1101))
    p4 = tmp_path / alert_file_name(123, 4)
    assert p4.name == "00000123_04.avro" and (tmp_path / "00000123_07.avro").exists()
    first = p4.read_bytes()
    # Re-processing (even with a later production time) produces the identical file.
    sink.publish(alerts[:5], headers=alert_headers(shutter_close_mjd_tai=60000.0, replay=False, schema_id=1101))
    assert p4.read_bytes() == first
    assert sink.n_published == 12
    with open(p4, "rb") as fo:
        reader = fastavro.reader(fo)
        records = list(reader)
        assert reader.metadata["blink.schema_id"] == "1101" and reader.metadata["blink.replay"] == "0"
    assert [r["diaObject"]["diaObjectId"] for r in records] == [1000, 1001, 1002, 1003, 1004]
    assert not list(tmp_path.glob(".*tmp*"))


def test_alert_sink_bad_alert_leaves_no_file(tmp_path):
    sink = LocalAlertSink(tmp_path)
    with pytest.raises(InputError, match="visit/detector"):
        sink.publish([{"diaSource": {}}])
    bad = _alerts(1, 1, 1)[0] | {"diaSourceId": "x"}
    with pytest.raises(InputError, match="cannot write alerts"):
        sink.publish([bad])
    assert list(tmp_path.iterdir()) == []
    sink.publish([])  # nothing to do
    sink.flush()
    sink.close()


def test_dead_letter_record_and_codec():
    env = Envelope(value=b"\x01garbage", topic="blink.ccd-work", partition=3, offset=17)
    rec = dead_letter_record(InputError("bad bytes", stage="decode_event"), env, failed_at_mjd_tai=60000.0)
    assert rec["reason"] == "malformed_event" and rec["stage"] == "decode_event"
    assert rec["sourceTopic"] == "blink.ccd-work" and rec["sourcePartition"] == 3 and rec["sourceOffset"] == 17
    assert decode_dead_letter(encode_dead_letter(rec)) == rec
    assert dead_letter_record(AlgorithmError("diverged", stage="calibrate"), env)["reason"] == "algorithm_failed"
    assert dead_letter_record(InputError("nan", stage="isr"), env)["reason"] == "bad_input"
    assert dead_letter_record(RuntimeError("boom"), env)["reason"] == "internal_error"
    with pytest.raises(InputError):
        decode_dead_letter(b"\xff")


def test_error_policy(tmp_path):
    sink = LocalDeadLetterSink(tmp_path)
    on_error = ErrorPolicy(sink, dead_letter_no_work=False)
    env = Envelope(value=b"payload", path=tmp_path / "x.avro")
    assert on_error(InputError("bad", stage="decode_event"), env, exposure_id=123, detector=4) is True
    assert on_error(NoWorkError("no template", stage="subtract"), env) is True  # not dead-lettered
    for not_handled in (TransientError("timeout", stage="kafka"), FencedError("fenced", stage="kafka"),
                        KeyboardInterrupt()):
        with pytest.raises(type(not_handled)):
            on_error(not_handled, env)
    letters = read_dead_letters(tmp_path)
    assert len(letters) == 1
    assert letters[0]["payload"] == b"payload" and letters[0]["exposureId"] == 123 and letters[0]["detector"] == 4
    assert letters[0]["sourceTopic"].endswith("x.avro")
    # Records read back are valid dead letters.
    assert decode_dead_letter(encode_dead_letter(letters[0]))["reason"] == "malformed_event"
    # The worker's policy (the default) dead-letters no work too, and a bug met on one CCD.
    on_error_all = ErrorPolicy(sink)
    assert on_error_all(NoWorkError("none"), env) is True
    assert on_error_all(RuntimeError("bug"), env) is True
    assert [r["reason"] for r in read_dead_letters(tmp_path)] == ["malformed_event", "no_work", "internal_error"]


def test_bad_dead_letter_record_is_input_error():
    rec = dead_letter_record(InputError("x"), Envelope(value=b"v")) | {"failedAtMjdTai": "noon"}
    with pytest.raises(InputError, match="bad dead-letter record"):
        encode_dead_letter(rec)


def test_local_source_port_calls(tmp_path):
    write_event_file(tmp_path / "0001.avro", make_event())
    src = LocalEventSource(tmp_path)
    env = src.poll()
    assert src.poll() is None and src.owns(env) and src.lag() == {} and not src.has_deferred
    src.keepalive()
    src.defer(env)  # handed back: delivered again
    assert src.poll().path == env.path


def test_alert_schema_shared():
    assert AlertSchema.latest() is AlertSchema.latest()
