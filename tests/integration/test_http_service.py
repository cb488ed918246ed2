"""The HTTP service through a real socket, against the broker, a worker and the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskstream import App
from taskstream.cli import schema_files
from taskstream.producer.http import HttpService, HttpSettings
from tests.conftest import BrokerHandle, Scope
from tests.integration.http_server import serve_process, serving
from tests.integration.running import worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


@pytest.fixture
def app(scope: Scope) -> Iterator[App]:
    app = build_app(**scope.settings())
    app.ensure_topics()
    yield app
    app.close()


def _service(app: App) -> HttpService:
    return HttpService.for_app(app, HttpSettings.load(settings=app.settings, publish_timeout_s=2.0))


def test_a_task_posted_over_http_runs_and_its_result_reads_back(app: App) -> None:
    with serving(_service(app)) as url, httpx.Client(base_url=url, timeout=40) as http:
        sent = http.post("/v1/tasks/itest.add", json={"a": 2, "b": 3})
        assert sent.status_code == 202, sent.text
        task_id = sent.json()["task_id"]
        assert sent.headers["location"] == f"/v1/tasks/{task_id}"
        assert http.get(f"/v1/tasks/{task_id}").json()["status"] == "PENDING"
        failed = http.post("/v1/tasks/itest.fail", json={"message": "boom"}).json()["task_id"]
        with worker_and_materializer(app, concurrency=2):
            done = http.get(f"/v1/tasks/{task_id}", params={"wait": 30})
            bad = http.get(f"/v1/tasks/{failed}", params={"wait": 30}).json()
        assert http.get("/readyz").status_code == 200
    body = done.json()
    assert (body["status"], body["result"], body["attempt"]) == ("SUCCESS", 5, 1)
    assert body["finished_at"] is not None
    assert bad["status"] == "FAILURE"
    assert bad["error"]["type"] == "ValueError" and bad["error"]["message"] == "boom"
    assert "raise ValueError(message)" in bad["error"]["traceback"]


def test_the_same_event_bytes_as_delay_come_from_http(app: App) -> None:
    """Served by schema files alone (`taskstream serve --schemas`), a worker with the code
    runs the events, so their Avro is what task.delay writes."""
    schemas = Path(app.settings.store.removeprefix("sqlite:///")).parent / "schemas"
    schema_files.export(app, schemas)
    scope_env = Scope(
        app.settings.require_bootstrap(), app.settings.topic_prefix, app.settings.store
    )
    with (
        serve_process(scope_env, "--schemas", str(schemas)) as url,
        httpx.Client(base_url=url, timeout=40) as http,
    ):
        listed = {t["name"] for t in http.get("/v1/tasks").json()["tasks"]}
        assert {"itest.add", "itest.async_mul"} <= listed
        ids = [
            http.post("/v1/tasks/itest.async_mul", json={"a": 6, "b": 7}).json()["task_id"],
            *(
                item["task_id"]
                for item in http.post(
                    "/v1/tasks/itest.add:batch",
                    json={"items": [{"args": {"a": i, "b": i}, "key": "k"} for i in range(20)]},
                ).json()["items"]
            ),
        ]
        with worker_and_materializer(app, concurrency=4):
            results = [http.get(f"/v1/tasks/{i}", params={"wait": 30}).json() for i in ids]
    assert [r["result"] for r in results] == [42, *(2 * i for i in range(20))]
    assert all(r["status"] == "SUCCESS" for r in results)


def test_a_stopped_broker_gets_503_then_recovers_and_nothing_accepted_is_lost(
    app: App, broker: BrokerHandle
) -> None:
    embedded = broker.require_embedded()
    accepted: list[str] = []
    with serving(_service(app)) as url, httpx.Client(base_url=url, timeout=30) as http:

        def send(i: int) -> httpx.Response:
            r = http.post("/v1/tasks/itest.add", json={"a": i, "b": 1})
            if r.status_code == 202:
                accepted.append(r.json()["task_id"])
            return r

        assert send(0).status_code == 202
        embedded.suspend()
        try:
            stalled = send(1)
            batch = http.post(
                "/v1/tasks/itest.add:batch", json={"items": [{"args": {"a": 1, "b": 1}}]}
            )
            ready = http.get("/readyz")
        finally:
            embedded.resume()
        assert stalled.status_code == 503, stalled.text
        assert stalled.headers["retry-after"]
        assert batch.status_code == 503 and batch.headers["retry-after"]
        assert ready.status_code == 503
        deadline = time.monotonic() + 30
        while send(2).status_code != 202:  # recovery
            assert time.monotonic() < deadline, "no 202 within 30s of SIGCONT"
        for i in range(3, 23):
            assert send(i).status_code == 202
        with worker_and_materializer(app, concurrency=4):
            outcomes = [http.get(f"/v1/tasks/{t}", params={"wait": 30}).json() for t in accepted]
    assert len(accepted) >= 22
    assert [o["status"] for o in outcomes] == ["SUCCESS"] * len(accepted)
