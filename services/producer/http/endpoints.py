"""The HTTP service's endpoints. Each reads what it needs from ``request.app.state``:
``service`` (the :class:`HttpService`), and the documents built once at start,
``openapi_body`` and ``task_list``. Errors are raised (ApiError, taskstream's errors) and
answered by the handlers in :mod:`taskstream.producer.http.errors`.

POST /v1/tasks/{task}          one task; 202 + Location once the broker acknowledged it
POST /v1/tasks/{task}:batch    {"items": [{"args": {...}, "key": ...}, ...]}; each answered
POST /v1/tasks/{task_id}:revoke  revoke a task (?terminate=true stops a run in progress)
GET  /v1/tasks/{task_id}       status, result, error; ?wait=SECONDS long-polls (for a final
                               outcome, or with &change=1 for any change of state or meta)
GET  /v1/tasks                 the tasks accepted here, with their schemas
GET  /openapi.json /metrics /healthz /readyz
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from taskstream.errors import InvalidOption, StoreError
from taskstream.status import Status
from taskstream.store import Progress, ResultRecord
from taskstream.task import check_priority
from taskstream.text import id_problem

from .body import read_json
from .catalog import TaskSpec
from .errors import (
    ApiError,
    error_response,
    json_response,
    retry_after,
)
from .ingest import Answer, Submission
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .service import HttpService

BATCH_SUFFIX = ":batch"
REVOKE_SUFFIX = ":revoke"
_POLL_FIRST_S, _POLL_MAX_S = 0.005, 0.05  # long-poll interval, doubling up to the max
_BATCH_ITEM_FIELDS = frozenset({"args", "key", "queue", "idempotency_key", "priority"})


def _service(request: Request) -> HttpService:
    service: HttpService = request.app.state.service
    return service


async def tasks_endpoint(request: Request) -> Response:
    """/v1/tasks/{name}: POST <task name>[:batch] sends, GET <task id> reads."""
    if request.method == "POST":
        if request.path_params["name"].endswith(REVOKE_SUFFIX):
            return await revoke_task(request)
        return await post_task(request)
    if request.method in ("GET", "HEAD"):
        return await get_task(request)
    raw_name: str = request.path_params["name"]
    name = raw_name.removesuffix(BATCH_SUFFIX)
    allow = "POST" if name in _service(request).catalog.tasks else "GET"
    if raw_name.endswith(REVOKE_SUFFIX):
        allow = "POST"
    return error_response(405, "method_not_allowed", "Method Not Allowed", {"Allow": allow})


async def post_task(request: Request) -> Response:
    service = _service(request)
    name: str = request.path_params["name"]
    batch = name.endswith(BATCH_SUFFIX)
    spec = service.catalog.get(name.removesuffix(BATCH_SUFFIX) if batch else name)
    body = await read_json(request, service.http)
    if batch:
        return await _post_batch(service, spec, body)
    q = request.query_params
    raw = q.get("priority")
    priority = None if raw is None else _priority(int(raw) if raw.isdigit() else raw, "priority")
    item = Submission(
        spec, body, q.get("key"), q.get("queue"), request.headers.get("idempotency-key"),
        priority,
    )  # fmt: skip
    (outcome,) = await service.ingestor.submit([item])
    if not outcome.accepted:
        error = {**outcome.error(), "task": spec.name}
        return json_response({"error": error}, outcome.status, retry_after(outcome.status))
    headers = {"Location": f"/v1/tasks/{outcome.task_id}"}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response({"task_id": outcome.task_id, "status": "PENDING"}, 202, headers)


async def revoke_task(request: Request) -> Response:
    """POST /v1/tasks/{task_id}:revoke: 202 once the revocation is acknowledged (acks=all);
    503 when the broker did not acknowledge it. An id no task can have (taskstream.text.id_problem,
    as ``apply_async(task_id=...)`` checks it) is a 422. A well-formed id is revoked even if it
    is unknown here (as Celery does: it may still be sent, or wait in a queue); the body's
    ``known`` says whether the store has an outcome for it or this service accepted it lately
    (None if the store cannot be read)."""
    service = _service(request)
    task_id = valid_task_id(request.path_params["name"].removesuffix(REVOKE_SUFFIX))
    raw = request.query_params.get("terminate", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(
            422, "invalid_terminate", "terminate must be true or false", path="terminate"
        )
    terminate = raw in ("true", "1")
    timeout = service.http.publish_timeout_s
    await run_in_threadpool(
        lambda: service.control.revoke(task_id, terminate=terminate, timeout=timeout)
    )
    body = {
        "task_id": task_id,
        "revoked": True,
        "terminate": terminate,
        "known": _known(service, task_id),
    }
    return json_response(body, 202)


def _known(service: HttpService, task_id: str) -> bool | None:
    """Whether `task_id` has a stored outcome or was accepted here lately; None if the store
    cannot be read (the revocation is written all the same)."""
    if task_id in service.ingestor.recent:
        return True
    try:
        return service.store.get(task_id) is not None
    except StoreError:
        return None


async def _post_batch(service: HttpService, spec: TaskSpec, body: Any) -> Response:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ApiError(
            422, "invalid_batch", 'expected {"items": [{"args": {...}}, ...]}', path="items"
        )
    unknown = sorted(set(body) - {"items"})
    if unknown:
        raise ApiError(422, "invalid_batch", "unknown field", path=unknown[0])
    raw = body["items"]
    limit = service.http.batch_max_items
    if len(raw) > limit:
        raise ApiError(413, "batch_too_large", f"at most {limit} items per batch")
    # The envelope of each item is checked first and fails the whole batch; the arguments,
    # the event's size and the delivery of each item are answered item by item.
    outcomes = await service.ingestor.submit([_batch_item(spec, e, i) for i, e in enumerate(raw)])
    return _batch_response(outcomes)


def _batch_item(spec: TaskSpec, entry: Any, i: int) -> Submission:
    where = f"items[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("args"), dict):
        raise ApiError(422, "invalid_batch", 'expected {"args": {...}}', path=where)
    for field, value in entry.items():
        if field not in _BATCH_ITEM_FIELDS:
            raise ApiError(422, "invalid_batch", "unknown field", path=f"{where}.{field}")
        if field == "priority":
            continue  # an int, checked below
        if field != "args" and not isinstance(value, str):
            raise ApiError(422, "invalid_batch", "expected a string", path=f"{where}.{field}")
        problem = id_problem(value) if field in ("key", "idempotency_key") else None
        if problem is not None:
            raise ApiError(
                422, f"invalid_{field}", f"the {field} {problem}", path=f"{where}.{field}"
            )
    priority = _priority(entry["priority"], f"{where}.priority") if "priority" in entry else None
    return Submission(
        spec, entry["args"], entry.get("key"), entry.get("queue"), entry.get("idempotency_key"),
        priority,
    )  # fmt: skip


def _priority(value: object, path: str) -> int | None:
    """A request's priority, checked as apply_async checks it; a 422 naming ``path``."""
    if isinstance(value, float) and value.is_integer():  # JSON's integer may be 3.0
        value = int(value)
    try:
        if value is None:  # (absent is no priority; null is no int)
            raise InvalidOption("priority", value, "a priority is an int from 0 to 9")
        check_priority(value)
    except InvalidOption as exc:
        raise ApiError(
            422, "invalid_priority", f"priority {value!r}: {exc.reason}", path=path
        ) from exc
    return value if isinstance(value, int) else None


