"""Avro single-object encoding: the only module that touches fastavro's reader and writer.

A message is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint (little-endian) + the
Avro binary body, as the Avro specification defines, so any Avro library decodes it given the
schema. Schemas are parsed once, at registration, and kept by fingerprint.

The fingerprint is that of the schema's Parsing Canonical Form, which drops every attribute
but name, type, fields, symbols, items, values and size, so a ``{"type": "long",
"logicalType": "timestamp-micros"}`` is just ``"long"`` in it. Apache's Python ``avro``
(1.12) keeps such a primitive as ``{"type":"long"}`` instead, so it fingerprints any schema
with a logical type on a primitive differently; :func:`apache_python_fingerprint` computes
its value, and :meth:`Codec.register` files the schema under that fingerprint too, so
messages written with it decode. Encoding always uses the specification's fingerprint.
"""

from __future__ import annotations

import io
import json
import reprlib
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import SchemaParseException, to_parsing_canonical_form
from fastavro.schema import fingerprint as _fingerprint

from taskstream.avro.binary import varint
from taskstream.avro.simple import Plan, plan
from taskstream.errors import CorruptMessage, InvalidSchema, UnknownSchema

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8

# What fastavro's reader raises for a body that does not match its schema.
_READ_ERRORS = (EOFError, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError)


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """A parsed schema with its fingerprint; encode with :meth:`Codec.encode`."""

    schema: Any  # the JSON form as written
    parsed: Any  # fastavro's parsed form, used on the hot path
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, little-endian
    header: bytes  # MARKER + fingerprint
    # Other fingerprints that decode as this schema (other libraries' canonical forms).
    aliases: tuple[bytes, ...] = ()
    # An older version of ``reader``: data written with it decodes as ``reader``'s datum
    # (Avro schema resolution fills the fields added since with their defaults).
    reader: AvroSchema | None = None
    # A simple schema's hand-written writer and reader (taskstream.avro.simple), else None.
    plan: Plan | None = None

    @property
    def name(self) -> str:
        return (
            self.schema["name"]
            if isinstance(self.schema, dict) and "name" in self.schema
            else str(self.schema)
        )

    def canonical_form(self) -> str:
        return to_parsing_canonical_form(self.schema)


def fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO fingerprint of ``schema``'s Parsing Canonical Form, as the 8 wire bytes."""
    canonical = to_parsing_canonical_form(parse_schema(schema, _write_hint=False))
    # fastavro renders the 64-bit value as hex of its little-endian bytes: the wire order.
    return bytes.fromhex(_fingerprint(canonical, "CRC-64-AVRO"))


# Attributes Apache's Python avro does not count among a schema's properties: a primitive
# written as an object with any other attribute (logicalType, precision, ...) keeps its
# object form, ``{"type":"long"}``, in that library's canonical form (avro/schema.py:
# SCHEMA_RESERVED_PROPS and PrimitiveSchema.to_canonical_json).
_APACHE_RESERVED = frozenset(
    ("type", "name", "namespace", "fields", "items", "size", "symbols", "values", "doc")
)
_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))


def apache_python_canonical_form(schema: Any) -> str:
    """``schema``'s canonical form as Apache's Python ``avro`` 1.12 writes it.

    It is the Parsing Canonical Form except that a primitive type with a logical type (or
    another non-reserved attribute) stays an object with only its type: ``{"type":"long"}``
    where the specification has ``"long"``.
    """
    out: list[str] = []
    _apache_form(parse_schema(schema, _write_hint=False), out)
    return "".join(out)


