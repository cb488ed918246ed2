"""`taskstream materialize --rebuild` restores a store from the results topic alone."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator

import pytest

from taskstream import App
from taskstream.consumer.materializer import Materializer
from taskstream.kafka.topics import results_topic
from taskstream.status import Status
from taskstream.store import ResultRecord
from tests.conftest import REPO, Scope
from tests.integration.running import APP_SPEC, running, wait_until, worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration

TASKS = 40


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, scope: Scope) -> str:
    if request.param == "sqlite":
        return scope.store
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def app(scope: Scope, store_url: str) -> Iterator[App]:
    app = build_app(**scope.settings(store=store_url))
    yield app
    app.close()


def run_tasks(app: App) -> dict[str, ResultRecord]:
    """TASKS tasks, a quarter failing, run to their final outcome; their stored records."""
    with worker_and_materializer(app, concurrency=4):
        results = [
            app.tasks["itest.fail"].delay(f"no {i}") if i % 4 == 0 else
            app.tasks["itest.add"].delay(i, 1)
            for i in range(TASKS)
        ]  # fmt: skip
        wait_until(
            lambda: app.store.count() == TASKS and _all_final(app),
            120,
            "all outcomes",
            lambda: {s.name: app.store.count(s) for s in Status if app.store.count(s)},
        )
    found = app.store.get_many([r.id for r in results])
    assert len(found) == TASKS
    return found


def _all_final(app: App) -> bool:
    return app.store.count(Status.SUCCESS) + app.store.count(Status.FAILURE) == TASKS


def damage(app: App, original: dict[str, ResultRecord]) -> dict[int, int]:
    """Lose every row, add one that no event made, and move the offsets past the end: a normal
    restart would never repair that. Returns the offsets the store had before."""
    topic = results_topic(app.settings.topic_prefix)
    before = app.store.offsets(topic)
    assert sum(before.values()) >= TASKS  # STARTED and final events, at least one per task
    ghost = dataclasses.replace(next(iter(original.values())), task_id="ghost")
    app.store.reset(topic)
    app.store.apply([ghost], {(topic, p): o + 1000 for p, o in before.items()})
    return before


def test_rebuild_restores_every_outcome_and_offset_from_the_results_topic(app: App) -> None:
    original = run_tasks(app)
    topic = results_topic(app.settings.topic_prefix)
    before = damage(app, original)
    assert app.store.get("ghost") is not None and app.store.count() == 1

    with running(Materializer(app, rebuild=True)):
        wait_until(lambda: app.store.count() == TASKS, 60, "the rebuilt outcomes")
        wait_until(lambda: app.store.offsets(topic) == before, 30, "the rebuilt offsets")

    assert app.store.get("ghost") is None
    assert app.store.get_many(list(original)) == original


def test_the_materialize_command_rebuilds_with_the_rebuild_flag(
    app: App, scope: Scope, store_url: str
) -> None:
    original = run_tasks(app)
    topic = results_topic(app.settings.topic_prefix)
    before = damage(app, original)

    process = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "materialize", "--app", APP_SPEC, "--rebuild"],
        env=scope.env(TASKSTREAM_STORE=store_url),
        cwd=REPO,
    )
    try:
        wait_until(
            lambda: app.store.count() == TASKS and app.store.offsets(topic) == before,
            60,
            "the command's rebuild",
        )
    finally:
        process.terminate()
        assert process.wait(30) == 0
    assert app.store.get("ghost") is None
    assert app.store.get_many(list(original)) == original