def _batch_response(outcomes: list[Answer]) -> Response:
    """202 if every item was accepted, 503 if the broker took none, else 207; each item
    answered as ``{"status": 202, "task_id": ...}`` or ``{"status": ..., "error": {...}}``."""
    accepted = sum(o.accepted for o in outcomes)
    if accepted == 0 and any(o.status == 503 for o in outcomes):
        return error_response(503, "broker_unavailable", "the broker took none of the items; retry",
                              retry_after(503))  # fmt: skip
    rendered = [
        {"status": 202, "task_id": o.task_id} if o.accepted
        else {"status": o.status, "error": o.error()}
        for o in outcomes
    ]  # fmt: skip
    status = 202 if accepted == len(outcomes) else 207
    return json_response({"accepted": accepted, "items": rendered}, status)


async def get_task(request: Request) -> Response:
    service = _service(request)
    task_id = valid_task_id(request.path_params["name"])
    wait = _wait_s(request.query_params.get("wait"), service.http.max_wait_s)
    change = request.query_params.get("change") in ("1", "true")
    record, progress = await _poll(service, task_id, wait, change)
    if record is not None:
        return json_response(service.render(record, progress))
    if task_id in service.ingestor.recent:
        return json_response({"task_id": task_id, "status": Status.PENDING.value})
    raise ApiError(
        404, "unknown_task_id",
        "no outcome stored and not accepted by this service lately: unknown, expired "
        "(result_expires) or forgotten (a task sent elsewhere shows up once a worker has "
        "started or finished it)",
    )  # fmt: skip


def valid_task_id(task_id: str) -> str:
    """`task_id`, or ApiError 422 if no task can have it (taskstream.text.id_problem)."""
    problem = id_problem(task_id, slash=False)
    if problem is not None:
        raise ApiError(422, "invalid_task_id", f"the task id {problem}", path="task_id")
    return task_id


def _wait_s(raw: str | None, max_wait_s: float) -> float:
    """The ?wait= of a GET, in seconds, capped at `max_wait_s`; 0 without one."""
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not math.isfinite(wait) or wait < 0:
        raise ApiError(422, "invalid_wait", "wait must be a number of seconds >= 0", path="wait")
    return min(wait, max_wait_s)


async def _poll(
    service: HttpService, task_id: str, wait_s: float, change: bool = False
) -> tuple[ResultRecord | None, Progress | None]:
    """The stored outcome of `task_id` (and its update_state() progress) once final, or with
    `change` once it differs from what was stored when the poll began, or whatever is
    stored after `wait_s`."""
    deadline = time.monotonic() + wait_s
    interval = _POLL_FIRST_S
    first: tuple[Any, ...] | None = None
    while True:
        record = service.store.get(task_id)
        progress = service.store.progress(task_id) if record is not None else None
        remaining = deadline - time.monotonic()
        if (record is not None and record.status.is_final) or remaining <= 0:
            return record, progress
        seen = (record and (record.status, record.attempt), progress)
        if first is None:
            first = seen
        elif change and seen != first:
            return record, progress
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, _POLL_MAX_S)


async def list_tasks(request: Request) -> Response:
    body: bytes = request.app.state.task_list
    return Response(body, media_type="application/json")


async def openapi_json(request: Request) -> Response:
    body: bytes = request.app.state.openapi_body
    return Response(body, media_type="application/json")


async def healthz(_request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    service = _service(request)
    broker_ok = service.broker is None or await service.broker.ready()
    store_ok = await service.store_ready()
    if broker_ok and store_ok:
        return json_response({"status": "ready"})
    down = [n for n, ok in (("broker", broker_ok), ("store", store_ok)) if not ok]
    return json_response({"status": f"unavailable: {', '.join(down)}"}, 503, retry_after(503))


async def metrics_text(request: Request) -> Response:
    return Response(_service(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)
