"""Reading a request's JSON body: its media type, its size limit, and oversize bodies.

A body over the limit gets 413. Many clients (Python's urllib, most HTTP libraries without
``Expect: 100-continue``) send the whole body before reading any answer; a server that
answers and closes while body bytes are still arriving makes the kernel reset the
connection, and such a client sees the reset, never the 413. So, as nginx's lingering close
does, the rest of an oversize body is read and dropped first, up to
``HttpSettings.drain_max_bytes`` and ``drain_timeout_s``; past those bounds (or when the client
waits for ``100 Continue`` and so sends nothing more) the 413 goes out with
``Connection: close`` at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import ApiError
from .settings import HttpSettings

_CLOSE = {"Connection": "close"}


async def read_json(request: Request, http: HttpSettings) -> Any:
    """The JSON body of `request`; ApiError 415, 413 or 400 if it is not one."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise ApiError(
            415, "unsupported_media_type", f"send application/json, not {ctype or 'nothing'}"
        )
    data = await read_body(request, http)
    try:
        return json.loads(data, parse_constant=_reject_nonfinite)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None


async def read_body(request: Request, http: HttpSettings) -> bytes:
    """The body of `request`, of any media type (the console's forms); ApiError 413 if it
    is over ``http.max_body_bytes``."""
    limit = http.max_body_bytes
    declared = request.headers.get("content-length")
    stream = request.stream()
    if declared is not None and declared.isdigit() and int(declared) > limit:
        fits = int(declared) <= http.drain_max_bytes and not _awaits_continue(request)
        raise await _too_large(limit, stream if fits else None, http)
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise await _too_large(limit, stream, http, size)
        chunks.append(chunk)
    return b"".join(chunks)


async def _too_large(
    limit: int, rest: AsyncIterator[bytes] | None, http: HttpSettings, read: int = 0
) -> ApiError:
    """The 413, once `rest` of the body is read and dropped (None: do not read it)."""
    drained = rest is not None and await _drain(
        rest, http.drain_max_bytes - read, http.drain_timeout_s
    )
    headers = None if drained else _CLOSE
    return ApiError(413, "body_too_large", f"the body is over {limit} bytes", headers)


async def _drain(stream: AsyncIterator[bytes], budget: int, timeout_s: float) -> bool:
    """Read and drop what is left of `stream`; False if it was over `budget` bytes, took
    more than `timeout_s`, or the client went away."""
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in stream:
                budget -= len(chunk)
                if budget < 0:
                    return False
    except (TimeoutError, ClientDisconnect):
        return False
    return True


def _awaits_continue(request: Request) -> bool:
    # Such a client sends the body only once told to, so there is nothing to drain.
    return request.headers.get("expect", "").lower() == "100-continue"


def _reject_nonfinite(token: str) -> Any:
    raise json.JSONDecodeError(f"{token} is not valid JSON", token, 0)
