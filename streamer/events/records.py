"""Exposure-ready events and per-CCD work items: the messages that drive Blink.

Two Avro contracts live in :mod:`schemas`: ``exposure_ready.avsc`` (one event per raw exposure) and
``ccd_work.avsc`` (one work item per CCD, the fan-out of an event). This module turns them into frozen
dataclasses and back, and checks everything a worker relies on before it touches a file: an event must never
make a worker read outside its data root.

On the wire both are *schemaless* Avro (no container header); on disk an event is an Avro object container
file (OCF) holding exactly one record. :func:`decode_event` accepts both forms, so a worker can decode a Kafka
message value and the bytes of an event file with the same call. Event files are written and read by
:mod:`streamer.events.files`; the fan-out of an event into work items and their Kafka keys are in
:mod:`streamer.events.fan_out`.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import fastavro
import fastavro.schema

import schemas
from pipeline.errors import InputError
from schemas.canonical import canonical_key_order

__all__ = [
    "DECAM_BANDS",
    "DECAM_SCIENCE_DETECTORS",
    "DECODE_STAGE",
    "INSTCAL_PRODUCT",
    "INSTRUMENT",
    "PRODUCTS",
    "RAW_PRODUCT",
    "CcdWork",
    "ExposureReady",
    "ccd_work_schema",
    "decode_event",
    "decode_work",
    "encode_event",
    "encode_work",
    "event_from_container",
    "event_from_record",
    "event_to_record",
    "exposure_ready_schema",
]

INSTRUMENT = "DECam"
"""The only instrument Blink processes."""

DECAM_BANDS = frozenset({"u", "g", "r", "i", "z", "Y", "VR"})
"""Band names an event may carry (DECam broad-band filters)."""

DECAM_SCIENCE_DETECTORS: tuple[int, ...] = tuple(range(1, 63))
"""CCDNUMs of the 62 DECam science CCDs (1..62). CCDNUM 61 (N30) is dead since 2012: a worker should treat it
as no work rather than fail."""

RAW_PRODUCT = "raw"
"""``product`` of an event naming a raw exposure (the default)."""

INSTCAL_PRODUCT = "instcal"
"""``product`` of an event naming a Community Pipeline InstCal image (``..._ooi_...``)."""

PRODUCTS: tuple[str, ...] = (RAW_PRODUCT, INSTCAL_PRODUCT)
"""The products an event may name (the symbols of ``productKind`` in ``exposure_ready.avsc``)."""

ADDED_FIELDS: tuple[str, ...] = ("product",)
"""Fields of ``exposure_ready.avsc`` added after its first version, each with a default."""

DECODE_STAGE = "decode_event"
"""The ``stage`` of every error raised while decoding or validating an event or a work item."""
_OCF_MAGIC = b"Obj\x01"


# --------------------------------------------------------------------------------------------------- schemas
def _schema_dir() -> Path:
    return Path(schemas.__file__).parent


@cache
def _named_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse the event schemas once: (parsed exposureReady, parsed ccdWork)."""
    named: dict[str, Any] = {}
    exposure = fastavro.schema.parse_schema(
        fastavro.schema.load_schema(_schema_dir() / "exposure_ready.avsc", _write_hint=False),
        named_schemas=named,
    )
    work = fastavro.schema.parse_schema(
        fastavro.schema.load_schema(_schema_dir() / "ccd_work.avsc", named_schemas=named),
        named_schemas=named,
    )
    # fastavro orders each field's keys by string hashing: sorted, the schema text in event files is stable
    return canonical_key_order(exposure), canonical_key_order(work)


