"""Rubin alert packets: schema, fast serialization, Confluent wire framing, keys and headers.

Blink publishes alerts in the latest Rubin schema shipped by ``lsst-alert-packet`` (11.1, namespace
``lsst.v11_1``). On Kafka every message is the Confluent wire format: one zero byte, the schema id as a 4-byte
big-endian integer (``major * 100 + minor``: 11.1 -> 1101), then schemaless Avro (DMTN-210).
"""

from __future__ import annotations

import io
import logging
import operator
import struct
import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import fastavro
from fastavro.logical_writers import LOGICAL_WRITERS as _LOGICAL_WRITERS
from lsst.alert.packet import Schema, get_schema_path

from pipeline.errors import InputError
from streamer.alerts.history_rows import EncodedRecords

__all__ = [
    "HEADER_PRODUCED_MJD",
    "HEADER_REPLAY",
    "HEADER_SCHEMA_ID",
    "HEADER_SHUTTER_CLOSE_MJD",
    "AlertSchema",
    "alert_headers",
    "alert_key",
    "frame",
    "headers_dict",
    "now_mjd_tai",
    "sample_alert",
    "unframe",
]

log = logging.getLogger(__name__)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")

HEADER_PRODUCED_MJD = "blink-produced-mjd"
"""Kafka header: producer wall-clock time, MJD (TAI), ASCII decimal."""
HEADER_SHUTTER_CLOSE_MJD = "blink-shutter-close-mjd"
"""Kafka header: the exposure's shutter-close time, MJD (TAI), ASCII decimal; latency = produced - this."""
HEADER_REPLAY = "blink-replay"
"""Kafka header: ``b"1"`` when the alert comes from re-processing an exposure, else ``b"0"``."""
HEADER_SCHEMA_ID = "blink-schema-id"
"""Kafka header: the schema id (ASCII decimal), also in the wire-format prefix."""

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


# --------------------------------------------------------------------------------------------------- framing
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
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


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
    if len(data) < _HEADER.size:
        raise InputError(f"framed message has {len(data)} bytes, fewer than the 5-byte header", stage="decode_alert")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise InputError(
            f"framed message starts with byte {data[0]:#04x}, not the Confluent magic byte 0x00", stage="decode_alert"
        )
    return schema_id, bytes(data[_HEADER.size :])



# --------------------------------------------------------------------------------------------------- codegen
class _Unsupported(Exception):
    """The schema uses a construct the generated encoder does not handle (fastavro is used instead)."""


def _varint_bytes(z: int) -> bytes:
    """Return the Avro varint (little-endian base 128) of a non-negative integer, the general slow way."""
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINT = tuple(_varint_bytes(z) for z in range(1 << 14))
"""``_VARINT[z]``: the whole 1- or 2-byte varint of ``z < 2**14``."""
_VARINT_LOW = tuple(bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(1 << 14))
"""``_VARINT_LOW[z]``: 14 low bits ``z`` of a longer varint: two bytes, both with the continuation bit."""
_LONG_SMALL = _VARINT[::2]
"""``_LONG_SMALL[n]``: the Avro ``long`` of ``0 <= n < 8192`` (zig-zag ``2 * n``), for inline look-ups."""


def _zigzag(n: int) -> bytes:
    """Encode an Avro ``long`` (or ``int``): zig-zag, then varint; two table look-ups up to 42 bits.

    Parameters
    ----------
    n : int
        A Python ``int`` (or ``bool``) in ``[-2**63, 2**63)``. Other integer types (numpy) must go
        through ``operator.index`` first: their fixed-width shifts would wrap.

    Returns
    -------
    bytes
        1 to 10 bytes, exactly as ``fastavro`` writes them.

    Raises
    ------
    OverflowError
        ``n`` does not fit in 64 bits.
    TypeError
        ``n`` is not an integer.
    """
    z = (n << 1) ^ (n >> 63)  # never negative for a Python int; >= 2**64 exactly when n is out of range
    if z < 0x4000:
        return _VARINT[z]
    if z < 0x1000_0000:
        return _VARINT_LOW[z & 0x3FFF] + _VARINT[z >> 14]
    if z < 0x400_0000_0000:
        return _VARINT_LOW[z & 0x3FFF] + _VARINT_LOW[(z >> 14) & 0x3FFF] + _VARINT[z >> 28]
    if z >> 64:
        raise OverflowError(f"{n} does not fit in an Avro long")
    return _varint_bytes(z)


