"""Celery's own task tests (celery/celery t/integration/test_tasks.py), ported: typed
variants of its tasks (tests/integration/celery_tasks.py), the same calls and assertions,
against one worker on the real broker for the module (Celery's session worker).

Cases that cannot apply are listed, with why, at the end of this module. Where taskstream
differs on purpose (documented in the README's "Coming from Celery"), the test asserts the
documented behaviour and says so.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskstream import (
    App,
    AsyncResult,
    InvalidArguments,
    ResultTimeout,
    TaskFailed,
    TaskRevoked,
    UnknownTask,
)
from taskstream.cli.schema_files import export
from taskstream.task import Task
from tests.conftest import BrokerHandle, Scope
from tests.integration.celery_tasks import AddParameterModel, AddResultModel
from tests.integration.running import worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration

TIMEOUT = 10


@pytest.fixture(scope="module")
def app(broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The tests' app with a worker (two threads, as a small Celery pool) and a
    materializer running for the whole module."""
    scope = Scope(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"test-{uuid.uuid4().hex[:10]}",
        store=f"sqlite:///{tmp_path_factory.mktemp('celery')}/results.db",
    )
    app = build_app(**scope.settings())
    app.ensure_topics()
    with worker_and_materializer(app, concurrency=2):
        yield app
    app.close()


def task(app: App, name: str) -> Task[..., Any]:
    return app.tasks[f"ctest.{name}"]


def wait_for_status_other_than_pending(result: Any) -> str:
    """Celery's loop: poll ``status`` every 0.1 s until it is no longer PENDING (at most 5 s;
    here 30 s: the first run goes through a group join)."""
    tik = time.monotonic()
    while time.monotonic() < tik + 30:
        status: str = result.status
        if status != "PENDING":
            return status
        time.sleep(0.1)
    raise AssertionError("Timeout while waiting for the task to be retried")


# -- test_tasks ------------------------------------------------------------------------------


def test_simple_call(app: App) -> None:
    """Tests direct simple call of task"""
    add = task(app, "add")
    assert add(1, 1) == 2
    assert add(1, 1, z=1) == 3


def test_basic_task(app: App) -> None:
    """Tests basic task call"""
    add = task(app, "add")
    results: list[tuple[int, AsyncResult[Any]]] = []
    # Tests calling task only with args
    for i in range(10):
        results.append((i + i, add.delay(i, i)))
    for expected, result in results:
        value = result.get(timeout=TIMEOUT * 3)  # the first get waits for the group join
        assert value == expected
        assert result.status == "SUCCESS"
        assert result.ready() is True
        assert result.successful() is True

    results = []
    # Tests calling task with args and kwargs
    for i in range(10):
        results.append((3 * i, add.delay(i, i, z=i)))
    for expected, result in results:
        value = result.get(timeout=TIMEOUT)
        assert value == expected
        assert result.status == "SUCCESS"
        assert result.ready() is True
        assert result.successful() is True


def test_args_as_a_list(app: App) -> None:
    """Issue 28 item 1: the forms ported Celery code uses (a list for args)."""
    add = task(app, "add")
    assert add.apply_async([1, 2]).get(timeout=TIMEOUT) == 3
    assert add.apply_async(args=[5, 6]).get(timeout=TIMEOUT) == 11


def test_ignore_result(app: App) -> None:
    """Testing calling task with ignoring results. (Celery sleeps 1 s for the result to be
    persisted; here a task sent after it with the same key, so run after it, is awaited.)"""
    add = task(app, "add")
    result = add.apply_async((1, 2), ignore_result=True, key="ignored")
    assert result.get() is None
    assert add.apply_async((0, 0), key="ignored").get(timeout=TIMEOUT) == 0
    assert result.result is None


def test_ignoring_result_no_subscriptions(app: App) -> None:
    """(test_task_redis_result_backend) The Redis channel part does not apply: nothing
    subscribes to anything here."""
    result = task(app, "add_ignore_result").delay(1, 2)
    assert result.ignored is True


