"""The console's lag on a real broker: the worker group's committed offsets against the
high watermarks fetched (queried watermarks are wrong on the test broker, see BROKER.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskstream import App
from taskstream.console.kafka_view import backlog
from taskstream.topics import task_topic, worker_group
from tests.conftest import Scope
from tests.integration.running import wait_until, worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


@pytest.fixture
def app(scope: Scope) -> Iterator[App]:
    app = build_app(**scope.settings())
    app.ensure_topics()
    try:
        yield app
    finally:
        app.close()


def _lag(app: App) -> tuple[int, int]:
    """Records not yet done and the partitions whose end is known, over the task topic."""
    prefix = app.settings.topic_prefix
    parts = backlog(app, worker_group(prefix), [task_topic(prefix, "default")], timeout_s=10)
    assert len(parts) == 12
    return sum(p.records or 0 for p in parts), sum(p.end is not None for p in parts)


def test_lag_counts_the_waiting_tasks_then_falls_to_zero_once_a_worker_ran_them(
    app: App,
) -> None:
    results = [app.tasks["itest.add"].apply_async((i, 1), key=f"k{i}") for i in range(30)]
    for r in results:
        r.wait_delivered(30)
    assert _lag(app) == (30, 12)  # no worker yet: every task waits, every end is known
    prefix = app.settings.topic_prefix
    parts = backlog(app, worker_group(prefix), [task_topic(prefix, "default")], timeout_s=10)
    heads = [p for p in parts if p.head is not None]
    assert sum(p.records or 0 for p in heads) == 30 and all(p.head_time for p in heads)
    with worker_and_materializer(app):
        assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(30)]
        wait_until(lambda: _lag(app)[0] == 0, 30, "the lag to fall to zero")
