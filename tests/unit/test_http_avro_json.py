"""JSON -> Avro datums by the schema alone give what task.delay encodes from Python."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskstream.avro.codec import Codec
from taskstream.avro.json import JsonConverter, datum_to_json
from taskstream.errors import InvalidArguments
from taskstream.signature import derive_signature
from tests.unit.test_avro_types import EVERYTHING, EVERYTHING_JSON, everything_task, register


def _bytes_both_ways(func: Any, name: str, obj: dict[str, Any]) -> tuple[bytes, bytes]:
    sig = derive_signature(func, name)
    codec = Codec()
    schema = codec.register(json.loads(json.dumps(sig.args_schema)))
    from_python = codec.encode(schema, sig.args_to_avro((), sig.args_from_json(obj)))
    from_schema = codec.encode(schema, JsonConverter(sig.args_schema).to_datum(obj, task=name))
    return from_python, from_schema


def test_json_by_the_schema_encodes_the_same_bytes_as_python_values() -> None:
    python, schema = _bytes_both_ways(
        everything_task, "t.everything", {"e": EVERYTHING_JSON, "p": "HIGH"}
    )
    assert python == schema


def test_left_out_fields_take_their_avro_defaults_like_python_defaults() -> None:
    obj = {"user": {"name": "a", "age": 1, "home": {"street": "s"}}, "items": [], "tags": {}}
    python, schema = _bytes_both_ways(register, "t.register", {**obj, "color": "RED"})
    assert python == schema


def test_a_python_default_that_avro_cannot_state_must_be_sent() -> None:
    """`color: Color = Color.RED` has no Avro default, so the schema alone requires it."""
    sig = derive_signature(register, "t.register")
    obj = {"user": {"name": "a", "age": 1, "home": {"street": "s"}}, "items": [], "tags": {}}
    with pytest.raises(InvalidArguments, match="missing required") as info:
        JsonConverter(sig.args_schema).to_datum(obj, task="t")
    assert info.value.path == "args.color"


def test_a_datum_renders_as_the_json_that_result_to_json_gives() -> None:
    sig = derive_signature(everything_task, "t.everything")
    codec = Codec()
    schema = codec.register(sig.result_schema)
    data = codec.encode(schema, sig.result_to_avro(EVERYTHING))
    assert datum_to_json(codec.decode_as(schema, data)) == sig.result_to_json(EVERYTHING)
    assert datum_to_json(codec.decode_as(schema, data)) == EVERYTHING_JSON


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"e": dict(EVERYTHING_JSON, raw="not base64!")}, "args.e.raw", "base64"),
        ({"e": dict(EVERYTHING_JSON, when="2024-01-01T00:00:00")}, "args.e.when", "timezone"),
        ({"e": dict(EVERYTHING_JSON, when="yesterday")}, "args.e.when", "ISO-8601"),
        ({"e": dict(EVERYTHING_JSON, id="x")}, "args.e.id", "a UUID string"),
        ({"e": dict(EVERYTHING_JSON, amount="1.00000000001")}, "args.e.amount", "after the point"),
        ({"e": dict(EVERYTHING_JSON, amount="lots")}, "args.e.amount", "a decimal string"),
        ({"e": dict(EVERYTHING_JSON, scores=[1, "2"])}, "args.e.scores[1]", "expected float"),
        ({"e": dict(EVERYTHING_JSON, tags={"a": True})}, 'args.e.tags["a"]', "expected int"),
        ({"e": dict(EVERYTHING_JSON, n=2**63)}, "args.e.n", "does not fit"),
        ({"e": dict(EVERYTHING_JSON, n=1.5)}, "args.e.n", "expected int, got float 1.5"),
        ({"e": dict(EVERYTHING_JSON, n=1e19)}, "args.e.n", "does not fit"),
        ({"e": dict(EVERYTHING_JSON, tags={"a": 2.5})}, 'args.e.tags["a"]', "expected int"),
        ({"e": dict(EVERYTHING_JSON, extra=1)}, "args.e.extra", "unknown field"),
        ({"p": "MEDIUM"}, "args.p", "one of LOW, HIGH"),
        ({"q": 1}, "args.q", "unknown field"),
        ({"p": "LOW", "e": {"n": 1}}, "args.e.x", "missing required field of Everything"),
        ({"e": None}, "args.e", "expected a JSON object of Everything, got null"),
    ],
)
def test_invalid_json_names_the_offending_field_and_what_was_expected(
    change: dict[str, Any], path: str, message: str
) -> None:
    sig = derive_signature(everything_task, "t.everything")
    with pytest.raises(InvalidArguments, match=message) as info:
        JsonConverter(sig.args_schema).to_datum(
            {"e": EVERYTHING_JSON, "p": "LOW", **change}, task="t"
        )
    assert info.value.path == path


def test_an_integral_json_number_is_an_int_as_delay_takes_it() -> None:
    sig = derive_signature(everything_task, "t.everything")
    e = dict(EVERYTHING_JSON, n=json.loads("1e3"), tags={"a": 2.0})
    datum = JsonConverter(sig.args_schema).to_datum({"e": e, "p": "LOW"}, task="t")
    assert datum["e"]["n"] == 1000 and type(datum["e"]["n"]) is int
    assert datum["e"]["tags"] == {"a": 2} and type(datum["e"]["tags"]["a"]) is int


def test_a_body_that_is_not_an_object_is_reported_at_the_root() -> None:
    sig = derive_signature(everything_task, "t.everything")
    with pytest.raises(InvalidArguments) as info:
        JsonConverter(sig.args_schema).to_datum([1, 2], task="t")
    assert info.value.path == "args"


def test_recursive_and_general_union_schemas_convert() -> None:
    schema = {
        "type": "record", "name": "Node", "namespace": "n",
        "fields": [
            {"name": "value", "type": ["long", "string"]},
            {"name": "next", "type": ["null", "Node"], "default": None},
            {"name": "blob", "type": {"type": "fixed", "name": "Four", "size": 4}},
        ],
    }  # fmt: skip
    conv = JsonConverter(schema)
    datum = conv.to_datum(
        {"value": "x", "next": {"value": 1, "blob": "AAAAAA=="}, "blob": "AQIDBA=="}, task="t"
    )
    assert datum == {"value": "x", "blob": b"\x01\x02\x03\x04",
                     "next": {"value": 1, "next": None, "blob": b"\x00" * 4}}  # fmt: skip
    with pytest.raises(InvalidArguments, match="no branch of the union") as info:
        conv.to_datum({"value": 1.5, "blob": "AAAAAA=="}, task="t")
    assert info.value.path == "args.value"
    with pytest.raises(InvalidArguments, match="expected 4 bytes") as info:
        conv.to_datum(
            {"value": 1, "next": {"value": 2, "blob": "AA=="}, "blob": "AAAAAA=="}, task="t"
        )
    assert info.value.path == "args.next.blob"