_PRIMITIVE_CODE = {
    # {v}: the value expression (a local or a literal, may be evaluated several times), {i}: indent
    "null": "{i}if {v} is not None: raise TypeError('expected null')\n",
    "boolean": "{i}out.append(1 if {v} else 0) if {v} is True or {v} is False else _bad({v}, 'boolean')\n",
    "int": "{i}out += _zz(_index({v}))\n",
    "long": "{i}out += _zz(_index({v}))\n",
    "float": "{i}out += _pf({v})\n",
    "double": "{i}out += _pd({v})\n",
    "string": "{i}_b = {v}.encode(); out += _zz(len(_b)); out += _b\n",
    "bytes": "{i}if not isinstance({v}, (bytes, bytearray)): _bad({v}, 'bytes')\n"
             "{i}out += _zz(len({v})); out += {v}\n",
}

_KNOWN_TYPE_CODE: dict[str, dict[type, str]] = {
    # Avro primitive -> {exact Python type of the value: code}, for encoders specialized to a record shape.
    # A one-letter code is a struct format (the value joins the surrounding struct run); otherwise a
    # template as in _PRIMITIVE_CODE. A type not listed gets the generic code of _PRIMITIVE_CODE.
    "double": {float: "d", int: "d"},
    "float": {float: "f", int: "f"},
    "boolean": {bool: "?"},
    "int": {int: "{i}out += _ls[{v}] if 0 <= {v} < 8192 else _zz({v})\n"},
    "long": {int: "{i}out += _ls[{v}] if 0 <= {v} < 8192 else _zz({v})\n"},
    "string": {str: _PRIMITIVE_CODE["string"]},
    "bytes": {bytes: "{i}out += _zz(len({v})); out += {v}\n", bytearray: "{i}out += _zz(len({v})); out += {v}\n"},
    "null": {type(None): ""},
}


class _PackRun:
    """Consecutive fixed-width pieces of a shape encoder (union branch bytes, floats, booleans).

    They are written by one precompiled ``struct.Struct.pack`` call, or as one bytes literal when all
    are constants (e.g. a run of null fields).
    """

    def __init__(self) -> None:
        self.fmt: list[str] = []
        self.args: list[str] = []
        self.consts: list[int] = []
        self.has_values = False

    def const(self, byte: int) -> None:
        """Append a constant byte (a union branch index: 0 is a ``x`` pad byte, anything else ``B``)."""
        self.consts.append(byte)
        self.fmt.append("x" if byte == 0 else "B")
        if byte:
            self.args.append(str(byte))

    def value(self, code: str, v: str) -> None:
        """Append a value expression ``v`` packed with the struct format letter ``code``."""
        self.fmt.append(code)
        self.args.append(v)
        self.has_values = True

    def flush(self, gen: _Codegen, i: str) -> str:
        """Return the code writing the run (empty when there is none) and start a new run."""
        if not self.fmt:
            return ""
        if self.has_values:
            code = f"{i}out += {gen.struct('<' + ''.join(self.fmt))}({', '.join(self.args)})\n"
        else:
            code = f"{i}out += {bytes(self.consts)!r}\n"
        self.fmt, self.args, self.consts, self.has_values = [], [], [], False
        return code


