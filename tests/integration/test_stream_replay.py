"""``blink replay`` re-processes an exposure: the APDB ends identical and the replayed alerts carry the
``blink-replay: 1`` header. The alerts are read back with the published client ``lsst-alert-stream``, and
``blink status`` reports the group's lag."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.alerts.framing import HEADER_REPLAY
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.cli import main
from streamer.events.files import read_event_file
from streamer.kafka.admin import create_topics
from streamer.kafka.operator_tools import group_status
from streamer.kafka.producer import publish_event
from streamer.service import run_service
from streamer.settings import BlinkSettings
from tests.helpers.kafka_topics import read_with_alert_stream, unique_kafka_settings

pytestmark = pytest.mark.integration


def _tables_equal(a, b) -> None:
    assert set(a) == set(b)
    for name in a:
        ta, tb = a[name], b[name]
        assert len(ta) == len(tb), f"{name}: {len(ta)} rows before the replay, {len(tb)} after"
        for col in ta.colnames:
            va, vb = np.asarray(ta[col]), np.asarray(tb[col])
            if va.dtype.kind == "f":
                assert np.array_equal(va, vb, equal_nan=True), f"{name}.{col} changed"
            else:
                assert np.array_equal(va, vb), f"{name}.{col} changed"


@pytest.mark.timeout(300)
def test_replay_leaves_apdb_identical_and_marks_alerts(night_copy, kafka_bootstrap, monkeypatch, capsys):
    import lsst.alert.stream  # noqa: F401  (a test dependency: its consumer must be exercised, never skipped)
    kafka = unique_kafka_settings(kafka_bootstrap, "replay")
    for name in ("group_id", "events_topic", "work_topic", "alerts_topic", "dead_letter_topic"):
        monkeypatch.setenv(f"BLINK_KAFKA_{name.upper()}", str(getattr(kafka, name)))
    create_topics(kafka)
    first = read_event_file(sorted((night_copy / "events").glob("*.avro"))[0])
    publish_event(kafka, first)
    apdb = SqliteApdb(night_copy / "apdb.sqlite")
    apdb.init_schema()
    try:
        settings = BlinkSettings(data_root=night_copy)
        results = run_service(settings, apdb, kafka, idle_timeout_s=10.0, worker_id="replay-w0")
        assert results and all(r.error is None for r in results), [repr(r.error) for r in results]
        before = apdb.dump_tables()
        lo, hi = first.shutter_close_mjd_tai - 1e-4, first.shutter_close_mjd_tai + 1e-4
        assert main(["replay", "--kafka-bootstrap", kafka_bootstrap, "--from-mjd", str(lo), "--to-mjd", str(hi),
                     "--log-format", "json"]) == 0
        results = run_service(settings, apdb, kafka, idle_timeout_s=10.0, worker_id="replay-w0")
        assert results and all(r.error is None for r in results), [repr(r.error) for r in results]
        after = apdb.dump_tables()
    finally:
        apdb.close()
    _tables_equal(before, after)

    alerts = read_with_alert_stream(kafka_bootstrap, kafka.alerts_topic)
    originals = sorted(a["diaSourceId"] for a, h in alerts if h.get(HEADER_REPLAY) == b"0")
    replayed = sorted(a["diaSourceId"] for a, h in alerts if h.get(HEADER_REPLAY) == b"1")
    assert originals and replayed == originals
    first_time = {a["diaSourceId"]: a for a, h in alerts if h.get(HEADER_REPLAY) == b"0"}
    assert {a["diaSourceId"]: a for a, h in alerts if h.get(HEADER_REPLAY) == b"1"} == first_time  # cutouts too
    assert originals == sorted(np.asarray(after["DiaSource"]["diaSourceId"]).tolist())

    # Nothing left to do: no lag on either topic (transaction markers are not counted as work), and
    # `blink status` prints the table.
    rows = group_status(kafka, sample_s=0.0)
    assert {r.topic for r in rows} == {kafka.events_topic, kafka.work_topic}
    assert all(r.lag == 0 for r in rows), [(r.topic, r.partition, r.committed, r.high, r.lag) for r in rows]
    assert any(r.high > r.committed >= 0 for r in rows if r.topic == kafka.work_topic), "no marker to skip?"
    assert sum(r.committed for r in rows if r.topic == kafka.events_topic) == 2
    capsys.readouterr()
    assert main(["status", "--kafka-bootstrap", kafka_bootstrap, "--sample-s", "0.2"]) == 0
    out = capsys.readouterr().out
    assert kafka.events_topic in out and "lag" in out
