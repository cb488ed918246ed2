"""Size limits of `taskstream serve`, as clients that send a whole body before reading the
answer (Python's urllib) see them: a 413 they can read, never a reset or a 503 to retry."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from taskstream import App
from tests.conftest import Scope
from tests.integration.http_server import serve_process

pytestmark = pytest.mark.integration

MAX_BODY = 65_536
MAX_EVENT = 4_000  # the producer's message.max.bytes, in bytes


def post(url: str, data: bytes | Iterator[bytes]) -> tuple[int, dict[str, Any]]:
    """POST with urllib, which reads the answer only once the whole body is sent (an
    iterator goes chunked): the status and JSON body, whatever the status."""
    request = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_oversize_body_sent_whole_gets_a_413_that_the_client_reads(
    app: App, scope: Scope
) -> None:
    with serve_process(
        scope, "tests.integration.tasks_app:app",
        TASKSTREAM_HTTP_MAX_BODY_BYTES=str(MAX_BODY),
        TASKSTREAM_KAFKA_MESSAGE_MAX_BYTES=str(MAX_EVENT),
    ) as url:  # fmt: skip
        add = f"{url}/v1/tasks/itest.add"
        padding = b" " * 8_000_000  # whitespace: valid JSON, if it were read
        status, body = post(add, b'{"a": 1, "b": 2' + padding + b"}")
        assert (status, body["error"]["code"]) == (413, "body_too_large")
        chunks = iter([b'{"a": 1, "b": 2', *([b" " * 65_536] * 120), b"}"])
        status, body = post(add, chunks)
        assert (status, body["error"]["code"]) == (413, "body_too_large")
        assert post(add, b'{"a": 1, "b": 2}')[0] == 202  # the server is none the worse


def test_a_body_under_the_limit_whose_event_is_over_message_max_bytes_gets_413(
    app: App, scope: Scope
) -> None:
    with serve_process(
        scope, "tests.integration.tasks_app:app",
        TASKSTREAM_HTTP_MAX_BODY_BYTES=str(MAX_BODY),
        TASKSTREAM_KAFKA_MESSAGE_MAX_BYTES=str(MAX_EVENT),
    ) as url:  # fmt: skip
        big = {"message": "x" * 10_000}  # a 10 kB body, a 10 kB event
        status, body = post(f"{url}/v1/tasks/itest.fail", json.dumps(big).encode())
        assert status == 413
        error = body["error"]
        assert (error["code"], error["task"], error["limit"]) == (
            "message_too_large", "itest.fail", MAX_EVENT,
        )  # fmt: skip
        assert error["size"] > 10_000
        items = [{"args": big}, {"args": {"message": "small"}}]
        status, body = post(
            f"{url}/v1/tasks/itest.fail:batch", json.dumps({"items": items}).encode()
        )
        assert (status, [i["status"] for i in body["items"]]) == (207, [413, 202])
        assert body["items"][0]["error"]["code"] == "message_too_large"
