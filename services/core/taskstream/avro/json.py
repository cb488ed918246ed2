"""JSON <-> Avro datums, driven by an Avro schema alone: the one JSON path of taskstream.

The HTTP service converts request bodies with it, whether it serves an app or only the
``schemas/`` files, and the CLI's JSON arguments (TaskSignature.args_from_json) take it too.
The conventions:

    null, boolean, string          as themselves       int, long      integral numbers, in range
    float, double                  JSON numbers        bytes, fixed   base64 strings
    enum                           a symbol name       array, map     JSON arrays and objects
    record                         a JSON object       ["null", X]    null or X's JSON
    timestamp-millis/-micros       ISO-8601 date-time with a UTC offset
    date                           ISO-8601 date       uuid           a UUID string
    decimal                        a decimal string or number (scale and precision checked)

An int or long takes an integral number, by the rule ``task.delay()`` applies too
(taskstream.avro.values.integer): ``3``, ``3.0`` and ``3e0`` are 3, ``2.5`` is refused.

A record field left out takes its Avro default, or is reported missing. Every error is an
InvalidArguments whose ``path`` names the field, e.g. ``args.order.items[2]``.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from taskstream.avro.values import Convert, Mismatch, double, expected, fit_decimal, integer
from taskstream.errors import InvalidArguments, InvalidSchema
from taskstream.text import storable

__all__ = ["JsonConverter", "datum_to_json", "full_name"]

_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")


def full_name(schema: dict[str, Any], namespace: str) -> str:
    """A named type's full name, as the Avro specification resolves it: a dotted name is full;
    otherwise its own namespace, else the enclosing one, goes before it."""
    name: str = schema["name"]
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _expected(what: str, value: Any) -> Mismatch:
    return expected(what, value, "null" if value is None else None)  # as JSON names it


class JsonConverter:
    """Converts a JSON value to the datum fastavro writes for ``schema``, checking it.

    Compiled once per schema: ``JsonConverter(schema).to_datum(obj, task="t", root="args")``.
    """

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self._named: dict[str, list[Convert]] = {}
        self._records: dict[str, _Record] = {}
        self._convert = self._compile(schema, namespace="")
        is_record = isinstance(schema, dict) and schema.get("type") in ("record", "error")
        self._root = self._records[full_name(schema, "")] if is_record else None

    def to_datum(self, value: Any, *, task: str, root: str = "args", partial: bool = False) -> Any:
        """The datum of `value`; InvalidArguments naming the field below `root` if it does
        not fit. With ``partial`` (a record schema only), fields left out of the top-level
        object are left out of the datum too, rather than defaulted or reported missing."""
        try:
            if partial:
                if self._root is None:
                    raise InvalidSchema("partial conversion needs a record schema")
                return self._root.convert(value, partial=True)
            return self._convert(value)
        except Mismatch as exc:
            raise InvalidArguments(task, exc.path(root), exc.message) from None

    # -- compiling ------------------------------------------------------------------------

    def _compile(self, schema: Any, namespace: str) -> Convert:
        if isinstance(schema, list):
            return self._union([self._compile(s, namespace) for s in schema], schema)
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _primitive(schema)
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            found = self._named.get(full)
            if found is None:
                found = self._named.get(schema)
            if found is None:
                raise InvalidSchema(f"unknown named type {schema!r}")
            ref = found
            return lambda v: ref[0](v)  # looked up late: it may refer to itself
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            conv = _logical(logical, schema)
            if conv is not None:
                return conv
        if kind in ("record", "error", "enum", "fixed"):
            full = full_name(schema, namespace)
            namespace = full.rpartition(".")[0]  # the enclosing namespace of what it holds
            cell: list[Convert] = []
            self._named[full] = cell
            if kind == "enum":
                cell.append(_enum(schema["symbols"]))
            elif kind == "fixed":
                cell.append(_base64(schema["size"]))
            else:
                cell.append(self._record(schema, full, namespace))
            return cell[0]
        if kind == "array":
            return _each(self._compile(schema["items"], namespace), is_map=False)
        if kind == "map":
            return _each(self._compile(schema["values"], namespace), is_map=True)
        return self._compile(kind, namespace)  # {"type": "long"} and the like

    def _record(self, schema: dict[str, Any], full: str, namespace: str) -> Convert:
        fields: list[tuple[str, Convert, bool, Any]] = []
        for f in schema["fields"]:
            has_default = "default" in f
            default = _default_datum(f["type"], f.get("default")) if has_default else None
            fields.append((f["name"], self._compile(f["type"], namespace), has_default, default))
        compiled = self._records[full] = _Record(schema["name"], fields)
        return compiled.convert

    @staticmethod
    def _union(branches: list[Convert], schema: list[Any]) -> Convert:
        if len(branches) == 2 and schema[0] == "null":  # the usual X | None: no guessing
            inner = branches[1]
            return lambda v: None if v is None else inner(v)

        def convert(v: Any) -> Any:
            errors = []
            for branch in branches:
                try:
                    return branch(v)
                except Mismatch as exc:
                    errors.append(exc.message)
            raise Mismatch("no branch of the union fits: " + "; ".join(errors))

        return convert


class _Record:
    """A record's converter: a JSON object with its fields, checked and defaulted."""

    def __init__(self, name: str, fields: list[tuple[str, Convert, bool, Any]]) -> None:
        self.name = name
        self.fields = fields
        self.names = [name for name, _, _, _ in fields]
        self.known = frozenset(self.names)

    def convert(self, v: Any, partial: bool = False) -> Any:
        what = self.name
        if not isinstance(v, dict):
            raise _expected(f"a JSON object of {what}", v)
        for key in v:
            if key not in self.known:
                expected = ", ".join(self.names)
                raise Mismatch(f"unknown field of {what}; expected one of {expected}", f".{key}")
        out = {}
        for name, conv, has_default, default in self.fields:
            if name in v:
                try:
                    out[name] = conv(v[name])
                except Mismatch as exc:
                    exc.segments.append(f".{name}")
                    raise
            elif partial:
                continue
            elif has_default:
                out[name] = default
            else:
                raise Mismatch(f"missing required field of {what}", f".{name}")
        return out


