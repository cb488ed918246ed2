"""Python values <-> Avro datums: the checks and converters an annotation compiles to.

A :class:`Conv` holds one annotation's schema and its two converters, built once (closures)
because every task call encodes its arguments and every worker decodes them. For int, float,
str, bool, bytes and None they only type-check; fastavro converts the logical types itself
(aware datetime, date, UUID, Decimal), so those pass through once checked.

The checks that JSON input shares (:func:`integer`, :func:`double`, :func:`fit_decimal`) live
here too, so that ``task.delay()`` and the HTTP service apply one rule to each type.
"""

from __future__ import annotations

import collections.abc as abc
import functools
import json
import reprlib
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

LONG_RANGE = (-(2**63), 2**63 - 1)
INT_RANGE = (-(2**31), 2**31 - 1)

Convert = Callable[[Any], Any]


class Mismatch(ValueError):
    """A value that does not fit; containers add their path segment while it propagates.

    Internal: the public entry points turn it into InvalidArguments naming the whole path.
    """

    def __init__(self, message: str, segment: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.segments: list[str] = [] if segment is None else [segment]

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.segments))


def expected(what: str, value: Any, kind: str | None = None) -> Mismatch:
    kind = kind or type(value).__name__
    return Mismatch(f"expected {what}, got {kind} {reprlib.repr(value)}")


def identity(value: Any) -> Any:
    return value


# -- the checks Python values and JSON values share --------------------------------------


def integer(v: Any, avro: str = "long") -> int:
    """The one rule for an Avro int or long, whether ``task.delay()`` or a JSON body sent it:
    an integral number within the type's range. That is an ``int`` (never a bool), or a float
    with no fractional part (``1.0``, JSON's ``1e3``), which becomes that int; ``2.5`` fails.

    Why floats at all: JSON has one number type, and JSON Schema (so the OpenAPI document the
    HTTP service publishes, ``"type": "integer"``) counts 1.0 as an integer, as do encoders
    that write every number as a double. Python callers get the same rule rather than a
    stricter one, so that a value is valid or not whichever way it is sent.
    """
    if isinstance(v, float) and v.is_integer():  # False for inf and nan
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        low, high = INT_RANGE if avro == "int" else LONG_RANGE
        if low <= v <= high:
            return v
        bits = 32 if avro == "int" else 64
        raise Mismatch(f"{reprlib.repr(v)} does not fit in a {bits}-bit signed Avro {avro}")
    raise expected("int", v)


def double(v: Any) -> float:
    """A float, or an int that a double can hold (Avro float and double alike)."""
    if isinstance(v, float):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        if abs(v) <= sys.float_info.max:
            return float(v)
        raise Mismatch(f"{reprlib.repr(v)} is too large for a double")
    raise expected("float", v)


def fit_decimal(d: Decimal, precision: int, scale: int) -> Decimal:
    """`d` if it is finite and fits the digits of an Avro decimal, rather than rounded:
    fastavro refuses it, and an amount of money would change."""
    if not d.is_finite():
        raise Mismatch(f"{d} is not a finite Decimal")
    _, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)  # finite, so not 'n', 'N' or 'F'
    if -exponent > scale:
        raise Mismatch(f"{d} has more than {scale} digits after the point")
    if len(digits) + exponent + scale > precision:
        raise Mismatch(f"{d} has more than {precision - scale} digits before the point")
    return d


# -- converters of Python values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conv:
    """Everything derived from one annotation."""

    schema: Any
    encode: Convert  # python -> datum; raises Mismatch
    decode: Convert  # datum fastavro read -> python


def _check(label: str, accepts: Callable[[Any], bool]) -> Convert:
    def check(v: Any) -> Any:
        if accepts(v):
            return v
        raise expected(label, v)

    return check


def _aware(v: Any) -> Any:
    if not isinstance(v, datetime):
        raise expected("datetime", v)
    if v.utcoffset() is None:  # fastavro would silently take a naive value as UTC
        raise Mismatch(f"datetime {v.isoformat()} needs a timezone (e.g. tzinfo=UTC)")
    return v


def _logical(avro: str, logical: str) -> dict[str, str]:
    return {"type": avro, "logicalType": logical}


def _leaf(schema: Any, encode: Convert) -> Conv:
    return Conv(schema, encode, identity)


