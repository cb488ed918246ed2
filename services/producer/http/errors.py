"""The API's errors: each taskstream error's status in one table, and the JSON they render as.

Every error answer is ``{"error": {"code": ..., "message": ..., <task, path, size, limit>}}``.
Endpoints raise :class:`ApiError` for what only HTTP knows (a malformed body, a bad query) and
taskstream's own errors for the rest; the exception handlers below turn both into responses.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from taskstream.errors import (
    DeliveryFailed,
    InvalidArguments,
    MessageTooLarge,
    StoreError,
    StoreRejected,
    TaskstreamError,
    UnknownTask,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = "1"  # what a 503 asks the client to wait, in seconds


class Answer(NamedTuple):
    status: int
    code: str
    hint: str = ""  # appended to the error's own message
    public: str | None = None  # said instead of the error's message (which is only logged)


# Each taskstream error's HTTP answer. A subclass not listed gets its nearest base's answer
# (ResultTooLarge is a MessageTooLarge); one with none listed is a 500.
ANSWERS: dict[type[TaskstreamError], Answer] = {
    UnknownTask: Answer(404, "unknown_task", "GET /v1/tasks lists them"),
    InvalidArguments: Answer(422, "invalid_arguments"),
    # Never a 503: the same event would be refused again, and a client would retry forever.
    MessageTooLarge: Answer(413, "message_too_large"),
    DeliveryFailed: Answer(503, "broker_unavailable", "retry"),
    # The store's own message names its host, database and schema: logged, not answered.
    StoreError: Answer(503, "store_unavailable", public="the lookup store is unavailable; retry"),
    # Content the store cannot hold (a lookup by such text): the same request fails again.
    StoreRejected: Answer(422, "unstorable", public="the lookup store cannot hold this text"),
}
_INTERNAL = Answer(500, "error")
_FIELDS = ("task", "path", "size", "limit")  # error attributes that the detail carries


class ApiError(Exception):
    """An HTTP-level error: its status, code and message, extra detail fields, headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.extra = headers, extra


def answer_of(exc: TaskstreamError) -> Answer:
    for cls in type(exc).__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None:
            return answer
    return _INTERNAL


def error_detail(exc: TaskstreamError) -> tuple[int, dict[str, Any]]:
    """The status and the ``error`` object that `exc` answers with."""
    answer = answer_of(exc)
    message = exc.message if isinstance(exc, InvalidArguments) else str(exc)
    if answer.public is not None:
        log.warning("answered %d %s: %s", answer.status, answer.code, message)
        message = answer.public
    elif answer.hint:
        message = f"{message}; {answer.hint}"
    detail: dict[str, Any] = {"code": answer.code, "message": message}
    if isinstance(exc, UnknownTask):
        detail["task"] = exc.name
    for field in _FIELDS:
        value = getattr(exc, field, None)
        if value is not None:
            detail[field] = value
    return answer.status, detail


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # A lone surrogate (a field name or value echoed back) becomes its JSON escape "\ud800".
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "backslashreplace"
    )
    return Response(data, status, headers, media_type="application/json")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    detail = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return json_response({"error": detail}, status, headers)


def retry_after(status: int) -> dict[str, str] | None:
    """The Retry-After header of an answer with `status`: 503s only."""
    return {"Retry-After": RETRY_AFTER_S} if status == 503 else None


# --- exception handlers ---------------------------------------------------------------------


async def on_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)


async def on_taskstream_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaskstreamError)
    status, detail = error_detail(exc)
    return json_response({"error": detail}, status, retry_after(status))


async def on_http_exception(_request: Request, exc: Exception) -> Response:
    """The router's own 404s and 405s, in the API's error format."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    headers = dict(exc.headers) if exc.headers else None  # Allow, for a 405
    return error_response(exc.status_code, code, str(exc.detail), headers)


EXCEPTION_HANDLERS = {
    ApiError: on_api_error,
    TaskstreamError: on_taskstream_error,
    HTTPException: on_http_exception,
}
