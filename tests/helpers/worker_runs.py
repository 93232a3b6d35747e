"""Running ``blink run --forever`` workers against servers in a test: their environment, progress and end."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streamer.kafka.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[2]
KAFKA_OPTIONS = ("group_id", "events_topic", "work_topic", "alerts_topic", "dead_letter_topic", "work_partitions",
                 "alerts_partitions", "session_timeout_s")
"""The options of a test's private KafkaSettings (tests.helpers.kafka_topics) that its workers must share."""


def worker_env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """This process's environment without its ``BLINK_*`` variables, plus the test's Kafka options, every
    DiaSource distributed (``BLINK_MIN_RELIABILITY=0``: the stream tests check one alert per DiaSource) and
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLINK_")} | {"BLINK_MIN_RELIABILITY": "0"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({f"BLINK_KAFKA_{name.upper()}": str(getattr(kafka, name)) for name in KAFKA_OPTIONS})
    return env | extra


def work_done(kafka: KafkaSettings) -> int:
    """Work items whose offsets the group has committed (all work partitions); -1 while the brokers do not answer."""
    consumer = Consumer(kafka.consumer_config(**{"socket.timeout.ms": 3000}))
    try:
        tps = consumer.committed([TopicPartition(kafka.work_topic, p) for p in range(kafka.work_partitions)],
                                 timeout=5)
        return sum(max(tp.offset, 0) for tp in tps)
    except Exception:  # noqa: BLE001 - broker restarting
        return -1
    finally:
        consumer.close()


def log_count(log_path: Path, text: str) -> int:
    """How often ``text`` occurs in the workers' log."""
    return log_path.read_text(errors="replace").count(text) if log_path.exists() else 0


def wait_for(cond, timeout_s: float, what: str, proc: subprocess.Popen, log_path: Path) -> None:
    """Poll ``cond`` every 0.5 s; fail the test (with the log's tail) on timeout or if the workers exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"workers exited ({proc.returncode}) while waiting for {what}:\n"
                        f"{log_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text(errors='replace')[-4000:]}")


def end_workers(proc: subprocess.Popen | None) -> None:
    """SIGTERM the workers' parent if it still runs; SIGKILL its process group after 30 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