@cache
def _first_version_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The event schemas as they were before :data:`ADDED_FIELDS`: the writer schemas of older messages."""
    named: dict[str, Any] = {}
    definition = json.loads((_schema_dir() / "exposure_ready.avsc").read_text())
    definition["fields"] = [f for f in definition["fields"] if f["name"] not in ADDED_FIELDS]
    exposure = fastavro.schema.parse_schema(definition, named_schemas=named)
    work = fastavro.schema.parse_schema(json.loads((_schema_dir() / "ccd_work.avsc").read_text()),
                                        named_schemas=named)
    return exposure, work


def exposure_ready_schema() -> dict[str, Any]:
    """Return the parsed ``exposureReady`` Avro schema (cached)."""
    return _named_schemas()[0]


def ccd_work_schema() -> dict[str, Any]:
    """Return the parsed ``ccdWork`` Avro schema (cached)."""
    return _named_schemas()[1]


# --------------------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class ExposureReady:
    """A raw DECam exposure is on disk and can be processed (``blink.v1.exposureReady``).

    Attributes
    ----------
    event_id : str
        Unique id of the event (e.g. ``"DECam-00123456"``).
    instrument : str
        Instrument name; only ``"DECam"`` is accepted by :func:`decode_event`.
    exposure_id : int
        DECam EXPNUM; becomes the alert's ``visit``.
    raw_path : str
        POSIX path of the raw file *relative to the worker's data root*; never absolute, never with ``..``.
    band : str
        Band name (see :data:`DECAM_BANDS`).
    midpoint_mjd_tai : float
        Exposure midpoint, MJD (TAI).
    shutter_close_mjd_tai : float
        Shutter-close time, MJD (TAI); alert latency is measured from here.
    ra : float
        Boresight RA, degrees, in [0, 360).
    dec : float
        Boresight Dec, degrees, in [-90, 90].
    detectors : tuple of int or None
        CCDNUMs to process; ``None`` means every science CCD.
    replay : bool
        True when the exposure was processed before (alerts are marked as replayed).
    product : str
        What ``raw_path`` names (see :data:`PRODUCTS`): ``"raw"``, a raw exposure; ``"instcal"``, the image
        (``ooi``) file of a Community Pipeline InstCal exposure, its weight (``oow``) and data-quality
        (``ood``) files beside it under the CP's names.

    Notes
    -----
    Construction does not validate, so that tests can build bad events; every decode path
    (:func:`decode_event`, :func:`event_from_record`, :func:`streamer.events.files.read_event_file`) does.
    """

    event_id: str
    instrument: str
    exposure_id: int
    raw_path: str
    band: str
    midpoint_mjd_tai: float
    shutter_close_mjd_tai: float
    ra: float
    dec: float
    detectors: tuple[int, ...] | None = None
    replay: bool = False
    product: str = RAW_PRODUCT

    def __post_init__(self) -> None:
        # Accept any sequence (a list straight from Avro) but store a tuple so the object stays hashable.
        if self.detectors is not None and not isinstance(self.detectors, tuple):
            object.__setattr__(self, "detectors", tuple(self.detectors))


@dataclass(frozen=True)
class CcdWork:
    """One CCD of one exposure to process (``blink.v1.ccdWork``).

    Attributes
    ----------
    exposure : ExposureReady
        The originating event.
    detector : int
        CCDNUM to process (1..62).
    """

    exposure: ExposureReady
    detector: int


# --------------------------------------------------------------------------------------------------- records
_FIELDS: tuple[tuple[str, str], ...] = (
    ("eventId", "event_id"),
    ("instrument", "instrument"),
    ("exposureId", "exposure_id"),
    ("rawPath", "raw_path"),
    ("band", "band"),
    ("midpointMjdTai", "midpoint_mjd_tai"),
    ("shutterCloseMjdTai", "shutter_close_mjd_tai"),
    ("ra", "ra"),
    ("dec", "dec"),
    ("detectors", "detectors"),
    ("replay", "replay"),
    ("product", "product"),
)


def event_to_record(ev: ExposureReady) -> dict[str, Any]:
    """Return the Avro record (camelCase dict) of an event.

    Parameters
    ----------
    ev : ExposureReady
        The event.

    Returns
    -------
    record : dict
        Keys as in ``exposure_ready.avsc``.
    """
    rec = {avro: getattr(ev, attr) for avro, attr in _FIELDS}
    if rec["detectors"] is not None:
        rec["detectors"] = list(rec["detectors"])
    return rec


def _check_raw_path(raw_path: str) -> None:
    if not raw_path:
        raise InputError("exposureReady.rawPath is empty", stage=DECODE_STAGE)
    if "\x00" in raw_path or "\\" in raw_path:
        raise InputError(f"exposureReady.rawPath {raw_path!r} contains a NUL byte or a backslash",
                         stage=DECODE_STAGE)
    p = PurePosixPath(raw_path)
    if p.is_absolute() or raw_path.startswith("~"):
        raise InputError(
            f"exposureReady.rawPath {raw_path!r} is absolute; it must be relative to the data root",
            stage=DECODE_STAGE,
        )
    if ".." in p.parts:
        raise InputError(
            f"exposureReady.rawPath {raw_path!r} has a '..' component and could escape the data root",
            stage=DECODE_STAGE,
        )


def _check_detector(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where} must be an int, got {type(value).__name__}", stage=DECODE_STAGE)
    if value not in DECAM_SCIENCE_DETECTORS:
        raise InputError(f"{where}={value} is not a DECam science CCDNUM (1..62)", stage=DECODE_STAGE)
    return value


def event_from_record(rec: dict[str, Any]) -> ExposureReady:
    """Build and validate an :class:`ExposureReady` from an Avro record (dict with camelCase keys).

    Parameters
    ----------
    rec : dict
        The decoded record.

    Returns
    -------
    ExposureReady
        The validated event.

    Raises
    ------
    InputError
        Missing field, wrong type, instrument other than DECam, ``rawPath`` absolute or with ``..``, negative
        ``exposureId``, non-finite or out-of-range times and coordinates, unknown band, bad detector list.
        The message names the field.
    """
    if not isinstance(rec, dict):
        raise InputError(f"exposureReady must be a record, got {type(rec).__name__}", stage=DECODE_STAGE)
    missing = [avro for avro, _ in _FIELDS if avro not in rec and avro not in ("detectors", "replay", *ADDED_FIELDS)]
    if missing:
        raise InputError(f"exposureReady is missing field(s) {missing}", stage=DECODE_STAGE)
    identity = _checked_identity(rec)
    floats = _checked_times_and_pointing(rec)
    replay = rec.get("replay", False)
    detectors = _checked_detectors(rec.get("detectors"))
    if not isinstance(replay, bool):
        raise InputError(f"exposureReady.replay has type {type(replay).__name__}, expected bool", stage=DECODE_STAGE)
    product = _checked_product(rec.get("product", RAW_PRODUCT), identity["raw_path"])
    return ExposureReady(
        **identity,
        midpoint_mjd_tai=floats["midpointMjdTai"],
        shutter_close_mjd_tai=floats["shutterCloseMjdTai"],
        ra=floats["ra"],
        dec=floats["dec"],
        detectors=detectors,
        replay=replay,
        product=product,
    )


def _checked_product(product: Any, raw_path: str) -> str:
    """A record's product: one of :data:`PRODUCTS`; an InstCal event's path must be a CP image (``_ooi_``) name,
    by which its weight and mask files are found."""
    if product not in PRODUCTS:
        raise InputError(f"exposureReady.product {product!r} is not one of {list(PRODUCTS)}", stage=DECODE_STAGE)
    if product == INSTCAL_PRODUCT and "_ooi_" not in PurePosixPath(raw_path).name:
        raise InputError(f"exposureReady.rawPath {raw_path!r} of an InstCal event is not a CP image name "
                         "(c4d_<date>_<time>_ooi_<band>_<version>.fits[.fz])", stage=DECODE_STAGE)
    return product


def _typed(rec: dict[str, Any], name: str, types: type | tuple[type, ...]) -> Any:
    """``rec[name]``, checked to be of ``types`` (a boolean is refused unless ``bool`` is one of them)."""
    value = rec[name]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise InputError(f"exposureReady.{name} must not be a boolean", stage=DECODE_STAGE)
    if not isinstance(value, types):
        raise InputError(
            f"exposureReady.{name} has type {type(value).__name__}, expected "
            f"{getattr(types, '__name__', types)}",
            stage=DECODE_STAGE,
        )
    return value


def _checked_identity(rec: dict[str, Any]) -> dict[str, Any]:
    """The event id, instrument, exposure id, raw path and band of a record, checked in that order."""
    event_id = _typed(rec, "eventId", str)
    if not event_id.strip():
        raise InputError("exposureReady.eventId is empty", stage=DECODE_STAGE)
    instrument = _typed(rec, "instrument", str)
    if instrument != INSTRUMENT:
        raise InputError(f"exposureReady.instrument is {instrument!r}; only {INSTRUMENT!r} is processed",
                         stage=DECODE_STAGE)
    exposure_id = _typed(rec, "exposureId", int)
    if exposure_id < 0:
        raise InputError(f"exposureReady.exposureId={exposure_id} is negative", stage=DECODE_STAGE)
    raw_path = _typed(rec, "rawPath", str)
    _check_raw_path(raw_path)
    band = _typed(rec, "band", str)
    if band not in DECAM_BANDS:
        raise InputError(f"exposureReady.band {band!r} is not one of {sorted(DECAM_BANDS)}", stage=DECODE_STAGE)
    return {"event_id": event_id, "instrument": instrument, "exposure_id": exposure_id, "raw_path": raw_path,
            "band": band}


def _checked_times_and_pointing(rec: dict[str, Any]) -> dict[str, float]:
    """The two times (MJD TAI) and the boresight (degrees) of a record, finite and in range."""
    floats = {}
    for name in ("midpointMjdTai", "shutterCloseMjdTai", "ra", "dec"):
        value = float(_typed(rec, name, (float, int)))
        if not math.isfinite(value):
            raise InputError(f"exposureReady.{name} is not finite ({value})", stage=DECODE_STAGE)
        floats[name] = value
    for name in ("midpointMjdTai", "shutterCloseMjdTai"):
        if floats[name] <= 0.0:
            raise InputError(f"exposureReady.{name}={floats[name]} is not a plausible MJD", stage=DECODE_STAGE)
    if not 0.0 <= floats["ra"] < 360.0:
        raise InputError(f"exposureReady.ra={floats['ra']} is outside [0, 360) degrees", stage=DECODE_STAGE)
    if not -90.0 <= floats["dec"] <= 90.0:
        raise InputError(f"exposureReady.dec={floats['dec']} is outside [-90, 90] degrees", stage=DECODE_STAGE)
    return floats


def _checked_detectors(detectors_raw: Any) -> tuple[int, ...] | None:
    """A record's detector list: None, or distinct science CCDNUMs."""
    if detectors_raw is None:
        return None
    if not isinstance(detectors_raw, (list, tuple)):
        raise InputError("exposureReady.detectors must be null or a list of int", stage=DECODE_STAGE)
    detectors = tuple(_check_detector(d, "exposureReady.detectors[]") for d in detectors_raw)
    if len(set(detectors)) != len(detectors):
        raise InputError(f"exposureReady.detectors {list(detectors)} has duplicates", stage=DECODE_STAGE)
    return detectors


