"""Confluent wire framing of Blink's alerts, and their Kafka keys and headers.

On Kafka every message is the Confluent wire format: one zero byte, the schema id as a 4-byte big-endian
integer (``major * 100 + minor``: 11.1 -> 1101), then schemaless Avro (DMTN-210).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from typing import Any

from pipeline.errors import InputError

__all__ = [
    "HEADER_PRODUCED_MJD",
    "HEADER_PRODUCER_TIMESTAMP",
    "HEADER_REPLAY",
    "HEADER_SCHEMA_ID",
    "HEADER_SHUTTER_CLOSE_MJD",
    "MAGIC_BYTE",
    "WIRE_HEADER",
    "alert_headers",
    "alert_key",
    "frame",
    "headers_dict",
    "now_mjd_tai",
    "unframe",
]

MAGIC_BYTE = 0
WIRE_HEADER = struct.Struct(">bI")
"""The 5-byte wire-format header: :data:`MAGIC_BYTE`, then the schema id (big-endian)."""

HEADER_PRODUCED_MJD = "blink-produced-mjd"
"""Kafka header: producer wall-clock time, MJD (TAI), ASCII decimal."""
HEADER_SHUTTER_CLOSE_MJD = "blink-shutter-close-mjd"
"""Kafka header: the exposure's shutter-close time, MJD (TAI), ASCII decimal; latency = produced - this."""
HEADER_REPLAY = "blink-replay"
"""Kafka header: ``b"1"`` when the alert comes from re-processing an exposure, else ``b"0"``."""
HEADER_SCHEMA_ID = "blink-schema-id"
"""Kafka header: the schema id (ASCII decimal), also in the wire-format prefix."""
HEADER_PRODUCER_TIMESTAMP = "producer_timestamp"
"""Kafka header of Rubin's alert stream (DMTN-210): when the producer made the message, milliseconds since the
Unix epoch (UTC), ASCII decimal; added by :func:`streamer.kafka.producer.alert_messages`."""

_UNIX_EPOCH_MJD = 40587.0
_TAI_MINUS_UTC_S = 37.0  # since 2017-01-01; no leap second has been announced since.


def now_mjd_tai() -> float:
    """Return the current time as MJD (TAI), from the system clock.

    Returns
    -------
    float
        MJD (TAI). Uses TAI - UTC = 37 s (valid since 2017-01-01).
    """
    return _UNIX_EPOCH_MJD + (time.time() + _TAI_MINUS_UTC_S) / 86400.0


def frame(body: bytes, schema_id: int) -> bytes:
    """Prefix a schemaless Avro body with the Confluent wire-format header.

    Parameters
    ----------
    body : bytes
        Schemaless Avro.
    schema_id : int
        Schema id (``major * 100 + minor``), 0 .. 2**32 - 1.

    Returns
    -------
    bytes
        ``b"\\x00" + schema_id.to_bytes(4, "big") + body``.
    """
    return WIRE_HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes) -> tuple[int, bytes]:
    """Split a Confluent wire-format message into its schema id and body.

    Parameters
    ----------
    data : bytes
        The message value.

    Returns
    -------
    schema_id : int
        The 4-byte big-endian schema id.
    body : bytes
        The schemaless Avro body.

    Raises
    ------
    InputError
        Fewer than 5 bytes, or a first byte other than 0.
    """
    if len(data) < WIRE_HEADER.size:
        raise InputError(f"framed message has {len(data)} bytes, fewer than the 5-byte header", stage="decode_alert")
    magic, schema_id = WIRE_HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise InputError(
            f"framed message starts with byte {data[0]:#04x}, not the Confluent magic byte 0x00", stage="decode_alert"
        )
    return schema_id, bytes(data[WIRE_HEADER.size :])


def alert_key(alert: Mapping[str, Any]) -> bytes:
    """Return the Kafka key of an alert: the ``diaObjectId`` as ASCII decimal.

    Parameters
    ----------
    alert : dict
        An alert record.

    Returns
    -------
    bytes
        E.g. ``b"1234567890"``.

    Notes
    -----
    Keying by object puts every alert of one DiaObject on one partition, so a broker reads one object's
    alerts in the order they were produced. The id is taken from ``diaObject``, else from ``diaSource``;
    an alert of a solar-system object with neither is keyed ``b"ss-<ssObjectId>"``, and one with no object
    at all by its ``diaSourceId`` (``b"src-<id>"``).

    Raises
    ------
    InputError
        The alert carries no id at all.
    """
    obj = alert.get("diaObject")
    if obj and obj.get("diaObjectId") is not None:
        return str(int(obj["diaObjectId"])).encode("ascii")
    src = alert.get("diaSource") or {}
    if src.get("diaObjectId") is not None:
        return str(int(src["diaObjectId"])).encode("ascii")
    if src.get("ssObjectId") is not None:
        return f"ss-{int(src['ssObjectId'])}".encode("ascii")
    if alert.get("diaSourceId") is not None:
        return f"src-{int(alert['diaSourceId'])}".encode("ascii")
    raise InputError("alert has no diaObjectId, ssObjectId nor diaSourceId to key it by", stage="package_alert")


def alert_headers(
    *,
    shutter_close_mjd_tai: float,
    replay: bool,
    schema_id: int,
    produced_mjd_tai: float | None = None,
) -> list[tuple[str, bytes]]:
    """Return the Kafka headers Blink puts on every alert of a visit.

    Parameters
    ----------
    shutter_close_mjd_tai : float
        The exposure's shutter-close time, MJD (TAI).
    replay : bool
        Whether the exposure is being re-processed.
    schema_id : int
        Alert schema id.
    produced_mjd_tai : float, optional
        Production time, MJD (TAI); default now (:func:`now_mjd_tai`).

    Returns
    -------
    list of (str, bytes)
        ``blink-produced-mjd``, ``blink-shutter-close-mjd`` (``%.9f``, about 0.1 ms), ``blink-replay``
        (``b"1"``/``b"0"``) and ``blink-schema-id``.
    """
    produced = now_mjd_tai() if produced_mjd_tai is None else produced_mjd_tai
    return [
        (HEADER_PRODUCED_MJD, f"{produced:.9f}".encode("ascii")),
        (HEADER_SHUTTER_CLOSE_MJD, f"{shutter_close_mjd_tai:.9f}".encode("ascii")),
        (HEADER_REPLAY, b"1" if replay else b"0"),
        (HEADER_SCHEMA_ID, str(int(schema_id)).encode("ascii")),
    ]


def headers_dict(headers: list[tuple[str, bytes]] | Mapping[str, bytes] | None) -> dict[str, bytes]:
    """Return headers as a ``{name: value}`` dict (last value wins), whatever form they come in."""
    if headers is None:
        return {}
    if isinstance(headers, Mapping):
        return dict(headers)
    return {k: v for k, v in headers}
