"""Celery's task API in Celery's own forms (issue 28), on the stub broker and in apply()."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import taskstream.testing
from taskstream import (
    App,
    InvalidArguments,
    MaxRetriesExceededError,
    SoftTimeLimitExceeded,
    Task,
    TaskFailed,
    UnknownTask,
)
from taskstream.cli.schema_files import export
from taskstream.errors import InvalidOption, NoCurrentTask
from taskstream.kafka.topics import dead_letter_topic, task_topic


@pytest.fixture
def app() -> Iterator[App]:
    app = App("celeryapi", bootstrap_servers=None, topic_prefix="celeryapi", partitions=2)

    @app.task(name="celeryapi.add")
    def add(x: int, y: int, z: int | None = None) -> int:
        return x + y + (z or 0)

    yield app
    app.close()


# -- 1. args as any sequence -----------------------------------------------------------------


def test_apply_async_takes_a_list_of_args_as_celery_does(app: App) -> None:
    add = app.tasks["celeryapi.add"]
    with taskstream.testing.run(app):
        assert add.apply_async([1, 2]).get(timeout=10) == 3
        assert add.apply_async(args=[5, 6]).get(timeout=10) == 11
        assert add.apply_async(args=[5, 6], kwargs={"z": 1}).get(timeout=10) == 12
        assert app.send_task("celeryapi.add", [2, 2]).get(timeout=10) == 4
        assert add.s(1).apply_async([2]).get(timeout=10) == 3
    assert add.apply([1, 2]).get() == 3
    assert add.apply(args=[1, 2], kwargs={"z": 3}).get() == 6


def test_args_that_are_not_a_sequence_are_a_type_error_as_in_celery(app: App) -> None:
    add = app.tasks["celeryapi.add"]
    with pytest.raises(TypeError, match="list or tuple"):
        add.apply_async("12")
    with pytest.raises(TypeError, match="list or tuple"):
        add.apply_async(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        add.apply_async((1, 2), [("z", 1)])  # type: ignore[arg-type]


# -- 2. ignored results ----------------------------------------------------------------------


def test_a_per_call_ignore_result_stores_nothing_and_get_returns_none_at_once(app: App) -> None:
    add = app.tasks["celeryapi.add"]
    with taskstream.testing.run(app) as stub:
        result = add.apply_async((1, 2), ignore_result=True)
        assert result.ignored is True
        assert result.get() is None  # no timeout: it would wait forever for a result
        stub.join()  # the task ran
        assert result.result is None
        assert app.store.get(result.id) is None
        kept = add.apply_async((1, 2), ignore_result=False)
        assert kept.ignored is False and kept.get(timeout=10) == 3


def test_a_task_declared_with_ignore_result_gives_ignored_results(app: App) -> None:
    @app.task(name="celeryapi.add_ignore_result", ignore_result=True)
    def add_ignore_result(x: int, y: int) -> int:
        return x + y

    with taskstream.testing.run(app) as stub:
        result = add_ignore_result.delay(1, 2)
        assert result.ignored is True
        assert result.get() is None
        stub.join()
        assert app.store.get(result.id) is None
        # The call overrides the task's option.
        assert add_ignore_result.apply_async((1, 2), ignore_result=False).get(timeout=10) == 3
    assert app.AsyncResult(result.id).ignored is False  # an id from elsewhere: not known


# -- 5. self.request --------------------------------------------------------------------------


def request_fields(app: App) -> Task[..., dict[str, str | None]]:
    """A bound task that returns what Celery code reads from ``self.request``, as text."""

    @app.task(name="celeryapi.request_fields", bind=True, time_limit=60, soft_time_limit=45)
    def fields(
        self: Task[..., Any], x: int, y: str = "b", *, z: bool = False
    ) -> dict[str, str | None]:
        r = self.request
        return {
            "id": r.id, "parent_id": r.parent_id, "root_id": r.root_id,
            "args": repr(r.args), "kwargs": repr(r.kwargs), "hostname": r.hostname,
            "delivery_info": None if r.delivery_info is None
            else repr(sorted(r.delivery_info.items())),
            "is_eager": repr(r.is_eager), "time_limit": repr(r.time_limit),
            "soft_time_limit": repr(r.soft_time_limit), "headers": repr(r.headers),
            "retries": repr(r.retries),
        }  # fmt: skip

    return fields


def test_a_worker_s_request_has_celery_s_fields(app: App) -> None:
    fields = request_fields(app)
    with taskstream.testing.run(app) as stub:
        result = fields.apply_async((1,), {"z": True}, key="k1")
        got = result.get(timeout=10)
        record = app.store.get(result.id)
    assert record is not None
    assert got["id"] == result.id
    assert got["parent_id"] is None
    assert got["root_id"] == result.id  # a top-level task is its own root, as in Celery
    assert got["args"] == "(1, 'b')"  # every parameter that can go by position
    assert got["kwargs"] == "{'z': True}"  # keyword-only ones
    assert got["hostname"] == stub.worker.worker_id
    topic = task_topic("celeryapi", "default")
    assert got["delivery_info"] == repr(
        [("key", "k1"), ("offset", record.source_offset), ("partition", record.source_partition),
         ("topic", topic)]
    )  # fmt: skip
    assert got["is_eager"] == "False"
    assert (got["time_limit"], got["soft_time_limit"]) == ("60", "45")
    assert got["headers"] == "None"
    assert got["retries"] == "0"


def test_apply_s_request_is_eager_and_its_own_root(app: App) -> None:
    got = request_fields(app).apply((1, "c")).get()
    assert got["parent_id"] is None and got["root_id"] == got["id"]
    assert got["is_eager"] == "True"
    assert got["args"] == "(1, 'c')" and got["kwargs"] == "{'z': False}"
    assert got["hostname"] == socket.gethostname()
    assert got["delivery_info"] is None


def test_apply_of_a_bound_task_that_calls_update_state_runs_as_in_celery(app: App) -> None:
    """The README's import_rows in Celery's form: eager, its custom states go nowhere."""

    @app.task(name="celeryapi.import_rows", bind=True, max_retries=5)
    def import_rows(task_self: Task[..., Any], path: str) -> int:
        for i in range(3):
            task_self.update_state(state="PROGRESS", meta={"done": i, "path": path})
        task_self.update_state(task_self.request.id, "PROGRESS", {"done": 3})
        return 3

    r = import_rows.apply(("a.csv",))
    assert (r.state, r.get()) == ("SUCCESS", 3)
    with pytest.raises(NoCurrentTask):  # outside any task, as before
        import_rows.update_state(state="PROGRESS")


def test_apply_inside_a_task_makes_it_the_parent_and_keeps_the_root(app: App) -> None:
    """Celery's test_apply_nested_parent_child_relationship, with the ids as lists."""

    @app.task(name="celeryapi.grandchild", bind=True)
    def grandchild_task(task_self: Task[..., Any]) -> list[str | None]:
        r = task_self.request
        return [r.id, r.parent_id, r.root_id]

    @app.task(name="celeryapi.child", bind=True)
    def child_task(task_self: Task[..., Any]) -> list[list[str | None]]:
        r = task_self.request
        return [[r.id, r.parent_id, r.root_id], grandchild_task.apply().get()]

    @app.task(name="celeryapi.parent", bind=True)
    def parent_task(task_self: Task[..., Any]) -> list[list[str | None]]:
        r = task_self.request
        return [[r.id, r.parent_id, r.root_id], *child_task.apply().get()]

    parent, child, grandchild = parent_task.apply().get()
    assert parent[1] is None and parent[2] == parent[0]
    assert child[1] == parent[0] and child[2] == parent[0]
    assert grandchild[1] == child[0] and grandchild[2] == parent[0]


