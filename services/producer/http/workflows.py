"""POST /v1/workflows and GET /v1/groups/{id}: chains, groups and chords over HTTP.

A workflow is JSON; each step's arguments go through the same Avro conversion as a single
task's (the task's JsonConverter), so a step's arguments are checked as ``POST /v1/tasks``
checks them, and the typed canvas check (taskstream.canvas.check_link) runs on the schemas
alone: it works with ``taskstream serve --schemas`` too. Errors name the step and field
(``chain[1].args.b``, ``chord.body``). The events are those ``chain(...).apply_async()``,
``group(...)`` and ``chord(...)`` send from Python (see taskstream.canvas)::

    {"chain": [STEP, ...]}
    {"group": [STEP, ...]}
    {"chord": {"header": [STEP, ...], "body": STEP, "link_error": [STEP, ...]}}
    STEP = {"task": NAME, "args": {...}, "immutable": false, "key": null, "queue": null}

A step after another (a chain's, a chord's body) leaves out its first argument, which is the
previous result (a chord body's: the list of the members' results), unless ``immutable``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from taskstream.avro_json import JsonConverter
from taskstream.canvas import callback_id, check_link, member_id
from taskstream.codec import AvroSchema
from taskstream.envelope import Chord, Step, TaskEvent, now_micros
from taskstream.errors import CanvasError, InvalidArguments, UnknownTask
from taskstream.publishing import DeliveryHandle
from taskstream.status import Status
from taskstream.task import new_task_id

from .body import read_json
from .catalog import Catalog, TaskSpec
from .errors import ApiError, json_response, retry_after
from .ingest import _settle
from .service import HttpService

_STEP_FIELDS = frozenset(("task", "args", "immutable", "key", "queue"))


class _Steps:
    """Turns JSON steps into Avro steps and events, checked, for one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._tails: dict[str, tuple[AvroSchema, JsonConverter]] = {}

    def spec(self, raw: Any, path: str) -> TaskSpec:
        if not isinstance(raw, dict):
            raise ApiError(422, "invalid_workflow", "a step is an object", path=path)
        unknown = set(raw) - _STEP_FIELDS
        if unknown:
            what = f"unknown fields {sorted(unknown)}; known: {sorted(_STEP_FIELDS)}"
            raise ApiError(422, "invalid_workflow", what, path=path)
        try:
            return self.catalog.get(str(raw.get("task")))
        except UnknownTask as exc:
            raise ApiError(422, "unknown_task", str(exc), path=f"{path}.task") from None

    def _tail(self, name: str) -> tuple[AvroSchema, JsonConverter]:
        """The task's arguments without the first (taskstream.signature.tail_signature's
        record, so a worker decodes them alike)."""
        found = self._tails.get(name)
        if found is None:
            schema = self.catalog.tasks[name].args.schema
            tail = {**schema, "name": f"{schema['name']}_tail", "fields": schema["fields"][1:]}
            found = self._tails[name] = (self.catalog.codec.register(tail), JsonConverter(tail))
        return found

    def step(self, raw: dict[str, Any], path: str, *, after_parent: bool) -> Step:
        spec = self.spec(raw, path)
        immutable = bool(raw.get("immutable", False))
        whole = immutable or not after_parent
        schema, converter = (spec.args, spec.converter) if whole else self._tail(spec.name)
        try:
            datum = converter.to_datum(raw.get("args", {}), task=spec.name, root=f"{path}.args")
            args = self.catalog.codec.encode(schema, datum)
        except InvalidArguments as exc:
            raise ApiError(422, "invalid_arguments", exc.message, path=exc.path) from None
        except (ValueError, OverflowError, TypeError) as exc:
            what = f"cannot encode the arguments: {exc}"
            raise ApiError(422, "invalid_arguments", what, path=f"{path}.args") from None
        queue = raw.get("queue") or spec.queue
        return Step(new_task_id(), spec.name, queue, raw.get("key"), args, whole)

    def check(self, parent: str, child: dict[str, Any], path: str, role: str = "step") -> None:
        """The typed canvas check of one link, as a 422 naming the step."""
        if child.get("immutable"):
            return
        spec = self.spec(child, path)
        result: Any = "string" if role == "errback" else self.catalog.tasks[parent].result.schema
        try:
            check_link(parent, result, spec.name, spec.args.schema, role=role)
        except CanvasError as exc:
            raise ApiError(422, "invalid_workflow", str(exc), path=path) from None


def _event(step: Step) -> TaskEvent:
    return TaskEvent(
        id=step.id, task=step.task, queue=step.queue, key=step.key, attempt=1,
        enqueued_at=now_micros(), not_before=None, args=step.args,
    )  # fmt: skip


