"""The envelopes' hand-written plain form (taskstream.envelope_binary) against fastavro.

Every event is written here and by fastavro with the whole current envelope schema (which
knows nothing of the hand-written path): the bytes must be the same. Values the hand-written
path does not take (and hostile bytes) must give what they gave before it existed: the same
bytes, the same event, or the same error.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from taskstream.avro.binary import (
    Unfit,
    int_bytes,
    long_bytes,
    read_long,
    read_timestamp,
    timestamp_bytes,
)
from taskstream.avro.codec import Codec, avro_long
from taskstream.envelope import Envelopes, ResultEvent, TaskError, TaskEvent
from taskstream.status import Status

T0 = 1_765_000_000_123_456  # µs since the epoch
TASK_ID = "1ee5a43f-e0d3-4d66-9447-90c158cab3b9"

LONGS = [
    0, 1, -1, 63, -64, 64, -65, 1023, 1024, 8191, 8192, 8193, 2**31 - 1, -(2**31),
    2**31, T0, -T0, T0 + 8191, 2**62 - 1, 2**62, -(2**62), 2**63 - 1, -(2**63),
]  # fmt: skip
TEXTS = [
    "", "a", TASK_ID, "é", "naïve ✓ 😀 日本", "\x00nul\x00", "x" * 63, "x" * 64, "é" * 40,
    "y" * 1023, "z" * 1024, "w" * 20_000, "\u2028\ufeff\U0010ffff",
]  # fmt: skip
BLOBS = [b"", b"\x00", b"\xc3\x01" + bytes(range(256)), b"b" * 63, b"b" * 64, b"q" * 70_000]


@pytest.fixture(scope="module")
def envelopes() -> Envelopes:
    return Envelopes(Codec())


def full_task(e: TaskEvent) -> dict[str, Any]:
    return {
        "id": e.id, "task": e.task, "queue": e.queue, "key": e.key, "attempt": e.attempt,
        "enqueued_at": e.enqueued_at, "not_before": e.not_before, "args": e.args,
        "expires": e.expires, "parent_id": None, "root_id": None, "group_id": None,
        "group_index": None, "group_size": None, "chord": None, "chain": [], "link": [],
        "link_error": [], "prepend": "NONE", "parent_results": [], "ignore_result": False,
        "headers": {}, "time_limit": None, "soft_time_limit": None, "then": [], "join": None,
        "priority": None,
    }  # fmt: skip


def full_result(e: ResultEvent) -> dict[str, Any]:
    error = e.error
    return {
        "id": e.id, "task": e.task, "status": e.status.value, "attempt": e.attempt,
        "key": e.key, "result": e.result,
        "error": None if error is None else
        {"type": error.type, "message": error.message, "traceback": error.traceback},
        "worker": e.worker,
        "source": {"topic": e.source_topic, "partition": e.source_partition,
                   "offset": e.source_offset},
        "enqueued_at": e.enqueued_at, "started_at": e.started_at, "finished_at": e.finished_at,
        "parent_id": None, "root_id": None, "group_id": None, "group_index": None,
        "group_size": None, "chord": None, "state": None, "meta": None, "join": None,
    }  # fmt: skip


def task_event(**changes: Any) -> TaskEvent:
    event = TaskEvent(TASK_ID, "bench.noop", "default", None, 1, T0, None, b"\xc3\x01args")
    return replace(event, **changes)


def result_event(**changes: Any) -> ResultEvent:
    event = ResultEvent(
        TASK_ID, "bench.noop", Status.SUCCESS, 1, None, b"\xc3\x01r", None, "host:12",
        "bench.tasks.default", 3, 12_345, T0, T0 + 10, T0 + 20,
    )  # fmt: skip
    return replace(event, **changes)


def task_cases() -> list[TaskEvent]:
    cases = [task_event()]
    cases += [task_event(id=t) for t in TEXTS] + [task_event(task=t, queue=t) for t in TEXTS]
    cases += [task_event(key=t) for t in TEXTS]
    cases += [task_event(attempt=n) for n in LONGS if -(2**31) <= n < 2**31]
    cases += [task_event(enqueued_at=n, not_before=n, expires=n) for n in LONGS]
    cases += [task_event(args=b) for b in BLOBS]
    return cases


def result_cases() -> list[ResultEvent]:
    cases = [result_event(status=s) for s in Status]
    cases += [result_event(id=t, task=t, worker=t, source_topic=t) for t in TEXTS]
    cases += [result_event(key=t) for t in TEXTS]
    cases += [result_event(result=None, error=TaskError(t, t, t)) for t in TEXTS]
    cases += [result_event(result=b) for b in BLOBS]
    cases += [result_event(attempt=n, source_partition=n) for n in LONGS if -(2**31) <= n < 2**31]
    cases += [
        result_event(source_offset=n, enqueued_at=n, started_at=n, finished_at=n) for n in LONGS
    ]
    return cases


def test_plain_task_events_are_fastavros_bytes_and_read_back(envelopes: Envelopes) -> None:
    codec = envelopes.codec
    for event in task_cases():
        data = envelopes.encode_task(event)
        assert data == codec.encode(envelopes.task_schema, full_task(event)), event
        stamps = (event.enqueued_at, event.not_before or 0, event.expires or 0)
        if all(-(2**62) <= n < 2**62 for n in stamps):  # (longer varints: fastavro's)
            assert envelopes._task_binary.decode(data) is not None  # the hand-written read
        assert envelopes.decode_task(data) == event


def test_plain_result_events_are_fastavros_bytes(envelopes: Envelopes) -> None:
    codec = envelopes.codec
    for event in result_cases():
        data = envelopes.encode_result(event)
        assert data == codec.encode(envelopes.result_schema, full_result(event)), event
        assert envelopes.decode_result(data) == event


def test_the_hand_written_path_writes_the_common_events_itself(envelopes: Envelopes) -> None:
    """Not a silent fallback: the writers take the common events (and the timestamps'
    caches give the same bytes however often they are hit)."""
    for _ in range(3):
        assert envelopes._task_binary.encode(task_event()) == envelopes.encode_task(task_event())
        r = result_event()
        assert envelopes._result_binary.encode(r) == envelopes.encode_result(r)


class _Fallback:
    """What Envelopes did before the hand-written path: it takes nothing."""

    def encode(self, event: object) -> bytes:
        raise Unfit("fallback")

    def decode(self, data: bytes) -> None:
        return None


def _outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _before(envelopes: Envelopes) -> Envelopes:
    old = Envelopes(envelopes.codec)
    old._task_binary = _Fallback()  # type: ignore[assignment]
    old._result_binary = _Fallback()  # type: ignore[assignment]
    return old


class _Text(str):
    pass


HOSTILE: list[dict[str, Any]] = [
    {"id": "\ud800"}, {"key": "lone \udfff surrogate"}, {"id": None}, {"id": 7}, {"id": b"id"},
    {"id": _Text("sub")}, {"task": ["list"]}, {"attempt": 2**31}, {"attempt": -(2**31) - 1},
    {"attempt": 2**63}, {"attempt": True}, {"attempt": 1.0}, {"attempt": "1"},
    {"attempt": None}, {"enqueued_at": 2**63}, {"enqueued_at": -(2**63) - 1},
    {"enqueued_at": 1.5}, {"enqueued_at": None}, {"enqueued_at": False},
    {"not_before": 2**64}, {"not_before": "soon"}, {"expires": 2.0}, {"args": bytearray(b"a")},
    {"args": memoryview(b"a")}, {"args": "text"}, {"args": None}, {"args": 5},
]  # fmt: skip


@pytest.mark.parametrize("changes", HOSTILE, ids=repr)
def test_values_it_does_not_take_give_what_they_gave_before(
    envelopes: Envelopes, changes: dict[str, Any]
) -> None:
    before = _before(envelopes)
    event = task_event(**changes)
    assert _outcome(envelopes.encode_task, event) == _outcome(before.encode_task, event)
    result_changes = {
        {"queue": "worker", "enqueued_at": "started_at", "not_before": "finished_at",
         "expires": "source_offset", "args": "result"}.get(k, k): v
        for k, v in changes.items()
    }  # fmt: skip
    result = result_event(**result_changes)
    assert _outcome(envelopes.encode_result, result) == _outcome(before.encode_result, result)


@pytest.mark.parametrize(
    "changes",
    [{"status": "SUCCESS"}, {"status": None}, {"error": ("t", "m", "tb")},
     {"error": TaskError("t", "\ud800", "")}, {"source_partition": 2**40},
     {"source_offset": 2**63}, {"result": bytearray(b"r")}, {"worker": 3}],
    ids=repr,
)  # fmt: skip
def test_result_values_it_does_not_take_give_what_they_gave_before(
    envelopes: Envelopes, changes: dict[str, Any]
) -> None:
    before = _before(envelopes)
    result = result_event(**changes)
    assert _outcome(envelopes.encode_result, result) == _outcome(before.encode_result, result)


def _hostile_bodies(good: bytes) -> list[bytes]:
    rng = random.Random(25)
    header = good[:10]
    bodies = [good[:cut] for cut in range(len(good))]  # every truncation
    bodies += [good + b"\x00", good[:10] + good[11:]]
    for _ in range(3000):  # bytes changed at random
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(10, len(data))] = rng.randrange(256)
        bodies.append(bytes(data))
    id_at = 10
    bodies += [
        header + b"\x01" + good[11:],  # a negative length
        header + b"\xff" * 12 + good[11:],  # an endless varint
        header + b"\x04\xed\xa0" + good[id_at + 3 :],  # an encoded surrogate
        header + b"\x04\xc3\x28" + good[id_at + 3 :],  # not UTF-8
        header + b"\x04\xc0\x80" + good[id_at + 3 :],  # an overlong NUL
    ]
    return bodies


def test_hostile_task_bytes_read_as_before(envelopes: Envelopes) -> None:
    before = _before(envelopes)
    for event in [task_event(key="k", not_before=T0, expires=T0 + 1), task_event()]:
        for data in _hostile_bodies(envelopes.encode_task(event)):
            assert _outcome(envelopes.decode_task, data) == _outcome(before.decode_task, data)


def test_over_long_varints_are_left_to_fastavro(envelopes: Envelopes) -> None:
    """A timestamp written in 10 bytes (legal Avro, never written for a long below 2**62)
    is read by fastavro, whatever it makes of it."""
    before = _before(envelopes)
    good = envelopes.encode_task(task_event(attempt=1, enqueued_at=1))
    at = good.index(b"\x02\x02", 10 + 37 + 11 + 8) + 1  # attempt 1, then enqueued_at 1
    for padded in (b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x00", b"\x82" + b"\x80" * 8 + b"\x01"):
        data = good[:at] + padded + good[at + 1 :]
        assert envelopes._task_binary.decode(data) is None
        assert _outcome(envelopes.decode_task, data) == _outcome(before.decode_task, data)


def test_longs_and_timestamps_are_avros_zigzag_varints() -> None:
    rng = random.Random(7)
    values = LONGS + [rng.randint(-(2**63), 2**63 - 1) for _ in range(2000)]
    values += [T0 + rng.randint(-(10**7), 10**7) for _ in range(2000)]
    for n in values:
        encoded = avro_long(n)
        assert long_bytes(n) == timestamp_bytes(n) == encoded, n
        data = b"\x00" + encoded + b"\x00"
        if len(encoded) <= 9:
            assert read_long(data, 1) == (n, 1 + len(encoded))
            assert read_timestamp(data, 1) == (n, 1 + len(encoded))
            assert read_timestamp(data, 1) == (n, 1 + len(encoded))  # from the cache
        else:  # fastavro's to read
            with pytest.raises(Unfit):
                read_long(data, 1)
    for n in (2**63, -(2**63) - 1):
        with pytest.raises(Unfit):
            long_bytes(n)
    with pytest.raises(Unfit):
        int_bytes(2**31)