class _ShapeCache(dict):
    """Encoders of one record type specialized to a record *shape*, compiled on first sight.

    The key is ``(*keys, *types)``: the record's keys in iteration order followed by the exact types of its
    values. Past ``limit`` shapes (records whose null patterns keep changing) the record type gives up on
    shapes: its entry point, the global ``entry`` of ``namespace``, is rebound to the generic encoder.

    Parameters
    ----------
    compile_shape : callable
        ``compile_shape(keys, types)``: the specialized encoder, or None where there is none.
    limit : int
        Shapes compiled at most.
    namespace : dict
        Globals of the generated code.
    entry : str
        Name of the record type's entry point in ``namespace``.
    """

    def __init__(self, compile_shape: Callable[[tuple, tuple], Callable | None], limit: int,
                 namespace: dict[str, Any], entry: str) -> None:
        super().__init__()
        self.compile_shape = compile_shape
        self.generic: Callable | None = None  # set once the generated module is executed
        self.limit = limit
        self.namespace = namespace
        self.entry = entry

    def __missing__(self, key: tuple) -> Callable:
        if len(self) >= self.limit:
            self.namespace[self.entry] = self.generic  # callers look it up at each call
            return self.generic
        n = len(key) // 2
        encoder = self.compile_shape(key[:n], key[n:]) or self.generic
        self[key] = encoder
        return encoder


