"""The task and result envelopes (schemas/task_event.avsc, schemas/result_event.avsc).

Timestamps stay integer microseconds since the epoch (UTC) inside taskstream: the envelopes
are read without logical-type conversion because the hot path only passes them on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from taskstream import clock
from taskstream.codec import AvroSchema, Codec
from taskstream.errors import CorruptMessage
from taskstream.status import Status

TASK_EVENT_SCHEMA_FILE = "task_event.avsc"
RESULT_EVENT_SCHEMA_FILE = "result_event.avsc"
# Earlier versions of the envelopes: events written with them still decode (resolved to the
# current ones, whose added fields have defaults).
PREVIOUS_SCHEMA_FILES = {
    TASK_EVENT_SCHEMA_FILE: ("task_event.v1.avsc",),
    RESULT_EVENT_SCHEMA_FILE: ("result_event.v1.avsc",),
}


def load_envelope_schema(filename: str) -> dict[str, Any]:
    """An envelope schema as shipped in the ``taskstream.schemas`` package (schemas/)."""
    text = resources.files("taskstream.schemas").joinpath(filename).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def now_micros() -> int:
    """µs since the epoch, from taskstream.clock (which tests can move forward)."""
    return clock.now_micros()


@dataclass(slots=True)
class TaskEvent:
    id: str
    task: str
    queue: str
    key: str | None
    attempt: int
    enqueued_at: int  # µs since the epoch
    not_before: int | None  # µs since the epoch
    args: bytes  # single-object Avro of the task's args record
    expires: int | None = None  # µs since the epoch; not run after it (REVOKED, expired)


@dataclass(slots=True)
class TaskError:
    type: str
    message: str
    traceback: str


@dataclass(slots=True)
class ResultEvent:
    id: str
    task: str
    status: Status
    attempt: int
    key: str | None
    result: bytes | None  # single-object Avro of the return value
    error: TaskError | None
    worker: str
    source_topic: str
    source_partition: int
    source_offset: int
    enqueued_at: int  # µs since the epoch
    started_at: int
    finished_at: int


class Envelopes:
    """Encodes and decodes both envelopes with one codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.task_schema: AvroSchema = codec.register(
            load_envelope_schema(TASK_EVENT_SCHEMA_FILE), logical_types=False
        )
        self.result_schema: AvroSchema = codec.register(
            load_envelope_schema(RESULT_EVENT_SCHEMA_FILE), logical_types=False
        )
        for current, filename in ((self.task_schema, TASK_EVENT_SCHEMA_FILE),
                                  (self.result_schema, RESULT_EVENT_SCHEMA_FILE)):  # fmt: skip
            for previous in PREVIOUS_SCHEMA_FILES[filename]:
                codec.register_previous(
                    load_envelope_schema(previous), current, logical_types=False
                )

    def encode_task(self, event: TaskEvent) -> bytes:
        return self.codec.encode(
            self.task_schema,
            {
                "id": event.id,
                "task": event.task,
                "queue": event.queue,
                "key": event.key,
                "attempt": event.attempt,
                "enqueued_at": event.enqueued_at,
                "not_before": event.not_before,
                "args": event.args,
                "expires": event.expires,
            },
        )

    def decode_task(self, data: bytes) -> TaskEvent:
        d = self.codec.decode_as(self.task_schema, data)
        return TaskEvent(
            d["id"], d["task"], d["queue"], d["key"], d["attempt"],
            d["enqueued_at"], d["not_before"], d["args"], d["expires"],
        )  # fmt: skip

    def encode_result(self, event: ResultEvent) -> bytes:
        error = event.error
        return self.codec.encode(
            self.result_schema,
            {
                "id": event.id,
                "task": event.task,
                "status": event.status.value,
                "attempt": event.attempt,
                "key": event.key,
                "result": event.result,
                "error": None
                if error is None
                else {"type": error.type, "message": error.message, "traceback": error.traceback},
                "worker": event.worker,
                "source": {
                    "topic": event.source_topic,
                    "partition": event.source_partition,
                    "offset": event.source_offset,
                },
                "enqueued_at": event.enqueued_at,
                "started_at": event.started_at,
                "finished_at": event.finished_at,
            },
        )

    def decode_result(self, data: bytes) -> ResultEvent:
        d = self.codec.decode_as(self.result_schema, data)
        error = d["error"]
        source = d["source"]
        try:
            status = Status(d["status"])
        except ValueError as exc:
            raise CorruptMessage(f"unknown status {d['status']!r}") from exc
        return ResultEvent(
            id=d["id"],
            task=d["task"],
            status=status,
            attempt=d["attempt"],
            key=d["key"],
            result=d["result"],
            error=None if error is None else TaskError(**error),
            worker=d["worker"],
            source_topic=source["topic"],
            source_partition=source["partition"],
            source_offset=source["offset"],
            enqueued_at=d["enqueued_at"],
            started_at=d["started_at"],
            finished_at=d["finished_at"],
        )