# --------------------------------------------------------------------------------------------------- wire
def _write_schemaless(schema: dict[str, Any], rec: dict[str, Any], what: str) -> bytes:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, schema, rec)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise InputError(f"cannot encode {what}: {exc}", stage="encode_event") from exc
    return buf.getvalue()


def _read_schemaless(schema: dict[str, Any], data: bytes, what: str,
                     first_version: dict[str, Any] | None = None) -> dict[str, Any]:
    """One schemaless record of ``schema``.

    A message that does not read as one but reads whole as a record of ``first_version`` (the schema before
    :data:`ADDED_FIELDS`: such a message ends where they begin, so it never reads whole as the current one) was
    written before they existed: it is read with that writer schema, the added fields taking their defaults.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{what} must be bytes, got {type(data).__name__}", stage=DECODE_STAGE)
    if len(data) == 0:
        raise InputError(f"{what} is empty (0 bytes)", stage=DECODE_STAGE)
    buf = io.BytesIO(bytes(data))
    try:
        rec = fastavro.schemaless_reader(buf, schema, None)
    except Exception as exc:  # fastavro raises many types on garbage (ValueError, IndexError, UnicodeError...)
        older = None if first_version is None else _read_first_version(first_version, schema, bytes(data))
        if older is not None:
            return older
        if isinstance(exc, EOFError):
            raise InputError(f"{what} is truncated ({len(data)} bytes): {exc or 'unexpected end of data'}",
                             stage=DECODE_STAGE) from exc
        raise InputError(
            f"{what} is not valid Avro ({len(data)} bytes): {type(exc).__name__}: {exc}", stage=DECODE_STAGE
        ) from exc
    if buf.tell() != len(data):
        raise InputError(
            f"{what} has {len(data) - buf.tell()} trailing byte(s) after the record; wrong schema or corrupt",
            stage=DECODE_STAGE,
        )
    return rec


def _read_first_version(writer: dict[str, Any], reader: dict[str, Any], data: bytes) -> dict[str, Any] | None:
    """``data`` read as a whole record of the ``writer`` schema, resolved to ``reader``; None if it is not one."""
    buf = io.BytesIO(data)
    try:
        rec = fastavro.schemaless_reader(buf, writer, reader)
    except Exception:  # noqa: BLE001 - not a message of the first version either: the caller reports it
        return None
    return rec if buf.tell() == len(data) else None


def encode_event(ev: ExposureReady) -> bytes:
    """Encode an event as schemaless Avro (``exposure_ready.avsc``).

    Parameters
    ----------
    ev : ExposureReady
        The event.

    Returns
    -------
    bytes
        The Avro body, without container header or framing.

    Raises
    ------
    InputError
        A field has a type Avro cannot write.
    """
    return _write_schemaless(exposure_ready_schema(), event_to_record(ev), "exposureReady")


def decode_event(data: bytes) -> ExposureReady:
    """Decode and validate an event from schemaless Avro or from a one-record Avro container file.

    Parameters
    ----------
    data : bytes
        A Kafka message value (schemaless Avro) or the contents of an event file (starts with ``Obj\\x01``).

    Returns
    -------
    ExposureReady
        The validated event.

    Raises
    ------
    InputError
        Garbage, empty or truncated bytes, trailing bytes, or a record that fails the checks of
        :func:`event_from_record`. ``stage`` is ``"decode_event"``.
    """
    if isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:4]) == _OCF_MAGIC:
        return event_from_container(io.BytesIO(bytes(data)), "event file")
    return event_from_record(_read_schemaless(exposure_ready_schema(), data, "exposureReady message",
                                              _first_version_schemas()[0]))


def event_from_container(fo: io.BufferedIOBase | io.BytesIO, what: str) -> ExposureReady:
    """Read and validate the single event of an Avro container file (OCF) open for reading.

    Parameters
    ----------
    fo : binary file
        The container, positioned at its start.
    what : str
        What the bytes are, for error messages (e.g. the file name).

    Returns
    -------
    ExposureReady
        The validated event.

    Raises
    ------
    InputError
        Not an ``exposureReady`` container, not exactly one record, or an invalid event.
    """
    try:
        reader = fastavro.reader(fo, reader_schema=exposure_ready_schema())
        records = list(reader)
    except Exception as exc:  # fastavro: bad header, schema mismatch, truncated block...
        raise InputError(f"{what} is not a valid exposureReady Avro file: {type(exc).__name__}: {exc}",
                         stage=DECODE_STAGE) from exc
    if len(records) != 1:
        raise InputError(f"{what} holds {len(records)} records; exactly one exposureReady is expected",
                         stage=DECODE_STAGE)
    return event_from_record(records[0])


# --------------------------------------------------------------------------------------------------- work
def encode_work(work: CcdWork) -> bytes:
    """Encode a work item as schemaless Avro (``ccd_work.avsc``).

    Parameters
    ----------
    work : CcdWork
        The work item.

    Returns
    -------
    bytes
        The Avro body.
    """
    rec = {"exposure": event_to_record(work.exposure), "detector": work.detector}
    return _write_schemaless(ccd_work_schema(), rec, "ccdWork")


def decode_work(data: bytes) -> CcdWork:
    """Decode and validate a work item.

    Parameters
    ----------
    data : bytes
        Schemaless Avro (``ccd_work.avsc``).

    Returns
    -------
    CcdWork
        The validated work item.

    Raises
    ------
    InputError
        Bad bytes, an invalid embedded event (see :func:`event_from_record`), a detector outside 1..62 or not
        in the event's detector list.
    """
    rec = _read_schemaless(ccd_work_schema(), data, "ccdWork message", _first_version_schemas()[1])
    ev = event_from_record(rec["exposure"])
    detector = _check_detector(rec["detector"], "ccdWork.detector")
    if ev.detectors is not None and detector not in ev.detectors:
        raise InputError(
            f"ccdWork.detector={detector} is not in the event's detectors {list(ev.detectors)}", stage=DECODE_STAGE
        )
    return CcdWork(exposure=ev, detector=detector)
