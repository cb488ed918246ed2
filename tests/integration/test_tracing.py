"""A trace from an HTTP POST through a retried task to its result, on the real broker: the
HTTP service, the worker (and its delay tiers) in this process, spans in the OpenTelemetry
SDK's in-memory exporter."""

from __future__ import annotations

import httpx
import pytest

from taskstream import App
from taskstream.producer.http import HttpService
from tests.integration.http_server import serving
from tests.integration.running import wait_until, worker_and_materializer
from tests.otel_spans import parent_id, span_exporter, spans_of

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # the caller's, in its traceparent


def test_an_http_post_through_a_retried_task_to_its_result_is_one_trace(app: App) -> None:
    exporter = span_exporter()
    caller = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    with (
        serving(HttpService.for_app(app)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
        worker_and_materializer(app, concurrency=2),
    ):
        sent = http.post(
            "/v1/tasks/itest.retry_until",
            json={"attempts": 2, "countdown": 0.5},
            headers={"traceparent": caller},
        )
        assert sent.status_code == 202, sent.text
        task_id = sent.json()["task_id"]
        done = http.get(f"/v1/tasks/{task_id}", params={"wait": 50}).json()
        assert done["status"] == "SUCCESS" and done["result"] == 2 and done["attempt"] == 2
        wait_until(lambda: len(spans_of(exporter, task_id)) == 3, 30, "the runs' spans")
    (post,) = [s for s in exporter.get_finished_spans() if s.name == "POST /v1/tasks/{name}"]
    send, first, second = spans_of(exporter, task_id)
    spans = [post, send, first, second]
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    assert post.kind.name == "SERVER" and parent_id(post) == int("00f067aa0ba902b7", 16)
    assert (post.attributes or {})["http.response.status_code"] == 202
    assert send.name == "itest.retry_until send" and parent_id(send) == post.context.span_id
    assert parent_id(first) == send.context.span_id
    assert parent_id(second) == first.context.span_id  # the retry carried the run's context
    outcomes = [(s.attributes or {}).get("taskstream.outcome") for s in (first, second)]
    assert outcomes == ["RETRY", "SUCCESS"]
    assert [(s.attributes or {}).get("taskstream.attempt") for s in (first, second)] == [1, 2]