# -- 4. per-call headers and time limits -----------------------------------------------------


def test_headers_reach_the_task_and_survive_its_retry(app: App) -> None:
    """Celery's retry_once_headers: apply_async(headers=...) is self.request.headers, also
    in the retry."""

    @app.task(name="celeryapi.retry_once_headers", bind=True, max_retries=1)
    def retry_once_headers(self: Task[..., Any], countdown: float = 0.1) -> dict[str, str] | None:
        if self.request.retries:
            return self.request.headers
        raise self.retry(countdown=countdown)

    with taskstream.testing.run(app) as stub:
        res = retry_once_headers.apply_async(headers={"x-test-header": "test-value"})
        stub.join()
        stub.advance(1)
        headers = res.get(timeout=10)
    assert headers is not None  # retried once with headers
    assert headers == {"x-test-header": "test-value"}  # retry keeps custom headers


def test_per_call_time_limits_are_the_request_s_and_override_the_task_s(app: App) -> None:
    @app.task(name="celeryapi.limits", bind=True, time_limit=60, soft_time_limit=45)
    def limits(self: Task[..., Any]) -> list[float | None]:
        return [self.request.time_limit, self.request.soft_time_limit]

    @app.task(name="celeryapi.no_limits", bind=True)
    def no_limits(self: Task[..., Any]) -> list[float | None]:
        return [self.request.time_limit, self.request.soft_time_limit]

    with taskstream.testing.run(app):
        assert limits.apply_async().get(timeout=10) == [60, 45]
        assert limits.apply_async(time_limit=10, soft_time_limit=5).get(timeout=10) == [10, 5]
        assert no_limits.apply_async().get(timeout=10) == [None, None]
        assert no_limits.apply_async(time_limit=30, soft_time_limit=20).get(timeout=10) == [
            30,
            20,
        ]


