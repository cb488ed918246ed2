"""taskstream's model of Apache's Python avro canonical form, against that library itself.

The codec accepts events fingerprinted the way ``avro`` (1.12) does; these tests check that
it computes the same canonical form and fingerprint as the library for the envelopes, the
example app's task schemas and every kind of type, so the alias is the one that library
writes. (``avro`` is a test dependency only.)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from taskstream.avro.codec import (
    apache_python_canonical_form,
    apache_python_fingerprint,
    fingerprint,
)
from tests.conftest import REPO

avro_schema = pytest.importorskip("avro.schema")

SHAPES: list[Any] = [
    "null",
    {"type": "long"},
    {"type": "long", "doc": "a doc is not a property"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "int", "logicalType": "date"},
    {"type": "string", "logicalType": "uuid"},
    {"type": "string", "logicalType": "not-a-logical-type"},
    {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 10},
    {"type": "fixed", "name": "Money", "size": 16, "logicalType": "decimal", "precision": 30},
    {"type": "array", "items": {"type": "int", "logicalType": "date"}},
    {"type": "map", "values": ["null", {"type": "long", "logicalType": "time-micros"}]},
    {
        "type": "record", "name": "Outer", "namespace": "a.b", "doc": "nested names",
        "fields": [
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"],
                                   "default": "X"}},
            {"name": "again", "type": "E"},
            {"name": "inner", "type": {"type": "record", "name": "Inner", "namespace": "c",
                                       "fields": [{"name": "at", "type": {
                                           "type": "long", "logicalType": "timestamp-micros"}}]}},
            {"name": "inner2", "type": ["null", "c.Inner"], "default": None},
        ],
    },
]  # fmt: skip


def schema_files() -> list[Path]:
    return sorted((REPO / "schemas").rglob("*.avsc"))


def apache(schema: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about logical types it does not know
        return avro_schema.parse(json.dumps(schema))


@pytest.mark.parametrize(
    "schema",
    SHAPES + [json.loads(p.read_text()) for p in schema_files()],
    ids=[f"shape{i}" for i in range(len(SHAPES))] + [p.name for p in schema_files()],
)
def test_the_canonical_form_and_fingerprint_are_apache_avro_s(schema: Any) -> None:
    theirs = apache(schema)
    assert apache_python_canonical_form(schema) == theirs.canonical_form
    assert apache_python_fingerprint(schema) == theirs.fingerprint("CRC-64-AVRO")


def test_apache_avro_agrees_with_the_specification_without_logical_types() -> None:
    schema = {"type": "record", "name": "P", "fields": [{"name": "x", "type": "long"}]}
    assert apache(schema).fingerprint("CRC-64-AVRO") == fingerprint(schema)
