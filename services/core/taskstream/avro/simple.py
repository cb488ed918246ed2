"""Hand-written readers and writers for simple schemas: most tasks' arguments and results.

A task's arguments are a record of a few fields, its result often one primitive; for those
(primitives without logical types, ``["null", primitive]`` unions, and a record of such
fields) :func:`plan` builds a writer and a reader from taskstream.avro.binary once, which
take a fraction of fastavro's per-call cost (its BytesIO, its schema's set-up, its dispatch).
Anything else has no plan and is fastavro's. A plan takes exactly-typed values only and
raises for any other (Unfit, or the builtin error of its first step), and a read that is
not exactly fastavro's raises too: the codec then goes fastavro's way, which gives the bytes,
the datum or the error it always gave (tests/unit/test_avro_simple.py holds both to that).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskstream.avro.binary import (
    LENGTHS,
    Unfit,
    bytes_bytes,
    int_bytes,
    long_bytes,
    read_bytes,
    read_int,
    read_long,
    read_string,
)

Write = Callable[[Any], bytes]
Read = Callable[[bytes, int, int], tuple[Any, int]]

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


def _string(value: Any) -> bytes:
    if type(value) is not str:
        raise Unfit("not a str")
    data = value.encode()
    n = len(data)
    return (LENGTHS[n] if n < 1024 else long_bytes(n)) + data


def _long(value: Any) -> bytes:
    if type(value) is not int:
        raise Unfit("not an int")
    return long_bytes(value)


def _int(value: Any) -> bytes:
    if type(value) is not int:
        raise Unfit("not an int")
    return int_bytes(value)


def _double(value: Any) -> bytes:
    if type(value) is not float:
        raise Unfit("not a float")
    return _DOUBLE.pack(value)


def _boolean(value: Any) -> bytes:
    if type(value) is not bool:
        raise Unfit("not a bool")
    return b"\x01" if value else b"\x00"


def _null(value: Any) -> bytes:
    if value is not None:
        raise Unfit("not None")
    return b""


def _read_double(data: bytes, pos: int, end: int) -> tuple[float, int]:
    if pos + 8 > end:
        raise Unfit("past the end")
    return _DOUBLE.unpack_from(data, pos)[0], pos + 8


def _read_boolean(data: bytes, pos: int, end: int) -> tuple[bool, int]:
    b = data[pos]
    if b > 1:
        raise Unfit("not a boolean byte")  # (fastavro's to say what it makes of it)
    return b == 1, pos + 1


def _read_null(data: bytes, pos: int, end: int) -> tuple[None, int]:
    return None, pos


_PRIMITIVES: dict[str, tuple[Write, Read]] = {
    "string": (_string, read_string),
    "bytes": (bytes_bytes, read_bytes),
    "long": (_long, lambda data, pos, end: read_long(data, pos)),
    "int": (_int, lambda data, pos, end: read_int(data, pos)),
    "double": (_double, _read_double),
    "boolean": (_boolean, _read_boolean),
    "null": (_null, _read_null),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """A schema's hand-written body writer and reader."""

    write: Write
    read: Read

    def decode(self, data: bytes, start: int) -> Any:
        """The datum of the body from ``start`` to the end of ``data``; raises (Unfit or
        a builtin error) unless it reads exactly to the end."""
        datum, end = self.read(data, start, len(data))
        if end != len(data):
            raise Unfit("not the whole body")
        return datum


def plan(schema: Any) -> Plan | None:
    """A plan for ``schema`` (its JSON form as written) if it is simple, else None."""
    parts = _plan(schema)
    return None if parts is None else Plan(*parts)


def _plan(schema: Any) -> tuple[Write, Read] | None:
    if isinstance(schema, str):
        return _PRIMITIVES.get(schema)
    if isinstance(schema, list):
        return _optional(schema)
    if not isinstance(schema, dict) or "logicalType" in schema:
        return None  # (fastavro converts logical types)
    kind = schema.get("type")
    if kind == "record":
        return _record(schema.get("fields"))
    if isinstance(kind, str) and set(schema) <= {"type", "doc"}:
        return _PRIMITIVES.get(kind)
    return None


def _optional(branches: list[Any]) -> tuple[Write, Read] | None:
    if len(branches) != 2 or branches[0] != "null" or not isinstance(branches[1], str):
        return None
    some = _PRIMITIVES.get(branches[1])
    if some is None or branches[1] == "null":
        return None
    write_some, read_some = some

    def write(value: Any) -> bytes:
        return b"\x00" if value is None else b"\x02" + write_some(value)

    def read(data: bytes, pos: int, end: int) -> tuple[Any, int]:
        branch = data[pos]
        if branch == 0:
            return None, pos + 1
        if branch == 2:
            return read_some(data, pos + 1, end)
        raise Unfit("not a branch of the union")

    return write, read


def _record(fields: Any) -> tuple[Write, Read] | None:
    if not isinstance(fields, list):
        return None
    names: list[str] = []
    writers: list[Write] = []
    readers: list[Read] = []
    for f in fields:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            return None
        parts = _plan(f.get("type"))
        if parts is None:
            return None
        names.append(f["name"])
        writers.append(parts[0])
        readers.append(parts[1])
    pairs = list(zip(names, writers, strict=True))
    steps = list(zip(names, readers, strict=True))

    def write(datum: Any) -> bytes:
        if type(datum) is not dict or len(datum) != len(pairs):
            raise Unfit("not a dict of exactly the record's fields")  # (fastavro's defaults)
        return b"".join([w(datum[name]) for name, w in pairs])

    def read(data: bytes, pos: int, end: int) -> tuple[Any, int]:
        out = {}
        for name, r in steps:
            out[name], pos = r(data, pos, end)
        return out, pos

    return write, read