def test_a_per_call_soft_time_limit_raises_in_the_task(app: App) -> None:
    @app.task(name="celeryapi.polite")
    def polite() -> str:
        try:
            while True:  # until the soft limit interrupts it
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            return "cleaned up"

    with taskstream.testing.run(app):
        assert polite.apply_async(soft_time_limit=0.2, time_limit=30).get(timeout=20) == (
            "cleaned up"
        )


def test_a_soft_time_limit_above_the_hard_one_is_a_value_error(app: App) -> None:
    message = "soft_time_limit must be less than or equal to time_limit"
    with pytest.raises(ValueError, match=message):

        @app.task(
            name="celeryapi.soft_time_limit_must_exceed_time_limit", soft_time_limit=2, time_limit=1
        )
        def soft_time_limit_must_exceed_time_limit() -> None:
            pass

    add = app.tasks["celeryapi.add"]
    with pytest.raises(ValueError, match=message):
        add.apply_async((1, 2), soft_time_limit=2, time_limit=1)
    with pytest.raises(ValueError, match="must be positive"):
        add.apply_async((1, 2), time_limit=0)
    with pytest.raises(InvalidOption, match="str"):
        add.apply_async((1, 2), headers={"n": 1})  # type: ignore[dict-item]


# -- 3. retries the task can see -------------------------------------------------------------


class ExpectedException(Exception):
    pass


def test_retry_with_its_retries_used_up_raises_max_retries_exceeded_in_the_task(
    app: App,
) -> None:
    @app.task(name="celeryapi.patient", bind=True, max_retries=1)
    def patient(self: Task[..., Any]) -> str:
        try:
            raise self.retry(countdown=0)
        except MaxRetriesExceededError:
            return f"gave up after {self.request.retries} retries"

    @app.task(name="celeryapi.stubborn", bind=True, max_retries=1)
    def stubborn(self: Task[..., Any]) -> str:
        raise self.retry(countdown=0)

    with taskstream.testing.run(app) as stub:
        assert patient.apply_async().get(timeout=10) == "gave up after 1 retries"
        with pytest.raises(TaskFailed) as failed:
            stubborn.apply_async().get(timeout=10)
        stub.join()
        # The event whose retries ran out is a dead letter, as with Retry and autoretry_for.
        (letter,) = stub.broker.records(dead_letter_topic("celeryapi"))
    assert dict(letter.headers() or [])["taskstream.reason"] == b"retries-exhausted"
    assert failed.value.exc_type == "MaxRetriesExceededError"  # not "Retry: retry requested"
    assert "Can't retry celeryapi.stubborn" in failed.value.message


