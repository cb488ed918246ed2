"""The single-object codec, against exact bytes and the Avro specification's test vectors."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from taskstream.avro.codec import (
    MARKER,
    Codec,
    apache_python_fingerprint,
    fingerprint,
    strip_logical_types,
)
from taskstream.envelope import (
    RESULT_EVENT_SCHEMA_FILE,
    TASK_EVENT_SCHEMA_FILE,
    Envelopes,
    envelope_history,
    load_envelope_schema,
    step_datum,
)
from taskstream.errors import CorruptMessage, UnknownSchema
from taskstream.status import Status

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


# --- Events from Apache's Python avro 1.12 -------------------------------------------------
# Written with avro 1.12.2: C3 01 + schema.fingerprint("CRC-64-AVRO") + DatumWriter's body,
# from schemas/task_event.avsc and schemas/result_event.avsc. That library keeps
# {"type":"long"} for timestamp-micros in its canonical form, so its envelope fingerprints
# (a4d291fc2f46e32f, 8985d5ca55ceb15f) are not the specification's.
APACHE_TASK_EVENT = bytes.fromhex(
    "c301a4d291fc2f46e32f4836663163316238652d336333612d346235332d396135352d3162326134663063"
    "396431301269746573742e6164640e64656661756c74000280d8dafeddd9b0060018c301a78d516037205d"
    "715004"
)
APACHE_RESULT_EVENT = bytes.fromhex(
    "c3018985d5ca55ceb15f4836663163316238652d336333612d346235332d396135352d3162326134663063"
    "396431301269746573742e6164640602000216c301b71df49344e154d05400106e6f64652d313a371e742e"
    "7461736b732e64656661756c74062280d8dafeddd9b00688e6dafeddd9b006ece6dafeddd9b006"
)
ADD_ARGS = {
    "type": "record",
    "name": "add_args",
    "namespace": "itest",
    "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "long"}],
}
T0 = 1_795_944_600_000_000  # 2026-11-29T09:30:00Z in µs
TASK_ID = "6f1c1b8e-3c3a-4b53-9a55-1b2a4f0c9d10"


def test_a_task_event_written_by_apache_avro_decodes() -> None:
    codec = Codec()
    envelopes = Envelopes(codec)
    args = codec.register(ADD_ARGS)
    event = envelopes.decode_task(APACHE_TASK_EVENT)
    assert (event.id, event.task, event.queue, event.key, event.attempt) == (
        TASK_ID, "itest.add", "default", None, 1,
    )  # fmt: skip
    assert (event.enqueued_at, event.not_before) == (T0, None)
    # The arguments record has no logical type: both libraries agree on its fingerprint.
    assert codec.decode_as(args, event.args) == {"a": 40, "b": 2}
    schema, _ = codec.decode(APACHE_TASK_EVENT)
    assert schema is envelopes.task_schema


def test_a_result_event_written_by_apache_avro_decodes() -> None:
    codec = Codec()
    result = Envelopes(codec).decode_result(APACHE_RESULT_EVENT)
    assert (result.id, result.status, result.error, result.worker) == (
        TASK_ID, Status.SUCCESS, None, "node-1:7",
    )  # fmt: skip
    assert (result.source_topic, result.source_partition, result.source_offset) == (
        "t.tasks.default", 3, 17,
    )  # fmt: skip
    assert (result.enqueued_at, result.started_at, result.finished_at) == (T0, T0 + 900, T0 + 950)
    assert result.result is not None
    assert codec.decode_as(codec.register("long"), result.result) == 42


def test_encoding_keeps_the_specification_fingerprint() -> None:
    codec = Codec()
    envelopes = Envelopes(codec)
    event = envelopes.decode_task(APACHE_TASK_EVENT)
    again = envelopes.encode_task(event)
    spec = fingerprint(load_envelope_schema(TASK_EVENT_SCHEMA_FILE))
    # The event was written with the first version of the envelope (schemas/history): it
    # decodes as the current one, and is written again in the current one, with its defaults.
    assert again[:10] == MARKER + spec
    assert again[10:].startswith(APACHE_TASK_EVENT[10:])
    assert envelopes.decode_task(again) == event
    assert codec.lookup(APACHE_TASK_EVENT[2:10]).reader is envelopes.task_schema
    current = load_envelope_schema(TASK_EVENT_SCHEMA_FILE)
    assert envelopes.task_schema.aliases == (apache_python_fingerprint(current),)


@pytest.mark.parametrize(
    ("filename", "version", "spec", "apache"),
    [
        (TASK_EVENT_SCHEMA_FILE, None, "587dfed5255bda86", "44f87b9ac7cd8a14"),
        (RESULT_EVENT_SCHEMA_FILE, None, "b2650907635e2f85", "a0e356adc33f65b3"),
        (TASK_EVENT_SCHEMA_FILE, 1, "fb51d1a78cff63ad", "a4d291fc2f46e32f"),
        (RESULT_EVENT_SCHEMA_FILE, 1, "abcc3e02563c979d", "8985d5ca55ceb15f"),
        (TASK_EVENT_SCHEMA_FILE, 2, "d6881996185ae9d1", "1726095ce687291f"),
        (RESULT_EVENT_SCHEMA_FILE, 2, "5a0f26df2e73d328", "298f576104bc505a"),
        (TASK_EVENT_SCHEMA_FILE, 3, "f1a08fd062d23487", "1f768b80274f57aa"),
        (RESULT_EVENT_SCHEMA_FILE, 3, "dca6e50745339a9e", "a4eb8484d3a93820"),
        (TASK_EVENT_SCHEMA_FILE, 4, "aaa43194f6e2081a", "256596a39729e566"),
        (TASK_EVENT_SCHEMA_FILE, 5, "47e2a11655322bff", "2805fbc2019ea58f"),
    ],
)
def test_the_envelope_fingerprints_are_the_documented_ones(
    filename: str, version: int | None, spec: str, apache: str
) -> None:
    # The current envelopes, and each version shipped before (schemas/history, whose events
    # still decode): version 2 added expires and REVOKED, version 3 the workflow fields,
    # task_event version 4 the per-call headers and time limits, version 5 nested workflows
    # (then, join), the current task_event the priority (and a Step's).
    schema = (
        load_envelope_schema(filename)
        if version is None
        else envelope_history(filename)[version - 1]
    )
    assert fingerprint(schema).hex() == spec
    assert apache_python_fingerprint(schema).hex() == apache


def test_a_schema_without_logical_types_has_no_alias() -> None:
    assert Codec().register(POINT).aliases == ()


def test_an_alias_does_not_make_another_schema_decode_as_this_one() -> None:
    codec = Codec()
    envelopes = Envelopes(codec)
    with pytest.raises(CorruptMessage, match="expected a TaskEvent, got a ResultEvent"):
        envelopes.decode_task(APACHE_RESULT_EVENT)


def test_events_of_the_first_envelopes_decode_as_the_current_ones() -> None:
    codec = Codec()
    envelopes = Envelopes(codec)
    v1 = load_envelope_schema("history/task_event.v1.avsc")
    first = codec.register(v1, logical_types=False)
    datum = {
        "id": "t-1", "task": "itest.add", "queue": "default", "key": None, "attempt": 1,
        "enqueued_at": 5, "not_before": None, "args": b"",
    }  # fmt: skip
    event = envelopes.decode_task(codec.encode(first, datum))
    assert (event.id, event.expires) == ("t-1", None)
    schema, decoded = codec.decode(codec.encode(first, datum))
    assert schema is envelopes.task_schema and decoded["expires"] is None


def test_the_fast_path_writes_what_the_full_schema_writes() -> None:
    """An event without workflow fields is written as history version 2's body plus the
    defaults' bytes: exactly what fastavro writes with the whole current envelope."""
    from taskstream.envelope import Chord, ParentResult, Prepend, ResultEvent, Step, TaskEvent
    from taskstream.status import Status

    codec = Codec()
    envelopes = Envelopes(codec)
    plain = TaskEvent(TASK_ID, "itest.add", "default", "k", 2, T0, T0 + 5, b"\xc3\x01args")
    full = {
        "id": TASK_ID, "task": "itest.add", "queue": "default", "key": "k", "attempt": 2,
        "enqueued_at": T0, "not_before": T0 + 5, "args": b"\xc3\x01args", "expires": None,
        "parent_id": None,
        "root_id": None, "group_id": None, "group_index": None, "group_size": None,
        "chord": None, "chain": [], "link": [], "link_error": [], "prepend": "NONE",
        "parent_results": [], "ignore_result": False, "headers": {}, "time_limit": None,
        "soft_time_limit": None, "then": [], "join": None,
    }  # fmt: skip
    assert envelopes.encode_task(plain) == codec.encode(envelopes.task_schema, full)
    assert envelopes.decode_task(envelopes.encode_task(plain)) == plain
    step = Step("s", "t", "q", None, b"a", True)
    busy = TaskEvent(
        TASK_ID, "itest.add", "default", None, 1, T0, None, b"x", parent_id="p", root_id="r",
        group_id="g", group_index=3, group_size=9, chord=Chord(step, [step]), chain=[step],
        link=[step], link_error=[step], prepend=Prepend.LIST,
        parent_results=[ParentResult("t", b"r")], ignore_result=True,
    )  # fmt: skip
    assert envelopes.decode_task(envelopes.encode_task(busy)) == busy
    optioned = TaskEvent(
        TASK_ID, "itest.add", "default", None, 1, T0, None, b"x", headers={"x-test": "v"},
        time_limit=10.0, soft_time_limit=5.0,
    )  # fmt: skip
    assert envelopes.decode_task(envelopes.encode_task(optioned)) == optioned
    result = ResultEvent(
        TASK_ID, "itest.add", Status.SUCCESS, 1, None, b"r", None, "w", "t", 0, 1, T0, T0, T0
    )
    assert envelopes.decode_result(envelopes.encode_result(result)) == result
    result.state, result.meta, result.group_id = "PROGRESS", "{}", "g"
    assert envelopes.decode_result(envelopes.encode_result(result)) == result
    datum = envelopes.decode_result_datum(envelopes.encode_result(result))
    assert (datum["state"], datum["group_id"], datum["chord"]) == ("PROGRESS", "g", None)


