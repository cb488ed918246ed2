"""The single-object codec, against exact bytes and the Avro specification's test vectors."""

from __future__ import annotations

import struct

import pytest

from taskstream.codec import MARKER, Codec, fingerprint, strip_logical_types
from taskstream.errors import CorruptMessage, UnknownSchema

POINT = {
    "type": "record",
    "name": "Point",
    "namespace": "test",
    "fields": [{"name": "x", "type": "long"}, {"name": "label", "type": "string"}],
}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        # From the Avro specification's schema-tests.txt (signed 64-bit values).
        ("null", 7195948357588979594),
        ("boolean", -6970731678124411036),
        ("int", 8247732601305521295),
        ({"type": "fixed", "name": "foo", "size": 15}, 1756455273707447556),
    ],
)
def test_fingerprints_match_the_avro_specification(schema: object, expected: int) -> None:
    assert fingerprint(schema) == struct.pack("<q", expected)


def test_a_record_encodes_to_the_exact_single_object_bytes() -> None:
    codec = Codec()
    point = codec.register(POINT)
    data = codec.encode(point, {"x": 3, "label": "hi"})
    # marker, fingerprint (little-endian), zigzag long 3 = 06, string: length 2 = 04, "hi"
    assert data == MARKER + fingerprint(POINT) + bytes([0x06, 0x04]) + b"hi"


def test_a_round_trip_names_the_schema_by_fingerprint() -> None:
    codec = Codec()
    point = codec.register(POINT)
    schema, datum = codec.decode(codec.encode(point, {"x": -1, "label": "é"}))
    assert schema is point
    assert datum == {"x": -1, "label": "é"}


def test_registering_twice_returns_the_same_schema() -> None:
    codec = Codec()
    assert codec.register(POINT) is codec.register(dict(POINT))


def test_logical_types_do_not_change_the_fingerprint() -> None:
    ts = {"type": "long", "logicalType": "timestamp-micros"}
    assert fingerprint(ts) == fingerprint("long")
    assert strip_logical_types({"type": "array", "items": ts}) == {
        "type": "array",
        "items": {"type": "long"},
    }


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"plain text, not avro", b"\xc3\x02" + b"\x00" * 12],
)
def test_bytes_without_the_marker_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptMessage):
        Codec().decode(data)


def test_an_unregistered_fingerprint_is_unknown() -> None:
    codec = Codec()
    data = Codec().encode(Codec().register(POINT), {"x": 1, "label": ""})
    with pytest.raises(UnknownSchema) as unknown:
        codec.decode(data)
    assert unknown.value.fingerprint == fingerprint(POINT)


@pytest.mark.parametrize("cut", [1, 2])
def test_a_truncated_body_is_corrupt(cut: int) -> None:
    codec = Codec()
    point = codec.register(POINT)
    data = codec.encode(point, {"x": 1, "label": "hello"})
    with pytest.raises(CorruptMessage):
        codec.decode(data[:-cut])


def test_trailing_bytes_are_corrupt() -> None:
    codec = Codec()
    point = codec.register(POINT)
    with pytest.raises(CorruptMessage):
        codec.decode(codec.encode(point, {"x": 1, "label": ""}) + b"\x00")


def test_decode_as_rejects_another_registered_schema() -> None:
    codec = Codec()
    point = codec.register(POINT)
    other = codec.register("string")
    with pytest.raises(CorruptMessage, match="expected a Point"):
        codec.decode_as(point, codec.encode(other, "x"))
