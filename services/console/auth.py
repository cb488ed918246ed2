"""The console's login: the HTTP API's bearer tokens, in a form a browser can give.

With ``TASKSTREAM_HTTP_TOKENS`` set, every console page needs one of those tokens: as
``Authorization: Bearer`` (scripts), or in the cookie that the login form sets (browsers).
The cookie holds an expiry (``TASKSTREAM_HTTP_SESSION_S``) and an HMAC of it keyed by the
token, never the token; it is HttpOnly, SameSite=Strict, and Secure when the console is
served over https. ``POST /ui/logout`` removes it. Failed logins are logged with the client's
address, and past 10 a minute from one address it waits (429). Cross-origin posts are
refused before any of this (taskstream.producer.http.origins). Without tokens the console is
open, as the API is.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from http.cookies import SimpleCookie
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .forms import posted
from .html import Html, esc, page, tag

log = logging.getLogger(__name__)

COOKIE = "taskstream_console"
OPEN = ("/ui/login", "/ui/static/")  # what a browser needs before it has logged in


def valid(token: str, tokens: frozenset[str]) -> bool:
    given = token.encode()
    return bool(token) and any(hmac.compare_digest(given, t.encode()) for t in tokens)


def session_value(token: str, expires: int) -> str:
    """The login cookie of `token` until `expires` (s since the epoch): the expiry and an
    HMAC of it keyed by the token. Never the token itself: a leaked cookie (a proxy's log, a
    shared browser profile) expires and gives no API access."""
    mac = hmac.new(token.encode(), f"taskstream-console:{expires}".encode(), "sha256")
    return f"{expires}.{mac.hexdigest()}"


def valid_session(value: str, tokens: frozenset[str], now: float | None = None) -> bool:
    expires, _, _mac = value.partition(".")
    if not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
        return False
    given = value.encode()
    return any(hmac.compare_digest(given, session_value(t, int(expires)).encode()) for t in tokens)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def authorized(scope: Scope, tokens: frozenset[str]) -> bool:
    """A valid bearer token (scripts), else a valid, unexpired login cookie (browsers)."""
    headers = _headers(scope)
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return valid(token.strip(), tokens)
    cookie: SimpleCookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
    morsel = cookie.get(COOKIE)
    return morsel is not None and valid_session(str(morsel.value), tokens)


class ConsoleAuth:
    """Lets a request through with a valid token; sends a browser to the login page, and
    answers anything else (the live refreshes, a form post) 401."""

    def __init__(self, app: ASGIApp, tokens: frozenset[str]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.tokens
            or scope["type"] != "http"
            or scope["path"].startswith(OPEN)
            or authorized(scope, self.tokens)
        ):
            await self.app(scope, receive, send)
            return
        response: Response
        if scope["method"] == "GET" and not dict(scope["headers"]).get(b"x-console-live"):
            target = scope["path"] + (
                "?" + scope["query_string"].decode() if scope["query_string"] else ""
            )
            response = RedirectResponse(f"/ui/login?next={quote(target, safe='')}", 303)
        else:
            response = Response("a valid token is required", 401, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def _next(target: str) -> str:
    # Only a console path: never an open redirect to another site.
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"


def _form(target: str, failed: bool) -> Html:
    note = tag("p", "That token is not valid.", class_="problem") if failed else ""
    return tag(
        "form",
        Html(
            esc(note)
            + f'<input type="hidden" name="next" value="{esc(target)}">'
            + '<label>token <input type="password" name="token" id="token" autofocus></label> '
            + '<button type="submit" id="login">Log in</button>'
        ),
        method="post",
        action="/ui/login",
        class_="filters",
    )


async def login(request: Request) -> Response:
    """GET: the form. POST: check the token, set the cookie, go where the user was going."""
    console = request.app.state.console
    tokens: frozenset[str] = console.tokens
    if request.method == "GET":
        target = _next(request.query_params.get("next", "/ui"))
        return HTMLResponse(page("Log in", "", _form(target, False), live_every_ms=0))
    client = request.client.host if request.client else "unknown"
    wait_s = _ATTEMPTS.wait_s(client)
    if wait_s:
        return PlainTextResponse(
            "too many failed logins: wait", 429, {"Retry-After": str(math.ceil(wait_s))}
        )
    http = console.service.http
    form = await posted(request, http)
    target = _next(form.get("next", "/ui"))
    token = form.get("token", "")
    if not valid(token, tokens):
        _ATTEMPTS.failed(client)
        log.warning("failed console login from %s", client)
        return HTMLResponse(page("Log in", "", _form(target, True), live_every_ms=0), 401)
    response = RedirectResponse(target, 303)
    expires = int(time.time() + http.session_s)
    response.set_cookie(
        COOKIE,
        session_value(token, expires),
        max_age=int(http.session_s),
        httponly=True,
        samesite="strict",
        path="/ui",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    """POST: the login cookie goes (a copy of it stays valid until its expiry)."""
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


class LoginAttempts:
    """Failed logins per client address: past ``limit`` within ``window_s``, the client
    waits out the window (429). Bounded: at most ``clients`` addresses are remembered."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, clients: int = 10_000) -> None:
        self.limit, self.window_s, self.clients = limit, window_s, clients
        self._failures: dict[str, list[float]] = {}

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._failures.pop(client, []) if now - t < self.window_s]
        self._failures[client] = [*recent, now][-self.limit :]
        while len(self._failures) > self.clients:
            self._failures.pop(next(iter(self._failures)))

    def wait_s(self, client: str, now: float | None = None) -> float:
        """Seconds `client` must wait before its next attempt; 0: none."""
        now = time.monotonic() if now is None else now
        times = self._failures.get(client, [])
        if len(times) < self.limit:
            return 0.0
        return max(0.0, self.window_s - (now - times[0]))


_ATTEMPTS = LoginAttempts()
