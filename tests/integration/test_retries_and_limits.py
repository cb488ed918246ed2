"""Retries through the delay tiers, dead letters when they run out, and time limits."""

from __future__ import annotations

import time

import pytest

from taskstream import App, Status, TaskFailed
from taskstream.kafka.topics import dead_letter_topic
from tests.conftest import Scope
from tests.integration.running import (
    headers_of,
    read_topic,
    wait_until,
    worker_and_materializer,
)

pytestmark = pytest.mark.integration


def test_an_explicit_retry_runs_again_no_sooner_than_its_countdown(app: App) -> None:
    with worker_and_materializer(app, concurrency=2):
        sent = time.monotonic()
        result = app.tasks["itest.retry_until"].delay(3, 0.5)
        assert result.get(timeout=60) == 3
        assert time.monotonic() - sent >= 2 * 0.5
    record = app.store.get(result.id)
    assert record is not None and record.attempt == 3 and record.status is Status.SUCCESS


def test_retries_that_run_out_end_in_failure_and_a_dead_letter(app: App, scope: Scope) -> None:
    with worker_and_materializer(app):
        result = app.tasks["itest.unreachable"].delay("db.internal")
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=60)
        letters = read_topic(scope, dead_letter_topic(scope.topic_prefix), 1)
    assert failed.value.exc_type == "ConnectionError"
    record = app.store.get(result.id)
    assert record is not None and record.attempt == 3  # the first run and two retries
    headers = headers_of(letters[0])
    assert headers["taskstream.reason"] == b"retries-exhausted"
    assert headers["taskstream.task"] == b"itest.unreachable"
    assert b"refused the connection" in headers["taskstream.error"]


def test_a_waiting_retry_shows_retry_and_does_not_block_its_partition(app: App) -> None:
    with worker_and_materializer(app, concurrency=2):
        waiting = app.tasks["itest.retry_until"].apply_async((2, 30.0), key="customer-7")
        wait_until(lambda: waiting.status == "RETRY", 30, "the RETRY status")
        behind = app.tasks["itest.add"].apply_async((1, 2), key="customer-7")
        assert behind.get(timeout=30) == 3
        record = app.store.get(waiting.id)
        assert record is not None and record.status is Status.RETRY
        assert record.error_type == "RuntimeError" and "attempt 1" in (record.error_message or "")


def test_a_countdown_is_never_run_early(app: App) -> None:
    with worker_and_materializer(app):
        result = app.tasks["itest.add"].apply_async((2, 2), countdown=2.0)
        assert result.get(timeout=60) == 4
    record = app.store.get(result.id)
    assert record is not None and record.started_at and record.enqueued_at
    assert (record.started_at - record.enqueued_at).total_seconds() >= 2.0


def test_a_soft_time_limit_raises_inside_the_task(app: App) -> None:
    with worker_and_materializer(app):
        assert app.tasks["itest.polite"].delay(3.0).get(timeout=30) == "cleaned up"


def test_a_stuck_task_past_its_hard_limit_fails_and_the_worker_goes_on(app: App) -> None:
    with worker_and_materializer(app, concurrency=1):
        stuck = app.tasks["itest.stuck"].delay(30.0)
        with pytest.raises(TaskFailed) as failed:
            stuck.get(timeout=30)
        assert failed.value.exc_type == "TimeLimitExceeded"
        # The only thread is stuck in time.sleep; a replacement runs the next task.
        assert app.tasks["itest.add"].delay(1, 1).get(timeout=30) == 2


def test_an_async_task_past_its_hard_limit_fails(app: App) -> None:
    with worker_and_materializer(app):
        with pytest.raises(TaskFailed) as failed:
            app.tasks["itest.async_stuck"].delay(30.0).get(timeout=30)
    assert failed.value.exc_type == "TimeLimitExceeded"


def test_fetching_pauses_at_max_tasks_in_flight(app: App) -> None:
    nap = app.tasks["itest.nap"]
    results = [nap.delay(0.05, i) for i in range(60)]
    peak = 0
    with worker_and_materializer(app, concurrency=2, max_tasks_in_flight=4) as worker:
        deadline = time.monotonic() + 60
        while not all(r.ready() for r in results[-3:]) and time.monotonic() < deadline:
            peak = max(peak, worker.in_flight)
            time.sleep(0.005)
        assert [r.get(timeout=30) for r in results] == list(range(60))
    # A batch is cut to the room left, so the bound holds (a record from a partition
    # assigned during a pause may add one).
    assert peak <= 5
