"""The Starlette application: routes, errors and auth of the HTTP service.

POST /v1/tasks/{task}          one task; 202 + Location once the broker acknowledged it
POST /v1/tasks/{task}:batch    {"items": [{"args": {...}, "key": ...}, ...]}; each answered
GET  /v1/tasks/{task_id}       status, result, error; ?wait=SECONDS long-polls
GET  /v1/tasks                 the tasks accepted here, with their schemas
GET  /openapi.json /metrics /healthz /readyz
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from taskstream.errors import StoreError
from taskstream.producer.http import openapi
from taskstream.producer.http.ingest import Outcome, Submission
from taskstream.producer.http.jsonschema import standalone
from taskstream.producer.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from taskstream.producer.http.service import HttpService
from taskstream.status import Status

BATCH_SUFFIX = ":batch"
RETRY_AFTER_S = "1"
_POLL_FIRST_S, _POLL_MAX_S = 0.005, 0.05  # long-poll interval, doubling up to the max

Endpoint = Callable[[Request], Awaitable[Response]]
_ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]  # 405s are ours


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(data, status, headers, media_type="application/json")


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    detail = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return _json({"error": detail}, status, headers)


def _outcome_error(o: Outcome) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": o.code or "error", "message": o.message or ""}
    if o.path is not None:
        detail["path"] = o.path
    return detail


def _reject_nonfinite(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def create_app(service: HttpService, *, close_on_shutdown: bool = True) -> Starlette:
    """The ASGI application serving `service`. Its lifespan shutdown flushes the publisher
    and closes the store (unless `close_on_shutdown` is False: the caller closes it)."""
    settings = service.settings
    metrics = service.metrics
    max_body = settings.http_max_body_bytes
    spec_doc = openapi.build(
        service.catalog, auth=bool(service.tokens), max_wait_s=settings.http_max_wait_s
    )
    spec_body = json.dumps(spec_doc).encode()
    task_list = {
        "tasks": [
            {
                "name": t.name,
                "queue": t.queue,
                "args_schema": t.args.schema,
                "result_schema": t.result.schema,
                "args_json_schema": standalone(t.args.schema),
                "result_json_schema": standalone(t.result.schema),
            }
            for t in service.catalog.tasks.values()
        ]
    }

    def instrument(route: str, endpoint: Endpoint, protected: bool) -> Endpoint:
        needs_token = bool(service.tokens) and (protected or route not in service.open_paths)
        requests, latency = metrics.requests, metrics.latency.labels(route)

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            try:
                if needs_token and not _authorized(request, service.tokens):
                    response = _error(401, "unauthorized", "a valid bearer token is required",
                                      {"WWW-Authenticate": "Bearer"})  # fmt: skip
                else:
                    response = await endpoint(request)
            except _ApiError as exc:
                response = _error(exc.status, exc.code, exc.message, **exc.extra)
            except StoreError as exc:
                response = _error(
                    503, "store_unavailable", str(exc), {"Retry-After": RETRY_AFTER_S}
                )
            requests.labels(route, request.method, response.status_code).inc()
            latency.observe(time.perf_counter() - started)
            return response

        return handle

    async def read_json(request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            raise _ApiError(
                415, "unsupported_media_type", f"send application/json, not {ctype or 'nothing'}"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise _ApiError(413, "body_too_large", f"the body is over {max_body} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise _ApiError(413, "body_too_large", f"the body is over {max_body} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks), parse_constant=_reject_nonfinite)
        except (ValueError, RecursionError) as exc:
            raise _ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None

    async def post_task(request: Request) -> Response:
        name: str = request.path_params["name"]
        batch = name.endswith(BATCH_SUFFIX)
        if batch:
            name = name[: -len(BATCH_SUFFIX)]
        spec = service.catalog.tasks.get(name)
        if spec is None:
            raise _ApiError(
                404, "unknown_task", f"no task {name!r} here; GET /v1/tasks lists them", task=name
            )
        body = await read_json(request)
        if batch:
            return await _batch(spec, body)
        q = request.query_params
        item = Submission(
            spec, body, q.get("key"), q.get("queue"), request.headers.get("idempotency-key")
        )
        (outcome,) = await service.ingestor.submit([item])
        if outcome.accepted:
            headers = {"Location": f"/v1/tasks/{outcome.task_id}"}
            if outcome.replayed:
                headers["Idempotent-Replayed"] = "true"
            return _json({"task_id": outcome.task_id, "status": "PENDING"}, 202, headers)
        retry = {"Retry-After": RETRY_AFTER_S} if outcome.status == 503 else None
        error = {**_outcome_error(outcome), "task": spec.name}
        return _json({"error": error}, outcome.status, retry)

    async def _batch(spec: Any, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise _ApiError(
                422, "invalid_batch", 'expected {"items": [{"args": {...}}, ...]}', path="items"
            )
        unknown = sorted(set(body) - {"items"})
        if unknown:
            raise _ApiError(422, "invalid_batch", "unknown field", path=unknown[0])
        raw = body["items"]
        if len(raw) > settings.http_batch_max_items:
            raise _ApiError(
                413, "batch_too_large", f"at most {settings.http_batch_max_items} items per batch"
            )
        # The envelope of each item is checked first and fails the whole batch; the arguments
        # and the delivery of each item are answered item by item.
        outcomes = await service.ingestor.submit(
            [_batch_item(spec, e, i) for i, e in enumerate(raw)]
        )
        accepted = sum(o.accepted for o in outcomes)
        rendered = [
            {"status": 202, "task_id": o.task_id} if o.accepted
            else {"status": o.status, "error": _outcome_error(o)}
            for o in outcomes
        ]  # fmt: skip
        if accepted == len(outcomes):
            return _json({"accepted": accepted, "items": rendered}, 202)
        if accepted == 0 and any(o.status == 503 for o in outcomes):
            return _error(503, "broker_unavailable", "the broker took none of the items; retry",
                          {"Retry-After": RETRY_AFTER_S})  # fmt: skip
        return _json({"accepted": accepted, "items": rendered}, 207)

    def _batch_item(spec: Any, entry: Any, i: int) -> Submission:
        where = f"items[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("args"), dict):
            raise _ApiError(422, "invalid_batch", 'expected {"args": {...}}', path=where)
        for field, value in entry.items():
            if field not in ("args", "key", "queue", "idempotency_key"):
                raise _ApiError(422, "invalid_batch", "unknown field", path=f"{where}.{field}")
            if field != "args" and not isinstance(value, str):
                raise _ApiError(422, "invalid_batch", "expected a string", path=f"{where}.{field}")
        return Submission(
            spec, entry["args"], entry.get("key"), entry.get("queue"), entry.get("idempotency_key")
        )

    async def get_task(request: Request) -> Response:
        task_id: str = request.path_params["name"]
        raw_wait = request.query_params.get("wait")
        wait = 0.0
        if raw_wait is not None:
            try:
                wait = float(raw_wait)
            except ValueError:
                wait = -1.0
            if not math.isfinite(wait) or wait < 0:
                raise _ApiError(
                    422, "invalid_wait", "wait must be a number of seconds >= 0", path="wait"
                )
            wait = min(wait, settings.http_max_wait_s)
        deadline = time.monotonic() + wait
        interval = _POLL_FIRST_S
        while True:
            record = service.store.get(task_id)
            if record is not None and record.status.is_final:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 2, _POLL_MAX_S)
        if record is not None:
            return _json(service.render(record))
        if task_id in service.ingestor.recent:
            return _json({"task_id": task_id, "status": Status.PENDING.value})
        raise _ApiError(
            404, "unknown_task_id",
            "no outcome stored and not accepted by this service lately (a task sent elsewhere "
            "shows up once a worker has started or finished it)",
        )  # fmt: skip

    async def list_tasks(_request: Request) -> Response:
        return _json(task_list)

    async def openapi_json(_request: Request) -> Response:
        return Response(spec_body, media_type="application/json")

    async def healthz(_request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        broker_ok = service.broker is None or await service.broker.ready()
        store_ok = await service.store_ready()
        if broker_ok and store_ok:
            return _json({"status": "ready"})
        down = [n for n, ok in (("broker", broker_ok), ("store", store_ok)) if not ok]
        return _json(
            {"status": f"unavailable: {', '.join(down)}"}, 503, {"Retry-After": RETRY_AFTER_S}
        )

    async def metrics_text(_request: Request) -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def post_or_get(request: Request) -> Response:
        # POST /v1/tasks/<task name>[:batch] sends, GET /v1/tasks/<task id> reads.
        if request.method == "POST":
            return await post_task(request)
        if request.method in ("GET", "HEAD"):
            return await get_task(request)
        name = request.path_params["name"].removesuffix(BATCH_SUFFIX)
        allow = "POST" if name in service.catalog.tasks else "GET"
        return _error(405, "method_not_allowed", "Method Not Allowed", {"Allow": allow})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = exc.detail if isinstance(exc, HTTPException) else "internal error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "error")
        headers = exc.headers if isinstance(exc, HTTPException) else None  # Allow, for a 405
        return _error(status, code, str(message), dict(headers) if headers else None)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_on_shutdown:
                service.close()

    routes = [
        Route("/v1/tasks", instrument("/v1/tasks", list_tasks, True), methods=["GET"]),
        Route("/v1/tasks/{name}", instrument("/v1/tasks/{name}", post_or_get, True), methods=_ANY),
        Route("/openapi.json", instrument("/openapi.json", openapi_json, False), methods=["GET"]),
        Route("/healthz", instrument("/healthz", healthz, False), methods=["GET"]),
        Route("/readyz", instrument("/readyz", readyz, False), methods=["GET"]),
        Route("/metrics", instrument("/metrics", metrics_text, False), methods=["GET"]),
    ]
    return Starlette(
        routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan
    )


def _authorized(request: Request, tokens: frozenset[str]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return any(hmac.compare_digest(token.strip().encode(), t.encode()) for t in tokens)
