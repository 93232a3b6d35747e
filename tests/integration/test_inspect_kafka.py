"""``blink alerts show TOPIC``: alerts read back from a real Kafka topic, decoded, summarised and drawn."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from streamer.cli import main
from streamer.inspect.alert_view import read_alert_topic
from streamer.kafka.admin import create_topics
from streamer.kafka.producer import KafkaAlertSink
from tests.helpers.inspect_alerts import alerts_with_cutouts
from tests.helpers.kafka_topics import unique_kafka_settings

pytestmark = pytest.mark.integration


def test_alerts_of_a_topic_are_decoded_and_drawn(kafka_bootstrap, tmp_path, capsys):
    settings = unique_kafka_settings(kafka_bootstrap, "inspect")
    create_topics(settings)
    alerts = alerts_with_cutouts(first_id=900) + alerts_with_cutouts(first_id=1900, visit=8)
    sink = KafkaAlertSink(settings)
    sink.publish(alerts)
    sink.close()
    read = read_alert_topic(settings, settings.alerts_topic)
    assert sorted(a["diaSourceId"] for a in read) == sorted(a["diaSourceId"] for a in alerts)
    by_id = {a["diaSourceId"]: a for a in alerts}
    for a in read:  # every field, the cutout bytes included, as published
        assert a["cutoutDifference"] == by_id[a["diaSourceId"]]["cutoutDifference"]
        assert a["diaSource"]["visit"] == by_id[a["diaSourceId"]]["diaSource"]["visit"]
    assert len(read_alert_topic(settings, settings.alerts_topic, max_alerts=2)) == 2
    out = tmp_path / "png"
    assert main(["alerts", "show", settings.alerts_topic, "--kafka-bootstrap", kafka_bootstrap, "--max", "4",
                 "--png-dir", str(out)]) == 0
    assert f"topic {settings.alerts_topic}: 4 alert(s)" in " ".join(capsys.readouterr().out.split())
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4 and all(plt.imread(p).ndim == 3 for p in pngs)
    assert {int(p.stem) for p in pngs} <= set(by_id)