def test_events_written_before_the_per_call_options_decode_with_their_defaults() -> None:
    """Task events of version 3 (workflow fields, no headers or time limits) still in a
    topic decode as the current envelope: no headers, the task's own time limits."""
    codec = Codec()
    envelopes = Envelopes(codec)
    v3 = codec.register(envelope_history(TASK_EVENT_SCHEMA_FILE)[2], logical_types=False)
    datum: dict[str, Any] = {
        "id": "t-3", "task": "itest.add", "queue": "default", "key": None, "attempt": 2,
        "enqueued_at": 5, "not_before": None, "args": b"", "expires": None,
        "parent_id": "p", "root_id": "r", "group_id": None, "group_index": None,
        "group_size": None, "chord": None, "chain": [], "link": [], "link_error": [],
        "prepend": "NONE", "parent_results": [], "ignore_result": True,
    }  # fmt: skip
    event = envelopes.decode_task(codec.encode(v3, datum))
    assert (event.id, event.parent_id, event.ignore_result) == ("t-3", "p", True)
    assert (event.headers, event.time_limit, event.soft_time_limit) == ({}, None, None)


def test_nested_workflow_fields_round_trip_and_older_events_still_decode() -> None:
    from taskstream.envelope import Flow, FlowKind, Join, Prepend, Step, TaskEvent

    codec = Codec()
    envelopes = Envelopes(codec)
    step = Step("s", "t", "q", None, b"a", True)
    leaf = Flow(FlowKind.TASK, step, link=[step], link_error=[step])
    chord_node = Flow(FlowKind.CHORD, nodes=[leaf, leaf], body=leaf, group_id="g2", errbacks=[step])
    join = Join("g", 2, 5, [Flow(FlowKind.CHAIN, nodes=[chord_node, leaf])], [step],
                Join("g0", 0, 1, [Flow(FlowKind.GROUP, nodes=[leaf], group_id="g3")]))  # fmt: skip
    event = TaskEvent(
        TASK_ID, "itest.add", "default", None, 1, T0, None, b"x", parent_id="p",
        prepend=Prepend.VALUE, then=[leaf, chord_node], join=join,
    )  # fmt: skip
    assert envelopes.decode_task(envelopes.encode_task(event)) == event
    # An event of version 3 (no then, no join) decodes with their defaults.
    v3 = codec.register(envelope_history(TASK_EVENT_SCHEMA_FILE)[2], logical_types=False)
    datum: dict[str, Any] = {
        "id": TASK_ID, "task": "itest.add", "queue": "default", "key": None, "attempt": 1,
        "enqueued_at": T0, "not_before": None, "args": b"", "expires": None,
        "parent_id": "p", "root_id": "r", "group_id": None, "group_index": None,
        "group_size": None, "chord": None, "chain": [step_datum(step)], "link": [],
        "link_error": [], "prepend": "VALUE", "parent_results": [], "ignore_result": False,
    }  # fmt: skip
    old = envelopes.decode_task(codec.encode(v3, datum))
    assert old.chain == [step] and old.then == [] and old.join is None