def test_pydantic_annotations(app: App) -> None:
    """Tests task call with Pydantic model serialization. (Typed variant: the model is a
    dataclass, passed as one; Celery's pydantic=True also takes a dict.)"""
    add_pydantic = task(app, "add_pydantic")
    results: list[tuple[int, AsyncResult[Any]]] = []
    # Tests calling task only with args
    for i in range(10):
        results.append((i + i, add_pydantic.delay(AddParameterModel(x=i, y=i))))
    for expected, result in results:
        value = result.get(timeout=10)
        assert value == AddResultModel(result=expected)
        assert result.status == "SUCCESS"
        assert result.ready() is True
        assert result.successful() is True


def test_pydantic_string_annotations(app: App) -> None:
    """Tests task call with string-annotated Pydantic model (a dataclass here)."""
    add = task(app, "add_pydantic_string_annotations")
    results: list[tuple[int, AsyncResult[Any]]] = []
    # Tests calling task only with args
    for i in range(10):
        results.append((i + i, add.delay(AddParameterModel(x=i, y=i))))
    for expected, result in results:
        value = result.get(timeout=10)
        assert value == AddResultModel(result=expected)
        assert result.status == "SUCCESS"
        assert result.ready() is True
        assert result.successful() is True


def test_timeout(app: App) -> None:
    """Testing timeout of getting results from tasks."""
    result = task(app, "sleeping").delay(10)
    with pytest.raises(TimeoutError):  # ResultTimeout is a TimeoutError
        result.get(timeout=5)
    with pytest.raises(ResultTimeout):
        result.get(timeout=0)
    result.revoke(terminate=True)  # free the worker's thread for the next tests


def test_expired(app: App) -> None:
    """Testing expiration of task. (The tasks share a key: see test_revoked.)"""
    sleeping, add = task(app, "sleeping"), task(app, "add")
    # Fill the queue with tasks which took > 1 sec to process
    for _ in range(4):
        sleeping.apply_async((2,), key="expired")
    # Execute task with expiration = 1 sec
    result = add.apply_async((1, 1), expires=1, key="expired")
    with pytest.raises(TaskRevoked):
        result.get()
    assert result.status == "REVOKED"
    assert result.ready() is True
    assert result.failed() is False
    assert result.successful() is False

    # Fill the queue with tasks which took > 1 sec to process
    for _ in range(4):
        sleeping.apply_async((2,), key="expired")
    # Execute task with expiration at now + 1 sec
    expires = datetime.now(UTC) + timedelta(seconds=1)
    result = add.apply_async((1, 1), expires=expires, key="expired")
    with pytest.raises(TaskRevoked):
        result.get()
    assert result.status == "REVOKED"
    assert result.ready() is True
    assert result.failed() is False
    assert result.successful() is False


def test_eta(app: App) -> None:
    """Tests tasks scheduled at some point in future. (Celery measures the wall time
    around get(); here the stored record's start and send times say the same.)"""
    add = task(app, "add")
    # Schedule task to be executed in 3 seconds
    result = add.apply_async((1, 1), countdown=3)
    assert result.status == "PENDING"
    assert result.ready() is False
    assert result.get() == 2
    assert result.status == "SUCCESS"
    assert result.ready() is True
    record = result.record
    assert record is not None and record.started_at and record.enqueued_at
    assert (record.started_at - record.enqueued_at).total_seconds() > 3

    # Schedule task to be executed at time now + 3 seconds
    result = add.apply_async((2, 2), eta=datetime.now(UTC) + timedelta(seconds=3))
    assert result.status == "PENDING"
    assert result.ready() is False
    assert result.get() == 4
    assert result.status == "SUCCESS"
    assert result.ready() is True
    record = result.record
    assert record is not None and record.started_at and record.enqueued_at
    assert (record.started_at - record.enqueued_at).total_seconds() > 2.9  # eta: µs rounding


def test_fail(app: App) -> None:
    """Tests that the failing task propagates back correct exception. (Documented
    difference: the remote error is a TaskFailed naming its type, not the class itself.)"""
    result = task(app, "fail").delay()
    with pytest.raises(TaskFailed) as failed:
        result.get(timeout=5 * 3)
    assert failed.value.exc_type == "ExpectedException"
    assert result.status == "FAILURE"
    assert result.ready() is True
    assert result.failed() is True
    assert result.successful() is False


