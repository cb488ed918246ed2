"""Where a request comes from: the Host it names and the page that sent it.

Two checks, in front of the API and the console, with and without tokens:

- **Allowed hosts** (DNS rebinding). A page on ``attacker.example`` whose name later
  resolves to 127.0.0.1 reaches the service as same-origin to the browser, with
  ``Host: attacker.example``. Only the names in ``TASKSTREAM_HTTP_ALLOWED_HOSTS`` are
  served; left empty, that is the loopback names (localhost, 127.0.0.1, [::1]) when no tokens
  are set, and any name when they are (a rebinding page has no token). ``*`` serves any.
  Other names get 421, except on the open paths (``TASKSTREAM_HTTP_OPEN_PATHS``: health,
  readiness and metrics, which hold no secret), so that probes and scrapers that name the
  pod's or container's address keep working.
- **Cross-origin writes** (CSRF). A state-changing request (any method but GET, HEAD and
  OPTIONS) that a browser sent from another origin gets 403: its ``Sec-Fetch-Site`` is not
  ``same-origin`` or ``none``, or, from a browser without it, its ``Origin`` names another
  host than its ``Host``. Requests with neither header (curl, SDKs, scripts) are not from a
  browser page and pass, as in Go's ``http.CrossOriginProtection``. Another port or a sibling
  subdomain is another origin (``SameSite`` cookies would not tell them apart).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME = frozenset({"same-origin", "none"})  # none: typed in the address bar, a bookmark


def allowed_hosts(configured: Iterable[str], tokens: bool) -> frozenset[str] | None:
    """The host names to serve (lower case, no port); None: any."""
    names = frozenset(n.strip().lower().strip("[]") for n in configured if n.strip())
    if "*" in names or (not names and tokens):
        return None
    return names or LOOPBACK


def host_name(host: str) -> str:
    """The name of a Host header, without its port or an IPv6 address's brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def cross_origin(method: str, headers: dict[bytes, bytes]) -> str | None:
    """Why a request is a cross-origin write from a browser; None if it is not one."""
    if method in _SAFE:
        return None
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        value = site.decode("latin-1").lower()
        return None if value in _SAME else f"Sec-Fetch-Site is {value}"
    origin = headers.get(b"origin")
    if origin is None:
        return None
    text = origin.decode("latin-1")
    netloc = urlsplit(text).netloc.lower() if text != "null" else ""
    host = headers.get(b"host", b"").decode("latin-1").lower()
    return None if netloc and netloc == host else f"Origin {text} is not this host"


class OriginGuard:
    """421 for a Host not served, 403 for a cross-origin write (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, hosts: frozenset[str] | None, open_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: dict[bytes, bytes] = dict(scope["headers"])
            name = host_name(headers.get(b"host", b"").decode("latin-1"))
            if (
                self.hosts is not None
                and name not in self.hosts
                and scope["path"] not in self.open_paths
            ):
                response = error_response(
                    421, "host_not_allowed",
                    "this Host is not served here (TASKSTREAM_HTTP_ALLOWED_HOSTS)", path="Host",
                )  # fmt: skip
                await response(scope, receive, send)
                return
            why = cross_origin(scope["method"], headers)
            if why is not None:
                response = error_response(
                    403, "cross_origin", f"a cross-origin write is refused: {why}", path="Origin"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