def _apache_form(schema: Any, out: list[str]) -> None:
    # parse_schema has resolved names to full names and later uses to name references.
    if isinstance(schema, list):
        out.append("[")
        for i, branch in enumerate(schema):
            if i:
                out.append(",")
            _apache_form(branch, out)
        out.append("]")
        return
    if not isinstance(schema, dict):
        out.append(json.dumps(schema))
        return
    kind = schema["type"]
    if isinstance(kind, str) and kind in _PRIMITIVES:
        out.append(f'{{"type":"{kind}"}}' if set(schema) - _APACHE_RESERVED else json.dumps(kind))
    elif kind in ("array", "map"):
        child = "items" if kind == "array" else "values"
        out.append(f'{{"type":"{kind}","{child}":')
        _apache_form(schema[child], out)
        out.append("}")
    elif kind == "enum":
        symbols = ",".join(json.dumps(s) for s in schema["symbols"])
        out.append(f'{{"name":{json.dumps(schema["name"])},"type":"enum","symbols":[{symbols}]}}')
    elif kind == "fixed":
        out.append(
            f'{{"name":{json.dumps(schema["name"])},"type":"fixed","size":{schema["size"]}}}'
        )
    elif kind in ("record", "error"):
        out.append(f'{{"name":{json.dumps(schema["name"])},"type":"record","fields":[')
        for i, field in enumerate(schema["fields"]):
            out.append(f'{"," if i else ""}{{"name":{json.dumps(field["name"])},"type":')
            _apache_form(field["type"], out)
            out.append("}")
        out.append("]}")
    else:  # {"type": <a type>}
        _apache_form(kind, out)


def apache_python_fingerprint(schema: Any) -> bytes:
    """The 8 fingerprint bytes Apache's Python ``avro`` 1.12 gives ``schema`` (its
    ``Schema.fingerprint("CRC-64-AVRO")``): CRC-64-AVRO of :func:`apache_python_canonical_form`.
    Equal to :func:`fingerprint` for schemas without logical types on primitives."""
    return bytes.fromhex(_fingerprint(apache_python_canonical_form(schema), "CRC-64-AVRO"))


def strip_logical_types(schema: Any) -> Any:
    """``schema`` without logicalType attributes (same canonical form, same fingerprint).

    Reading with it leaves timestamps as integers, which saves a datetime per field on the
    hot path where the code only passes them on.
    """
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


def _parsed(schema: Any, logical_types: bool, named: dict[str, Any] | None = None) -> Any:
    """fastavro's parsed form of ``schema`` (without logical types unless ``logical_types``).
    parse_schema marks its result as parsed; without the mark, fastavro's reader and writer
    would parse the schema again on every call."""
    readable = schema if logical_types else strip_logical_types(schema)
    return parse_schema(json.loads(json.dumps(readable)), named_schemas=named)


def _read_from(parsed: Any, name: str, data: bytes, start: int) -> tuple[Any, int]:
    """The datum ``parsed`` reads from ``data`` at ``start``, and where it ends (no check
    that it ends the body: a prefix or a head). Raises CorruptMessage when it does not read."""
    body = io.BytesIO(data)
    body.seek(start)
    try:
        datum = schemaless_reader(body, parsed, None)
    except _READ_ERRORS as exc:
        raise CorruptMessage(f"body does not match schema {name}: {exc!r}") from exc
    return datum, body.tell()


def avro_long(n: int) -> bytes:
    """``n`` as Avro's binary ``long`` (zig-zag, then a base-128 varint): also how a string's
    or bytes' length and an array block's count are written."""
    return varint((n << 1) ^ (n >> 63))


class RecordCut:
    """A record schema cut around one of its fields, so that field's body can be written
    apart (by hand, when fastavro's writer would visit many small items): a record's body is
    its fields' bodies in order, so the head's, the field's and the tail's make the record's."""

    def __init__(self, schema: AvroSchema, field: str, *, logical_types: bool = True) -> None:
        fields = schema.schema["fields"]
        at = [f["name"] for f in fields].index(field)
        named: dict[str, Any] = {}  # the head's named types, which the tail names

        def part(suffix: str, part_fields: list[Any]) -> Any:
            record = {"type": "record", "name": f"{schema.name}{suffix}", "fields": part_fields}
            return _parsed(record, logical_types, named)

        self.header = schema.header
        self._head = part("Before", fields[:at])
        self._tail = part("After", fields[at + 1 :])

    def encode(self, datum: Any, field_body: bytes) -> bytes:
        """The single-object encoding of ``datum`` with ``field_body`` as the cut field's."""
        out = io.BytesIO()
        out.write(self.header)
        schemaless_writer(out, self._head, datum)
        out.write(field_body)
        schemaless_writer(out, self._tail, datum)
        return out.getvalue()


