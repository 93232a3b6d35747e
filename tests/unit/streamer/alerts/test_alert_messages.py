"""Every alert message carries Rubin's ``producer_timestamp`` header (ms since the Unix epoch) beside Blink's."""

from __future__ import annotations

import time

from streamer.alerts.framing import HEADER_PRODUCER_TIMESTAMP, HEADER_SCHEMA_ID, alert_headers, headers_dict
from streamer.alerts.schema import AlertSchema, sample_alert
from streamer.kafka.producer import alert_messages


def test_alert_messages_carry_a_producer_timestamp_in_milliseconds():
    schema = AlertSchema.latest()
    alerts = [sample_alert(dia_source_id=1, n_prv_dia_sources=1, cutout_nbytes=10),
              sample_alert(dia_source_id=2, n_prv_dia_sources=1, cutout_nbytes=10)]
    given = alert_headers(shutter_close_mjd_tai=60000.0, replay=False, schema_id=schema.schema_id)
    before = time.time_ns() // 1_000_000
    messages = alert_messages("alerts", schema, alerts, [*given, (HEADER_PRODUCER_TIMESTAMP, b"0")])
    after = time.time_ns() // 1_000_000
    for message in messages:
        names = [name for name, _ in message.headers]
        assert names.count(HEADER_PRODUCER_TIMESTAMP) == 1  # a stale one given in is replaced
        headers = headers_dict(message.headers)
        assert before <= int(headers[HEADER_PRODUCER_TIMESTAMP]) <= after
        assert headers[HEADER_SCHEMA_ID] == str(schema.schema_id).encode()
