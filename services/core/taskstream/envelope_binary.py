"""The envelopes' plain form written and read by hand: the worker's and delay()'s hot path.

A task or result event without workflow fields or per-call options (nearly all) is its
history version 2's fields followed by the later fields' defaults (taskstream.envelope). That
layout is fixed, so its fields are written and read here field by field
(taskstream.avro.binary) instead of by fastavro's generic writer and reader: the same bytes
(tests/unit/test_envelope_binary.py compares them with fastavro's for many values) at a
third of the cost. Whatever this path does not take (a value of an unexpected type or range,
bytes it does not read as fastavro would) raises, and :class:`taskstream.envelope.Envelopes`
goes fastavro's way instead, which then gives the bytes or the error it always gave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskstream.avro.binary import (
    LENGTHS,
    Strings,
    Unfit,
    bytes_bytes,
    int_bytes,
    long_bytes,
    read_bytes,
    read_int,
    read_string,
    read_timestamp,
    string_bytes,
    timestamp_bytes,
)
from taskstream.avro.codec import HEADER_SIZE, AvroSchema, strip_logical_types
from taskstream.errors import InvalidSchema

if TYPE_CHECKING:  # (taskstream.envelope builds these two with this module)
    from taskstream.envelope import ResultEvent, TaskEvent

# A plain task event's fields, in TaskEvent's order: id, task, queue, key, attempt,
# enqueued_at, not_before, args, expires.
PlainTask = tuple[str, str, str, str | None, int, int, int | None, bytes, int | None]

# The plain layouts this module writes, field by field, as the schemas must have them.
_TASK_FIELDS: list[tuple[str, Any]] = [
    ("id", "string"), ("task", "string"), ("queue", "string"), ("key", ["null", "string"]),
    ("attempt", "int"), ("enqueued_at", {"type": "long"}),
    ("not_before", ["null", {"type": "long"}]), ("args", "bytes"),
    ("expires", ["null", {"type": "long"}]),
]  # fmt: skip
_STATUSES = ["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]
_RESULT_FIELDS: list[tuple[str, Any]] = [
    ("id", "string"), ("task", "string"),
    ("status", {"type": "enum", "name": "TaskStatus", "symbols": _STATUSES, "default": "PENDING",
                "doc": ""}),
    ("attempt", "int"), ("key", ["null", "string"]), ("result", ["null", "bytes"]),
    ("error", ["null", {"type": "record", "name": "TaskError", "fields": [
        {"name": "type", "type": "string"}, {"name": "message", "type": "string"},
        {"name": "traceback", "type": "string"}]}]),
    ("worker", "string"),
    ("source", {"type": "record", "name": "SourceOffset", "fields": [
        {"name": "topic", "type": "string"}, {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"}]}),
    ("enqueued_at", {"type": "long"}), ("started_at", {"type": "long"}),
    ("finished_at", {"type": "long"}),
]  # fmt: skip

_NULL = b"\x00"
_SOME = b"\x02"  # a union's second branch


def _layout(schema: AvroSchema) -> list[tuple[str, Any]]:
    """A record schema's fields as (name, type), without docs and logical types."""
    return [(f["name"], _bare(strip_logical_types(f["type"]))) for f in schema.schema["fields"]]


def _bare(t: Any) -> Any:
    if isinstance(t, dict):
        out = {k: _bare(v) for k, v in t.items() if k not in ("doc", "default")}
        if "fields" in out:
            out["fields"] = [{"name": f["name"], "type": _bare(f["type"])} for f in t["fields"]]
        return out
    if isinstance(t, list):
        return [_bare(b) for b in t]
    return t


def _check(schema: AvroSchema, expected: list[tuple[str, Any]]) -> None:
    if _layout(schema) != [(name, _bare(t)) for name, t in expected]:
        raise InvalidSchema(f"{schema.name}: not the layout taskstream.envelope_binary writes")


