"""Avro single-object encoding: the only module that touches fastavro's reader and writer.

A message is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint (little-endian) + the
Avro binary body, as the Avro specification defines, so any Avro library decodes it given the
schema. Schemas are parsed once, at registration, and kept by fingerprint.
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

from taskstream.errors import CorruptMessage, InvalidSchema, UnknownSchema

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """A parsed schema with its fingerprint; encode with :meth:`Codec.encode`."""

    schema: Any  # the JSON form as written
    parsed: Any  # fastavro's parsed form, used on the hot path
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, little-endian
    header: bytes  # MARKER + fingerprint

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


class Codec:
    """Encodes and decodes single-object Avro, knowing schemas by fingerprint."""

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, AvroSchema] = {}

    def register(self, schema: Any, *, logical_types: bool = True) -> AvroSchema:
        """Parse ``schema`` once and remember it by fingerprint; registering twice is harmless.

        Raises InvalidSchema for a schema fastavro does not parse.
        """
        try:
            fp = fingerprint(schema)
            known = self._by_fingerprint.get(fp)
            if known is not None:
                return known
            readable = schema if logical_types else strip_logical_types(schema)
            # parse_schema marks its result as parsed; without the mark, fastavro's reader and
            # writer would parse the schema again on every call.
            parsed = parse_schema(json.loads(json.dumps(readable)))
        except (SchemaParseException, ValueError, KeyError, TypeError, AttributeError) as exc:
            # fastavro's own error for most, a builtin where it indexes a malformed schema
            raise InvalidSchema(f"{exc!r} in {reprlib.repr(schema)}") from exc
        registered = AvroSchema(schema=schema, parsed=parsed, fingerprint=fp, header=MARKER + fp)
        self._by_fingerprint[fp] = registered
        return registered

    def lookup(self, fp: bytes) -> AvroSchema:
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            raise UnknownSchema(fp) from None

    def encode(self, schema: AvroSchema, datum: Any) -> bytes:
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
        return schema, self._read_body(schema, data)

    def decode_as(self, schema: AvroSchema, data: bytes) -> Any:
        """The datum of ``data``, which must carry ``schema``'s fingerprint."""
        if data[:HEADER_SIZE] != schema.header:
            if len(data) < HEADER_SIZE or data[:2] != MARKER:
                raise CorruptMessage("not Avro single-object encoding")
            other = self.lookup(bytes(data[2:HEADER_SIZE]))  # UnknownSchema if unregistered
            raise CorruptMessage(f"expected a {schema.name}, got a {other.name}")
        return self._read_body(schema, data)

    @staticmethod
    def _read_body(schema: AvroSchema, data: bytes) -> Any:
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            datum = schemaless_reader(body, schema.parsed, None)
        except (EOFError, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CorruptMessage(f"body does not match schema {schema.name}: {exc!r}") from exc
        if body.tell() != len(data):
            raise CorruptMessage(
                f"{len(data) - body.tell()} trailing bytes after a {schema.name} body"
            )
        return datum