def _primitive(kind: str) -> Convert:
    if kind in ("int", "long", "float", "double"):
        whole = kind in ("int", "long")

        def number(v: Any) -> Any:
            if v is None:  # as JSON says it, where the shared checks would say NoneType
                raise _expected("int" if whole else "float", v)
            return integer(v, kind) if whole else double(v)

        return number
    if kind == "bytes":
        return _base64(None)
    checks: dict[str, tuple[str, Callable[[Any], bool]]] = {
        "null": ("None", lambda v: v is None),
        "boolean": ("bool", lambda v: v is True or v is False),
        "string": ("str", lambda v: isinstance(v, str)),
    }
    label, accepts = checks[kind]
    if kind == "string":
        return _string

    def check(v: Any) -> Any:
        if accepts(v):
            return v
        raise _expected(label, v)

    return check


def _string(v: Any) -> Any:
    if not isinstance(v, str):
        raise _expected("str", v)
    if not v.isascii() and storable(v, nul=False) != v:
        raise Mismatch("a lone surrogate (\\ud800-\\udfff) has no UTF-8 form")
    return v


def _base64(size: int | None) -> Convert:
    def convert(v: Any) -> Any:
        if not isinstance(v, str):
            raise _expected("a base64 string", v)
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise _expected("a base64 string", v) from None
        if size is not None and len(raw) != size:
            raise Mismatch(f"expected {size} bytes, got {len(raw)}")
        return raw

    return convert


def _enum(symbols: list[str]) -> Convert:
    known = frozenset(symbols)

    def convert(v: Any) -> Any:
        if isinstance(v, str) and v in known:
            return v
        raise _expected(f"one of {', '.join(symbols)}", v)

    return convert


