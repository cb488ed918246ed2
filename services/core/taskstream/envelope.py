"""The task and result envelopes (schemas/task_event.avsc, schemas/result_event.avsc).

Timestamps stay integer microseconds since the epoch (UTC) inside taskstream: the envelopes
are read without logical-type conversion because the hot path only passes them on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

from taskstream import clock
from taskstream.avro.binary import long_bytes
from taskstream.avro.codec import (
    HEADER_SIZE,
    AvroSchema,
    Codec,
    RecordCut,
    RecordHead,
)
from taskstream.envelope_binary import ResultBinary, TaskBinary
from taskstream.errors import CorruptMessage, InvalidSchema
from taskstream.status import Status

# The history version (schemas/history/<envelope>.v<N>.avsc) whose fields are all an event
# without workflow fields or per-call options has: the fast path's (see Envelopes).
_PLAIN_VERSION = 2

TASK_EVENT_SCHEMA_FILE = "task_event.avsc"
RESULT_EVENT_SCHEMA_FILE = "result_event.avsc"


def load_envelope_schema(filename: str) -> dict[str, Any]:
    """An envelope schema as shipped in the ``taskstream.schemas`` package (schemas/)."""
    text = resources.files("taskstream.schemas").joinpath(filename).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def envelope_history(filename: str) -> list[dict[str, Any]]:
    """The earlier versions of an envelope schema (schemas/history/<name>.v<N>.avsc), oldest
    first."""
    stem = filename.removesuffix(".avsc")
    folder = resources.files("taskstream.schemas").joinpath("history")
    versions = []
    for n in range(1, 1000):
        path = folder.joinpath(f"{stem}.v{n}.avsc")
        if not path.is_file():
            break
        versions.append(json.loads(path.read_text("utf-8")))
    return versions


def now_micros() -> int:
    """µs since the epoch, from taskstream.clock (which tests can move forward)."""
    return clock.now_micros()


class Prepend(StrEnum):
    """What a task event's arguments are missing at the front (workflows)."""

    NONE = "NONE"  # args is the whole record
    VALUE = "VALUE"  # the parent's result (a chain step, a link)
    LIST = "LIST"  # the list of a chord's member results, in the group's order
    PARENT_ID = "PARENT_ID"  # the failed parent's task id (an errback)


@dataclass(slots=True)
class Step:
    """A signature to run later (schemas/task_event.avsc Step): its id is chosen up front."""

    id: str
    task: str
    queue: str
    key: str | None
    args: bytes  # the args record, without its first parameter unless immutable
    immutable: bool = False
    priority: int | None = None  # the event's once sent (taskstream.kafka.topics.event_topic)


@dataclass(slots=True)
class Chord:
    """The chord a group member belongs to: ``body`` runs with the members' results."""

    body: Step
    errbacks: list[Step] = field(default_factory=list)


class FlowKind(StrEnum):
    TASK = "TASK"
    CHAIN = "CHAIN"
    GROUP = "GROUP"
    CHORD = "CHORD"


@dataclass(slots=True)
class Flow:
    """A workflow node to start later (schemas/task_event.avsc Flow; taskstream.workflows.events
    starts one): a task (``step``, with its own ``link``/``link_error``), a chain of
    ``nodes``, a group of ``nodes`` (``group_id``), or a chord: a header of ``nodes``, a
    ``body`` and the ``errbacks`` run once if a header member fails."""

    kind: FlowKind
    step: Step | None = None
    nodes: list[Flow] = field(default_factory=list)
    body: Flow | None = None
    group_id: str | None = None
    link: list[Step] = field(default_factory=list)
    link_error: list[Step] = field(default_factory=list)
    errbacks: list[Step] = field(default_factory=list)


@dataclass(slots=True)
class Join:
    """The group whose member ``index`` the end of a workflow branch is, and what runs once
    all ``size`` members are final: ``then`` with the list of their results (nothing: the
    list is the group's own result), ``errbacks`` once if one failed; the end of ``then``
    (else the group's list) is in turn a member of ``outer``."""

    group_id: str
    index: int
    size: int
    then: list[Flow] = field(default_factory=list)
    errbacks: list[Step] = field(default_factory=list)
    outer: Join | None = None

    def acts(self) -> bool:
        """Whether the join does anything once the group is complete (else it only counts)."""
        return bool(self.then or self.errbacks or self.outer is not None)