LEAVES: dict[Any, Conv] = {
    int: _leaf("long", integer),
    float: _leaf("double", double),
    str: _leaf("string", _check("str", lambda v: isinstance(v, str))),
    bool: _leaf("boolean", _check("bool", lambda v: v is True or v is False)),
    None: _leaf("null", _check("None", lambda v: v is None)),
    bytes: _leaf("bytes", _check("bytes", lambda v: isinstance(v, bytes))),
    datetime: _leaf(_logical("long", "timestamp-micros"), _aware),
    date: _leaf(
        _logical("int", "date"),
        _check("date", lambda v: isinstance(v, date) and not isinstance(v, datetime)),
    ),
    uuid.UUID: _leaf(
        _logical("string", "uuid"), _check("UUID", lambda v: isinstance(v, uuid.UUID))
    ),
}
LEAVES[type(None)] = LEAVES[None]


def decimal(precision: int, scale: int) -> Conv:
    """A Decimal (or an int) as Avro's decimal bytes of `precision` digits, `scale` after."""

    def encode(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = Decimal(v)
        elif not isinstance(v, Decimal):
            raise expected("Decimal", v)
        return fit_decimal(v, precision, scale)

    schema = {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    return Conv(schema, encode, identity)


def _is_list(v: Any) -> None:
    if not isinstance(v, list | tuple):
        raise expected("list", v)


def _is_map(v: Any) -> None:
    if not isinstance(v, abc.Mapping):
        raise expected("dict", v)
    for key in v:
        if not isinstance(key, str):
            raise expected("str keys", key)


def _each(conv: Convert, is_map: bool, check: Any = None) -> Convert:
    """Apply `conv` to each item of a list or each value of a dict, naming a failing one."""

    def convert(v: Any) -> Any:
        if check is not None:
            check(v)
        try:
            return {k: conv(x) for k, x in v.items()} if is_map else [conv(x) for x in v]
        except Mismatch as exc:
            # Only now find which item failed, so that success stays a plain comprehension.
            items = ((json.dumps(k), x) for k, x in v.items()) if is_map else enumerate(v)
            exc.segments.append(next((f"[{k}]" for k, x in items if _fails(conv, x)), "[?]"))
            raise

    return convert


def _fails(conv: Convert, value: Any) -> bool:
    try:
        conv(value)
    except Mismatch:
        return True
    return False


def container(item: Conv, kind: str) -> Conv:
    """An Avro array (for kind "list" or "tuple") or map of `item`."""
    is_map, check = kind == "map", _is_map if kind == "map" else _is_list
    decode = identity if item.decode is identity else _each(item.decode, is_map)
    if kind == "tuple":
        decode = functools.partial(lambda inner, d: tuple(inner(d)), decode)
    schema = (
        {"type": "map", "values": item.schema}
        if is_map
        else {"type": "array", "items": item.schema}
    )
    return Conv(schema, _each(item.encode, is_map, check), decode)


def optional(inner: Conv) -> Conv:
    def lift(conv: Convert) -> Convert:
        return identity if conv is identity else (lambda v: None if v is None else conv(v))

    return Conv(["null", inner.schema], lift(inner.encode), lift(inner.decode))


def enum(cls: type[Enum], named: dict[str, str]) -> Conv:
    """An Enum as an Avro enum of its member names."""
    members = {m.name: m for m in cls}

    def encode(v: Any) -> Any:
        if isinstance(v, cls):
            return v.name
        raise expected(cls.__name__, v)

    schema = {"type": "enum", **named, "symbols": list(members)}
    return Conv(schema, encode, members.__getitem__)


def _construct(cls: Any, datum: dict[str, Any]) -> Any:
    return cls(**datum)


def record(cls: Any, fields: list[tuple[str, Conv]], schema: dict[str, Any]) -> Conv:
    """A dataclass as an Avro record of `fields` (its init fields, in order)."""

    def encode(v: Any) -> Any:
        if not isinstance(v, cls):
            raise expected(cls.__name__, v)
        out = {}
        for name, conv in fields:
            try:
                out[name] = conv.encode(getattr(v, name))
            except Mismatch as exc:
                exc.segments.append(f".{name}")
                raise
        return out

    def decode(d: Any) -> Any:
        return cls(**{name: conv.decode(d[name]) for name, conv in fields})

    if all(conv.decode is identity for _, conv in fields):
        decode = functools.partial(_construct, cls)  # fastavro's dict holds the values

    return Conv(schema, encode, decode)


def late(cell: list[Conv], schema: Any) -> Conv:
    """A type that refers to itself while still being built: look its converters up late."""
    return Conv(schema, lambda v: cell[0].encode(v), lambda d: cell[0].decode(d))
