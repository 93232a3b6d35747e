"""Walking skeleton on the embedded default: local events in, SQLite APDB and Avro alert files out."""

from __future__ import annotations

import shutil

import fastavro
import numpy as np

from pipeline.reliability import DEFAULT_MIN_RELIABILITY
from streamer.apdb import open_apdb
from streamer.apdb.table_rows import tables_equal
from streamer.cli import main
from tests.helpers.truth_checks import check_against_truth, check_alerts


def _read_alerts(folder) -> tuple[list[dict], dict[str, bytes]]:
    alerts, raw = [], {}
    for path in sorted(folder.glob("*.avro")):
        raw[path.name] = path.read_bytes()
        with open(path, "rb") as fo:
            alerts.extend(fastavro.reader(fo))
    return alerts, raw


def test_embedded_run_matches_truth_and_reruns_identically(night_copy):
    out = night_copy / "out"
    assert main(["run", "--root", str(night_copy), "--strict"]) == 0
    apdb = open_apdb(f"sqlite:///{out / 'apdb.sqlite'}")
    first = apdb.dump_tables()
    apdb.close()
    dia_sources = first["DiaSource"]
    check_against_truth(night_copy, dia_sources)
    alerts, alert_bytes = _read_alerts(out / "alerts")
    check_alerts(alerts, dia_sources)
    # Every new DiaSource belongs to a DiaObject stored in DiaObjectLast.
    assert set(np.asarray(dia_sources["diaObjectId"]).tolist()) <= set(
        np.asarray(first["DiaObjectLast"]["diaObjectId"]).tolist())

    # Re-processing the whole night (a replay) leaves the APDB and the alert files identical.
    (out / ".committed").unlink()
    shutil.rmtree(out / "alerts")
    assert main(["run", "--root", str(night_copy), "--strict"]) == 0
    apdb = open_apdb(f"sqlite:///{out / 'apdb.sqlite'}")
    second = apdb.dump_tables()
    apdb.close()
    for name in ("DiaObject", "DiaObjectLast", "DiaSource", "DiaForcedSource"):
        assert tables_equal(first[name], second[name]), f"{name} changed on replay"
    _, replay_bytes = _read_alerts(out / "alerts")
    assert replay_bytes == alert_bytes


def test_truth_report_table_and_figure(night_copy, capsys):
    """``blink report`` prints the per-exposure table (before and above the reliability cut) and writes the
    figure; the figure's inputs agree with the table."""
    from streamer.report.plots import detection_flags
    from streamer.report.truth import load_truth, print_truth_report
    from streamer.settings import BlinkSettings, CassandraSettings

    assert main(["run", "--root", str(night_copy), "--strict"]) == 0
    capsys.readouterr()
    assert main(["report", "--root", str(night_copy)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f'"above cut": DiaSources with reliability >= {DEFAULT_MIN_RELIABILITY}' in printed
    assert "truth_report.png" in printed
    png = night_copy / "out" / "truth_report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    per_exposure, matches = print_truth_report(BlinkSettings(data_root=night_copy), CassandraSettings(),
                                               plot_path=night_copy / "again.png")
    _, fluxes = load_truth(night_copy)
    processed = {(int(e), int(c)) for e, c in zip(fluxes["expnum"], fluxes["ccdnum"])}
    snr, found = detection_flags(fluxes, matches, processed)
    detectable = snr >= 5.0
    assert int(found[detectable].sum()) == int(np.sum(per_exposure["n_found"]))
    assert int(detectable.sum()) == int(np.sum(per_exposure["n_injected"]))
