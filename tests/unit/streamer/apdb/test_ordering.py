"""Overlapping exposures processed by two concurrent consumers: one DiaObject per transient, replay identical.

Each "exposure" is a dithered CCD footprint over the same sky; its DiaSources are the injected transients
inside it. Consumers (threads) take work from one time-ordered queue, as they would from Kafka partitions, and
run read_region -> associate -> store, with the work claims of :mod:`streamer.apdb.ordering` around it.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
from astropy.table import Table

from streamer.apdb.base import SkyRegion
from streamer.apdb.ordering import SqliteWorkClaims, claim_cells
from streamer.apdb.sky import angular_distance_deg
from streamer.apdb.sqlite_store import SqliteApdb
from streamer.apdb.table_rows import tables_equal
from tests.helpers.apdb_contract import VISIT_MJD
from tests.helpers.ordering_night import DEC0, N_TRANSIENTS, RA0, RADIUS, associate_and_store, transient_positions

N_EXPOSURES = 12


def _exposures(seed: int = 4) -> list[tuple[str, int, SkyRegion, float]]:
    """(work_id, visit, region, mjd) in time order; dithers of 0.1 deg, so every pair overlaps."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(N_EXPOSURES):
        dra, ddec = rng.uniform(-0.1, 0.1, 2)
        out.append((f"v{k}-c1", 1000 + k, SkyRegion(RA0 + dra, DEC0 + ddec, RADIUS), VISIT_MJD + 0.01 * k))
    return out


def _run(path: str, *, n_consumers: int = 2, use_claims: bool = True) -> dict[str, Table]:
    truth = transient_positions()
    work = _exposures()
    setup = SqliteApdb(path)
    setup.init_schema()
    claims = SqliteWorkClaims(path, poll_s=0.01)
    q: queue.Queue = queue.Queue()
    for item in work:  # the fan-out registers claims in time order, then publishes
        if use_claims:
            claims.register(item[0], item[2], item[3])
        q.put(item)
    errors: list[BaseException] = []

    def consumer() -> None:
        apdb = SqliteApdb(path)
        try:
            while True:
                try:
                    work_id, visit, region, mjd = q.get_nowait()
                except queue.Empty:
                    return
                if use_claims:
                    claims.wait_turn(work_id, region, mjd, timeout_s=60)
                associate_and_store(apdb, visit, region, mjd, truth)
                if use_claims:
                    claims.done(work_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            apdb.close()

    threads = [threading.Thread(target=consumer) for _ in range(n_consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    dump = setup.dump_tables()
    setup.close()
    claims.close()
    return dump


def test_two_consumers_one_object_per_transient(tmp_path):
    dump = _run(str(tmp_path / "a.sqlite"))
    ra, dec = transient_positions()
    covered = np.zeros(N_TRANSIENTS, bool)
    for _, _, region, _ in _exposures():
        covered |= angular_distance_deg(ra, dec, region.ra_deg, region.dec_deg) <= region.radius_deg
    last = dump["DiaObjectLast"]
    assert len(last) == covered.sum()
    # every object's id is the diaSourceId of its first (earliest) detection
    src = dump["DiaSource"]
    for oid in last["diaObjectId"]:
        mine = src[src["diaObjectId"] == oid]
        assert mine["diaSourceId"][np.argmin(mine["midpointMjdTai"])] == oid


def test_concurrent_run_equals_serial_run_and_replay(tmp_path):
    """Two consumers give the tables of one consumer; replaying everything changes nothing."""
    par = _run(str(tmp_path / "par.sqlite"), n_consumers=2)
    ser = _run(str(tmp_path / "ser.sqlite"), n_consumers=1)
    again = _run(str(tmp_path / "par.sqlite"), n_consumers=2)  # replay the whole night on the same APDB
    for name in ("DiaObject", "DiaObjectLast", "DiaSource", "ApdbVisitDetector"):
        assert tables_equal(par[name], ser[name]), name
        assert tables_equal(par[name], again[name]), name


def test_claims_order_and_release(tmp_path):
    claims = SqliteWorkClaims(str(tmp_path / "c.sqlite"), poll_s=0.01)
    a, b = SkyRegion(10.0, 0.0, 0.2), SkyRegion(10.1, 0.0, 0.2)
    far = SkyRegion(100.0, 40.0, 0.2)
    claims.register("early", a, 1.0)
    claims.register("late", b, 2.0)
    claims.register("far", far, 3.0)
    claims.wait_turn("far", far, 3.0, timeout_s=1)  # disjoint sky: no wait
    claims.wait_turn("early", a, 1.0, timeout_s=1)
    from pipeline.errors import TransientError

    with pytest.raises(TransientError, match="earlier overlapping work"):
        claims.wait_turn("late", b, 2.0, timeout_s=0.1)
    claims.done("early")
    claims.wait_turn("late", b, 2.0, timeout_s=1)
    assert claim_cells(a) == claim_cells(SkyRegion(10.0, 0.0, 0.2))
    claims.close()