def test_revoked(app: App) -> None:
    """Testing revoking of task. (A Kafka queue is FIFO per partition, not across them:
    the tasks share a key, so the add waits behind the sleeping tasks as in Celery's queue.)"""
    sleeping, add = task(app, "sleeping"), task(app, "add")
    # Fill the queue with tasks to fill the queue
    for _ in range(4):
        sleeping.apply_async((2,), key="revoked")
    # Execute task and revoke it
    result = add.apply_async((1, 1), key="revoked")
    result.revoke()
    with pytest.raises(TaskRevoked):
        result.get()
    assert result.status == "REVOKED"
    assert result.ready() is True
    assert result.failed() is False
    assert result.successful() is False


def test_wrong_arguments(app: App) -> None:
    """Tests that proper exceptions are raised when task is called with wrong arguments.
    (Documented difference: delay() checks against the task's schema and raises
    InvalidArguments, a ValueError, naming the field; a direct call is plain Python.)"""
    add = task(app, "add")
    with pytest.raises(TypeError):
        add(5)

    with pytest.raises(TypeError):
        add(5, 5, wrong_arg=5)

    with pytest.raises(InvalidArguments, match=r"args\.y"):
        add.delay(5)

    with pytest.raises(InvalidArguments, match=r"args\.wrong_arg"):
        add.delay(5, wrong_arg=5)


def test_fail_with_unpickleable_exception(app: App) -> None:
    """Test a task that fails with an unpickleable exception.

    We expect to be able to fetch the result (exception) correctly."""
    result = task(app, "fail_unpickleable").delay("foo", "bar")
    try:
        result.get()
        pytest.fail("Expected an exception when getting result")
    except Exception as exc:
        # Fallback: ensure the exception string mentions the class and argument
        exc_str = str(exc)
        assert "UnpickleableException" in exc_str
        assert "foo" in exc_str

    assert result.status == "FAILURE"


def test_request_fields_on_a_worker(app: App) -> None:
    """Issue 28 item 5: a top-level task is its own root (Celery's ``ids`` task), and the
    request carries args, kwargs, hostname, delivery_info and is_eager."""
    result = task(app, "ids").delay(7)
    root_id, parent_id, i = result.get(timeout=TIMEOUT)
    assert (root_id, parent_id, i) == (result.id, None, "7")
    got = task(app, "request_fields").delay(3).get(timeout=TIMEOUT)
    assert got["args"] == "(3,)" and got["kwargs"] == "{}"
    assert got["hostname"] and got["is_eager"] == "False"
    assert got["topic"] == f"{app.settings.topic_prefix}.tasks.default"


def test_retry(app: App) -> None:
    """Tests retrying of task. (The remote error is a TaskFailed naming its type.)"""
    retry = task(app, "retry")
    # Tests when max. retries is reached
    result = retry.delay()
    status = wait_for_status_other_than_pending(result)
    assert status == "RETRY"
    with pytest.raises(TaskFailed) as failed:
        result.get()
    assert failed.value.exc_type == "ExpectedException"
    assert result.status == "FAILURE"

    # Tests when task is retried but after returns correct result
    result = retry.delay(return_value="bar")
    status = wait_for_status_other_than_pending(result)
    assert status == "RETRY"
    assert result.get() == "bar"
    assert result.status == "SUCCESS"


def test_retry_with_unpickleable_exception(app: App) -> None:
    """Test a task that retries with an unpickleable exception.

    We expect to be able to fetch the result (exception) correctly."""
    job = task(app, "retry_unpickleable").delay(
        "foo",
        "bar",
        retry_kwargs={"countdown": 10, "max_retries": 1},
    )
    status = wait_for_status_other_than_pending(job)
    assert status == "RETRY"

    # Get the exception
    res = job.result
    assert job.status == "RETRY"  # make sure that it wasn't completed yet

    # Fallback: ensure the exception string mentions the class and argument
    res_str = str(res)
    assert "UnpickleableException" in res_str
    assert "foo" in res_str

    job.revoke()


def test_task_retried_once(app: App) -> None:
    res = task(app, "retry_once").delay()
    assert res.get(timeout=TIMEOUT) == 1  # retried once


