"""File-based alert and dead-letter sinks (no servers): the embedded default.

* :class:`LocalAlertSink` writes one Avro container file per visit and detector,
  ``<folder>/<visit:08d>_<detector:02d>.avro``, with the alert schema embedded; files are written atomically and
  are byte-identical when the same alerts are written again.
* :class:`LocalDeadLetterSink` appends dead letters to ``<folder>/dead_letters.jsonl`` (payload in base64).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fastavro

from pipeline.errors import InputError
from streamer.alerts.framing import headers_dict
from streamer.alerts.schema import AlertSchema
from streamer.ports import Headers

__all__ = ["LocalAlertSink", "LocalDeadLetterSink", "alert_file_name", "read_dead_letters"]

log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def alert_file_name(visit: int, detector: int) -> str:
    """Return the file name of one CCD-visit's alerts: ``"<visit:08d>_<detector:02d>.avro"``."""
    return f"{int(visit):08d}_{int(detector):02d}.avro"


class LocalAlertSink:
    """Alerts as Avro container files, one per visit and detector.

    Parameters
    ----------
    folder : path-like
        Output folder (created).
    schema : AlertSchema, optional
        Alert schema (default: the latest).
    codec : str, optional
        Avro block codec, ``"null"`` (default) or ``"deflate"``.

    Notes
    -----
    Each :meth:`publish` groups alerts by ``(diaSource.visit, diaSource.detector)`` and *replaces* each
    group's file, so a CCD-visit's alerts must be published in one call (the worker's unit of work). Files are
    written to a temporary name, fsynced and renamed; the sync marker is derived from the file name and only
    ``blink-replay`` and ``blink-schema-id`` headers are stored (not the production time), so writing the same
    alerts again gives a byte-identical file.
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, schema: AlertSchema | None = None, codec: str = "null"
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema = schema if schema is not None else AlertSchema.latest()
        self.codec = codec
        self.n_published = 0

    def publish(self, alerts: Sequence[Mapping[str, Any]], *, headers: Headers = ()) -> None:
        """Write the alerts (see class notes); return once the files are on disk.

        Raises
        ------
        InputError
            An alert has no ``diaSource.visit``/``detector`` or cannot be serialized.
        """
        groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
        for alert in alerts:
            try:
                src = alert["diaSource"]
                key = (int(src["visit"]), int(src["detector"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"alert lacks diaSource.visit/detector: {exc}", stage="publish_alerts") from exc
            groups.setdefault(key, []).append(alert)
        hdr = headers_dict(headers)
        metadata = {"blink.schema_id": str(self.schema.schema_id)}
        if "blink-replay" in hdr:
            metadata["blink.replay"] = hdr["blink-replay"].decode("ascii", "replace")
        for (visit, detector), group in sorted(groups.items()):
            self._write(alert_file_name(visit, detector), group, metadata)
            self.n_published += len(group)

    def _write(self, name: str, records: list[Mapping[str, Any]], metadata: dict[str, str]) -> None:
        path = self.folder / name
        tmp = self.folder / f".{name}.tmp-{os.getpid()}"
        marker = hashlib.sha256(name.encode()).digest()[:16]
        try:
            with open(tmp, "wb") as fo:
                fastavro.writer(
                    fo, self.schema.definition, records, codec=self.codec, sync_marker=marker, metadata=metadata
                )
                fo.flush()
                os.fsync(fo.fileno())
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write alerts to {name}: {type(exc).__name__}: {exc}",
                             stage="publish_alerts") from exc
        os.replace(tmp, path)
        _fsync_dir(self.folder)
        log.debug("wrote %d alerts to %s", len(records), path)

    def flush(self) -> None:
        """Nothing buffered: every publish is already on disk."""

    def close(self) -> None:
        """Nothing to release."""


class LocalDeadLetterSink:
    """Dead letters appended as JSON lines to ``<folder>/dead_letters.jsonl``.

    Parameters
    ----------
    folder : path-like
        Output folder (created).

    Notes
    -----
    JSON lines rather than Avro so that a person can read them with ``jq``; ``payload`` is base64. The records
    follow ``schemas/dead_letter.avsc`` otherwise (:func:`read_dead_letters` gives them back as such).
    """

    FILE_NAME = "dead_letters.jsonl"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / self.FILE_NAME

    def send(self, record: Mapping[str, Any]) -> None:
        """Append one record and fsync."""
        row = dict(record)
        row["payload"] = base64.b64encode(bytes(row.get("payload", b""))).decode("ascii")
        line = json.dumps(row, sort_keys=True, allow_nan=True)
        with open(self.path, "a") as fo:
            fo.write(line + "\n")
            fo.flush()
            os.fsync(fo.fileno())

    def close(self) -> None:
        """Nothing to release."""


def read_dead_letters(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the dead letters of a :class:`LocalDeadLetterSink` folder, payloads decoded to bytes."""
    path = Path(folder) / LocalDeadLetterSink.FILE_NAME
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            row["payload"] = base64.b64decode(row["payload"])
            out.append(row)
    return out