def _parsed(parse: Callable[[str], Any], what: str) -> Convert:
    def convert(v: Any) -> Any:
        if not isinstance(v, str):
            raise _expected(what, v)
        try:
            return parse(v)
        except Mismatch:
            raise
        except (ValueError, ArithmeticError):
            raise _expected(what, v) from None

    return convert


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.utcoffset() is None:
        raise Mismatch(f"datetime {text} needs a timezone (e.g. +00:00 or Z)")
    return value


def _decimal(precision: int, scale: int) -> Convert:
    def convert(v: Any) -> Any:
        if isinstance(v, float):
            v = repr(v)  # so that 0.1 stays 0.1 rather than its binary expansion
        if isinstance(v, int) and not isinstance(v, bool):
            d = Decimal(v)
        elif isinstance(v, str):
            try:
                d = Decimal(v)
            except InvalidOperation:
                raise _expected("a decimal string or number", v) from None
        else:
            raise _expected("a decimal string or number", v)
        return fit_decimal(d, precision, scale)

    return convert


def _logical(logical: str, schema: dict[str, Any]) -> Convert | None:
    """The converter of a logical type fastavro writes from Python values, else None."""
    kind = schema["type"]
    if logical in ("timestamp-millis", "timestamp-micros") and kind == "long":
        return _parsed(_aware, "an ISO-8601 datetime")
    if logical == "date" and kind == "int":
        return _parsed(date.fromisoformat, "an ISO-8601 date")
    if logical in ("time-millis", "time-micros") and kind in ("int", "long"):
        return _parsed(time.fromisoformat, "an ISO-8601 time")
    if logical == "uuid" and kind == "string":
        return _parsed(uuid.UUID, "a UUID string")
    if logical == "decimal" and kind == "bytes":
        return _decimal(int(schema["precision"]), int(schema.get("scale", 0)))
    return None  # unknown logical types are read as their underlying type, as Avro says


def _string_key(k: str) -> None:
    try:
        _string(k)
    except Mismatch as exc:
        raise Mismatch(f"a map key: {exc.message}") from None


def _each(conv: Convert, *, is_map: bool) -> Convert:
    def convert(v: Any) -> Any:
        if is_map:
            if not isinstance(v, dict):
                raise _expected("a JSON object", v)
            items: Iterator[tuple[Any, Any]] = iter(v.items())
        else:
            if not isinstance(v, list):
                raise _expected("a JSON array", v)
            items = enumerate(v)
        out_map, out_list = {}, []
        for k, x in items:
            if is_map:
                _string_key(k)
            try:
                converted = conv(x)
            except Mismatch as exc:
                exc.segments.append(f'["{k}"]' if is_map else f"[{k}]")
                raise
            if is_map:
                out_map[k] = converted
            else:
                out_list.append(converted)
        return out_map if is_map else out_list

    return convert


def _default_datum(schema: Any, default: Any) -> Any:
    """An Avro field default (JSON, for the union's first branch) as a datum fastavro writes."""
    first = schema[0] if isinstance(schema, list) and schema else schema
    kind = first.get("type") if isinstance(first, dict) else first
    if kind in ("bytes", "fixed") and isinstance(default, str):
        return default.encode("latin-1")  # Avro writes byte defaults as code points 0-255
    return default


def datum_to_json(datum: Any) -> Any:
    """A datum fastavro read (logical types converted) as JSON-able data, by the
    conventions above. Non-finite floats become the strings "NaN", "Infinity", "-Infinity"."""
    if datum is None or isinstance(datum, bool | int | str):
        return datum
    if isinstance(datum, float):
        if math.isfinite(datum):
            return datum
        return "NaN" if math.isnan(datum) else ("Infinity" if datum > 0 else "-Infinity")
    if isinstance(datum, dict):
        return {k: datum_to_json(v) for k, v in datum.items()}
    if isinstance(datum, list | tuple):
        return [datum_to_json(v) for v in datum]
    if isinstance(datum, bytes):
        return base64.b64encode(datum).decode("ascii")
    if isinstance(datum, datetime | date | time):
        return datum.isoformat()
    if isinstance(datum, uuid.UUID | Decimal):
        return str(datum)
    return str(datum)
