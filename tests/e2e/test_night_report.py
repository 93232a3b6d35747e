"""``blink report --night`` on a tiny simulated night (one CCD, one epoch), read back from the APDB and the
alert files, and opened in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``;
tests/run.sh installs them)."""

from __future__ import annotations

import shutil

import fastavro
import numpy as np
import pytest

from streamer.apdb import open_apdb
from streamer.cli import main
from streamer.settings import load_settings
from tests.helpers.servers import require_servers

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
BROWSER_MISSING = CHROMIUM is None or CHROMEDRIVER is None


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory):
    """``blink run --simulate --ccds 35 --epochs 1``: the night simulated and processed (about 2 min)."""
    root = tmp_path_factory.mktemp("night_report")
    assert main(["run", "--simulate", "--ccds", "35", "--epochs", "1", "--root", str(root)]) == 0
    return root


def test_night_facts_match_the_apdb_and_the_alerts(simulated_run):
    from streamer.report.html import alert_latencies
    from streamer.report.night import gather_night

    facts = gather_night(load_settings(None, blink={"data_root": simulated_run}))
    apdb = open_apdb(f"sqlite:///{simulated_run / 'out' / 'apdb.sqlite'}")
    tables = apdb.dump_tables()
    apdb.close()
    alerts = [a for path in sorted((simulated_run / "out" / "alerts").glob("*.avro"))
              for a in fastavro.reader(path.open("rb"))]
    visits = tables["ApdbVisitDetector"]
    assert len(facts.timings) == len(visits) == 1
    assert int(facts.timings["n_alerts"].sum()) == len(alerts) > 0
    assert len(facts.dia_sources) == len(tables["DiaSource"])
    stages = {c for c in facts.timings.colnames if c.startswith("stage_")}
    assert {"stage_isr_s", "stage_calibrate_s", "stage_subtract_s", "stage_detect_s"} <= stages
    # The simulated shutter closed years ago: latency is counted from the worker's start of the exposure,
    # never more than the CCD's own wall time.
    latency, basis = alert_latencies(facts.timings)
    assert basis.startswith("replay") and 0 < latency[0] <= float(facts.timings["total_s"][0]) + 1.0
    # The brightest new DiaObjects, brightest first, each with its alert's three cutouts.
    peaks = np.asarray(facts.new_objects["peakPsfFlux"], float)
    assert len(peaks) == min(6, len(tables["DiaObjectLast"])) and np.all(np.diff(peaks) <= 0)
    assert set(facts.cutouts) == set(np.asarray(facts.new_objects["diaObjectId"]).tolist())
    assert all(all(c for c in triplet) for triplet in facts.cutouts.values())
    assert facts.truth is not None and "Blink against the simulator's truth" in facts.truth.text
    assert facts.dead_letters == []


@pytest.mark.skipif(BROWSER_MISSING and not require_servers(),
                    reason="Debian's chromium and chromium-driver are not installed (tests/run.sh installs them)")
def test_night_report_page_in_headless_chromium(simulated_run, tmp_path):
    assert not BROWSER_MISSING, "chromium or chromedriver missing in CI (tests/run.sh installs them with apt-get)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    page = tmp_path / "night.html"
    assert main(["report", "--night", "--root", str(simulated_run), "--out", str(page)]) == 0
    html = page.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(page.as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        # latency, stages, sky map, a cutout triplet and a light curve per new DiaObject, the truth figure
        n_objects = html.count('<div class="object">')
        assert n_objects >= 1 and len(images) == 4 + 2 * n_objects
        assert all(complete and width > 0 and height > 0 for _, complete, width, height in images), images
        assert {"latency histogram", "stage timings", "sky map of the DiaSources", "truth report"} <= \
            {alt for alt, *_ in images}
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        text = driver.find_element("tag name", "body").text
        assert "CCDs processed" in text and "goal 60 s" in text and "Against the simulator's truth" in text
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(1200, min(height, 8000))
        shot = tmp_path / "night.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
