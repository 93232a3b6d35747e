"""Community Pipeline InstCal products end to end in the embedded mode: a small simulated night of CP products
(one CCD, two epochs, fpack) is processed from its exposure-ready events to the APDB and alerts, found where the
truth put the transients; an exposure whose mask file is missing becomes a dead letter and the others go on."""

from __future__ import annotations

import shutil

import fastavro
import numpy as np
import pytest

from simulator import SimConfig
from streamer.apdb import open_apdb
from streamer.cli import main
from streamer.decam.instcal_files import instcal_paths
from streamer.embedded.sinks import read_dead_letters
from streamer.events.files import read_event_file
from streamer.events.records import decode_event
from streamer.simulated import simulated_repository
from tests.helpers.night_files import link_fits
from tests.helpers.truth_checks import check_against_truth, check_alerts


@pytest.fixture(scope="module")
def instcal_small_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("instcal_night")
    simulated_repository(root, SimConfig(seed=7, n_epochs=2, ccds=[35], small=True, instcal=True, compress=True))
    return root


@pytest.fixture
def night(instcal_small_night, tmp_path):
    root = tmp_path / "night"
    shutil.copytree(instcal_small_night, root, ignore=shutil.ignore_patterns("out"), copy_function=link_fits)
    return root


def _alerts(folder) -> list[dict]:
    alerts = []
    for path in sorted(folder.glob("*.avro")):
        with open(path, "rb") as fo:
            alerts.extend(fastavro.reader(fo))
    return alerts


def test_instcal_night_goes_to_alerts(night):
    events = [read_event_file(p) for p in sorted((night / "events").glob("*.avro"))]
    assert len(events) == 2 and {e.product for e in events} == {"instcal"}
    assert not (night / "raw").exists()
    assert main(["run", "--root", str(night), "--strict"]) == 0
    apdb = open_apdb(f"sqlite:///{night / 'out' / 'apdb.sqlite'}")
    tables = apdb.dump_tables()
    apdb.close()
    dia_sources = tables["DiaSource"]
    assert set(np.asarray(dia_sources["visit"]).tolist()) == {e.exposure_id for e in events}
    check_against_truth(night, dia_sources)
    check_alerts(_alerts(night / "out" / "alerts"), dia_sources)
    assert len(tables["DiaForcedSource"]) > 0     # the second epoch measured the first's DiaObjects
    assert not read_dead_letters(night / "out" / "dead-letters")


def test_a_broken_instcal_exposure_is_a_dead_letter(night):
    first, second = (read_event_file(p) for p in sorted((night / "events").glob("*.avro")))
    _, _, ood = instcal_paths(night / second.raw_path)
    ood.unlink()
    assert main(["run", "--root", str(night)]) == 0
    (letter,) = read_dead_letters(night / "out" / "dead-letters")
    # refused by the exposure's check, before any CCD of it was claimed: the letter carries the event
    assert decode_event(letter["payload"]).exposure_id == second.exposure_id and letter["stage"] == "read_instcal"
    assert letter["reason"] == "bad_input" and "_ood_" in letter["message"]
    assert {a["diaSource"]["visit"] for a in _alerts(night / "out" / "alerts")} == {first.exposure_id}
