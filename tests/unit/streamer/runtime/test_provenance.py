"""Provenance of a run (streamer.runtime.provenance): built from the effective settings, recorded by
``blink run`` in the embedded output folder and in the APDB metadata."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

from streamer.cli import main
from streamer.runtime.provenance import (
    PROVENANCE_FILE,
    RECORDED_PACKAGES,
    build_provenance,
    provenance_key,
    provenance_text,
)
from streamer.settings import load_settings


@pytest.fixture(autouse=True)
def _no_blink_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("BLINK_"):
            monkeypatch.delenv(name)


def test_record_holds_configuration_and_versions():
    record = build_provenance(load_settings(cassandra={"password": "hunter2"}).effective())
    assert record["blink_version"] == "0.1.0"
    assert set(record["packages"]) == {"python", *RECORDED_PACKAGES}
    assert record["packages"]["numpy"] == __import__("numpy").__version__
    assert record["configuration"]["pipeline"]["subtract"]["stamp_half_size"] == 12
    text = provenance_text(record)
    assert "hunter2" not in text and "**********" in text
    assert yaml.safe_load(text) == record


def test_key_follows_the_content():
    a = provenance_text(build_provenance(load_settings().effective()))
    b = provenance_text(build_provenance(load_settings(blink={"pipeline_threads": 2}).effective()))
    assert provenance_key(a) == provenance_key(a) and provenance_key(a) != provenance_key(b)
    assert provenance_key(a).startswith("provenance:")


def test_blink_run_records_provenance(tmp_path, monkeypatch):
    root = tmp_path / "night"
    (root / "events").mkdir(parents=True)  # an empty night: the worker goes idle at once
    monkeypatch.setenv("BLINK_PIPELINE__DETECT__THRESHOLD_SIGMA", "5.5")
    assert main(["run", "--root", str(root)]) == 0
    text = (root / "out" / PROVENANCE_FILE).read_text()
    record = yaml.safe_load(text)
    assert record["configuration"]["pipeline"]["detect"]["threshold_sigma"] == 5.5
    assert record["configuration"]["blink"]["data_root"] == str(root)
    with sqlite3.connect(root / "out" / "apdb.sqlite") as conn:
        stored = dict(conn.execute('SELECT "name", "value" FROM "ApdbMetadata"').fetchall())
    assert stored[provenance_key(text)] == text
    # A second run with the same settings and software adds no entry.
    assert main(["run", "--root", str(root)]) == 0
    with sqlite3.connect(root / "out" / "apdb.sqlite") as conn:
        again = dict(conn.execute('SELECT "name", "value" FROM "ApdbMetadata"').fetchall())
    assert again == stored
