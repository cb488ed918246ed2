"""POST /v1/workflows and GET /v1/groups/{id}: chains, groups and chords over HTTP, nested.

A workflow is JSON; each step's arguments go through the same Avro conversion as a single
task's (the task's JsonConverter), so a step's arguments are checked as ``POST /v1/tasks``
checks them, and the typed canvas check (taskstream.workflows.tree.check) runs on the
schemas alone: it works with ``taskstream serve --schemas`` too. The JSON becomes the tree
the Python canvas builds (taskstream.workflows.tree) and is sent as the same events. Errors
name the path to the bad field (``chain[2].chord.header[3].args.b``, ``chord.body``)::

    NODE = STEP | {"chain": [NODE, ...], "link_error": [STEP, ...]}
         | {"group": [NODE, ...], "link_error": [STEP, ...]}
         | {"chord": {"header": [NODE, ...], "body": NODE, "link_error": [STEP, ...]}}
    STEP = {"task": NAME, "args": {...}, "immutable": false, "key": null, "queue": null,
            "link": [STEP, ...], "link_error": [STEP, ...]}

``link_error`` on a chain or group goes to each of its tasks (as Celery's), a chord's runs
once; ``link`` steps get the task's result, ``link_error`` steps its id when it fails.

The body is a chain, group or chord. A step after another (in a chain, a chord's body, a
group that follows a step) leaves out its first argument, which is the previous result (a
list after a group or a chord's header), unless ``immutable``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from taskstream.avro.codec import AvroSchema
from taskstream.avro.json import JsonConverter
from taskstream.canvas import callback_id, member_id
from taskstream.envelope import Flow, FlowKind, TaskEvent
from taskstream.errors import CanvasError, InvalidArguments, UnknownTask
from taskstream.publishing import DeliveryHandle
from taskstream.status import Status
from taskstream.workflows import tree
from taskstream.workflows.events import begin, first_id, leaves, result_id

from .body import read_json
from .catalog import Catalog, TaskSpec
from .errors import ApiError, json_response, retry_after
from .ingest import _settle
from .service import HttpService

N = TypeVar("N")
_STEP_FIELDS = frozenset(("task", "args", "immutable", "key", "queue", "link", "link_error"))
_SHAPES = 'one of {"chain": [...]}, {"group": [...]}, {"chord": {...}}'


class _Steps:
    """Turns JSON workflows into taskstream.workflows.tree's tree, checked, for one catalog."""

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

    def leaf(self, raw: Any, path: str) -> tree.Leaf:
        spec = self.spec(raw, path)
        fields = spec.args.schema["fields"]
        args = raw.get("args", {})

        def encode(whole: bool) -> bytes:
            schema, converter = (spec.args, spec.converter) if whole else self._tail(spec.name)
            try:
                datum = converter.to_datum(args, task=spec.name, root=f"{path}.args")
                return self.catalog.codec.encode(schema, datum)
            except InvalidArguments as exc:
                raise ApiError(422, "invalid_arguments", exc.message, path=exc.path) from None
            except (ValueError, OverflowError, TypeError) as exc:
                what = f"cannot encode the arguments: {exc}"
                raise ApiError(422, "invalid_arguments", what, path=f"{path}.args") from None

        return tree.Leaf(
            spec.name,
            bool(raw.get("immutable", False)),
            (fields[0]["name"], fields[0]["type"]) if fields else None,
            spec.result.schema,
            encode,
            raw.get("queue") or spec.queue,
            raw.get("key"),
            link=self.leaves(raw.get("link", []), f"{path}.link"),
            link_error=self.leaves(raw.get("link_error", []), f"{path}.link_error"),
            path=path,
        )

    def leaves(self, raw: Any, path: str) -> list[tree.Leaf]:
        """A list of STEPs: callbacks or errbacks."""
        if not isinstance(raw, list):
            raise ApiError(422, "invalid_workflow", "a list of steps", path=path)
        return [self.leaf(item, f"{path}[{i}]") for i, item in enumerate(raw)]

    def node(self, raw: Any, path: str) -> tree.Node:
        """A NODE of the module docstring; ``path`` names it in errors."""
        shapes = [k for k in ("chain", "group", "chord") if isinstance(raw, dict) and k in raw]
        if len(shapes) == 1 and set(raw) <= {shapes[0], "link_error"}:
            shape, inner = shapes[0], raw[shapes[0]]
            at = f"{path}.{shape}" if path else shape
            node: tree.Node
            if shape == "chain":
                nodes = self.nodes(inner, at, allow_empty=False)
                node = self._checked(lambda: tree.chain_of(nodes, at))
            elif shape == "group":
                node = self._checked(lambda: tree.group_of(self.nodes(inner, at), path=at))
            else:
                node = self.chord(inner, at)
            # A chain's or group's errbacks: on each of its tasks (a chord's run once).
            where = f"{path}.link_error" if path else "link_error"
            for errback in self.leaves(raw.get("link_error", []), where):
                tree.add_errback(node, errback)
            return node
        if isinstance(raw, dict) and "task" in raw:
            return self.leaf(raw, path)
        raise ApiError(422, "invalid_workflow", f"a step or {_SHAPES}", path=path)

    def nodes(self, raw: Any, path: str, *, allow_empty: bool = True) -> list[tree.Node]:
        if not isinstance(raw, list) or not (raw or allow_empty):
            what = "a list" if allow_empty else "a non-empty list"
            raise ApiError(422, "invalid_workflow", f"{path.rsplit('.', 1)[-1]} must be {what}",
                           path=path)  # fmt: skip
        return [self.node(item, f"{path}[{i}]") for i, item in enumerate(raw)]

    def chord(self, raw: Any, path: str) -> tree.Chord:
        if not isinstance(raw, dict):
            raise ApiError(422, "invalid_workflow", "chord is an object", path=path)
        header = self.nodes(raw.get("header"), f"{path}.header")
        if "body" not in raw:
            raise ApiError(422, "invalid_workflow", "a chord has a body", path=f"{path}.body")
        body = self.node(raw["body"], f"{path}.body")
        errbacks_raw = raw.get("link_error", [])
        if not isinstance(errbacks_raw, list):
            raise ApiError(422, "invalid_workflow", "link_error must be a list",
                           path=f"{path}.link_error")  # fmt: skip
        errbacks = [self.leaf(e, f"{path}.link_error[{i}]") for i, e in enumerate(errbacks_raw)]
        return self._checked(lambda: tree.chord_of(header, body, errbacks=errbacks, path=path))

    @staticmethod
    def _checked(build: Callable[[], N]) -> N:
        try:
            return build()
        except CanvasError as exc:
            raise ApiError(422, "invalid_workflow", str(exc), path=exc.path) from None


