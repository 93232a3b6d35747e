"""Alerts as a person reads them (``blink alerts show``): decoded from the embedded sink's Avro files or from a
Kafka topic, summarised one line each, and their cutout triplets drawn.

An alert carries three cutouts (``cutoutScience``, ``cutoutTemplate``, ``cutoutDifference``), each a FITS file
in bytes (:mod:`pipeline.cutouts`): the flux plane is the HDU named ``IMAGE`` (plain or tile-compressed), with
``VARIANCE`` and ``MASK`` beside it. astropy reads them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import numpy as np

from pipeline.errors import InputError, TransientError
from streamer.inspect import pyplot, save_png, wide_console

__all__ = ["CUTOUT_FIELDS", "CutoutPlanes", "cutout_triplet_figure", "load_alerts", "plot_cutout_triplet",
           "print_alerts", "read_alert_files", "read_alert_topic", "read_cutout"]

log = logging.getLogger(__name__)

CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
"""The alert fields of a triplet, in the order drawn."""


@dataclass(frozen=True)
class CutoutPlanes:
    """The planes of one cutout, (ny, nx); ``variance`` and ``mask`` are None when the cutout lacks them."""

    image: np.ndarray
    variance: np.ndarray | None
    mask: np.ndarray | None


def read_alert_files(paths: Sequence[str | Path]) -> Iterator[dict[str, Any]]:
    """Yield the alerts of Avro container files (as :class:`streamer.embedded.sinks.LocalAlertSink` writes
    them; each file names its schema), file by file, in file order.

    Raises
    ------
    InputError
        A file is not an Avro container file.
    """
    for path in paths:
        with open(path, "rb") as fo:
            try:
                reader = fastavro.reader(fo)
            except ValueError as exc:
                raise InputError(f"{path} is not an Avro alert file: {exc}", stage="alerts_show") from exc
            yield from reader


def read_alert_topic(kafka, topic: str, *, max_alerts: int | None = None, timeout_s: float = 10.0
                     ) -> list[dict[str, Any]]:
    """Decode the alerts of a Kafka topic from its start, up to its end as it was when called, or ``max_alerts``.

    Parameters
    ----------
    kafka : streamer.kafka.settings.KafkaSettings
        Connection settings (a private consumer group is used; nothing is committed).
    topic : str
        Alert topic (Confluent-framed Avro; the framing's schema id picks the schema).
    max_alerts : int, optional
        Stop after this many alerts.
    timeout_s : float, optional
        Give up after this long without a message.

    Raises
    ------
    TransientError
        The topic does not exist.
    """
    from confluent_kafka import Consumer, TopicPartition

    from streamer.alerts.schema import AlertSchema

    schema = AlertSchema.latest()
    consumer = Consumer(kafka.consumer_config(**{"group.id": f"blink-alerts-show-{uuid.uuid4().hex[:8]}"}))
    alerts: list[dict[str, Any]] = []
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise TransientError(f"topic {topic} not found", stage="alerts_show")
        ends, starts = {}, []
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if low < high:
                ends[p] = high - 1
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline and (max_alerts is None or len(alerts) < max_alerts):
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            deadline = time.monotonic() + timeout_s
            try:
                alerts.append(schema.deserialize(msg.value() or b""))
            except InputError as exc:
                log.warning("skipping an undecodable message %s[%d]@%d: %s", topic, msg.partition(), msg.offset(),
                            exc)
            if msg.offset() >= ends.get(msg.partition(), -1):
                ends.pop(msg.partition(), None)
    finally:
        consumer.close()
    return alerts


def load_alerts(source: str | Path, *, kafka=None, max_alerts: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """The alerts of ``source``: an Avro alert file, a folder of them (``*.avro``), or else a Kafka topic name.

    Returns
    -------
    list of dict, str
        The alerts (at most ``max_alerts``) and a description of where they were read.

    Raises
    ------
    InputError
        ``source`` is no file or folder, and no Kafka settings were given.
    """
    path = Path(source)
    if path.exists():
        files = sorted(path.glob("*.avro")) if path.is_dir() else [path]
        alerts = []
        for alert in read_alert_files(files):
            if max_alerts is not None and len(alerts) >= max_alerts:
                break
            alerts.append(alert)
        return alerts, f"{len(files)} file(s) under {path}" if path.is_dir() else str(path)
    if kafka is None:
        raise InputError(f"{source} is no alert file or folder (give --kafka-bootstrap to read a topic of this "
                         "name)", stage="alerts_show")
    return read_alert_topic(kafka, str(source), max_alerts=max_alerts), f"topic {source}"


def read_cutout(data: bytes) -> CutoutPlanes:
    """The planes of one cutout's FITS bytes, gzipped or not (``IMAGE``, ``VARIANCE``, ``MASK``; else the first
    image HDU), as floats for the image and variance (quantized planes are scaled back).

    Raises
    ------
    InputError
        No image in the bytes.
    """
    from streamer.alerts.cutouts import open_cutout

    try:
        with open_cutout(data) as hdus:
            planes = {h.name: np.array(h.data) for h in hdus if h.data is not None and np.ndim(h.data) == 2}
    except (OSError, ValueError, TypeError, EOFError) as exc:
        raise InputError(f"cutout is not a FITS image: {exc}", stage="alerts_show") from exc
    if not planes:
        raise InputError("cutout holds no image", stage="alerts_show")
    image = planes.get("IMAGE", next(iter(planes.values())))
    return CutoutPlanes(image=image, variance=planes.get("VARIANCE"), mask=planes.get("MASK"))


def _alert_row(alert: Mapping[str, Any]) -> list[str]:
    src, obj = alert["diaSource"], alert.get("diaObject") or {}

    def num(value: Any, spec: str) -> str:
        return "-" if value is None or not np.isfinite(float(value)) else format(float(value), spec)

    flux, err = src.get("psfFlux"), src.get("psfFluxErr")
    sizes = "/".join(f"{len(alert[f]) / 1000:.0f}" if alert.get(f) else "-" for f in CUTOUT_FIELDS)
    return [str(alert["diaSourceId"]), str(obj.get("diaObjectId", src.get("diaObjectId", "-"))),
            f"{src['visit']}/{src['detector']}", num(src.get("midpointMjdTai"), ".5f"), str(src.get("band") or "-"),
            f"{float(src['ra']):.6f}", f"{float(src['dec']):+.6f}",
            f"{num(flux, '.0f')} ± {num(err, '.0f')}", num(src.get("snr"), ".1f"), num(src.get("reliability"), ".2f"),
            f"{len(alert.get('prvDiaSources') or [])}/{len(alert.get('prvDiaForcedSources') or [])}", sizes]


def print_alerts(alerts: Sequence[Mapping[str, Any]], console=None, *, title: str = "alerts") -> None:
    """Print one summary line per alert (ids, visit, time, band, position, flux, SNR, reliability, history
    lengths, cutout sizes) as a rich table."""
    from rich.table import Table as RichTable

    console = console or wide_console()
    table = RichTable(title=f"{title}: {len(alerts)} alert(s)")
    for name in ("diaSourceId", "diaObjectId", "visit/det", "MJD TAI", "band", "ra", "dec", "psfFlux (nJy)", "SNR",
                 "reliability", "prv src/forced", "cutouts kB (sci/tmpl/diff)"):
        table.add_column(name, justify="right")
    for alert in alerts:
        table.add_row(*_alert_row(alert))
    console.print(table)


def _limits(planes: CutoutPlanes, difference: bool) -> tuple[float, float]:
    """Display range: zscale for science and template; symmetric +-5 sigma (from the variance) for a difference."""
    from astropy.visualization import ZScaleInterval

    finite = planes.image[np.isfinite(planes.image)]
    if not finite.size:
        return -1.0, 1.0
    if difference:
        var = planes.variance[np.isfinite(planes.variance)] if planes.variance is not None else np.zeros(0)
        sigma = float(np.sqrt(np.median(var))) if var.size and np.median(var) > 0 else float(np.std(finite)) or 1.0
        half = max(5.0 * sigma, float(np.max(np.abs(finite))) * 0.5)
        return -half, half
    lo, hi = ZScaleInterval().get_limits(finite)
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def cutout_triplet_figure(cutouts: Sequence[bytes | None], *, title: str = "",
                          size_in: tuple[float, float] = (10.0, 3.7), colour_bars: bool = True):
    """Science, template and difference cutouts side by side (north up if the cutout's WCS is, pixel (0, 0) at
    the bottom left): zscale for science and template, +-5 sigma of the variance for the difference.

    Parameters
    ----------
    cutouts : sequence of bytes or None
        The three cutouts' FITS bytes (gzipped or not), in :data:`CUTOUT_FIELDS` order; a missing or unreadable
        one is drawn as an empty panel that says so.
    title : str, optional
        Figure title.
    size_in : (float, float), optional
        Figure width and height in inches (the night report draws them small).
    colour_bars : bool, optional
        A colour bar in nJy beside each panel.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (the caller saves and closes it).
    """
    fig, axes = pyplot().subplots(1, 3, figsize=size_in, constrained_layout=True)
    for ax, field, data in zip(axes, CUTOUT_FIELDS, cutouts):
        label = field.removeprefix("cutout").lower()
        ax.set(xticks=[], yticks=[])
        try:
            planes = read_cutout(data) if data else None
        except InputError:
            planes = None
        if planes is None:
            ax.set_title(f"{label}: none" if not data else f"{label}: unreadable")
            continue
        lo, hi = _limits(planes, difference=field == "cutoutDifference")
        shown = ax.imshow(planes.image, origin="lower", cmap="gray" if field != "cutoutDifference" else "RdBu_r",
                          vmin=lo, vmax=hi, interpolation="nearest")
        if colour_bars:
            fig.colorbar(shown, ax=ax, shrink=0.8, label="nJy")
        ax.set_title(f"{label} {planes.image.shape[1]}x{planes.image.shape[0]}")
    if title:
        fig.suptitle(title)
    return fig


def plot_cutout_triplet(alert: Mapping[str, Any], path: str | Path) -> Path:
    """Write one alert's :func:`cutout_triplet_figure`, titled with its ids, band, time and SNR, to the PNG
    ``path`` (folders created); return it."""
    src = alert["diaSource"]
    snr = src.get("snr")
    title = (f"diaSource {alert['diaSourceId']}  object {src.get('diaObjectId')}  {src.get('band') or ''}  "
             f"MJD {float(src['midpointMjdTai']):.5f}" + (f"  SNR {float(snr):.1f}" if snr is not None else ""))
    return save_png(cutout_triplet_figure([alert.get(field) for field in CUTOUT_FIELDS], title=title), path)