@dataclass(slots=True)
class ParentResult:
    task: str
    result: bytes  # single-object Avro, as the task returned it


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
    # Workflow links (appended to the schema with defaults; see taskstream.canvas).
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    group_size: int | None = None
    chord: Chord | None = None
    chain: list[Step] = field(default_factory=list)
    link: list[Step] = field(default_factory=list)
    link_error: list[Step] = field(default_factory=list)
    prepend: Prepend = Prepend.NONE
    parent_results: list[ParentResult] = field(default_factory=list)
    ignore_result: bool = False
    # Per-call options (apply_async's headers=, time_limit=, soft_time_limit=; seconds).
    headers: dict[str, str] = field(default_factory=dict)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    # Nested workflows: what runs after this task, and the join its branch ends in.
    then: list[Flow] = field(default_factory=list)
    join: Join | None = None
    # Celery's priority, 0 (lowest) to 9 (highest), None for none: it picks the event's band
    # (taskstream.kafka.topics.event_topic), so a retry or a delay comes back to the same band.
    priority: int | None = None


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
    # Workflow links, copied from the task event, and update_state()'s custom state.
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    group_size: int | None = None
    chord: Chord | None = None
    state: str | None = None
    meta: str | None = None  # JSON
    join: Join | None = None  # a member's join (nested workflows)


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
        # A group's list of results stored as one result (taskstream.workflows.events).
        self.group_value_schema: AvroSchema = codec.register(_GROUP_VALUE, logical_types=False)
        # Events written by earlier versions of the envelopes still decode (new fields take
        # their defaults): every version ever shipped is in schemas/history/.
        versions: dict[str, list[AvroSchema]] = {}
        for filename, current in (
            (TASK_EVENT_SCHEMA_FILE, self.task_schema),
            (RESULT_EVENT_SCHEMA_FILE, self.result_schema),
        ):
            versions[filename] = [
                codec.register_version(older, current, logical_types=False)
                for older in envelope_history(filename)
            ]
        # The hot path. An event whose workflow fields (and per-call options) are all
        # defaults (nearly all) is version 2's body followed by the defaults' encoding (a
        # zero byte each: null, empty array or map, first enum symbol, false), so it is
        # written and read as that, without fastavro visiting a dozen default fields (which
        # doubled their cost).
        self._task_prefix = versions[TASK_EVENT_SCHEMA_FILE][_PLAIN_VERSION - 1]
        self._result_prefix = versions[RESULT_EVENT_SCHEMA_FILE][_PLAIN_VERSION - 1]
        self._task_tail = _defaults_tail(codec, self.task_schema, self._task_prefix)
        self._result_tail = _defaults_tail(codec, self.result_schema, self._result_prefix)
        # ... and those plain events are written and read by hand (taskstream.envelope_binary:
        # the same bytes at a third of the cost), fastavro deciding whatever that does not take.
        self._task_binary = TaskBinary(self.task_schema, self._task_prefix, self._task_tail)
        self._result_binary = ResultBinary(
            self.result_schema, self._result_prefix, self._result_tail
        )
        self._task_cut = RecordCut(self.task_schema, "parent_results", logical_types=False)
        # A group member's result: read to its join's position, the join's rest (what runs
        # once the group is complete: the same bytes in every member's) decoded once.
        # The prefix's read says where the rest of the head starts.
        plain_fields = len(self._result_prefix.schema["fields"])
        self._result_head = RecordHead(
            self.result_schema, "join", 2, first=plain_fields, logical_types=False
        )
        self._join_rests: dict[bytes, tuple[dict[str, Any], dict[str, Any]]] = {}

    def encode_task(self, event: TaskEvent) -> bytes:
        if (
            event.parent_id is None
            and event.group_id is None
            and not event.ignore_result
            and not (event.chain or event.link or event.link_error or event.then)
            and event.join is None
            and event.prepend is Prepend.NONE
            and not event.parent_results
            and not event.headers
            and event.time_limit is None
            and event.soft_time_limit is None
            and event.priority is None
        ):
            try:
                return self._task_binary.encode(event)
            except Exception:  # a value it does not take: fastavro's bytes, or its error
                pass
            head = self.codec.encode(
                self._task_prefix,
                {
                    "id": event.id, "task": event.task, "queue": event.queue, "key": event.key,
                    "attempt": event.attempt, "enqueued_at": event.enqueued_at,
                    "not_before": event.not_before, "args": event.args,
                    "expires": event.expires,
                },
            )  # fmt: skip
            return self.task_schema.header + head[HEADER_SIZE:] + self._task_tail
        datum = {
            "id": event.id,
            "task": event.task,
            "queue": event.queue,
            "key": event.key,
            "attempt": event.attempt,
            "enqueued_at": event.enqueued_at,
            "not_before": event.not_before,
            "args": event.args,
            "expires": event.expires,
            "parent_id": event.parent_id,
            "root_id": event.root_id,
            "group_id": event.group_id,
            "group_index": event.group_index,
            "group_size": event.group_size,
            "chord": chord_datum(event.chord),
            "chain": [step_datum(s) for s in event.chain],
            "link": [step_datum(s) for s in event.link],
            "link_error": [step_datum(s) for s in event.link_error],
            "prepend": event.prepend.value,
            "ignore_result": event.ignore_result,
            "headers": event.headers,
            "time_limit": event.time_limit,
            "soft_time_limit": event.soft_time_limit,
            "then": [flow_datum(f) for f in event.then],
            "join": join_datum(event.join),
            "priority": event.priority,
        }
        if event.parent_results:  # a chord's body: one per member, written by hand
            return self._task_cut.encode(datum, parent_results_body(event.parent_results))
        datum["parent_results"] = []
        return self.codec.encode(self.task_schema, datum)

    def encode_group_value(self, results: list[ParentResult]) -> bytes:
        """A group's members' results (each single-object encoded by its task) as one value."""
        items = [{"task": r.task, "result": r.result} for r in results]
        return self.codec.encode(self.group_value_schema, {"results": items})

    def decode_group_value(self, data: bytes) -> list[ParentResult]:
        d = self.codec.decode_as(self.group_value_schema, data)
        return [ParentResult(r["task"], r["result"]) for r in d["results"]]

    def decode_task(self, data: bytes) -> TaskEvent:
        plain = self._task_binary.decode(data)
        if plain is not None:
            return TaskEvent(*plain)
        d = self._plain(data, self.task_schema, self._task_prefix, self._task_tail)
        if d is not None:
            return TaskEvent(
                d["id"], d["task"], d["queue"], d["key"], d["attempt"],
                d["enqueued_at"], d["not_before"], d["args"], d["expires"],
            )  # fmt: skip
        d = self.codec.decode_as(self.task_schema, data)
        event = TaskEvent(
            d["id"], d["task"], d["queue"], d["key"], d["attempt"],
            d["enqueued_at"], d["not_before"], d["args"], d["expires"],
        )  # fmt: skip
        if d["parent_id"] is not None or d["group_id"] is not None or _any_workflow(d):
            _workflow_of_task(event, d)
        return event

    def _plain(
        self, data: bytes, current: AvroSchema, prefix: AvroSchema, tail: bytes
    ) -> dict[str, Any] | None:
        """The fields of ``prefix`` (history version ``_PLAIN_VERSION``) of an event of the
        current version whose later fields are all defaults, or None when it is not such an
        event."""
        if data[:HEADER_SIZE] != current.header or not data.endswith(tail):
            return None
        datum, end = self.codec.read_prefix(prefix, data)
        if end != len(data) - len(tail):
            return None
        d: dict[str, Any] = datum
        return d

    def decode_result_datum(self, data: bytes) -> dict[str, Any]:
        """A result envelope as the codec's dict (every field), for the materializer."""
        if data[:HEADER_SIZE] != self.result_schema.header:  # an earlier version: resolved
            found: dict[str, Any] = self.codec.decode_as(self.result_schema, data)
            return found
        datum, end = self.codec.read_prefix(self._result_prefix, data)
        d: dict[str, Any] = datum
        tail = self._result_tail
        if end == len(data) - len(tail) and data.endswith(tail):
            d.update(_RESULT_DEFAULTS)
            return d
        return self._workflow_result(data, d, end)

    def _workflow_result(self, data: bytes, d: dict[str, Any], end: int) -> dict[str, Any]:
        """A result with workflow fields, given its plain fields ``d`` read up to ``end``.

        A group's members share the rest of their join (what runs once the group is
        complete: reading a chord's body in it takes longer than the rest of the result), so
        those bytes are decoded once, then reused: the datum's join shares their values
        (read only, as every datum of this codec)."""
        head = self._result_head
        more, end = head.read(data, end)
        d.update(more)
        join = more[head.field]
        if join is None:
            if end == len(data) and not head.after:
                return d
            rest = None
        else:
            rest = data[end:]
            known = self._join_rests.get(rest)
            if known is not None:
                join.update(known[0])
                d.update(known[1])
                return d
        found: dict[str, Any] = self.codec.decode_as(self.result_schema, data)
        if rest is not None and len(rest) <= _JOIN_REST_MAX:
            if len(self._join_rests) >= _JOIN_RESTS:
                self._join_rests.clear()
            join = found[head.field]
            self._join_rests[rest] = (
                {k: join[k] for k in head.rest},
                {k: found[k] for k in head.after},
            )
        return found

    def encode_result(self, event: ResultEvent) -> bytes:
        error = event.error
        if (
            event.root_id is None
            and event.group_id is None
            and event.state is None
            and event.parent_id is None
            and event.join is None
        ):
            try:
                return self._result_binary.encode(event)
            except Exception:  # a value it does not take: fastavro's bytes, or its error
                pass
            head = self.codec.encode(self._result_prefix, self._result_prefix_datum(event))
            return self.result_schema.header + head[HEADER_SIZE:] + self._result_tail
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
                "parent_id": event.parent_id,
                "root_id": event.root_id,
                "group_id": event.group_id,
                "group_index": event.group_index,
                "group_size": event.group_size,
                "chord": chord_datum(event.chord),
                "state": event.state,
                "meta": event.meta,
                "join": join_datum(event.join),
            },
        )

    @staticmethod
    def _result_prefix_datum(event: ResultEvent) -> dict[str, Any]:
        error = event.error
        return {
            "id": event.id, "task": event.task, "status": event.status.value,
            "attempt": event.attempt, "key": event.key, "result": event.result,
            "error": None if error is None
            else {"type": error.type, "message": error.message, "traceback": error.traceback},
            "worker": event.worker,
            "source": {"topic": event.source_topic, "partition": event.source_partition,
                       "offset": event.source_offset},
            "enqueued_at": event.enqueued_at, "started_at": event.started_at,
            "finished_at": event.finished_at,
        }  # fmt: skip

    def decode_result(self, data: bytes) -> ResultEvent:
        d = self.decode_result_datum(data)
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
            parent_id=d["parent_id"],
            root_id=d["root_id"],
            group_id=d["group_id"],
            group_index=d["group_index"],
            group_size=d["group_size"],
            chord=chord_of(d["chord"]),
            state=d["state"],
            meta=d["meta"],
            join=join_of(d["join"]),
        )


