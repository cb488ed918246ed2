"""Bearer-token auth and request metrics, as plain ASGI middleware.

Both look at the route a request matches (its path template, e.g. ``/v1/tasks/{name}``):
metrics are labelled by it, and auth decides by it which requests need a token. Requests the
router answers itself (an unknown path: 404, a wrong method: 405) match no route and are
neither guarded nor counted.
"""

from __future__ import annotations

import hmac
import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .metrics import HttpMetrics

_ROUTE = "taskstream.route"  # where route_of caches its answer in the scope


def route_of(scope: Scope) -> str | None:
    """The path template of the route that fully matches `scope`, None if none does."""
    if _ROUTE not in scope:
        scope[_ROUTE] = None
        for route in scope["app"].router.routes:
            match, _child = route.matches(scope)
            if match is Match.FULL:
                scope[_ROUTE] = getattr(route, "path", None)
                break
    path: str | None = scope[_ROUTE]
    return path


_TASKS_ROUTE = "/v1/tasks/{name}"  # one route for sends, reads and revokes (endpoints.py)


def route_label(scope: Scope) -> str | None:
    """The route as metrics and traces name it: `route_of`, with the one tasks route told
    apart by what a request does (a read by id is not a send by task name)."""
    route = route_of(scope)
    if route != _TASKS_ROUTE:
        return route
    path: str = scope["path"]
    if path.endswith(":revoke"):
        return "/v1/tasks/{task_id}:revoke"
    if path.endswith(":batch"):
        return "/v1/tasks/{name}:batch"
    if scope["method"] in ("GET", "HEAD"):
        return "/v1/tasks/{task_id}"
    return route


class MetricsMiddleware:
    """Counts answered requests by route, method and status, and times them by route."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.requests = metrics.requests
        self.latency = metrics.latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = route_label(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.requests.labels(route, scope["method"], status).inc()
            self.latency.labels(route).observe(time.perf_counter() - started)


class AuthMiddleware:
    """401 unless the request carries one of `tokens` as a bearer token. With no tokens,
    nothing is guarded; `guarded` routes always are, other routes unless in `open_paths`."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: frozenset[str],
        guarded: frozenset[str],
        open_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.guarded = guarded
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tokens and scope["type"] == "http" and self._needs_token(scope):
            if not self._authorized(scope):
                response = error_response(
                    401, "unauthorized", "a valid bearer token is required",
                    {"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _needs_token(self, scope: Scope) -> bool:
        route = route_of(scope)
        return route is not None and (route in self.guarded or route not in self.open_paths)

    def _authorized(self, scope: Scope) -> bool:
        header = _header(scope, b"authorization")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        return any(hmac.compare_digest(given, t) for t in self.tokens)


def _header(scope: Scope, name: bytes) -> str:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