def _build(steps: _Steps, body: Any) -> tuple[list[TaskEvent], dict[str, Any]]:
    if not isinstance(body, dict) or not body:
        raise ApiError(422, "invalid_workflow", _SHAPES)
    shapes = [k for k in body if k in ("chain", "group", "chord")]
    if len(shapes) != 1 or set(body) - {shapes[0], "link_error"}:
        unknown = sorted(set(body) - {"chain", "group", "chord", "link_error"})
        raise ApiError(422, "invalid_workflow", f"unknown workflow {unknown}: {_SHAPES}")
    shape = shapes[0]
    node = steps.node(body, "")
    _Steps._checked(lambda: tree.check(node))
    frozen = tree.freeze(node)
    events = begin(frozen)
    answer: dict[str, Any] = {"workflow": shape}
    if frozen.kind is FlowKind.GROUP:
        assert frozen.group_id is not None
        answer["group_id"] = frozen.group_id
        answer["task_ids"] = [result_id(m) for m in frozen.nodes]
        return events, answer
    answer["task_id"] = result_id(frozen)
    if frozen.kind is FlowKind.CHORD:
        answer["group_id"] = frozen.group_id
    else:
        answer["root_id"] = events[0].id if events else None
    answer["task_ids"] = _task_ids(frozen)  # a chord's: its header's tasks, then its body's
    return events, answer


def _task_ids(frozen: Flow) -> list[str]:
    ids = []
    for leaf in leaves(frozen):
        assert leaf.step is not None
        ids.append(leaf.step.id)
    return ids


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
    if answer["workflow"] == "group":
        location = f"/v1/groups/{answer['group_id']}"
    else:
        location = f"/v1/tasks/{answer['task_id']}"
    headers = {"Location": location}
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
        # What the join starts: a chord's body (its result id), or, nested, what follows.
        join = service.catalog.envelopes.decode_result(info.manifest).join
        then_id = callback_id(group_id) if join is None else first_id(join.then, group_id)
        cb = service.store.get(then_id)
        answer["chord"] = {
            "task_id": then_id,
            "status": cb.status.value if cb is not None else Status.PENDING.value,
        }
    return json_response(answer)


def _service(request: Request) -> HttpService:
    service: HttpService = request.app.state.service
    return service