_GROUP_VALUE: dict[str, Any] = {
    "type": "record", "name": "GroupValue", "namespace": "io.taskstream",
    "doc": "a group's list of results as one result (task taskstream.group)",
    "fields": [{"name": "results", "type": {"type": "array", "items": {
        "type": "record", "name": "GroupItem",
        "fields": [{"name": "task", "type": "string"}, {"name": "result", "type": "bytes"}],
    }}}],
}  # fmt: skip

# The workflow fields of a result event, all defaults (see Envelopes._plain).
_RESULT_DEFAULTS: dict[str, Any] = {
    "parent_id": None, "root_id": None, "group_id": None, "group_index": None,
    "group_size": None, "chord": None, "state": None, "meta": None, "join": None,
}  # fmt: skip


# Join rests remembered (see Envelopes._workflow_result): the open groups' of one
# materializer, a few bytes each; longer rests (large arguments) are decoded each time.
_JOIN_RESTS = 1024
_JOIN_REST_MAX = 4096


def parent_results_body(results: list[ParentResult]) -> bytes:
    """The Avro body of a task event's ``parent_results``: one array block of (task, result)
    records. Written here rather than by fastavro, which takes about 1 µs a record, and a
    chord's body carries one per member (10,000: most of the join's time)."""
    tasks: dict[str, bytes] = {}  # a task's name as an Avro string: members share a few
    parts = [long_bytes(len(results))]
    for r in results:
        task = tasks.get(r.task)
        if task is None:
            name = r.task.encode()
            task = tasks[r.task] = long_bytes(len(name)) + name
        parts += (task, long_bytes(len(r.result)), r.result)
    parts.append(b"\x00")
    return b"".join(parts)