class _Codegen:
    """Generate the Python source of an Avro encoder, record type by record type.

    Each record type gets three kinds of functions:

    * ``rec_<name>(out, d)``, the entry point: it looks up (or compiles) the encoder for the shape of
      ``d`` (its keys and the types of its values) and calls it with the values;
    * ``rec_<name>_<k>(out, d, vals)``, one per shape seen (:meth:`shape_source`): every null,
      missing field and union branch is known, so runs of them and of floats and booleans are packed by one
      ``struct`` call, and only ints, strings, bytes and nested records are written one by one;
    * ``rec_<name>_any(out, d, vals=None)``, the generic encoder (:meth:`record`), for the shapes it does
      not specialize (a missing required field, too many shapes).

    Parameters
    ----------
    max_shapes : int
        Shapes compiled per record type, at most.
    """

    def __init__(self, max_shapes: int = 256) -> None:
        self.n = 0
        self.funcs: list[str] = []
        self.records: dict[str, str] = {}
        self.structs: dict[str, str] = {}
        self.caches: dict[str, _ShapeCache] = {}
        self.max_shapes = max_shapes
        self.lock = threading.Lock()
        self.namespace: dict[str, Any] = {
            "_zz": _zigzag,
            "_ls": _LONG_SMALL,
            "_index": operator.index,
            "_pf": struct.Struct("<f").pack,
            "_pd": struct.Struct("<d").pack,
            "_bad": _bad,
            "_lw": {},
            "_Enc": EncodedRecords,
        }

    def var(self) -> str:
        """Return a fresh local variable name."""
        self.n += 1
        return f"v{self.n}"

    def struct(self, fmt: str) -> str:
        """Return the global name of a precompiled ``struct.Struct(fmt).pack`` (one per format)."""
        if fmt not in self.structs:
            self.structs[fmt] = name = f"_s{len(self.structs)}"
            self.namespace[name] = struct.Struct(fmt).pack
        return self.structs[fmt]

    def emit(self, schema: Any, v: str, i: str) -> str:
        """Return generic code writing value ``v`` of Avro type ``schema`` (any Python type, checked)."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_CODE:
                return _PRIMITIVE_CODE[schema].format(v=v, i=i)
            if schema in self.records:
                return f"{i}{self.records[schema]}(out, {v})\n"
            raise _Unsupported(schema)
        if isinstance(schema, list):
            code = ""
            nonnull = [s for s in schema if s != "null"]
            if len(nonnull) != 1 or len(schema) > 2:
                raise _Unsupported(schema)
            if "null" in schema:
                null_idx = schema.index("null")
                other_idx = 1 - null_idx
                code += f"{i}if {v} is None:\n{i}    out.append({2 * null_idx})\n{i}else:\n"
                code += f"{i}    out.append({2 * other_idx})\n"
                return code + self.emit(nonnull[0], v, i + "    ")
            return f"{i}out.append(0)\n" + self.emit(nonnull[0], v, i)
        if isinstance(schema, dict):
            t = schema["type"]
            if t in _PRIMITIVE_CODE:
                logical = schema.get("logicalType")
                if logical is None:
                    return self.emit(t, v, i)
                key = f"{t}-{logical}"
                if key not in _LOGICAL_WRITERS:
                    raise _Unsupported(key)
                self.namespace["_lw"][key] = _LOGICAL_WRITERS[key]
                w = self.var()
                return f"{i}{w} = _lw[{key!r}]({v}, None)\n" + self.emit(t, w, i)
            if t == "record":
                return f"{i}{self.record(schema)}(out, {v})\n"
            if t == "array":
                item = self.var()
                items = schema["items"]
                # Items already encoded (streamer.alerts.history_rows.EncodedRecords of this record type) are copied.
                encoded = (items.get("name") if isinstance(items, dict) and items.get("type") == "record"
                           else items if isinstance(items, str) and items in self.records else None)
                return (
                    (f"{i}if type({v}) is _Enc and {v}.record == {encoded!r}:\n"
                     f"{i}    if {v}.count:\n{i}        out += _zz({v}.count)\n{i}        out += {v}.body\n"
                     f"{i}elif {v}:\n" if encoded else f"{i}if {v}:\n")
                    + f"{i}    out += _zz(len({v}))\n{i}    for {item} in {v}:\n"
                    + self.emit(items, item, i + "        ")
                    + f"{i}out.append(0)\n"
                )
            raise _Unsupported(t)
        raise _Unsupported(repr(schema))

    def record(self, schema: dict[str, Any]) -> str:
        """Generate the entry point and the generic encoder of a record type; return the entry point's name."""
        name = schema["name"]
        if name in self.records:
            return self.records[name]
        fname = "rec_" + name.replace(".", "_")
        self.records[name] = fname
        cache = _ShapeCache(lambda keys, types: self.compile_shape(schema, fname, keys, types), self.max_shapes,
                            self.namespace, fname)
        self.caches[name] = self.namespace[f"_shapes_{fname}"] = cache
        self.funcs.append(
            f"def {fname}(out, d):\n"
            f"    vals = (*d.values(),)\n"
            f"    _shapes_{fname}[(*d, *map(type, vals))](out, d, vals)\n"
        )
        body = "    _get = d.get\n" if any("default" in f for f in schema["fields"]) else ""
        fields = []
        for field in schema["fields"]:
            v = self.var()
            key = field["name"]
            if "default" in field:
                body += f"    {v} = _get({key!r}, {field['default']!r})\n"
            else:
                body += f"    {v} = d[{key!r}]\n"
            fields.append((v, field["type"]))
        # Consecutive ["null", T] fields form runs: an all-null run is written as one constant, a run of
        # non-null fixed-width values (float, double) with one precompiled struct; otherwise field by field.
        k = 0
        while k < len(fields):
            j = k
            while j < len(fields) and _null_first(fields[j][1]):
                j += 1
            if j - k >= 2:
                body += self.null_run(fields[k:j], "    ")
                k = j
            else:
                body += self.emit(fields[k][1], fields[k][0], "    ")
                k += 1
        self.funcs.append(f"def {fname}_any(out, d, vals=None):\n{body or '    pass'}\n")
        return fname

    def null_run(self, run: list[tuple[str, Any]], i: str) -> str:
        """Return generic code for consecutive ``["null", T]`` fields (locals ``run[k][0]``)."""
        names = [v for v, _ in run]
        code = f"{i}if {' and '.join(f'{v} is None' for v in names)}:\n{i}    out += {bytes(len(run))!r}\n"
        fixed = [_FIXED.get(t[1] if isinstance(t[1], str) else "") for _, t in run]
        if all(fixed):
            sname = self.struct("<" + "".join("B" + c for c in fixed))
            args = ", ".join(f"2, {v}" for v in names)
            code += (f"{i}elif {' and '.join(f'{v} is not None' for v in names)}:\n"
                     f"{i}    out += {sname}({args})\n")
        code += f"{i}else:\n"
        if len(run) >= 4:  # mixed: split in halves, so scattered values cost a few tests, not one per field
            half = len(run) // 2
            return code + self.null_run(run[:half], i + "    ") + self.null_run(run[half:], i + "    ")
        for v, t in run:
            code += self.emit(t, v, i + "    ")
        return code

    def shape_source(self, schema: dict[str, Any], fname: str, keys: tuple, types: tuple) -> str | None:
        """Return the source of an encoder for records of ``schema`` with exactly these keys and value types.

        Parameters
        ----------
        schema : dict
            The parsed record schema.
        fname : str
            Name of the function to define.
        keys : tuple
            The record's keys, in iteration order (the order of ``vals``); keys not in the schema are ignored.
        types : tuple of type
            ``type(value)`` of each value.

        Returns
        -------
        str or None
            ``def fname(out, d, vals): ...``; None when a required field is missing or a missing field has
            a default other than null (the generic encoder handles those).
        """
        position = {k: n for n, k in enumerate(keys)}
        local = ["_"] * len(keys)
        run = _PackRun()
        body = ""
        for field in schema["fields"]:
            k = position.get(field["name"])
            if k is None:  # absent: the default, which must be null
                if "default" not in field or field["default"] is not None:
                    return None
                v, vtype = "None", type(None)
            else:
                v = local[k] = self.var()
                vtype = types[k]
            body += self.known_type(field["type"], v, vtype, run)
        body += run.flush(self, "    ")
        unpack = f"    {', '.join(local)}, = vals\n" if keys else ""
        return f"def {fname}(out, d, vals):\n{unpack}{body or '    pass'}\n"

    def known_type(self, schema: Any, v: str, vtype: type, run: _PackRun) -> str:
        """Return code writing ``v``, a value of exact Python type ``vtype``, of Avro type ``schema``.

        Fixed-width pieces join ``run``; anything else first flushes it. Branches of ``["null", T]`` are
        chosen here, at generation time; a value of a type ``_KNOWN_TYPE_CODE`` does not list gets the
        generic (checking) code.
        """
        branch = schema
        if isinstance(schema, list) and len(schema) == 2 and "null" in schema:
            null_idx = schema.index("null")
            if vtype is type(None):
                run.const(2 * null_idx)
                return ""
            run.const(2 * (1 - null_idx))
            branch = schema[1 - null_idx]
        if isinstance(branch, dict) and branch["type"] in _PRIMITIVE_CODE and "logicalType" not in branch:
            branch = branch["type"]
        code = _KNOWN_TYPE_CODE.get(branch, {}).get(vtype) if isinstance(branch, str) else None
        if code is None:  # a record, an array, a logical type, or an unexpected Python type: generic code
            return run.flush(self, "    ") + self.emit(branch, v, "    ")
        if len(code) <= 1:  # a struct format letter (or nothing to write: null)
            if code:
                run.value(code, v)
            return ""
        return run.flush(self, "    ") + code.format(v=v, i="    ")

    def compile_shape(self, schema: dict[str, Any], fname: str, keys: tuple, types: tuple) -> Callable | None:
        """Compile :meth:`shape_source` into the encoder's namespace; return the function (None: no shape)."""
        with self.lock:  # struct names and variable numbers are shared by all shapes
            name = f"{fname}_{len(self.caches[schema['name']])}"
            src = self.shape_source(schema, name, keys, types)
            if src is None:
                return None
            defined: dict[str, Any] = {}  # not the shared namespace: another thread may compile the same name
            exec(compile(src, "<blink-alert-encoder>", "exec"), self.namespace, defined)  # noqa: S102 - from the schema
            return defined[name]

    def build(self, parsed: dict[str, Any]) -> Callable:
        """Generate and execute the encoder of the top-level record ``parsed``; return its entry point."""
        top = self.record(parsed)
        self.funcs.append(f"def encode(out, d):\n    {top}(out, d)\n")  # by name: the entry point may be rebound
        exec(compile("\n".join(self.funcs), "<blink-alert-encoder>", "exec"), self.namespace)  # noqa: S102
        for name, cache in self.caches.items():
            cache.generic = self.namespace[self.records[name] + "_any"]
        return self.namespace["encode"]