class RecordHead:
    """A record schema's fields from its ``first`` up to one, ``field``, of type
    ``["null", {record}]``, whose record is read to its first ``keep`` fields only. Read from
    where the field ``first`` starts in a body, it says where the rest starts: bytes many
    events share (a group's members carry one join, each with its own position), which can
    then be decoded once for all of them."""

    def __init__(
        self,
        schema: AvroSchema,
        field: str,
        keep: int,
        *,
        first: int = 0,
        logical_types: bool = True,
    ) -> None:
        fields = schema.schema["fields"]
        at = [f["name"] for f in fields].index(field)
        null, inner = fields[at]["type"]
        if null != "null" or not isinstance(inner, dict) or inner.get("type") != "record":
            raise InvalidSchema(f"{schema.name}.{field} is not an optional record")
        head = {"type": "record", "name": f"{inner['name']}Head", "fields": inner["fields"][:keep]}
        self.name = f"{schema.name}Head"
        record = {
            "type": "record",
            "name": self.name,
            "fields": [*fields[first:at], {"name": field, "type": ["null", head]}],
        }
        self._parsed = _parsed(record, logical_types)
        self.field = field
        self.rest = tuple(f["name"] for f in inner["fields"][keep:])  # the field's unread
        self.after = tuple(f["name"] for f in fields[at + 1 :])  # the fields after it

    def read(self, data: bytes, start: int = HEADER_SIZE) -> tuple[dict[str, Any], int]:
        """The head's datum of ``data`` (single-object encoded with the schema; its field
        ``first`` at ``start``) and the offset where the rest starts. Raises CorruptMessage
        when the head does not read."""
        datum, end = _read_from(self._parsed, self.name, data, start)
        assert isinstance(datum, dict)
        return datum, end