def test_a_chord_body_with_its_members_results_is_written_as_fastavro_writes_it() -> None:
    """The parent results a chord's body carries (one per member) are written by hand
    between fastavro's two halves of the record: the same bytes as the whole record's."""
    from taskstream.envelope import Flow, FlowKind, Join, ParentResult, Prepend, Step, TaskEvent

    codec = Codec()
    envelopes = Envelopes(codec)
    step = Step("s", "t", "q", None, b"a", True)
    results = [ParentResult("itest.add", bytes([i % 256]) * (i % 7)) for i in range(300)]
    results += [ParentResult("itest.ünïcode", b"\x01" * 1024), ParentResult("x", b"\x02" * 70000)]
    event = TaskEvent(
        TASK_ID, "itest.body", "default", "k", 1, T0, None, b"x", parent_id="g", root_id="r",
        prepend=Prepend.LIST, parent_results=results, headers={"h": "v"}, time_limit=3.0,
        then=[Flow(FlowKind.TASK, step)], join=Join("g0", 0, 2, [], [step]),
    )  # fmt: skip
    written = envelopes.encode_task(event)
    datum = codec.decode_as(envelopes.task_schema, written)
    assert [(r["task"], r["result"]) for r in datum["parent_results"]] == [
        (r.task, r.result) for r in results
    ]
    assert written == codec.encode(envelopes.task_schema, datum)
    assert envelopes.decode_task(written) == event


