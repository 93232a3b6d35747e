"""Service settings (streamer.settings): the pipeline section, precedence, strictness, ``blink config show``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.ccd import PipelineConfig
from pipeline.reliability import DEFAULT_MIN_RELIABILITY
from streamer.cli import main
from streamer.settings import BlinkSettings, CassandraSettings, InvalidSettings, load_settings


@pytest.fixture(autouse=True)
def _no_blink_environment(monkeypatch):
    """Each test starts without BLINK_* variables of the machine it runs on."""
    import os

    for name in list(os.environ):
        if name.startswith("BLINK_"):
            monkeypatch.delenv(name)


def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_yaml_pipeline_section_sets_a_stage_option(tmp_path):
    config = _write(tmp_path / "blink.yaml", {"pipeline": {"subtract": {"stamp_half_size": 14},
                                                           "isr": {"do_cosmic_rays": False}}})
    pipeline = load_settings(config).pipeline
    assert pipeline.subtract.stamp_half_size == 14 and pipeline.isr.do_cosmic_rays is False
    assert pipeline.detect == PipelineConfig().detect  # the rest keeps its defaults


def test_distribution_threshold_default_and_environment(monkeypatch):
    """``min_reliability`` defaults to the threshold chosen for the shipped reliability model; BLINK_MIN_RELIABILITY
    sets it (0: every DiaSource distributed)."""
    assert load_settings().blink.min_reliability == DEFAULT_MIN_RELIABILITY > 0
    monkeypatch.setenv("BLINK_MIN_RELIABILITY", "0")
    assert load_settings().blink.min_reliability == 0.0


def test_environment_sets_a_stage_option(monkeypatch):
    monkeypatch.setenv("BLINK_PIPELINE__DETECT__THRESHOLD_SIGMA", "6.5")
    monkeypatch.setenv("BLINK_PIPELINE__CALIBRATE__ASTROMETRY__MAX_OFFSET_ARCSEC", "90")
    pipeline = load_settings().pipeline
    assert pipeline.detect.threshold_sigma == 6.5
    assert pipeline.calibrate.astrometry.max_offset_arcsec == 90.0


def test_flags_then_environment_then_file(tmp_path, monkeypatch):
    config = _write(tmp_path / "blink.yaml", {
        "blink": {"data_root": "from-file", "log_format": "json"},
        "cassandra": {"keyspace": "from_file"},
        "pipeline": {"subtract": {"stamp_half_size": 14, "max_stamps": 100}}})
    monkeypatch.setenv("BLINK_DATA_ROOT", "from-env")
    monkeypatch.setenv("BLINK_CASSANDRA_KEYSPACE", "from_env")
    monkeypatch.setenv("BLINK_PIPELINE__SUBTRACT__STAMP_HALF_SIZE", "16")
    settings = load_settings(config)
    assert settings.blink.data_root == Path("from-env") and settings.blink.log_format == "json"
    assert settings.cassandra.keyspace == "from_env"
    assert (settings.pipeline.subtract.stamp_half_size, settings.pipeline.subtract.max_stamps) == (16, 100)
    flagged = load_settings(config, blink={"data_root": "from-flag"}, cassandra={"keyspace": "from_flag"})
    assert flagged.blink.data_root == Path("from-flag") and flagged.cassandra.keyspace == "from_flag"


def test_unrelated_blink_variables_are_ignored(monkeypatch):
    for name, value in {"BLINK_WORKER_ID": "w1", "BLINK_CASSANDRA_HEAP": "1G", "BLINK_KAFKA_VERSION": "4.1.1",
                        "BLINK_SHARED_DIR": "/shared", "BLINK_CASSANDRA_JMX_PORT": "7199"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BLINK_KAFKA_BOOTSTRAP", "broker:9092")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "broker:9092"
    assert settings.blink == BlinkSettings() and settings.cassandra == CassandraSettings()


@pytest.mark.parametrize("content, path", [
    ({"pipeline": {"subtract": {"kernel_sizee": 3}}}, "pipeline.subtract.kernel_sizee"),
    ({"pipeline": {"detect": {"threshold_sigma": -1.0}}}, "pipeline.detect.threshold_sigma"),
    ({"pipeline": {"calibrate": {"astrometry": {"sip_degree": 40}}}}, "pipeline.calibrate.astrometry.sip_degree"),
    ({"blink": {"pipeline_threads": 0}}, "blink.pipeline_threads"),
    ({"blink": {"data_rot": "x"}}, "blink.data_rot"),
    ({"cassandra": {"port": 0}}, "cassandra.port"),
    ({"cassandra": {"consistency": "QUORUMM"}}, "cassandra.consistency"),
    ({"kafka": {"linger_ms": -5}}, "kafka.linger_ms"),
    ({"kafka": {"bootstrap": "x:1"}}, "kafka.bootstrap"),
    ({"pipline": {}}, "pipline"),
])
def test_misspelled_or_absurd_options_are_named(tmp_path, content, path):
    with pytest.raises(InvalidSettings, match=path.replace(".", r"\.")):
        load_settings(_write(tmp_path / "blink.yaml", content))


def test_misspelled_environment_option_is_named(monkeypatch):
    monkeypatch.setenv("BLINK_PIPELINE__SUBTRAC__STAMP_HALF_SIZE", "3")
    with pytest.raises(InvalidSettings, match=r"pipeline\.subtrac"):
        load_settings()


def test_configs_are_frozen():
    config = load_settings().pipeline
    with pytest.raises(Exception, match="frozen"):
        config.subtract.stamp_half_size = 3  # type: ignore[misc]


def test_blink_run_stops_on_a_misspelled_stage_option(tmp_path):
    config = _write(tmp_path / "blink.yaml", {"pipeline": {"subtract": {"kernel_sizee": 3}}})
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "streamer.cli", "run", "--config", str(config),
                           "--root", str(tmp_path / "night")], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "pipeline.subtract.kernel_sizee" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "night").exists()  # stopped before doing anything


def test_stage_option_reaches_the_worker(tmp_path, monkeypatch):
    """``blink run`` hands the configured PipelineConfig to the worker's CcdProcessor."""
    import streamer.service

    seen = {}

    class Stop(Exception):
        pass

    def processor(repo, apdb, alert_sink, *, config, threads, **_):
        seen["config"], seen["threads"] = config, threads
        raise Stop

    monkeypatch.setattr(streamer.service, "CcdProcessor", processor)
    monkeypatch.setenv("BLINK_PIPELINE__FORCED__MIN_DIA_SOURCES", "3")
    (tmp_path / "night" / "events").mkdir(parents=True)
    config = _write(tmp_path / "blink.yaml", {"pipeline": {"subtract": {"stamp_half_size": 14}}})
    with pytest.raises(Stop):
        main(["run", "--config", str(config), "--root", str(tmp_path / "night"), "--threads", "2"])
    assert seen["config"].subtract.stamp_half_size == 14 and seen["config"].forced.min_dia_sources == 3
    assert seen["threads"] == 2


