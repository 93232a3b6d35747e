"""Event files: one ``exposureReady`` event as an Avro object container file (OCF) with exactly one record.

The simulator writes them under ``events/`` of a data repository (:func:`schemas.datarepo.event_path`), the
embedded worker reads them from a folder (:class:`streamer.embedded.events.LocalEventSource`) and ``blink
publish`` sends them to Kafka. :func:`streamer.events.records.decode_event` also decodes the bytes of such a
file, so a worker treats a file and a Kafka message alike.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fastavro

from pipeline.errors import InputError
from streamer.events.records import (
    DECODE_STAGE,
    ExposureReady,
    event_from_container,
    event_to_record,
    exposure_ready_schema,
)

__all__ = ["read_event_file", "write_event_file"]

SYNC_MARKER_BYTES = 16
"""Length of an Avro container's sync marker."""


def write_event_file(path: str | os.PathLike[str], ev: ExposureReady, *,
                     sync_marker: bytes | None = None) -> Path:
    """Write one event as an Avro container file, atomically (temp file + rename).

    Parameters
    ----------
    path : path-like
        Destination (conventionally ``*.avro``); missing parent folders are created.
    ev : ExposureReady
        The event.
    sync_marker : bytes, optional
        The container's 16-byte sync marker (default: derived from the event id).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    ValueError
        ``sync_marker`` is not 16 bytes long.

    Notes
    -----
    The sync marker is the only free byte of the file, so writing the same event with the same marker (by
    default: the same event id) gives identical bytes.
    """
    marker = sync_marker if sync_marker is not None else \
        hashlib.sha256(ev.event_id.encode()).digest()[:SYNC_MARKER_BYTES]
    if len(marker) != SYNC_MARKER_BYTES:
        raise ValueError(f"sync_marker must have {SYNC_MARKER_BYTES} bytes, got {len(marker)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fo:
        fastavro.writer(fo, exposure_ready_schema(), [event_to_record(ev)], sync_marker=marker)
        fo.flush()
        os.fsync(fo.fileno())
    os.replace(tmp, path)
    return path


def read_event_file(path: str | os.PathLike[str]) -> ExposureReady:
    """Read and validate the single event of an Avro container file.

    Parameters
    ----------
    path : path-like
        The event file.

    Returns
    -------
    ExposureReady
        The validated event.

    Raises
    ------
    InputError
        Unreadable file, not Avro, not exactly one record, or an invalid event (``stage="decode_event"``).
    """
    try:
        with open(path, "rb") as fo:
            return event_from_container(fo, f"event file {os.fspath(path)!r}")
    except OSError as exc:
        raise InputError(f"cannot read event file {os.fspath(path)!r}: {exc}", stage=DECODE_STAGE) from exc
