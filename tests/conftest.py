"""Shared fixtures: a small simulated night (made once per session) and the real servers' addresses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from simulator import SimConfig
from streamer.runtime.malloc_tuning import keep_freed_memory
from streamer.simulated import simulated_repository
from tests.helpers.night_files import SKELETON_CCDS, link_fits
from tests.helpers.servers import unavailable

DISTRIBUTE_EVERY_DIA_SOURCE = {"BLINK_MIN_RELIABILITY": "0"}
"""The suite's runs distribute every DiaSource (their checks are one alert per DiaSource); the default threshold
(pipeline.reliability.DEFAULT_MIN_RELIABILITY) is checked where it applies: the settings' unit test, the alert
builder's, and the installed wheel's run in a fresh environment (tests/e2e/test_wheel_install.py)."""


def pytest_configure(config) -> None:
    """Tune glibc malloc as the worker does (streamer.runtime.malloc_tuning): CCD-sized arrays are reused, not
    zero-filled again for every one. Runs in this process distribute every DiaSource
    (:data:`DISTRIBUTE_EVERY_DIA_SOURCE`)."""
    keep_freed_memory()
    for name, value in DISTRIBUTE_EVERY_DIA_SOURCE.items():
        os.environ.setdefault(name, value)


@pytest.fixture(scope="session")
def small_night(tmp_path_factory) -> Path:
    """Two epochs of two CCDs of one field, small mode (about 20 s to make)."""
    root = tmp_path_factory.mktemp("night")
    simulated_repository(root, SimConfig(seed=7, n_epochs=2, ccds=SKELETON_CCDS, small=True))
    return root


@pytest.fixture
def night_copy(small_night, tmp_path) -> Path:
    """A private copy of the small night's inputs (outputs start empty).

    FITS files are hard links (no test edits an input in place; new files in the copy stay private), so each
    copy costs no disk: a full run would otherwise write about 1.6 GB per test that uses one.
    """
    root = tmp_path / "night"
    shutil.copytree(small_night, root, ignore=shutil.ignore_patterns("out"), copy_function=link_fits)
    return root


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of the Kafka broker started by ops/ (checked with a real request)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    bootstrap = os.environ.get("BLINK_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    try:
        AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000}).list_topics(timeout=5)
    except KafkaException as err:
        unavailable(f"Kafka not reachable at {bootstrap} (ops/up.sh starts it): {err}")
    return bootstrap


@pytest.fixture(scope="session")
def cassandra_hosts() -> tuple[str, int]:
    """Contact point of the Cassandra server started by ops/ (checked with a real query)."""
    from cassandra.cluster import Cluster

    hosts = os.environ.get("BLINK_CASSANDRA_HOSTS", "127.0.0.1")
    port = int(os.environ.get("BLINK_CASSANDRA_PORT", "9042"))
    try:
        cluster = Cluster(hosts.split(","), port=port, connect_timeout=5)
        cluster.connect().execute("SELECT release_version FROM system.local")
        cluster.shutdown()
    except Exception as err:  # the driver raises several types when nothing listens
        unavailable(f"Cassandra not reachable at {hosts}:{port} (ops/up.sh starts it): {err}")
    return hosts, port
