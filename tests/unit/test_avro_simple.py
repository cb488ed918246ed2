"""Simple schemas' hand-written writers and readers (taskstream.avro.simple) against fastavro:
the same bytes and datums, and for values or bytes they do not take, what fastavro gave."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from typing import Any

import pytest

from taskstream.avro.codec import AvroSchema, Codec
from taskstream.avro.simple import plan

ARGS = {
    "type": "record", "name": "add_args", "namespace": "t",
    "fields": [
        {"name": "s", "type": "string"}, {"name": "b", "type": "bytes"},
        {"name": "n", "type": "long"}, {"name": "i", "type": "int"},
        {"name": "d", "type": "double"}, {"name": "ok", "type": "boolean"},
        {"name": "z", "type": "null"}, {"name": "maybe", "type": ["null", "string"]},
        {"name": "count", "type": ["null", "long"], "default": None},
        {"name": "inner", "type": {"type": "record", "name": "Inner",
                                   "fields": [{"name": "x", "type": {"type": "double"}}]}},
    ],
}  # fmt: skip
GOOD: dict[str, Any] = {
    "s": "naïve ✓ 😀", "b": b"\x00\xff", "n": -(2**63), "i": 2**31 - 1, "d": -0.0, "ok": True,
    "z": None, "maybe": None, "count": 2**62 - 1, "inner": {"x": float("inf")},
}  # fmt: skip


def _without_plan(codec: Codec, schema: AvroSchema) -> AvroSchema:
    """The same schema as the codec had it before plans: fastavro's alone."""
    return replace(schema, plan=None)


def _outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except Exception as exc:  # (fastavro's errors may name a BytesIO at some address)
        return type(exc).__name__, re.sub(r" at 0x[0-9a-f]+", "", str(exc))


def test_simple_schemas_have_plans_and_others_do_not() -> None:
    for simple in ("long", "string", {"type": "double"}, ["null", "bytes"], ARGS):
        assert plan(simple) is not None, simple
    for other in (
        {"type": "long", "logicalType": "timestamp-micros"}, ["null", "long", "string"],
        ["string", "null"], {"type": "array", "items": "long"}, {"type": "map", "values": "long"},
        {"type": "enum", "name": "E", "symbols": ["A"]}, "float", "t.Named",
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "float"}]},
    ):  # fmt: skip
        assert plan(other) is None, other


VALUES: list[dict[str, Any]] = [
    GOOD,
    {**GOOD, "s": "", "b": b"", "n": 0, "i": -(2**31), "d": 1e308, "ok": False},
    {**GOOD, "s": "x" * 5000, "b": bytes(range(256)) * 40, "maybe": "é" * 100, "count": -1},
    {**GOOD, "n": 2**63 - 1, "i": 0, "d": float("nan"), "maybe": "\x00"},
]


@pytest.mark.parametrize("datum", VALUES, ids=range(len(VALUES)))
def test_a_plan_writes_and_reads_what_fastavro_does(datum: dict[str, Any]) -> None:
    codec = Codec()
    schema = codec.register(ARGS)
    assert schema.plan is not None
    data = codec.encode(schema, datum)
    assert data == codec.encode(_without_plan(codec, schema), datum)
    assert schema.plan.write(datum) == data[10:]  # written by hand, not by the fallback
    read = codec.decode_as(schema, data)
    assert repr(read) == repr(codec.decode_as(_without_plan(codec, schema), data))
    if all(-(2**62) <= v < 2**62 for v in (datum["n"], datum["count"] or 0)):
        assert repr(schema.plan.decode(data, 10)) == repr(read)  # read by hand (longer
        # varints than 9 bytes are fastavro's)


HOSTILE: list[dict[str, Any]] = [
    {"s": "\ud800"}, {"s": b"s"}, {"s": None}, {"b": "text"}, {"b": bytearray(b"x")},
    {"n": True}, {"n": 1.0}, {"n": 2**63}, {"n": "1"}, {"i": 2**31}, {"i": False},
    {"d": 1}, {"d": True}, {"d": "1.5"}, {"ok": 1}, {"ok": None}, {"z": 0}, {"maybe": 5},
    {"maybe": b"b"}, {"count": True}, {"count": 1.5}, {"inner": {"x": 1}}, {"inner": None},
    {"inner": {}},
]  # fmt: skip


@pytest.mark.parametrize("change", HOSTILE, ids=repr)
def test_values_a_plan_does_not_take_give_what_fastavro_gave(change: dict[str, Any]) -> None:
    codec = Codec()
    schema = codec.register(ARGS)
    datum = {**GOOD, **change}
    assert _outcome(codec.encode, schema, datum) == _outcome(
        codec.encode, _without_plan(codec, schema), datum
    )


@pytest.mark.parametrize("missing", ["count", "maybe", "s"])
def test_a_missing_field_is_fastavros_to_default_or_refuse(missing: str) -> None:
    codec = Codec()
    schema = codec.register(ARGS)
    datum = {k: v for k, v in GOOD.items() if k != missing}
    assert _outcome(codec.encode, schema, datum) == _outcome(
        codec.encode, _without_plan(codec, schema), datum
    )
    extra = {**GOOD, "extra": 1}
    assert codec.encode(schema, extra) == codec.encode(_without_plan(codec, schema), extra)


def test_hostile_bytes_read_as_fastavro_reads_them() -> None:
    codec = Codec()
    schema = codec.register(ARGS)
    bare = _without_plan(codec, schema)
    good = codec.encode(schema, VALUES[2])
    rng = random.Random(25)
    bodies = [good[:cut] for cut in range(len(good))] + [good + b"\x00"]
    for _ in range(2000):
        changed = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            changed[rng.randrange(10, len(changed))] = rng.randrange(256)
        bodies.append(bytes(changed))
    small = codec.encode(schema, GOOD)
    bodies += [small[:10] + bytes([b]) + small[11:] for b in range(256)]  # the first length
    for data in bodies:
        assert repr(_outcome(codec.decode_as, schema, data)) == repr(
            _outcome(codec.decode_as, bare, data)
        )


@pytest.mark.parametrize(
    ("schema", "value"),
    [("long", 5), ("long", -(2**40)), ("string", "é"), ("boolean", True), ("double", 2.5),
     ("bytes", b"r"), ("null", None), (["null", "long"], None), (["null", "long"], 7),
     ("long", True), ("boolean", 1), ("double", 3)],
)  # fmt: skip
def test_a_task_result_of_one_primitive_is_fastavros(schema: Any, value: Any) -> None:
    codec = Codec()
    registered = codec.register(schema)
    bare = _without_plan(codec, registered)
    written = _outcome(codec.encode, registered, value)
    assert written == _outcome(codec.encode, bare, value)
    if written[0] == "ok":
        assert _outcome(codec.decode_as, registered, written[1]) == _outcome(
            codec.decode_as, bare, written[1]
        )
