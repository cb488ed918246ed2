"""taskstream.avro.compat: Avro schema resolution, as schemas check and the canvas use it."""

from __future__ import annotations

from typing import Any

import pytest

from taskstream.avro.compat import incompatibility

POINT = {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "long"}]}


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("long", "long"),
        ("int", "double"),
        ("long", ["null", "long"]),
        ("string", "bytes"),
        (["null", "long"], ["null", "double"]),
        ({"type": "array", "items": "long"}, {"type": "array", "items": "double"}),
        ({"type": "map", "values": POINT}, {"type": "map", "values": POINT}),
        (
            {"type": "array", "items": POINT},
            {"type": "array", "items": {**POINT, "fields": [*POINT["fields"],
             {"name": "y", "type": "long", "default": 0}]}},
        ),
        ({"type": "long", "logicalType": "timestamp-micros"},
         {"type": "long", "logicalType": "timestamp-micros"}),
        ({"type": "record", "name": "Pair", "fields": [{"name": "a", "type": POINT},
          {"name": "b", "type": "Point"}]},
         {"type": "record", "name": "Pair", "fields": [{"name": "a", "type": POINT},
          {"name": "b", "type": "Point"}]}),
    ],
)  # fmt: skip
def test_readable(writer: Any, reader: Any) -> None:
    assert incompatibility(writer, reader) is None


@pytest.mark.parametrize(
    ("writer", "reader", "why"),
    [
        ("double", "long", "the value: double cannot be read as long"),
        (["null", "long"], "long", "the value: null cannot be read as long"),
        ("long", ["null", "string"], "the value: long fits no branch of null | string"),
        ({"type": "array", "items": "string"}, {"type": "array", "items": "long"},
         "[]: string cannot be read as long"),
        (POINT, {**POINT, "fields": [{"name": "x", "type": "long"}, {"name": "z", "type": "long"}]},
         "z: the reader needs it and the writer has no such field"),
        ("long", {"type": "long", "logicalType": "timestamp-micros"},
         "the value: a plain value cannot be read as timestamp-micros"),
    ],
)  # fmt: skip
def test_not_readable(writer: Any, reader: Any, why: str) -> None:
    assert incompatibility(writer, reader) == why