def test_retry_with_exc_reraises_it_once_used_up_and_retry_shows_it(app: App) -> None:
    """Celery's ``retry`` task: RETRY with the exception as result/info, then FAILURE with
    that exception; self.retry(max_retries=) is the call's own limit."""

    @app.task(name="celeryapi.retry", bind=True, default_retry_delay=1)
    def retry(self: Task[..., Any], return_value: str | None = None) -> str:
        if return_value and self.request.retries >= 3:
            return return_value
        raise self.retry(exc=ExpectedException("not yet"), countdown=5, max_retries=3)

    with taskstream.testing.run(app) as stub:
        result = retry.apply_async()
        stub.join()
        assert result.status == "RETRY"
        assert isinstance(result.result, TaskFailed) and result.info is not None
        assert result.result.exc_type == "ExpectedException"
        assert "not yet" in str(result.info) and result.traceback
        for _ in range(3):
            stub.advance(5)
            stub.join()
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=10)
        assert failed.value.exc_type == "ExpectedException"
        assert result.status == "FAILURE"
        done = retry.apply_async(kwargs={"return_value": "bar"})
        for _ in range(3):
            stub.join()
            stub.advance(5)
        assert done.get(timeout=10) == "bar"
        assert done.status == "SUCCESS"


def test_retry_kwargs_set_autoretry_s_max_retries(app: App) -> None:
    """Celery's ClassBasedAutoRetryTask, as a function: autoretry_for with
    retry_kwargs={'max_retries': 1}."""

    @app.task(
        name="auto_retry_class_task",
        bind=True,
        autoretry_for=(ValueError,),
        retry_kwargs={"max_retries": 1},
        retry_backoff=True,
    )
    def auto_retry_class_task(self: Task[..., Any]) -> int:
        if self.request.retries:
            return self.request.retries
        raise ValueError()

    @app.task(
        name="celeryapi.always_fails",
        autoretry_for=(ValueError,),
        retry_kwargs={"max_retries": 1, "countdown": 0},
        max_retries=5,
    )
    def always_fails() -> int:
        raise ValueError("no")

    with taskstream.testing.run(app) as stub:
        res = auto_retry_class_task.apply_async()
        stub.join()
        stub.advance(2)  # past the backoff (1 s at most, with jitter)
        assert res.get(timeout=10) == 1
        failing = always_fails.delay()
        with pytest.raises(TaskFailed, match="ValueError"):
            failing.get(timeout=10)
        record = app.store.get(failing.id)
        assert record is not None and record.attempt == 2  # one retry, not the task's five


def test_retry_kwargs_accept_only_celery_s_keys(app: App) -> None:
    with pytest.raises(InvalidOption, match="retry_kwargs"):

        @app.task(name="celeryapi.bad", retry_kwargs={"max_retry": 1})
        def bad() -> None:
            pass


# -- 6. send_task without the task's code ----------------------------------------------------


@pytest.fixture
def published(app: App, tmp_path: Path) -> Path:
    """The worker app's schemas, as `taskstream schemas export` publishes them."""
    export(app, tmp_path)
    return tmp_path


def client(broker: Any, schemas: Path) -> App:
    """A web app without the tasks' code, sending to the worker app's topics."""
    return App(
        "web", broker=broker, bootstrap_servers="stub:9092", topic_prefix="celeryapi",
        partitions=2, schemas_dir=str(schemas),
    )  # fmt: skip