class Codec:
    """Encodes and decodes single-object Avro, knowing schemas by fingerprint."""

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, AvroSchema] = {}
        self._arrays: dict[bytes, Any] = {}  # fingerprint -> an array of it, parsed

    def register(self, schema: Any, *, logical_types: bool = True) -> AvroSchema:
        """Parse ``schema`` once and remember it by fingerprint; registering twice is harmless.

        It is also remembered by the fingerprint Apache's Python avro computes for it, when
        that differs, so events fingerprinted that way decode (encoding keeps the spec's).
        Raises InvalidSchema for a schema fastavro does not parse.
        """
        try:
            fp = fingerprint(schema)
            known = self._by_fingerprint.get(fp)
            if known is not None:
                return known
            parsed = _parsed(schema, logical_types)
            aliases = tuple(a for a in (apache_python_fingerprint(schema),) if a != fp)
        except (SchemaParseException, ValueError, KeyError, TypeError, AttributeError) as exc:
            # fastavro's own error for most, a builtin where it indexes a malformed schema
            raise InvalidSchema(f"{exc!r} in {reprlib.repr(schema)}") from exc
        registered = AvroSchema(
            schema=schema, parsed=parsed, fingerprint=fp, header=MARKER + fp, aliases=aliases,
            plan=plan(schema),
        )  # fmt: skip
        self._by_fingerprint[fp] = registered
        for alias in aliases:
            # A spec fingerprint never names another schema: no Parsing Canonical Form has a
            # {"type":"long"} object in it, so an alias cannot equal another's fingerprint.
            self._by_fingerprint.setdefault(alias, registered)
        return registered

    def register_version(
        self, older: Any, reader: AvroSchema, *, logical_types: bool = True
    ) -> AvroSchema:
        """Make data written with ``older`` (a previous version of ``reader``'s schema,
        known by its own fingerprint) decode as ``reader`` datums; ``logical_types`` as
        ``reader`` was registered."""
        fp = fingerprint(older)
        known = self._by_fingerprint.get(fp)
        if known is not None:
            return known
        version = AvroSchema(
            schema=older,
            parsed=_parsed(older, logical_types),
            fingerprint=fp,
            header=MARKER + fp,
            reader=reader,
        )
        self._by_fingerprint[fp] = version
        alias = apache_python_fingerprint(older)
        if alias != fp:
            self._by_fingerprint.setdefault(alias, version)
        return version

    def lookup(self, fp: bytes) -> AvroSchema:
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            raise UnknownSchema(fp) from None

    def encode(self, schema: AvroSchema, datum: Any) -> bytes:
        simple = schema.plan
        if simple is not None:
            try:
                return schema.header + simple.write(datum)
            except Exception:  # a value it does not take: fastavro's bytes, or its error
                pass
        out = io.BytesIO()
        out.write(schema.header)
        schemaless_writer(out, schema.parsed, datum)
        return out.getvalue()

    def decode(self, data: bytes) -> tuple[AvroSchema, Any]:
        """The schema named by ``data``'s fingerprint, and the datum.

        Raises CorruptMessage for bytes that are not single-object Avro or whose body does not
        parse, UnknownSchema for a fingerprint that was never registered.
        """
        if len(data) < HEADER_SIZE or data[:2] != MARKER:
            raise CorruptMessage(
                f"not Avro single-object encoding (starts {bytes(data[:10]).hex()})"
            )
        schema = self.lookup(bytes(data[2:HEADER_SIZE]))
        if schema.reader is not None:
            return schema.reader, self._read_body(schema, data, schema.reader)
        return schema, self._read_body(schema, data)

    def decode_as(self, schema: AvroSchema, data: bytes) -> Any:
        """The datum of ``data``, which must carry ``schema``'s fingerprint (or an alias)."""
        if data[:HEADER_SIZE] != schema.header:
            if len(data) < HEADER_SIZE or data[:2] != MARKER:
                raise CorruptMessage("not Avro single-object encoding")
            other = self.lookup(bytes(data[2:HEADER_SIZE]))  # UnknownSchema if unregistered
            if other.reader is schema:
                return self._read_body(other, data, schema)
            if other is not schema:
                raise CorruptMessage(f"expected a {schema.name}, got a {other.name}")
            return self._read_body(other, data)  # an earlier version: resolved to this one
        return self._read_body(schema, data)

    def decode_many(self, schema: AvroSchema, data: list[bytes]) -> list[Any]:
        """The datums of ``data``, each as :meth:`decode_as` gives it; read in one pass when
        all carry ``schema``'s own fingerprint (the bodies, one after the other, are an Avro
        array's), which takes a tenth of the time for the many small results a chord joins."""
        header = schema.header
        if len(data) < 2 or not all(d.startswith(header) for d in data):
            return [self.decode_as(schema, d) for d in data]
        array = self._arrays.get(schema.fingerprint)
        if array is None:
            array = self._arrays[schema.fingerprint] = parse_schema(
                {"type": "array", "items": schema.parsed}
            )
        body = io.BytesIO(avro_long(len(data)) + b"".join(d[HEADER_SIZE:] for d in data) + b"\x00")
        try:
            datums = schemaless_reader(body, array, None)
        except _READ_ERRORS:
            datums = []
        if (
            not isinstance(datums, list)
            or len(datums) != len(data)
            or body.tell() != len(body.getbuffer())
        ):
            # Some body is not one datum: say which, as one at a time does.
            return [self.decode_as(schema, d) for d in data]
        return datums

    @staticmethod
    def read_prefix(writer: AvroSchema, data: bytes) -> tuple[Any, int]:
        """The datum of the first fields of ``data``'s body as ``writer`` (a record schema
        whose fields begin the record ``data`` holds), and where they end. For envelopes
        whose later fields are nearly always their defaults (taskstream.envelope)."""
        return _read_from(writer.parsed, writer.name, data, HEADER_SIZE)

    @staticmethod
    def _read_body(schema: AvroSchema, data: bytes, reader: AvroSchema | None = None) -> Any:
        simple = schema.plan
        if simple is not None and reader is None:
            try:
                return simple.decode(data, HEADER_SIZE)
            except Exception:  # bytes it does not read as fastavro does: fastavro's to read
                pass
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            resolved = None if reader is None else reader.parsed
            datum = schemaless_reader(body, schema.parsed, resolved)
        except _READ_ERRORS as exc:
            raise CorruptMessage(f"body does not match schema {schema.name}: {exc!r}") from exc
        if body.tell() != len(data):
            raise CorruptMessage(
                f"{len(data) - body.tell()} trailing bytes after a {schema.name} body"
            )
        return datum
