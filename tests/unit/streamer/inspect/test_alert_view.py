"""``blink alerts show``: every alert of an embedded alert file decoded, summarised, and its cutouts drawn."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from rich.console import Console

from pipeline.errors import InputError
from streamer.cli import main
from streamer.embedded.sinks import LocalAlertSink, alert_file_name
from streamer.inspect.alert_view import load_alerts, plot_cutout_triplet, print_alerts, read_cutout
from tests.helpers.inspect_alerts import NOISE_NJY, SCIENCE, STAR_XY, alerts_with_cutouts, star_image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def alert_file(tmp_path):
    """One CCD-visit's three alerts, with real cutouts (a brighter star in the science image), as the embedded
    sink writes them."""
    LocalAlertSink(tmp_path / "alerts").publish(alerts_with_cutouts(visit=7, detector=12))
    return tmp_path / "alerts" / alert_file_name(7, 12)


def test_every_alert_of_a_file_is_decoded_and_summarised(alert_file):
    alerts, where = load_alerts(alert_file)
    assert where == str(alert_file)
    assert [a["diaSourceId"] for a in alerts] == [900, 901, 902]
    assert [len(a["prvDiaSources"]) for a in alerts] == [0, 1, 2]
    text = io.StringIO()
    print_alerts(alerts, Console(file=text, width=250))
    printed = text.getvalue()
    assert "3 alert(s)" in printed
    for a in alerts:
        assert str(a["diaSourceId"]) in printed and str(a["diaObject"]["diaObjectId"]) in printed
    assert "7/12" in printed
    folder_alerts, _ = load_alerts(alert_file.parent, max_alerts=2)
    assert [a["diaSourceId"] for a in folder_alerts] == [900, 901]


def test_cutouts_decode_to_the_images_they_were_cut_from(alert_file):
    alerts, _ = load_alerts(alert_file)
    science = star_image(**SCIENCE)
    for alert, (x, y) in zip(alerts, STAR_XY):
        planes = read_cutout(alert["cutoutScience"])
        ny, nx = planes.image.shape
        assert ny == nx and ny >= 21
        # the stamp's centre pixel is the image's pixel at the star, to within 0.1 sigma (cutouts may quantize
        # the flux, at a small fraction of the noise)
        assert abs(planes.image[ny // 2, nx // 2] - science.image[int(y), int(x)]) < 0.1 * NOISE_NJY
        assert planes.variance is not None and np.allclose(planes.variance, NOISE_NJY**2, rtol=0.01)
        assert planes.mask is not None and planes.mask.dtype.kind == "i"
    with pytest.raises(InputError, match="not a FITS image"):
        read_cutout(b"SIMPLE  = nonsense")


def test_triplets_are_drawn_as_png(alert_file, tmp_path):
    alerts, _ = load_alerts(alert_file)
    path = plot_cutout_triplet(alerts[0], tmp_path / "png" / "one.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = plt.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 600
    missing = dict(alerts[1], cutoutTemplate=None)
    assert plot_cutout_triplet(missing, tmp_path / "png" / "two.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_shows_a_file_and_writes_one_png_per_alert(alert_file, tmp_path, capsys):
    out = tmp_path / "triplets"
    assert main(["alerts", "show", str(alert_file), "--png-dir", str(out)]) == 0
    assert "3 alert(s)" in capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == ["900", "901", "902"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC and plt.imread(p).ndim == 3 for p in pngs)
    assert main(["alerts", "show", str(tmp_path / "no-such-file")]) == 2  # no file and no Kafka
