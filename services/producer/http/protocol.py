"""uvicorn's httptools protocol, bounded: what one client can hold of the server.

httptools (llhttp) has no limit of its own on a request's head, and its Python binding
joins a header's pieces by concatenation, so a 64 MB header took seconds of the event loop
that every other client shares. This protocol counts the head's bytes as they arrive and
feeds the parser no more than ``max_header_bytes`` of it; it also bounds the header count,
the time to send the head (from a connection's first byte, or its accepting) and the body,
and the body's size on every route (``drain_max_bytes``: a route's own, smaller limit
answers its 413 first; see body.py). Over a bound the client gets 431, 413 or 408 and the
connection closes. Between requests uvicorn's keep-alive timeout closes idle connections,
and its ``limit_concurrency`` answers 503 past ``max_connections``; with
``max_connections_per_client`` set, a client address past it has its new connections closed
at once (before a byte is read), so that one client cannot take the others' share.

The limits come from :func:`configure` (the service's settings), else from the
``TASKSTREAM_HTTP_*`` variables.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import HttpSettings

_limits: HttpSettings | None = None
_by_client: Counter[str] = Counter()  # open connections per client address (one event loop)
_REASONS = {
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}


def configure(http: HttpSettings) -> None:
    """Use `http`'s limits for the connections this process accepts from now on."""
    global _limits
    _limits = http


def limits() -> HttpSettings:
    global _limits
    if _limits is None:
        _limits = HttpSettings.load()
    return _limits


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the bounds of the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = limits()
        self._in_head = True  # reading a request's line and headers
        self._head_bytes = 0
        self._header_count = 0
        self._body_bytes = 0
        self._refused = False
        self._address = ""
        self._timer: asyncio.TimerHandle | None = None

    # -- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        _by_client[self._address] += 1
        cap = self.bounds.max_connections_per_client
        if cap and _by_client[self._address] > cap:
            self._refused = True
            transport.close()
            return
        self._arm(self.bounds.header_timeout_s)  # a connection that sends nothing goes too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        _by_client[self._address] -= 1
        if _by_client[self._address] <= 0:
            del _by_client[self._address]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            room = self.bounds.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Never more than the limit of a head to the parser: past it, a head that
                # has not ended is refused; what follows an ended one is read as usual.
                if room > 0:
                    self._head_bytes += room
                    super().data_received(data[:room])
                if self._in_head and not self._refused:
                    self._refuse(431, "the request's line and headers are too large")
                if not self._refused and not self.transport.is_closing():
                    self.data_received(data[max(room, 0) :])
                return
            self._head_bytes += len(data)
        super().data_received(data)

    # -- the parser's callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # a keep-alive connection's next request
            self._arm(self.bounds.header_timeout_s)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._header_count += 1
        if self._header_count > self.bounds.max_headers:
            self._refuse(431, f"more than {self.bounds.max_headers} header fields")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        length = dict(self.headers).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.bounds.drain_max_bytes:
            self._refuse(413, f"the body is over {self.bounds.drain_max_bytes} bytes")
            return
        self._disarm()
        self._arm(self.bounds.body_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.bounds.drain_max_bytes:
            self._refuse(413, f"the body is over {self.bounds.drain_max_bytes} bytes")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._in_head, self._head_bytes, self._header_count, self._body_bytes = True, 0, 0, 0
        super().on_message_complete()

    # -- refusing -------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._in_head or self._head_bytes:  # a request begun and not sent in time
            self._refuse(408, "the request was not sent in time")
        else:
            self.transport.close()  # connected and never sent a byte: nothing to answer

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` (unless a response has begun) and close the connection."""
        self._refused = True
        self._disarm()
        cycle = self.cycle
        started = cycle is not None and not cycle.response_complete and cycle.response_started
        if not started and not self.transport.is_closing():
            body = message.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()
