"""Operator tools on the Kafka topics: replay exposure events, and the consumer group's lag and throughput.

``blink replay`` re-publishes the exposure-ready events of a time range (shutter close, MJD TAI) or an offset
range of the events topic with ``replay=True``; the workers then re-process them (the APDB upserts are
idempotent) and mark the alerts with the ``blink-replay: 1`` header.

``blink status`` prints, per partition of the workers' topics, the committed offset, the high watermark, the
lag and the throughput (committed messages per second over a short sampling window).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import BlinkError, TransientError
from streamer.events.records import ExposureReady, decode_event
from streamer.kafka.producer import KafkaPublisher, event_message
from streamer.kafka.settings import KafkaSettings

__all__ = ["PartitionStatus", "group_status", "read_events", "replay_events"]

log = logging.getLogger(__name__)


def read_events(settings: KafkaSettings, *, from_offset: int | None = None, to_offset: int | None = None,
                timeout_s: float = 10.0) -> list[tuple[int, int, ExposureReady]]:
    """Read the events topic from the start (or ``from_offset``) to its end (or ``to_offset``, inclusive).

    Returns
    -------
    list of (partition, offset, ExposureReady)
        Undecodable messages are logged and skipped.
    """
    consumer = Consumer(settings.consumer_config(**{"group.id": f"blink-replay-{uuid.uuid4().hex[:8]}",
                                                    "enable.partition.eof": True}))
    out: list[tuple[int, int, ExposureReady]] = []
    try:
        meta = consumer.list_topics(settings.events_topic, timeout=timeout_s).topics.get(settings.events_topic)
        if meta is None or meta.error is not None:
            raise TransientError(f"topic {settings.events_topic} not found", stage="replay")
        ends: dict[int, int] = {}
        assign = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(settings.events_topic, p), timeout=timeout_s)
            last = high - 1 if to_offset is None else min(high - 1, to_offset)
            start = low if from_offset is None else max(low, from_offset)
            if start <= last:
                ends[p] = last
                assign.append(TopicPartition(settings.events_topic, p, start))
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            p, off = msg.partition(), msg.offset()
            if p in ends and off <= ends[p]:
                try:
                    out.append((p, off, decode_event(msg.value() or b"")))
                except BlinkError as exc:
                    log.warning("skipping undecodable event %s[%d]@%d: %s", msg.topic(), p, off, exc)
                if off >= ends[p]:
                    del ends[p]
                deadline = time.monotonic() + timeout_s
        if ends:
            raise TransientError(f"timed out reading {settings.events_topic}", stage="replay")
    except KafkaException as exc:
        raise TransientError(f"reading {settings.events_topic}: {exc}", stage="replay") from exc
    finally:
        consumer.close()
    return out


def replay_events(settings: KafkaSettings, *, from_mjd: float | None = None, to_mjd: float | None = None,
                  from_offset: int | None = None, to_offset: int | None = None,
                  dry_run: bool = False) -> list[ExposureReady]:
    """Re-publish the selected exposure-ready events with ``replay=True``; return them.

    Parameters
    ----------
    from_mjd, to_mjd : float, optional
        Keep events whose shutter close (MJD TAI) is in ``[from_mjd, to_mjd]``.
    from_offset, to_offset : int, optional
        Offset range (inclusive) of the events topic.
    dry_run : bool
        Select and return without publishing.
    """
    selected = []
    seen: set[str] = set()
    for _, _, ev in read_events(settings, from_offset=from_offset, to_offset=to_offset):
        t = ev.shutter_close_mjd_tai
        if (from_mjd is not None and t < from_mjd) or (to_mjd is not None and t > to_mjd):
            continue
        if ev.replay or ev.event_id in seen:  # an earlier replay, or an event published twice
            continue
        seen.add(ev.event_id)
        selected.append(dataclasses.replace(ev, replay=True))
    if not dry_run and selected:
        producer = KafkaPublisher(settings)
        producer.produce_all(event_message(settings.events_topic, ev, [("blink-replay", b"1")]) for ev in selected)
        producer.wait(f"replaying {len(selected)} events")
        producer.close()
    log.info("%s %d exposure events", "selected" if dry_run else "replayed", len(selected))
    return selected


@dataclass(frozen=True)
class PartitionStatus:
    """Progress of the consumer group on one partition."""

    topic: str
    partition: int
    committed: int
    high: int
    lag: int
    rate_per_s: float


def group_status(settings: KafkaSettings, *, sample_s: float = 2.0, timeout_s: float = 10.0) -> list[PartitionStatus]:
    """Committed offset, high watermark, lag and throughput of ``settings.group_id`` on the events and work
    topics (throughput: committed offsets gained over ``sample_s`` seconds)."""
    consumer = Consumer(settings.consumer_config())  # same group id; never subscribes, so never joins
    try:
        tps = []
        for topic in (settings.events_topic, settings.work_topic):
            meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            tps += [TopicPartition(topic, p) for p in sorted(meta.partitions)]

        def committed() -> dict[tuple[str, int], int]:
            return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=timeout_s)}

        first = committed()
        t0 = time.monotonic()
        if sample_s > 0:
            time.sleep(sample_s)
        second = committed()
        dt = max(time.monotonic() - t0, 1e-9)
        ends = {}
        for tp in tps:
            key = (tp.topic, tp.partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            ends[key] = (second[key] if second[key] >= 0 else low, high)
        pending = _pending_messages(settings, ends, timeout_s=timeout_s)
        out = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            c1, c2 = first[key], second[key]
            rate = (c2 - c1) / dt if c1 >= 0 and c2 >= 0 else 0.0
            out.append(PartitionStatus(tp.topic, tp.partition, c2, ends[key][1], pending[key], rate))
        return out
    except KafkaException as exc:
        raise TransientError(f"reading group {settings.group_id}: {exc}", stage="status") from exc
    finally:
        consumer.close()


def _pending_messages(settings: KafkaSettings, ends: dict[tuple[str, int], tuple[int, int]], *,
                      timeout_s: float, max_scan: int = 1000) -> dict[tuple[str, int], int]:
    """Messages a read_committed consumer would still get between each partition's (done, high) offsets.

    Offsets also number transaction markers (one after every transaction of the exactly-once workers) and
    aborted records, so ``high - done`` overstates the lag; a short read_committed scan from ``done`` counts
    the real messages. Partitions more than ``max_scan`` behind report ``high - done``.
    """
    lag = {key: max(0, high - done) for key, (done, high) in ends.items()}
    scan = {key: done for key, (done, high) in ends.items() if 0 < high - done <= max_scan}
    if not scan:
        return lag
    scanner = Consumer(settings.consumer_config(**{
        "group.id": f"blink-status-{uuid.uuid4().hex[:8]}", "isolation.level": "read_committed",
        "enable.partition.eof": True}))
    try:
        scanner.assign([TopicPartition(topic, part, done) for (topic, part), done in scan.items()])
        counted = dict.fromkeys(scan, 0)
        open_parts = set(scan)
        deadline = time.monotonic() + timeout_s
        while open_parts and time.monotonic() < deadline:
            msg = scanner.poll(0.2)
            if msg is None:
                continue
            key = (msg.topic(), msg.partition())
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(key)
                continue
            if key in open_parts and msg.offset() < ends[key][1]:
                counted[key] += 1
            else:
                open_parts.discard(key)
        # A partition still open at the deadline keeps the offset difference (an upper bound).
        lag.update({key: n for key, n in counted.items() if key not in open_parts})
        return lag
    finally:
        scanner.close()


def print_status(rows: list[PartitionStatus], group_id: str) -> None:
    """Print the status as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"consumer group {group_id}")
    for col in ("topic", "partition", "committed", "end", "lag", "msg/s"):
        table.add_column(col, justify="left" if col == "topic" else "right")
    for r in rows:
        table.add_row(r.topic, str(r.partition), str(r.committed) if r.committed >= 0 else "-", str(r.high),
                      str(r.lag), f"{r.rate_per_s:.2f}")
    table.caption = f"total lag {sum(r.lag for r in rows)}"
    Console().print(table)