def test_config_show_prints_every_section_with_secrets_masked(tmp_path, monkeypatch, capsys):
    config = _write(tmp_path / "blink.yaml", {"cassandra": {"username": "blink", "password": "hunter2"},
                                              "pipeline": {"template": {"min_coverage": 0.1}}})
    monkeypatch.setenv("BLINK_KAFKA_SASL_PASSWORD", "s3cret")
    assert main(["config", "show", "--config", str(config), "--root", str(tmp_path / "night")]) == 0
    text = capsys.readouterr().out
    assert "hunter2" not in text and "s3cret" not in text
    shown = yaml.safe_load(text)
    assert set(shown) == {"blink", "cassandra", "kafka", "pipeline"}
    assert shown["cassandra"]["password"] == "**********" and shown["kafka"]["sasl_password"] == "**********"
    assert shown["blink"]["data_root"] == str(tmp_path / "night")
    assert shown["pipeline"]["template"]["min_coverage"] == 0.1
    assert shown["pipeline"]["subtract"] == PipelineConfig().subtract.model_dump(mode="json")
    # What it prints is a settings file: read back, it gives the same settings (secrets aside).
    shown["cassandra"]["password"] = shown["kafka"]["sasl_password"] = None
    again = load_settings(_write(tmp_path / "shown.yaml", shown))
    assert again.pipeline == load_settings(config).pipeline


def test_replicated_kafka_settings_keep_single_node_defaults():
    from streamer.kafka.settings import KafkaSettings

    single = KafkaSettings()
    assert (single.replication_factor, single.min_insync_replicas) == (1, 1)
    assert single.producer_config()["acks"] == "all"
    cluster = KafkaSettings(replication_factor=3, min_insync_replicas=2)
    assert (cluster.replication_factor, cluster.min_insync_replicas) == (3, 2)
    with pytest.raises(ValueError, match="min_insync_replicas 3 exceeds replication_factor 2"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)


def test_apdb_url_query_stands_unless_a_setting_names_it(monkeypatch):
    import streamer.apdb.cassandra as cs
    from streamer.cli import _open_apdb

    class Store:
        def check_schema(self) -> None:
            pass

    captured: dict = {}
    monkeypatch.setattr(cs, "CassandraApdb", lambda **kw: captured.update(kw) or Store())
    url = "cassandra://h1,h2/ks?consistency=QUORUM&replication_factor=3"
    _open_apdb(BlinkSettings(apdb_url=url), CassandraSettings(), init=False)
    assert (captured["consistency"], captured["replication_factor"]) == ("QUORUM", 3)
    _open_apdb(BlinkSettings(apdb_url=url), CassandraSettings(consistency="ONE"), init=False)
    assert (captured["consistency"], captured["replication_factor"]) == ("ONE", 3)
    _open_apdb(BlinkSettings(apdb_url="cassandra://h1/ks"), CassandraSettings(), init=False)
    assert (captured["consistency"], captured["replication_factor"]) == ("LOCAL_QUORUM", 1)


def test_alert_topic_is_named_by_the_schema_major_version(monkeypatch):
    from streamer.apdb.columns import ALERT_SCHEMA_VERSION
    from streamer.kafka.settings import KafkaSettings

    major = ALERT_SCHEMA_VERSION.split(".")[0]
    assert KafkaSettings().alerts_topic == f"blink.alerts.v{major}"
    assert KafkaSettings(alerts_topic=f"night-alerts-v{major}").alerts_topic == f"night-alerts-v{major}"
    assert KafkaSettings(alerts_topic="replay.alerts").alerts_topic == "replay.alerts"  # no version: any name
    monkeypatch.setenv("BLINK_KAFKA_ALERTS_TOPIC", f"blink.alerts.v{int(major) - 1}")
    with pytest.raises(ValueError, match=f"schema major version {int(major) - 1}"):
        KafkaSettings()
