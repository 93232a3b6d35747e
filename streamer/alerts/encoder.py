"""The compiled alert encoder: Python source generated from the parsed Avro schema, record type by record type,
writing the same bytes as ``fastavro.schemaless_writer`` about 10 times faster (see
:class:`streamer.alerts.schema.AlertSchema`)."""

from __future__ import annotations

import logging
import operator
import struct
import threading
from collections.abc import Callable
from typing import Any

from fastavro.logical_writers import LOGICAL_WRITERS as _LOGICAL_WRITERS

from streamer.alerts.history_rows import EncodedRecords

__all__ = ["compile_encoder", "varint_bytes", "zigzag"]

log = logging.getLogger(__name__)


class _Unsupported(Exception):
    """The schema uses a construct the generated encoder does not handle (fastavro is used instead)."""


def varint_bytes(z: int) -> bytes:
    """Return the Avro varint (little-endian base 128) of a non-negative integer, the general slow way."""
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINT = tuple(varint_bytes(z) for z in range(1 << 14))
"""``_VARINT[z]``: the whole 1- or 2-byte varint of ``z < 2**14``."""
_VARINT_LOW = tuple(bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(1 << 14))
"""``_VARINT_LOW[z]``: 14 low bits ``z`` of a longer varint: two bytes, both with the continuation bit."""
_LONG_SMALL = _VARINT[::2]
"""``_LONG_SMALL[n]``: the Avro ``long`` of ``0 <= n < 8192`` (zig-zag ``2 * n``), for inline look-ups."""


def zigzag(n: int) -> bytes:
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
    return varint_bytes(z)


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
            "_zz": zigzag,
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
            return self.emit_union(schema, v, i)
        if isinstance(schema, dict):
            return self.emit_complex(schema, v, i)
        raise _Unsupported(repr(schema))

    def emit_union(self, schema: list[Any], v: str, i: str) -> str:
        """Return generic code writing value ``v`` of the union ``schema`` (``[T]`` or ``["null", T]``)."""
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

    def emit_complex(self, schema: dict[str, Any], v: str, i: str) -> str:
        """Return generic code writing value ``v`` of a type given as a dict (logical, record or array)."""
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


def compile_encoder(parsed: dict[str, Any], *, max_shapes: int = 256) -> Callable | None:
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