_FIXED = {"double": "d", "float": "f"}


def _null_first(schema: Any) -> bool:
    """``["null", T]`` with T a primitive (no logical type): a field a null run can hold."""
    return (isinstance(schema, list) and len(schema) == 2 and schema[0] == "null"
            and isinstance(schema[1], str) and schema[1] in _PRIMITIVE_CODE and schema[1] != "null")


def _bad(value: Any, what: str) -> None:
    raise TypeError(f"{value!r:.40} is not {what}")


def _compile_encoder(parsed: dict[str, Any], *, max_shapes: int = 256) -> Callable | None:
    """Generate a Python encoder for ``parsed`` (bytes identical to ``fastavro.schemaless_writer``).

    Parameters
    ----------
    parsed : dict
        A schema parsed by ``fastavro.parse_schema``.
    max_shapes : int, optional
        Record shapes (keys and value types) compiled per record type; others use the generic encoder.

    Returns
    -------
    callable or None
        ``encoder(out: bytearray, record)``, appending the body to ``out``; None when the schema uses an
        unsupported construct (maps, enums, fixed, wide unions).
    """
    gen = _Codegen(max_shapes)
    try:
        return gen.build(parsed)
    except _Unsupported as exc:
        log.info("alert schema has %s; using fastavro's writer", exc)
        return None