def test_task_retried_once_with_expires(app: App) -> None:
    res = task(app, "retry_once").delay(expires=60)
    assert res.get(timeout=TIMEOUT) == 1  # retried once


def test_class_based_task_retried(app: App) -> None:
    res = app.tasks["auto_retry_class_task"].delay()
    assert res.get(timeout=TIMEOUT) == 1


def test_task_retried_priority(app: App) -> None:
    """Tests that the priority of a retried task is preserved."""
    res = task(app, "retry_once_priority").apply_async(priority=7)
    assert res.get(timeout=TIMEOUT) == 7  # retried once with priority 7


def test_task_retried_headers(app: App) -> None:
    res = task(app, "retry_once_headers").apply_async(headers={"x-test-header": "test-value"})
    headers = res.get(timeout=TIMEOUT)
    assert headers is not None  # retried once with headers
    assert "x-test-header" in headers  # retry keeps custom headers


def test_soft_time_limit_exceeding_time_limit(app: App) -> None:
    """(Celery raises at apply_async; taskstream already when the task is declared, and for
    a call's own limits at apply_async.)"""
    with pytest.raises(
        ValueError, match="soft_time_limit must be less than or equal to time_limit"
    ):

        @app.task(
            name="ctest.soft_time_limit_must_exceed_time_limit", soft_time_limit=2, time_limit=1
        )
        def soft_time_limit_must_exceed_time_limit() -> None:
            pass

    with pytest.raises(
        ValueError, match="soft_time_limit must be less than or equal to time_limit"
    ):
        task(app, "add").apply_async((1, 1), soft_time_limit=2, time_limit=1)


def test_request_time_limits_set_via_apply_async(app: App) -> None:
    """time_limit and soft_time_limit passed to apply_async must be accessible
    via task.request.time_limit and task.request.soft_time_limit inside the task."""
    result = task(app, "return_request_time_limits").apply_async(time_limit=30, soft_time_limit=20)
    data = result.get(timeout=TIMEOUT)
    assert data["time_limit"] == 30
    assert data["soft_time_limit"] == 20


def test_request_time_limits_none_when_not_configured(app: App) -> None:
    """When no time limits are set, task.request.time_limit and
    task.request.soft_time_limit must both be None."""
    result = task(app, "return_request_time_limits").apply_async()
    data = result.get(timeout=TIMEOUT)
    assert data["time_limit"] is None
    assert data["soft_time_limit"] is None


def test_request_time_limits_from_task_declaration(app: App) -> None:
    """A task with time_limit and soft_time_limit declared at class level must
    expose those values via task.request.time_limit and task.request.soft_time_limit."""
    result = task(app, "task_with_declared_time_limits").apply_async()
    data = result.get(timeout=TIMEOUT)
    assert data["time_limit"] == 60
    assert data["soft_time_limit"] == 45


def test_apply_async_time_limits_override_task_declaration(app: App) -> None:
    """time_limit and soft_time_limit passed to apply_async must override
    values declared at the task class level."""
    declared = task(app, "task_with_declared_time_limits")
    result = declared.apply_async(time_limit=10, soft_time_limit=5)
    data = result.get(timeout=TIMEOUT)
    assert data["time_limit"] == 10
    assert data["soft_time_limit"] == 5


def test_send_task_from_an_app_without_the_code(app: App, tmp_path: Path) -> None:
    """Issue 28 item 6: Celery's send_task from a web app that has no task code, through
    the task's published schemas (taskstream schemas export)."""
    export(app, tmp_path)
    settings = app.settings
    web = App(
        "web", bootstrap_servers=settings.bootstrap_servers, topic_prefix=settings.topic_prefix,
        store=settings.store, schemas_dir=str(tmp_path),
    )  # fmt: skip
    try:
        assert "ctest.add" not in web.tasks
        assert web.send_task("ctest.add", [1, 2]).get(timeout=TIMEOUT) == 3
        assert web.send_task("ctest.add", args=[5, 6], kwargs={"z": 1}).get(timeout=TIMEOUT) == 12
        with pytest.raises(InvalidArguments):
            web.send_task("ctest.add", ["one", 2])
        with pytest.raises(UnknownTask, match="schemas export"):
            web.send_task("ctest.not_published", [1])
    finally:
        web.close()