def test_many_results_of_one_schema_decode_in_one_pass_as_one_at_a_time() -> None:
    codec = Codec()
    added = {"name": "z", "type": "long", "default": 0}
    schema = codec.register({**POINT, "fields": [*POINT["fields"], added]})
    older = codec.register_version(POINT, schema)  # an earlier version: resolved one by one
    data = [codec.encode(schema, {"x": i, "label": "p" * (i % 5), "z": i}) for i in range(50)]
    expected = [codec.decode_as(schema, d) for d in data]
    assert codec.decode_many(schema, data) == expected
    mixed = [*data, codec.encode(older, {"x": 7, "label": "old"})]
    assert codec.decode_many(schema, mixed) == [*expected, {"x": 7, "label": "old", "z": 0}]
    with pytest.raises(CorruptMessage, match="trailing"):
        codec.decode_many(schema, [*data[:3], data[3] + b"\x00", *data[4:]])
    with pytest.raises(CorruptMessage):
        codec.decode_many(schema, [*data[:3], data[3][:-1], *data[4:]])


def test_members_results_sharing_their_joins_rest_decode_as_fastavro_reads_each() -> None:
    """A group member's result is read to its join's position; the join's rest, the same
    bytes in every member's, is decoded once and reused. Every datum is the whole read's,
    on the first read and after, and bad bytes still raise."""
    from taskstream.envelope import Flow, FlowKind, Join, ResultEvent, Step, TaskError

    codec = Codec()
    envelopes = Envelopes(codec)
    body = Flow(FlowKind.TASK, Step("b", "itest.body", "q", None, b"\x01", False))
    errback = Step("e", "itest.errback", "q", "k", b"", True)
    outer = Join("g-outer", 3, 4, [Flow(FlowKind.CHAIN, nodes=[body, body])], [errback])

    def member(index: int, join: Join | None, **fields: Any) -> ResultEvent:
        e = ResultEvent(
            f"m{index}", "itest.add", Status.SUCCESS, 1, None, bytes([index]), None, "w", "t",
            index, index, T0, T0, T0 + index, root_id="r", group_id="g", group_index=index,
            group_size=5, join=join,
        )  # fmt: skip
        for name, value in fields.items():
            setattr(e, name, value)
        return e

    def join(index: int, then: list[Flow], nested: Join | None = None) -> Join:
        return Join("g", index, 5, then, [errback], nested)

    events = [
        *(member(i, join(i, [body])) for i in range(5)),  # a chord's header
        *(member(i, join(i, [body], outer)) for i in range(5)),  # inside an outer group
        member(2, join(2, [])),  # a group's member that only counts
        member(4, join(4, [body]), status=Status.FAILURE, result=None,
               error=TaskError("ValueError", "bad", "tb")),
        member(1, None, parent_id="p", state="PROGRESS", meta="{}"),  # no join
    ]  # fmt: skip
    data = [envelopes.encode_result(e) for e in events]
    for _ in range(2):  # the rests decoded, then remembered
        for d in data:
            assert envelopes.decode_result_datum(d) == codec.decode_as(envelopes.result_schema, d)
    assert len(envelopes._join_rests) == 3  # a chord's, a nested one's, a counting one's
    good = data[0]
    with pytest.raises(CorruptMessage, match="trailing"):
        envelopes.decode_result_datum(good + b"\x00")
    with pytest.raises(CorruptMessage):
        envelopes.decode_result_datum(good[:-1])
    rest = good.index(b"itest.body") - 1  # the body's task name: its length, then its text
    with pytest.raises(CorruptMessage):
        envelopes.decode_result_datum(good[:rest] + b"\xff" + good[rest + 1 :])
