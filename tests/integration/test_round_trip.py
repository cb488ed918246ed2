"""A task sent with delay() comes back through the broker, the worker and the store."""

from __future__ import annotations

import itertools
import time
from datetime import datetime

import pytest

from taskstream import App, DeliveryFailed, InvalidArguments, TaskFailed
from taskstream.store import ResultRecord
from tests.integration.running import worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


def test_delay_then_get_returns_the_value(app: App) -> None:
    with worker_and_materializer(app, concurrency=4):
        result = app.tasks["itest.add"].delay(2, 3)
        assert result.get(timeout=30) == 5
        assert result.status == "SUCCESS"
        assert app.result(result.id).get(timeout=1) == 5


def test_an_async_task_runs_on_the_event_loop(app: App) -> None:
    with worker_and_materializer(app, concurrency=4):
        assert app.tasks["itest.async_mul"].delay(6, 7).get(timeout=30) == 42


def test_a_failing_task_raises_task_failed_with_the_remote_traceback(app: App) -> None:
    with worker_and_materializer(app):
        result = app.tasks["itest.fail"].delay("boom")
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=30)
    assert failed.value.exc_type == "ValueError"
    assert failed.value.message == "boom"
    assert "raise ValueError(message)" in failed.value.traceback
    assert result.status == "FAILURE"


def test_a_result_is_pending_until_a_worker_runs_it(app: App) -> None:
    result = app.tasks["itest.add"].delay(1, 1)
    result.wait_delivered(10)
    assert result.status == "PENDING"
    with pytest.raises(TimeoutError):
        result.get(timeout=0.2)
    with worker_and_materializer(app):
        assert result.get(timeout=30) == 2


def test_arguments_that_break_the_schema_fail_in_the_caller(app: App) -> None:
    with pytest.raises(InvalidArguments) as bad:
        app.tasks["itest.add"].delay(2, "three")
    assert bad.value.path == "args.b"


def test_tasks_with_one_key_run_in_order(app: App) -> None:
    nap = app.tasks["itest.nap"]
    with worker_and_materializer(app, concurrency=8):
        results = [nap.apply_async((0.02, i), key=f"customer-{i % 3}") for i in range(30)]
        assert [r.get(timeout=60) for r in results] == list(range(30))
    records = [app.store.get(r.id) for r in results]
    for k in range(3):
        same_key = [rec for rec in records[k::3] if rec is not None]
        assert len({(rec.source_topic, rec.source_partition) for rec in same_key}) == 1
        for before, after in itertools.pairwise(same_key):
            assert before.finished_at is not None and after.started_at is not None
            assert before.finished_at <= after.started_at, "a key's tasks overlapped"


def test_a_delivery_failure_reaches_the_caller(tmp_path: object) -> None:
    app = build_app(
        bootstrap_servers="127.0.0.1:9",  # nothing listens on the discard port
        store="memory://",
        delivery_timeout_ms=1000,
    )
    try:
        result = app.tasks["itest.add"].delay(1, 2)
        with pytest.raises(DeliveryFailed):
            result.get(timeout=15)
        assert result.status == "FAILURE"
    finally:
        app.close()


def test_a_task_with_track_started_shows_started_while_it_runs(app: App) -> None:
    with worker_and_materializer(app):
        result = app.tasks["itest.tracked"].delay(3.0)
        statuses = set()
        deadline = time.monotonic() + 30
        while not result.ready() and time.monotonic() < deadline:
            statuses.add(result.status)
            time.sleep(0.02)
        assert result.get(timeout=30) == 1
    assert "STARTED" in statuses
    assert result.status == "SUCCESS"  # the late STARTED never hides the final outcome


def test_with_concurrency_one_tasks_run_one_at_a_time_in_key_order(app: App) -> None:
    """Concurrency 1 runs plain tasks on the consumer's thread and time-limited ones on a pool
    thread; either way one at a time, each key in order."""
    nap, polite = app.tasks["itest.nap"], app.tasks["itest.polite"]
    with worker_and_materializer(app, concurrency=1):
        results = []
        for i in range(24):
            if i % 6 == 5:
                results.append(polite.apply_async((0.01,), key=f"customer-{i % 3}"))
            else:
                results.append(nap.apply_async((0.005, i), key=f"customer-{i % 3}"))
        values = [r.get(timeout=60) for r in results]
    assert [v for i, v in enumerate(values) if i % 6 != 5] == [i for i in range(24) if i % 6 != 5]
    runs = [_run(app.store.get(r.id)) for r in results]
    spans = sorted((started, finished) for started, finished, _ in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two tasks ran at once with concurrency 1"
    for k in range(3):
        same_key = runs[k::3]
        for before, after in itertools.pairwise(same_key):
            assert before[2] < after[2]  # source offsets
            assert before[1] <= after[0]  # the earlier finished before the later started


def _run(record: ResultRecord | None) -> tuple[datetime, datetime, int]:
    """A finished task's start, finish and source offset, asserted to be there."""
    assert record is not None and record.started_at and record.finished_at
    assert record.source_offset is not None
    return record.started_at, record.finished_at, record.source_offset
