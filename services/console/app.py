"""The console's ASGI application, and the HTTP API with the console mounted at ``/ui``.

asgi = with_console(create_app(service), Console(service, workers=directory))
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from taskstream.errors import TaskstreamError
from taskstream.producer.http.errors import ApiError, error_detail
from taskstream.producer.http.origins import OriginGuard, allowed_hosts

from . import endpoints
from .auth import ConsoleAuth, login, logout
from .console import Console
from .headers import SecurityHeaders
from .html import page, tag

PREFIX = "/ui"
STATIC = Path(__file__).with_name("static")  # shipped as package data: no CDN, no build


async def _unavailable(_request: Request, exc: Exception) -> Response:
    """The store or the broker failed (StoreError, DeliveryFailed, ...): say so, 503 (a
    store's own message, which names its host and database, is logged, not shown)."""
    assert isinstance(exc, TaskstreamError)
    status, detail = error_detail(exc)
    status = 503 if status >= 500 else status
    body = page("Unavailable", "", tag("p", detail["message"], class_="problem"), live_every_ms=0)
    return HTMLResponse(body, status, {"Retry-After": "1"} if status == 503 else None)


async def _refused(_request: Request, exc: Exception) -> Response:
    """An HTTP-level refusal (a form over the body limit: 413), as plain text."""
    assert isinstance(exc, ApiError)
    return PlainTextResponse(exc.message, exc.status, exc.headers)


async def _slash(_request: Request) -> Response:
    return RedirectResponse(PREFIX, 308)


def create_console(console: Console) -> Starlette:
    """The console alone (its routes carry the ``/ui`` prefix)."""
    http = console.service.http
    app = Starlette(
        routes=[
            Route(PREFIX, endpoints.overview, methods=["GET"]),
            Route(f"{PREFIX}/", _slash, methods=["GET"]),
            Route(f"{PREFIX}/tasks", endpoints.tasks, methods=["GET"]),
            # :path, so an id with "/" (sent by another producer; ours refuse it) has a page.
            Route(f"{PREFIX}/tasks/{{task_id:path}}", endpoints.task, methods=["GET"]),
            Route(f"{PREFIX}/dead-letters", endpoints.dead_letters, methods=["GET"]),
            Route(f"{PREFIX}/dead-letters/replay", endpoints.replay, methods=["POST"]),
            Route(f"{PREFIX}/delays", endpoints.delays, methods=["GET"]),
            Route(f"{PREFIX}/login", login, methods=["GET", "POST"]),
            Route(f"{PREFIX}/logout", logout, methods=["POST"]),
            Mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(OriginGuard, hosts=allowed_hosts(http.allowed_hosts, bool(http.tokens))),
            Middleware(SecurityHeaders),
            Middleware(ConsoleAuth, tokens=console.tokens),
        ],
        exception_handlers={TaskstreamError: _unavailable, ApiError: _refused},
    )
    app.state.console = console
    return app


class WithConsole:
    """Requests under ``/ui`` go to the console, the rest (and the lifespan, which closes
    the service both share) to `api`."""

    def __init__(self, api: ASGIApp, console: Console) -> None:
        self.api = api
        self.console = console
        self.ui = create_console(console)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.ui(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def with_console(api: ASGIApp, console: Console) -> WithConsole:
    return WithConsole(api, console)