# --------------------------------------------------------------------------------------------------- schema
@lru_cache(maxsize=None)
def _schema_for_id(schema_id: int) -> Schema:
    major, minor = divmod(schema_id, 100)
    try:
        return Schema.from_file(get_schema_path(major, minor) + f"/lsst.v{major}_{minor}.alert.avsc")
    except Exception as exc:  # lsst.alert.packet raises assorted errors for unknown versions
        raise InputError(f"unknown alert schema id {schema_id} ({major}.{minor}): {exc}", stage="decode_alert") from exc


class AlertSchema:
    """The alert schema Blink writes, loaded and parsed once.

    Parameters
    ----------
    schema : lsst.alert.packet.Schema, optional
        Schema to use; default: the latest one in ``lsst-alert-packet`` (``Schema.from_file()``).
    validate_on_serialize : bool, optional
        Run the (slow, about 3 ms) full fastavro validation before each serialization; off in the hot path.
    use_generated_encoder : bool, optional
        Serialize with an encoder generated from the schema (default) instead of ``fastavro.schemaless_writer``.

    Notes
    -----
    fastavro's writer spends most of its time resolving the 300-odd ``["null", T]`` unions of the schema
    (about 1 ms for an alert with 10 previous DiaSources). The generated encoder is plain Python compiled
    once from the parsed schema: it writes the same bytes (checked by the tests against fastavro), about
    10 times faster, and still raises on a missing required field or a value of the wrong type. Schemas with
    constructs it does not handle (maps, enums, fixed, wide unions) fall back to fastavro.
    """

    def __init__(
        self,
        schema: Schema | None = None,
        *,
        validate_on_serialize: bool = False,
        use_generated_encoder: bool = True,
    ) -> None:
        self._schema = schema if schema is not None else Schema.from_file()
        self._parsed = fastavro.parse_schema(self._schema.definition)
        self.schema_id: int = int(self._schema.get_schema_id())
        self.validate_on_serialize = validate_on_serialize
        self._encoder = _compile_encoder(self._parsed) if use_generated_encoder else None
        self._header = _HEADER.pack(MAGIC_BYTE, self.schema_id)

    @classmethod
    @lru_cache(maxsize=1)
    def latest(cls) -> AlertSchema:
        """Return a shared instance for the latest schema (loaded once per process)."""
        return cls()

    @property
    def definition(self) -> dict[str, Any]:
        """The parsed Avro definition (for OCF writers)."""
        return self._parsed

    @property
    def version(self) -> str:
        """``"major.minor"``, e.g. ``"11.1"``."""
        major, minor = divmod(self.schema_id, 100)
        return f"{major}.{minor}"

    def validate(self, record: Mapping[str, Any]) -> None:
        """Check a record against the schema.

        Parameters
        ----------
        record : dict
            An alert.

        Raises
        ------
        InputError
            The record does not conform; the message names the offending field.
        """
        try:
            fastavro.validation.validate(record, self._parsed, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            raise InputError(f"alert does not match schema {self.version}: {exc}", stage="package_alert") from exc

    def serialize(self, record: Mapping[str, Any]) -> bytes:
        """Serialize one alert as schemaless Avro.

        Parameters
        ----------
        record : dict
            An alert.

        Returns
        -------
        bytes
            Schemaless Avro body (not framed).

        Raises
        ------
        InputError
            fastavro cannot write the record (wrong type, missing field).
        """
        return self._encode(record, b"")

    def serialize_framed(self, record: Mapping[str, Any]) -> bytes:
        """Serialize one alert in the Confluent wire format (:func:`frame` of :meth:`serialize`).

        The 5-byte header is written first and the body encoded after it, so the (cutout-sized) body is not
        copied once more to be framed.
        """
        return self._encode(record, self._header)

    def _encode(self, record: Mapping[str, Any], prefix: bytes) -> bytes:
        """Return ``prefix`` followed by the schemaless Avro of ``record`` (see :meth:`serialize`)."""
        if self.validate_on_serialize:
            self.validate(record)
        try:
            if self._encoder is not None:
                out = bytearray(prefix)
                self._encoder(out, record)
                return bytes(out)
            buf = io.BytesIO()
            buf.write(prefix)
            fastavro.schemaless_writer(buf, self._parsed, record)
            return buf.getvalue()
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, struct.error) as exc:
            raise InputError(f"cannot serialize alert: {type(exc).__name__}: {exc}", stage="package_alert") from exc

    def deserialize_body(self, body: bytes) -> dict[str, Any]:
        """Decode a schemaless Avro body written with this schema.

        Raises
        ------
        InputError
            The bytes are not a valid alert.
        """
        try:
            return fastavro.schemaless_reader(io.BytesIO(body), self._parsed, None)
        except Exception as exc:  # fastavro raises many types on garbage
            raise InputError(f"cannot decode alert body: {type(exc).__name__}: {exc}", stage="decode_alert") from exc

    def deserialize(self, data: bytes) -> dict[str, Any]:
        """Decode a Confluent-framed alert, with the schema its id names.

        Parameters
        ----------
        data : bytes
            Framed message value.

        Returns
        -------
        dict
            The alert record.

        Raises
        ------
        InputError
            Bad framing, an unknown schema id, or an undecodable body.
        """
        schema_id, body = unframe(data)
        if schema_id == self.schema_id:
            return self.deserialize_body(body)
        other = _schema_for_id(schema_id)
        try:
            return other.deserialize(body)
        except Exception as exc:  # fastavro raises many types on garbage
            raise InputError(f"cannot decode alert body (schema id {schema_id}): {exc}", stage="decode_alert") from exc


