"""taskstream.testing: a user's tasks run in a unit test through the real worker, on the stub."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

import taskstream.testing
from taskstream import (
    App,
    DeliveryFailed,
    InvalidArguments,
    Retry,
    TaskFailed,
    clock,
    current_request,
)
from taskstream.consumer.jobs import TaskJob
from taskstream.consumer.run import Run
from taskstream.kafka.topics import task_topic
from taskstream.testing.stub_broker import StubBroker


@pytest.fixture
def app() -> Iterator[App]:
    app = App("unit", bootstrap_servers=None, topic_prefix="unit", partitions=3)

    @app.task(name="unit.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="unit.fail")
    def fail(message: str) -> int:
        raise ValueError(message)

    @app.task(name="unit.flaky", max_retries=3)
    def flaky(attempts: int) -> int:
        attempt = current_request().attempt
        if attempt < attempts:
            raise Retry(countdown=60)
        return attempt

    @app.task(name="unit.wrong_return")
    def wrong_return() -> int:
        return "not an int"  # type: ignore[return-value]

    @app.task(name="unit.async_mul")
    async def async_mul(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a * b

    yield app
    app.close()


def test_a_task_runs_and_its_result_is_read_back(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        assert app.tasks["unit.add"].delay(2, 3).get(timeout=5) == 5
        stub.join()
        assert isinstance(app.broker, StubBroker)
    assert not isinstance(app.broker, StubBroker)  # restored


def test_a_failing_task_raises_task_failed_from_get(app: App) -> None:
    with taskstream.testing.run(app):
        result = app.tasks["unit.fail"].delay("boom")
        with pytest.raises(TaskFailed, match="ValueError: boom"):
            result.get(timeout=5)


def test_a_retry_with_a_countdown_completes_after_advancing_the_clock(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        result = app.tasks["unit.flaky"].delay(2)
        stub.join()  # the retry waits 60 s: not pending work
        assert result.status == "RETRY"
        stub.advance(60)
        stub.join()
        assert result.get(timeout=1) == 2
    assert clock.offset() == 0  # the clock is back where it was


def test_a_countdown_is_held_until_due(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        result = app.tasks["unit.add"].apply_async((1, 1), countdown=30)
        stub.join()
        assert result.status == "PENDING"
        stub.advance(30)
        stub.join()
        assert result.get(timeout=1) == 2


def test_arguments_that_break_the_schema_fail_in_the_test(app: App) -> None:
    with taskstream.testing.run(app):
        with pytest.raises(InvalidArguments):
            app.tasks["unit.add"].delay("two", 3)
        with pytest.raises(TaskFailed):  # a return value that breaks its schema
            app.tasks["unit.wrong_return"].delay().get(timeout=5)


def test_an_async_task_runs(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        result = app.tasks["unit.async_mul"].delay(6, 7)
        stub.join()
        assert result.get(timeout=1) == 42


def test_the_clock_moves_forward_for_every_reader() -> None:
    from taskstream.envelope import now_micros

    before = clock.now_micros()
    clock.advance(3600)
    try:
        assert now_micros() - before >= 3_600_000_000
        assert clock.now() * 1_000_000 - before >= 3_600_000_000
        with pytest.raises(ValueError):
            clock.advance(-1)
    finally:
        clock.reset()
    assert clock.offset() == 0


def test_an_event_the_broker_did_not_take_fails_its_get(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        stub.broker.fail_deliveries(1, topic=task_topic(app.settings.topic_prefix, "default"))
        with pytest.raises(DeliveryFailed):
            app.tasks["unit.add"].delay(1, 2).get(timeout=5)
        assert app.tasks["unit.add"].delay(1, 2).get(timeout=5) == 3


def test_a_worker_keeps_nothing_of_the_tasks_it_has_done(app: App) -> None:
    # Once outcomes are acknowledged, no run, job or record of them stays referenced: a
    # worker's memory must not grow with the tasks it has run (a registry kept every run once,
    # and full GC passes over them took a fifth of the worker's time).
    def alive() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, (Run, TaskJob)))

    with taskstream.testing.run(app) as stub:
        results = [app.tasks["unit.add"].delay(i, 1) for i in range(300)]
        stub.join()
        assert [r.get(timeout=5) for r in results] == [i + 1 for i in range(300)]
        del results
        assert alive() < 10