def test_send_task_from_an_app_without_the_code_runs_on_the_worker(
    app: App, published: Path
) -> None:
    with taskstream.testing.run(app) as stub:
        web = client(stub.broker, published)
        assert "celeryapi.add" not in web.tasks
        sent = [
            web.send_task("celeryapi.add", (1, 2)),
            web.send_task("celeryapi.add", [5, 6], {"z": 1}),
            web.send_task("celeryapi.add", kwargs={"x": 2, "y": 2}),
            web.send_task("celeryapi.add", (1, 1), countdown=0, key="k", ignore_result=False),
        ]
        assert [app.AsyncResult(r.id).get(timeout=10) for r in sent] == [3, 12, 4, 2]
        web.close()


def test_send_task_checks_the_arguments_against_the_published_schema(
    app: App, published: Path
) -> None:
    web = client(None, published)
    with pytest.raises(InvalidArguments, match=r"args\.y"):
        web.send_task("celeryapi.add", (1,))  # missing y: no default in the schema
    with pytest.raises(InvalidArguments, match=r"args\.x"):
        web.send_task("celeryapi.add", ("one", 2))
    with pytest.raises(InvalidArguments, match=r"args\.w.*unexpected"):
        web.send_task("celeryapi.add", (1, 2), {"w": 3})
    with pytest.raises(InvalidArguments, match="takes 3 arguments, 4 given"):
        web.send_task("celeryapi.add", (1, 2, 3, 4))


def test_send_task_of_a_task_without_schemas_says_where_it_looked(
    app: App, published: Path
) -> None:
    web = client(None, published)
    with pytest.raises(UnknownTask) as unknown:
        web.send_task("celeryapi.nowhere", (1, 2))
    message = str(unknown.value)
    assert "celeryapi.nowhere" in message and str(published / "tasks") in message
    assert "taskstream schemas export" in message


def test_an_async_task_sees_max_retries_exceeded_and_its_event_is_dead_lettered(
    app: App,
) -> None:
    @app.task(name="celeryapi.async_stubborn", bind=True, max_retries=1)
    async def async_stubborn(self: Task[..., Any]) -> str:
        await asyncio.sleep(0)
        raise self.retry(eta=datetime.now(UTC))  # due at once

    with taskstream.testing.run(app) as stub:
        result = async_stubborn.apply_async()
        with pytest.raises(TaskFailed) as failed:
            _ = result.get(timeout=10)  # an async task: mypy types its result a coroutine
        stub.join()
        (letter,) = stub.broker.records(dead_letter_topic("celeryapi"))
        record = app.store.get(result.id)
    assert failed.value.exc_type == "MaxRetriesExceededError"
    assert record is not None and record.attempt == 2
    assert dict(letter.headers() or [])["taskstream.reason"] == b"retries-exhausted"


def test_a_task_the_worker_does_not_define_fails_unknown_task_for_its_id(app: App) -> None:
    """A newer caller, an older worker: the caller's get() learns why instead of waiting."""

    @app.task(name="celeryapi.newer")
    def newer(x: int) -> int:
        return x

    with taskstream.testing.run(app) as stub:
        del app.tasks["celeryapi.newer"]  # this worker's deploy predates it
        r = newer.delay(1)
        with pytest.raises(TaskFailed) as failed:
            r.get(timeout=10)
        assert (failed.value.task_id, failed.value.exc_type) == (r.id, "UnknownTask")
        assert "'celeryapi.newer' is not defined by app 'celeryapi'" in str(failed.value)
        assert r.state == "FAILURE"
        stub.join()
        (letter,) = stub.broker.records(dead_letter_topic("celeryapi"))
        assert dict(letter.headers() or [])["taskstream.reason"] == b"unknown-task"


def test_acks_late_true_is_accepted_as_what_taskstream_does_and_false_is_refused(
    app: App,
) -> None:
    @app.task(name="celeryapi.late", acks_late=True)
    def late(x: int) -> int:
        return x

    assert late.apply((2,)).get() == 2
    with pytest.raises(InvalidOption, match="acks late"):

        @app.task(name="celeryapi.early", acks_late=False)
        def early(x: int) -> int:
            return x