# --------------------------------------------------------------------------------------------------- keys
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


def sample_alert(
    *,
    dia_object_id: int = 1_000_000_001,
    dia_source_id: int = 2_000_000_001,
    visit: int = 1,
    detector: int = 1,
    n_prv_dia_sources: int = 10,
    cutout_nbytes: int = 20_000,
) -> dict[str, Any]:
    """Return a realistic, schema-valid alert built from ``lsst-alert-packet``'s sample data.

    Parameters
    ----------
    dia_object_id, dia_source_id : int, optional
        Ids of the object and of the triggering source.
    visit, detector : int, optional
        Written into ``diaSource``.
    n_prv_dia_sources : int, optional
        Number of previous DiaSources (copies of the sample's).
    cutout_nbytes : int, optional
        Size of each of the three (pseudo-random, incompressible) cutouts.

    Returns
    -------
    dict
        An alert in the latest schema, for tests and benchmarks.
    """
    import copy
    import random

    base = _sample_record()
    alert = copy.deepcopy(base)
    alert["diaSourceId"] = dia_source_id
    alert["diaSource"].update(diaSourceId=dia_source_id, diaObjectId=dia_object_id, visit=visit, detector=detector)
    prv = base["prvDiaSources"][0]
    alert["prvDiaSources"] = [
        {**prv, "diaSourceId": dia_source_id - 1 - i, "diaObjectId": dia_object_id} for i in range(n_prv_dia_sources)
    ]
    alert["diaObject"]["diaObjectId"] = dia_object_id
    rng = random.Random(dia_source_id)
    for name in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
        alert[name] = rng.randbytes(cutout_nbytes)
    return alert


@lru_cache(maxsize=1)
def _sample_record() -> dict[str, Any]:
    import json
    from pathlib import Path

    major, minor = divmod(AlertSchema.latest().schema_id, 100)
    path = Path(get_schema_path(major, minor)) / "sample_data" / "alert.json"
    with open(path) as fo:
        return json.load(fo)