def test_unicode_task(app: App) -> None:
    from taskstream import group

    print_unicode = task(app, "print_unicode")
    group(print_unicode.s() for _ in range(5)).apply_async().get(timeout=TIMEOUT)


# -- test_apply_tasks --------------------------------------------------------------------------


def test_apply_single_task_ids(app: App) -> None:
    """Test that a single task called via apply() has correct IDs."""

    @app.task(name="ctest.single_apply_task", bind=True)
    def single_apply_task(self: Task[..., Any]) -> dict[str, str | None]:
        return {
            "task_id": self.request.id,
            "parent_id": self.request.parent_id,
            "root_id": self.request.root_id,
        }

    result = single_apply_task.apply()
    data = result.get()

    # Single task should have no parent and root_id should equal task_id
    assert data["parent_id"] is None
    assert data["root_id"] == data["task_id"]


@dataclass
class Ids:
    """Celery's dicts of ids, as dataclasses (a typed dict has no Avro mapping here)."""

    task_id: str
    parent_id: str | None
    root_id: str | None
    name: str


@dataclass
class ChildData(Ids):
    grandchild_data: Ids


@dataclass
class ParentData(Ids):
    child_data: ChildData


def test_apply_nested_parent_child_relationship(app: App) -> None:
    """Test parent-child relationship when one task calls another via apply()."""

    @app.task(name="ctest.grandchild_task", bind=True)
    def grandchild_task(task_self: Task[..., Any]) -> Ids:
        r = task_self.request
        return Ids(r.id, r.parent_id, r.root_id, "grandchild_task")

    @app.task(name="ctest.child_task", bind=True)
    def child_task(task_self: Task[..., Any]) -> ChildData:
        # Call grandchild task via apply()
        grandchild_data = grandchild_task.apply().get()
        r = task_self.request
        return ChildData(r.id, r.parent_id, r.root_id, "child_task", grandchild_data)

    @app.task(name="ctest.parent_task", bind=True)
    def parent_task(task_self: Task[..., Any]) -> ParentData:
        # Call child task via apply()
        child_data = child_task.apply().get()
        r = task_self.request
        return ParentData(r.id, r.parent_id, r.root_id, "parent_task", child_data)

    result = parent_task.apply()

    parent_data = result.get()
    child_data = parent_data.child_data
    grandchild_data = child_data.grandchild_data

    # Verify parent task
    assert parent_data.name == "parent_task"
    assert parent_data.parent_id is None
    assert parent_data.root_id == parent_data.task_id

    # Verify child task
    assert child_data.name == "child_task"
    assert child_data.parent_id == parent_data.task_id
    assert child_data.root_id == parent_data.task_id

    # Verify grandchild task
    assert grandchild_data.name == "grandchild_task"
    assert grandchild_data.parent_id == child_data.task_id
    assert grandchild_data.root_id == parent_data.task_id


# -- not ported --------------------------------------------------------------------------------
# Cases of Celery's t/integration/test_tasks.py with nothing to port them to:
#   test_multiprocess_producer, test_multithread_producer, test_task_accepted: skipped in
#     Celery itself ("Broken test", "Randomly fails").
#   test_reject_without_requeue_stores_failure, test_reject_with_requeue_redelivers_and_succeeds:
#     no Reject (a task's outcome is its return, its exception or a retry).
#   test_revoked_by_headers_simple_canvas, test_revoked_by_headers_complex_canvas,
#     test_revoke_by_stamped_headers_no_match: no stamping (revoke is by task id).
#   test_properties: AMQP message properties (app_id); a Kafka record has none of those.
#   test_trace_log_arguments (2): argsrepr/kwargsrepr and Celery's trace log records.
#   test_task_redis_result_backend's forget/get subscription cases (2): Redis pub/sub
#     channels; the lookup store is polled, nothing is subscribed.
#   test_task_replacement (3): no self.replace().
#   test_pool_acquire_timeout (3): broker_pool_acquire_timeout, a kombu connection pool.