def _defaults_tail(codec: Codec, current: AvroSchema, older: AvroSchema) -> bytes:
    """The encoding of the defaults of the fields ``current`` appends to ``older``."""
    old = [f["name"] for f in older.schema["fields"]]
    new = current.schema["fields"]
    if [f["name"] for f in new[: len(old)]] != old:
        raise InvalidSchema(f"{current.name}: fields must be appended, not reordered")
    appended = new[len(old) :]
    tail = {"type": "record", "name": f"{current.name}Tail", "fields": appended}
    schema = codec.register(tail, logical_types=False)
    return codec.encode(schema, {f["name"]: f["default"] for f in appended})[HEADER_SIZE:]


def step_datum(step: Step) -> dict[str, Any]:
    return {
        "id": step.id, "task": step.task, "queue": step.queue, "key": step.key,
        "args": step.args, "immutable": step.immutable, "priority": step.priority,
    }  # fmt: skip


def step_of(d: dict[str, Any]) -> Step:
    # (A result event's Step has no priority: a chord body's is in the task events.)
    return Step(
        d["id"], d["task"], d["queue"], d["key"], d["args"], d["immutable"], d.get("priority")
    )


def chord_datum(chord: Chord | None) -> dict[str, Any] | None:
    if chord is None:
        return None
    return {"body": step_datum(chord.body), "errbacks": [step_datum(s) for s in chord.errbacks]}


