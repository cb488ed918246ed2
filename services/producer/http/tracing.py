"""A SERVER span per HTTP request, when OpenTelemetry is installed (the ``otel`` extra).

It continues a caller's W3C ``traceparent`` and is current while the request is served, so
the task events a POST sends carry its trace to the worker (taskstream.tracing). Without
OpenTelemetry, ``tracing_middleware()`` is empty and no request pays for it.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskstream import tracing

from .middleware import route_label


def tracing_middleware() -> list[Middleware]:
    """The middleware to put first, or none when tracing is off (OpenTelemetry missing, or
    no tracer provider set when the app is built)."""
    return [Middleware(TracingMiddleware)] if tracing.active() else []


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_label(scope) or scope["path"]
        method = scope["method"]
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope["headers"]
            if k.lower() in (b"traceparent", b"tracestate")
        }
        attributes = {"http.request.method": method, "http.route": route, "url.path": scope["path"]}
        with tracing.server_span(f"{method} {route}", headers, attributes) as span:

            async def observe(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, observe)
