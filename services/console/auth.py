"""The console's login: the HTTP API's bearer tokens, in a form a browser can give.

With ``TASKSTREAM_HTTP_TOKENS`` set, every console page needs one of those tokens: as
``Authorization: Bearer`` (scripts), or in the cookie that the login form sets (browsers).
The cookie is HttpOnly and SameSite=Strict, so another site can neither read it nor make
the browser send it with a forged replay. Without tokens the console is open, as the API is.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .forms import posted
from .html import Html, esc, page, tag

COOKIE = "taskstream_console"
OPEN = ("/ui/login", "/ui/static/")  # what a browser needs before it has logged in


def valid(token: str, tokens: frozenset[str]) -> bool:
    given = token.encode()
    return bool(token) and any(hmac.compare_digest(given, t.encode()) for t in tokens)


def presented(scope: Scope) -> str:
    """The token a request carries: its bearer token, else its login cookie."""
    headers: dict[bytes, bytes] = dict(scope["headers"])
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    cookie: SimpleCookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
    morsel = cookie.get(COOKIE)
    return str(morsel.value) if morsel is not None else ""


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
            or valid(presented(scope), self.tokens)
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
    tokens: frozenset[str] = request.app.state.console.tokens
    if request.method == "GET":
        target = _next(request.query_params.get("next", "/ui"))
        return HTMLResponse(page("Log in", "", _form(target, False), live_every_ms=0))
    form = await posted(request, request.app.state.console.service.http)
    target = _next(form.get("next", "/ui"))
    token = form.get("token", "")
    if not valid(token, tokens):
        return HTMLResponse(page("Log in", "", _form(target, True), live_every_ms=0), 401)
    response = RedirectResponse(target, 303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path="/ui",
        secure=request.url.scheme == "https",
    )
    return response