class TaskBinary:
    """A plain task event's bytes (the current schema's header, version 2's fields, the
    later fields' defaults) and back."""

    __slots__ = ("_end", "_header", "_strings", "_tail")

    def __init__(self, current: AvroSchema, plain: AvroSchema, tail: bytes) -> None:
        _check(plain, _TASK_FIELDS)
        self._header = current.header
        self._tail = tail
        self._end = len(tail)
        self._strings = Strings()  # task names and queues

    def encode(self, event: TaskEvent) -> bytes:
        """The event's bytes; raises (Unfit or another error) where fastavro must decide."""
        strings, key = self._strings, event.key
        not_before, expires = event.not_before, event.expires
        return b"".join((
            self._header, string_bytes(event.id), strings(event.task), strings(event.queue),
            _NULL if key is None else _SOME + string_bytes(key),
            int_bytes(event.attempt), timestamp_bytes(event.enqueued_at),
            _NULL if not_before is None else _SOME + timestamp_bytes(not_before),
            bytes_bytes(event.args),
            _NULL if expires is None else _SOME + timestamp_bytes(expires),
            self._tail,
        ))  # fmt: skip

    def decode(self, data: bytes) -> PlainTask | None:
        """The fields of the event in ``data`` if it is a plain one that reads here as
        fastavro reads it, else None (fastavro reads it, or says what is wrong with it)."""
        if type(data) is not bytes or data[:HEADER_SIZE] != self._header:
            return None
        if not data.endswith(self._tail):
            return None
        end = len(data) - self._end
        try:
            id_, pos = read_string(data, HEADER_SIZE, end)
            task, pos = read_string(data, pos, end)
            queue, pos = read_string(data, pos, end)
            branch = data[pos]
            if branch == 0:
                key, pos = None, pos + 1
            elif branch == 2:
                key, pos = read_string(data, pos + 1, end)
            else:
                return None
            b = data[pos]  # (one byte, nearly always: read here, without a call)
            if b < 0x80:
                attempt, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                attempt, pos = read_int(data, pos)
            enqueued_at, pos = read_timestamp(data, pos)
            if data[pos] == 0:
                not_before, pos = None, pos + 1
            else:
                not_before, pos = self._optional_long(data, pos)
            args, pos = read_bytes(data, pos, end)
            if data[pos] == 0:
                expires, pos = None, pos + 1
            else:
                expires, pos = self._optional_long(data, pos)
        except (Unfit, IndexError, UnicodeDecodeError):
            return None
        if pos != end:
            return None
        return id_, task, queue, key, attempt, enqueued_at, not_before, args, expires

    @staticmethod
    def _optional_long(data: bytes, pos: int) -> tuple[int | None, int]:
        branch = data[pos]
        if branch == 0:
            return None, pos + 1
        if branch == 2:
            return read_timestamp(data, pos + 1)
        raise Unfit("not a union branch of [null, long]")


class ResultBinary:
    """A plain result event's bytes (see TaskBinary)."""

    __slots__ = ("_header", "_statuses", "_strings", "_tail")

    def __init__(self, current: AvroSchema, plain: AvroSchema, tail: bytes) -> None:
        _check(plain, _RESULT_FIELDS)
        self._header = current.header
        self._tail = tail
        # The enum's index by symbol (a Status is a str: it finds its own value here).
        self._statuses = {s: LENGTHS[i] for i, s in enumerate(_STATUSES)}
        self._strings = Strings()  # task names, the worker's id, topics

    def encode(self, event: ResultEvent) -> bytes:
        """The event's bytes; raises (Unfit or another error) where fastavro must decide."""
        strings, key, result, error = self._strings, event.key, event.result, event.error
        return b"".join((
            self._header, string_bytes(event.id), strings(event.task),
            self._statuses[event.status.value], int_bytes(event.attempt),
            _NULL if key is None else _SOME + string_bytes(key),
            _NULL if result is None else _SOME + bytes_bytes(result),
            _NULL if error is None else b"".join((
                _SOME, string_bytes(error.type), string_bytes(error.message),
                string_bytes(error.traceback),
            )),
            strings(event.worker), strings(event.source_topic),
            int_bytes(event.source_partition), long_bytes(event.source_offset),
            timestamp_bytes(event.enqueued_at), timestamp_bytes(event.started_at),
            timestamp_bytes(event.finished_at), self._tail,
        ))  # fmt: skip
