"""Priorities on Apache Kafka: a queue's high band is drained first, and a retry of a
high-priority task comes back to the high band."""

from __future__ import annotations

import pytest

from taskstream import App
from taskstream.kafka.topics import high_topic
from tests.integration.running import wait_until, worker_and_materializer

pytestmark = pytest.mark.integration

BACKLOG, HIGH = 300, 10


@pytest.mark.parametrize(
    "in_flight",
    [
        # the worker fetched the whole backlog: the high tasks jump the executor's queue
        1000,
        # most of the backlog waits in Kafka: the worker stops taking the low band while
        # high records wait (pause/resume), then runs them first
        20,
    ],
)
def test_high_priority_tasks_sent_after_a_backlog_finish_before_most_of_it(
    app: App, in_flight: int
) -> None:
    nap = app.tasks["itest.nap"]
    lows = [nap.delay(0.01, i) for i in range(BACKLOG)]  # waiting before any worker runs
    with worker_and_materializer(app, concurrency=2, max_tasks_in_flight=in_flight):
        # The backlog is under way: its first results are stored.
        wait_until(lambda: bool(app.store.get_many([r.id for r in lows[:10]])), 60, "a result")
        highs = [nap.apply_async((0.01, BACKLOG + i), priority=9) for i in range(HIGH)]
        ids = [r.id for r in lows + highs]
        wait_until(lambda: len(app.store.get_many(ids)) == len(ids), 120, "every result")
    records = app.store.get_many(ids)
    finished = sorted(ids, key=lambda i: (records[i].finished_at, i))
    high_ids = {r.id for r in highs}
    last_high = max(finished.index(i) for i in high_ids)
    lows_after = sum(1 for i in finished[last_high:] if i not in high_ids)
    lows_before = BACKLOG - lows_after
    # Sent after the whole backlog, every high task finished before most of it: the worker
    # took no more of the low band while high records waited, and ran them first.
    assert lows_after > BACKLOG // 2, (lows_before, lows_after)


def test_a_retry_of_a_high_priority_task_comes_back_to_the_high_band(app: App) -> None:
    with worker_and_materializer(app):
        result = app.tasks["itest.band_of_retry"].apply_async(priority=8)
        assert result.get(timeout=60) == high_topic(app.settings.topic_prefix, "default")