def chord_of(d: dict[str, Any] | None) -> Chord | None:
    if d is None:
        return None
    return Chord(step_of(d["body"]), [step_of(s) for s in d["errbacks"]])


def flow_datum(flow: Flow) -> dict[str, Any]:
    return {
        "kind": flow.kind.value,
        "step": None if flow.step is None else step_datum(flow.step),
        "nodes": [flow_datum(n) for n in flow.nodes],
        "body": None if flow.body is None else flow_datum(flow.body),
        "group_id": flow.group_id,
        "link": [step_datum(s) for s in flow.link],
        "link_error": [step_datum(s) for s in flow.link_error],
        "errbacks": [step_datum(s) for s in flow.errbacks],
    }


def flow_of(d: dict[str, Any]) -> Flow:
    return Flow(
        FlowKind(d["kind"]),
        None if d["step"] is None else step_of(d["step"]),
        [flow_of(n) for n in d["nodes"]],
        None if d["body"] is None else flow_of(d["body"]),
        d["group_id"],
        [step_of(s) for s in d["link"]],
        [step_of(s) for s in d["link_error"]],
        [step_of(s) for s in d["errbacks"]],
    )


def join_datum(join: Join | None) -> dict[str, Any] | None:
    if join is None:
        return None
    return {
        "group_id": join.group_id, "index": join.index, "size": join.size,
        "then": [flow_datum(f) for f in join.then],
        "errbacks": [step_datum(s) for s in join.errbacks],
        "outer": join_datum(join.outer),
    }  # fmt: skip


def join_of(d: dict[str, Any] | None) -> Join | None:
    if d is None:
        return None
    return Join(
        d["group_id"], d["index"], d["size"], [flow_of(f) for f in d["then"]],
        [step_of(s) for s in d["errbacks"]], join_of(d["outer"]),
    )  # fmt: skip


def _any_workflow(d: dict[str, Any]) -> bool:
    return bool(
        d["chain"] or d["link"] or d["link_error"] or d["ignore_result"] or d["headers"]
        or d["time_limit"] is not None or d["soft_time_limit"] is not None or d["then"]
        or d["join"] is not None or d["priority"] is not None
    )  # fmt: skip


def _workflow_of_task(event: TaskEvent, d: dict[str, Any]) -> None:
    """The workflow fields of a decoded task event (most events have none: skipped)."""
    event.parent_id = d["parent_id"]
    event.root_id = d["root_id"]
    event.group_id = d["group_id"]
    event.group_index = d["group_index"]
    event.group_size = d["group_size"]
    event.chord = chord_of(d["chord"])
    event.chain = [step_of(s) for s in d["chain"]]
    event.link = [step_of(s) for s in d["link"]]
    event.link_error = [step_of(s) for s in d["link_error"]]
    event.prepend = Prepend(d["prepend"])
    event.parent_results = [ParentResult(r["task"], r["result"]) for r in d["parent_results"]]
    event.ignore_result = d["ignore_result"]
    event.headers = d["headers"]
    event.time_limit, event.soft_time_limit = d["time_limit"], d["soft_time_limit"]
    event.then = [flow_of(f) for f in d["then"]]
    event.join = join_of(d["join"])
    event.priority = d["priority"]