def _list(body: dict[str, Any], name: str, path: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise ApiError(422, "invalid_workflow", f"{name} must be a non-empty list", path=path)
    return value


def _chain(steps: _Steps, raw: list[Any]) -> tuple[list[TaskEvent], dict[str, Any]]:
    built = [steps.step(s, f"chain[{i}]", after_parent=i > 0) for i, s in enumerate(raw)]
    for i in range(1, len(raw)):
        steps.check(built[i - 1].task, raw[i], f"chain[{i}]")
    first = _event(built[0])
    first.root_id = first.id
    first.chain = built[1:]
    ids = [s.id for s in built]
    return [first], {"workflow": "chain", "task_id": ids[-1], "root_id": ids[0], "task_ids": ids}


def _members(
    steps: _Steps, raw: list[Any], path: str, gid: str, chord: Chord | None
) -> list[TaskEvent]:
    events = []
    for i, member in enumerate(raw):
        event = _event(steps.step(member, f"{path}[{i}]", after_parent=False))
        event.id = member_id(gid, i)
        event.group_id, event.group_index, event.group_size = gid, i, len(raw)
        event.root_id, event.chord = gid, chord
        events.append(event)
    return events


def _chord(steps: _Steps, raw: Any) -> tuple[list[TaskEvent], dict[str, Any]]:
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_workflow", "chord is an object", path="chord")
    header = _list(raw, "header", "chord.header")
    body_raw = raw.get("body")
    if not isinstance(body_raw, dict):
        raise ApiError(422, "invalid_workflow", "chord.body is a step", path="chord.body")
    for i, member in enumerate(header):
        steps.check(steps.spec(member, f"chord.header[{i}]").name, body_raw, "chord.body", "body")
    errbacks_raw = raw.get("link_error", [])
    for i, errback in enumerate(errbacks_raw):
        steps.check("chord.body", errback, f"chord.link_error[{i}]", "errback")
    gid = new_task_id()
    body = steps.step(body_raw, "chord.body", after_parent=True)
    body.id = callback_id(gid)
    errbacks = [
        steps.step(e, f"chord.link_error[{i}]", after_parent=True)
        for i, e in enumerate(errbacks_raw)
    ]
    events = _members(steps, header, "chord.header", gid, Chord(body, errbacks))
    return events, {"workflow": "chord", "group_id": gid, "task_id": body.id}


def _build(steps: _Steps, body: Any) -> tuple[list[TaskEvent], dict[str, Any]]:
    if not isinstance(body, dict) or len(body) != 1:
        raise ApiError(
            422, "invalid_workflow", 'one of {"chain": [...]}, {"group": [...]}, {"chord": {...}}'
        )
    if "chain" in body:
        return _chain(steps, _list(body, "chain", "chain"))
    if "group" in body:
        gid = new_task_id()
        events = _members(steps, _list(body, "group", "group"), "group", gid, None)
        return events, {"workflow": "group", "group_id": gid, "task_ids": [e.id for e in events]}
    if "chord" in body:
        return _chord(steps, body["chord"])
    raise ApiError(422, "invalid_workflow", f"unknown workflow {next(iter(body))!r}")


def _steps(service: HttpService) -> _Steps:
    found: _Steps | None = getattr(service, "_workflow_steps", None)
    if found is None:
        found = _Steps(service.catalog)
        service._workflow_steps = found  # type: ignore[attr-defined]
    return found


async def post_workflow(request: Request) -> Response:
    """POST /v1/workflows: 202 once the broker acknowledged every event the workflow starts
    with (a chain's first step, a group's or chord's members); 503 otherwise."""
    service = _service(request)
    body = await read_json(request, service.http)
    events, answer = _build(_steps(service), body)
    handles: list[DeliveryHandle] = [service.publisher.publish(e) for e in events]
    await _settle(handles, service.http.publish_timeout_s)
    if not all(h.done() and h.exception() is None for h in handles):
        raise ApiError(503, "unavailable", "the broker did not acknowledge the workflow; retry",
                       headers=retry_after(503))  # fmt: skip
    for event in events:
        service.ingestor.recent.add(event.id)
    location = f"/v1/groups/{answer['group_id']}" if "group_id" in answer else None
    if answer["workflow"] != "group":
        location = f"/v1/tasks/{answer['task_id']}"
    headers = {"Location": location} if location else None
    return json_response(answer, 202, headers)


async def get_group(request: Request) -> Response:
    """GET /v1/groups/{id}: each member's status and the join's state (404 until the store
    has seen a member's outcome)."""
    service = _service(request)
    group_id: str = request.path_params["group_id"]
    info = service.store.group(group_id)
    if info is None:
        raise ApiError(404, "unknown_group", "no member of this group has an outcome stored yet")
    ids = [member_id(group_id, i) for i in range(info.size)]
    found = service.store.get_many(ids)
    members = [
        {"index": i, "task_id": t, "status": found[t].status.value if t in found else "PENDING"}
        for i, t in enumerate(ids)
    ]
    answer: dict[str, Any] = {
        "group_id": group_id, "size": info.size, "completed": info.completed,
        "join": info.state, "members": members,
    }  # fmt: skip
    if info.manifest is not None:
        cb = service.store.get(callback_id(group_id))
        answer["chord"] = {
            "task_id": callback_id(group_id),
            "status": cb.status.value if cb is not None else Status.PENDING.value,
        }
    return json_response(answer)


def _service(request: Request) -> HttpService:
    service: HttpService = request.app.state.service
    return service
