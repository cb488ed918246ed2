"""The Starlette application: routes, middleware (auth, metrics), exception handlers.

The endpoints live in :mod:`taskstream.producer.http.endpoints` and read the service from
``request.app.state``; this module only puts the pieces together.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from . import endpoints, openapi, workflows
from .errors import EXCEPTION_HANDLERS
from .jsonschema import standalone
from .middleware import AuthMiddleware, MetricsMiddleware
from .origins import OriginGuard, allowed_hosts
from .service import HttpService
from .tracing import tracing_middleware

_ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]  # 405s are ours
_GUARDED = frozenset(
    {"/v1/tasks", "/v1/tasks/{name}", "/v1/workflows", "/v1/groups/{group_id}"}
)  # need a token whatever open_paths say

ROUTES = [
    Route("/v1/tasks", endpoints.list_tasks, methods=["GET"]),
    Route("/v1/tasks/{name}", endpoints.tasks_endpoint, methods=_ANY),
    Route("/v1/workflows", workflows.post_workflow, methods=["POST"]),
    Route("/v1/groups/{group_id}", workflows.get_group, methods=["GET"]),
    Route("/openapi.json", endpoints.openapi_json, methods=["GET"]),
    Route("/healthz", endpoints.healthz, methods=["GET"]),
    Route("/readyz", endpoints.readyz, methods=["GET"]),
    Route("/metrics", endpoints.metrics_text, methods=["GET"]),
]


def create_app(service: HttpService, *, close_on_shutdown: bool = True) -> Starlette:
    """The ASGI application serving `service`. Its lifespan shutdown flushes the publisher
    and closes the store (unless `close_on_shutdown` is False: the caller closes it)."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_on_shutdown:
                service.close()

    http = service.http
    app = Starlette(
        routes=ROUTES,
        middleware=[
            *tracing_middleware(),  # first: a span around all the rest (none without otel)
            Middleware(
                OriginGuard,
                hosts=allowed_hosts(http.allowed_hosts, bool(http.tokens)),
                open_paths=http.open_paths - _GUARDED,
            ),
            Middleware(MetricsMiddleware, metrics=service.metrics),
            Middleware(
                AuthMiddleware, tokens=http.tokens, guarded=_GUARDED, open_paths=http.open_paths
            ),
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    app.state.service = service
    spec = openapi.build(service.catalog, auth=bool(http.tokens), max_wait_s=http.max_wait_s)
    app.state.openapi_body = json.dumps(spec).encode()
    app.state.task_list = _compact(task_list(service))
    return app


def task_list(service: HttpService) -> dict[str, Any]:
    """The body of GET /v1/tasks: each task with its Avro and JSON schemas."""
    return {
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


def _compact(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
