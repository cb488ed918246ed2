"""Idempotency-Keys across `taskstream serve` processes that share one lookup store: a retry
that the load balancer sends to another process (or host) gets the same task id."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from taskstream import App
from tests.conftest import Scope
from tests.integration.http_server import serve_process

pytestmark = pytest.mark.integration

APP = "tests.integration.tasks_app:app"


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, scope: Scope) -> Scope:
    """The test's scope, on its SQLite file or on a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return scope
    url: str = request.getfixturevalue("postgres_url")
    return Scope(scope.bootstrap_servers, scope.topic_prefix, url)


def test_two_serve_processes_on_one_store_give_an_idempotency_key_one_task_id(
    app: App, shared: Scope
) -> None:
    with serve_process(shared, APP) as one, serve_process(shared, APP) as two:
        send: dict[str, Any] = {"json": {"a": 1, "b": 2}, "timeout": 30}
        first = httpx.post(f"{one}/v1/tasks/itest.add", headers={"Idempotency-Key": "k1"}, **send)
        retry = httpx.post(f"{two}/v1/tasks/itest.add", headers={"Idempotency-Key": "k1"}, **send)
        assert (first.status_code, retry.status_code) == (202, 202), retry.text
        assert retry.json()["task_id"] == first.json()["task_id"]
        assert retry.headers["idempotent-replayed"] == "true"
        other = httpx.post(
            f"{two}/v1/tasks/itest.add", headers={"Idempotency-Key": "k1"},
            json={"a": 5, "b": 5}, timeout=30,
        )  # fmt: skip
        assert (other.status_code, other.json()["error"]["code"]) == (
            409, "idempotency_key_reused",
        )  # fmt: skip

        def race(url: str) -> str:
            r = httpx.post(f"{url}/v1/tasks/itest.add", headers={"Idempotency-Key": "k2"}, **send)
            assert r.status_code == 202, r.text
            task_id: str = r.json()["task_id"]
            return task_id

        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(race, [one, two] * 4))
        assert len(ids) == 1
