"""Workflows and Celery's task/result API, through the real worker and materializer on the
stub broker (taskstream.testing)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import taskstream.testing
from taskstream import (
    App,
    AsyncResult,
    CanvasError,
    GroupResult,
    InvalidArguments,
    Status,
    Task,
    TaskFailed,
    chain,
    chord,
    group,
)
from taskstream.canvas import callback_id, member_id
from taskstream.envelope import Envelopes
from taskstream.errors import NoCurrentTask
from taskstream.kafka.topics import results_topic, task_topic
from taskstream.store import GroupState, MemoryStore
from taskstream.task import current_request

CALLS: list[Any] = []
RELEASE = threading.Event()


@pytest.fixture
def app() -> Iterator[App]:
    CALLS.clear()
    app = App("wf", bootstrap_servers=None, topic_prefix="wf", partitions=3)

    @app.task(name="wf.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="wf.mul")
    def mul(a: int, b: int) -> int:
        return a * b

    @app.task(name="wf.tsum")
    def tsum(values: list[int]) -> int:
        CALLS.append(("tsum", values))
        return sum(values)

    @app.task(name="wf.fail_if")
    def fail_if(a: int, bad: bool) -> int:
        if bad:
            raise ValueError(f"member {a} is bad")
        return a

    @app.task(name="wf.report")
    def report(task_id: str) -> None:
        CALLS.append(("report", task_id))

    @app.task(name="wf.shout")
    def shout(text: str) -> str:
        return text.upper()

    @app.task(name="wf.whoami", bind=True, max_retries=2)
    def whoami(self: Task[Any, Any], retry_until: int) -> str:
        request = self.request
        if request.retries < retry_until:
            raise self.retry(countdown=0)
        return json.dumps([request.id, request.retries, request.key, request.group_id])

    @app.task(name="wf.progress", bind=True)
    def progress(self: Task[Any, Any], steps: int) -> int:
        for i in range(steps):
            self.update_state(state="PROGRESS", meta={"done": i, "of": steps})
            RELEASE.wait(10)
            RELEASE.clear()
        return steps

    @app.task(name="wf.quiet", ignore_result=True)
    def quiet(a: int) -> int:
        CALLS.append(("quiet", a))
        return a

    yield app
    app.close()


def task(app: App, name: str) -> Task[Any, Any]:
    return app.tasks[f"wf.{name}"]


def test_a_chain_prepends_each_result_to_the_next_signature(app: App) -> None:
    add, mul = task(app, "add"), task(app, "mul")
    with taskstream.testing.run(app) as stub:
        result = chain(add.s(2, 3), add.s(10), mul.s(2)).apply_async()
        assert result.get(timeout=10) == 30
        assert (add.s(2, 3) | add.s(10)).delay().get(timeout=10) == 15
        assert add.si(1, 1).delay().get(timeout=10) == 2
        # .parent walks back to the first step; each step knows its parent and root
        first = result.parent.parent  # type: ignore[union-attr]
        assert first is not None and first.get(timeout=1) == 5
        stub.join()
        # From elsewhere: the store keeps each step's parent, and the children of each.
        last = app.AsyncResult(result.id)
        middle = last.parent
        assert isinstance(middle, type(last)) and middle.get(timeout=1) == 15
        assert middle.parent == first and middle.children == [last]
        assert app.AsyncResult(first.id).parent is None


def test_an_immutable_step_ignores_the_previous_result(app: App) -> None:
    add = task(app, "add")
    with taskstream.testing.run(app):
        assert chain(add.s(2, 3), add.si(100, 1), add.s(1)).apply_async().get(timeout=10) == 102


def test_a_failed_step_fails_the_rest_of_the_chain_and_runs_its_errback(app: App) -> None:
    add, fail_if, report = task(app, "add"), task(app, "fail_if"), task(app, "report")
    with taskstream.testing.run(app) as stub:
        result = chain(fail_if.s(1, True), add.s(1), add.s(2)).apply_async(link_error=report.s())
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=10)
        assert failed.value.exc_type == "ValueError"
        assert "member 1 is bad" in failed.value.message and "not run" in failed.value.message
        stub.join()
        first = result.parent.parent  # type: ignore[union-attr]
        assert first is not None
        assert CALLS == [("report", first.id)]


def test_link_and_link_error_callbacks(app: App) -> None:
    add, mul, fail_if, report = (task(app, n) for n in ("add", "mul", "fail_if", "report"))
    with taskstream.testing.run(app) as stub:
        ok = add.apply_async((2, 3), link=mul.s(10), link_error=report.s())
        bad = fail_if.apply_async((7, True), link=mul.s(10), link_error=report.s())
        assert ok.get(timeout=10) == 5
        stub.join()
        assert CALLS == [("report", bad.id)]
        assert app.store.count(Status.SUCCESS) == 3  # add, mul(5, 10), report


def test_a_group_returns_its_results_in_order(app: App) -> None:
    add = task(app, "add")
    with taskstream.testing.run(app) as stub:
        res = group(add.s(i, i) for i in range(20)).apply_async()
        assert isinstance(res, GroupResult)
        assert res.get(timeout=10) == [2 * i for i in range(20)]
        assert res.completed_count() == 20 and res.ready() and res.successful()
        assert [r.id for r in res.results] == [member_id(res.id, i) for i in range(20)]
        stub.join()
        again = app.group_result(res.id)
        assert again is not None and again.get(timeout=1) == res.get(timeout=1)
        assert app.group_result("no-such-group") is None


def test_a_chord_runs_its_body_once_with_the_results_in_order(app: App) -> None:
    add, tsum = task(app, "add"), task(app, "tsum")
    with taskstream.testing.run(app) as stub:
        result = chord(group(add.s(i, i) for i in range(50)), tsum.s()).apply_async()
        assert result.get(timeout=10) == sum(2 * i for i in range(50))
        assert isinstance(result.parent, GroupResult)
        assert result.id == callback_id(result.parent.id)
        stub.join()
        assert CALLS == [("tsum", [2 * i for i in range(50)])]
        header = app.AsyncResult(result.id).parent
        assert isinstance(header, GroupResult) and header.id == result.parent.id
        info = app.store.group(result.parent.id)
        assert info is not None and info.state == GroupState.FIRED and info.completed == 50


def test_a_chord_of_different_tasks_gets_each_result_as_its_own_task_returned_it(
    app: App,
) -> None:
    """A chord's members' results reach the body decoded in one pass when one task returned
    them all (above), one at a time here."""
    add, mul, tsum = task(app, "add"), task(app, "mul"), task(app, "tsum")
    with taskstream.testing.run(app) as stub:
        members = group([add.s(1, 2), mul.s(3, 4), add.s(5, 6)])
        assert chord(members, tsum.s()).apply_async().get(timeout=10) == 26
        stub.join()
        assert CALLS == [("tsum", [3, 12, 11])]


def test_a_member_run_twice_counts_once(app: App) -> None:
    add, tsum = task(app, "add"), task(app, "tsum")
    with taskstream.testing.run(app) as stub:
        result = chord([add.s(i, 1) for i in range(5)], tsum.s()).apply_async()
        assert result.get(timeout=10) == 15
        stub.join()
        # Every member's result event again, as a redelivered member would publish it.
        results = results_topic("wf")
        members = {member_id(result.parent.id, i) for i in range(5)}  # type: ignore[union-attr]
        envelopes = Envelopes(app.codec)
        records = stub.broker.records(results)
        again = [m for m in records if envelopes.decode_result(m.value() or b"").id in members]
        producer = app.broker.producer({})
        for m in again:
            producer.produce(results, m.value(), m.key())
        producer.flush()
        stub.join()
        assert CALLS == [("tsum", [1, 2, 3, 4, 5])]


def test_a_chord_with_failed_members_fails_naming_them_and_runs_its_errback_once(
    app: App,
) -> None:
    fail_if, tsum, report = task(app, "fail_if"), task(app, "tsum"), task(app, "report")
    with taskstream.testing.run(app) as stub:
        header = group(fail_if.s(i, i in (3, 7)) for i in range(10))
        result = chord(header, tsum.s()).apply_async(link_error=report.s())
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=10)
        stub.join()
        assert failed.value.exc_type == "ChordError"
        assert "2 of 10 members failed" in failed.value.message
        assert "[3]" in failed.value.message and "member 7 is bad" in failed.value.message
        assert CALLS == [("report", result.id)]
        assert isinstance(result, AsyncResult)
        assert result.state == "FAILURE" and isinstance(result.result, TaskFailed)


def test_a_typed_canvas_mismatch_raises_before_sending(app: App) -> None:
    add, shout, tsum, report = (task(app, n) for n in ("add", "shout", "tsum", "report"))
    with taskstream.testing.run(app) as stub:
        with pytest.raises(CanvasError) as wrong:
            chain(add.s(1, 2), shout.s())
        assert (wrong.value.parent, wrong.value.child, wrong.value.parameter) == (
            "wf.add",
            "wf.shout",
            "text",
        )
        assert "wf.add" in str(wrong.value) and "'text'" in str(wrong.value)
        with pytest.raises(CanvasError, match="not a list"):
            chord([add.s(1, 2)], add.s(1))
        with pytest.raises(CanvasError, match=r"wf\.shout"):
            chord([shout.s("a")], tsum.s())
        with pytest.raises(CanvasError, match=r"errback wf\.add"):
            add.apply_async((1, 2), link_error=add.s(1))
        with pytest.raises(CanvasError):
            add.apply_async((1, 2), link=report.s())  # an int result into a str parameter
        stub.join()
        assert stub.broker.records(task_topic("wf", "default")) == []


def test_bind_gives_the_task_its_request_and_retry(app: App) -> None:
    whoami = task(app, "whoami")
    with taskstream.testing.run(app) as stub:
        r = whoami.apply_async((1,), key="k1")
        stub.join()
        stub.advance(1)
        task_id, retries, key, group_id = json.loads(r.get(timeout=10))
        assert (task_id, retries, key, group_id) == (r.id, 1, "k1", None)


def test_the_result_api_of_celery(app: App) -> None:
    add, fail_if = task(app, "add"), task(app, "fail_if")
    with taskstream.testing.run(app):
        ok = add.delay(2, 3)
        assert ok.get(timeout=10) == 5
        assert ok.state == "SUCCESS" and ok.result == 5 and ok.info == 5
        assert ok.traceback is None and ok.date_done is not None
        assert app.AsyncResult(ok.id).result == 5
        bad = fail_if.delay(1, True)
        error = bad.get(timeout=10, propagate=False)
        assert isinstance(error, TaskFailed) and error.exc_type == "ValueError"
        assert bad.state == "FAILURE" and bad.traceback and "member 1 is bad" in bad.traceback
        assert isinstance(bad.info, TaskFailed)


def test_apply_runs_eagerly_through_the_schemas(app: App) -> None:
    add, fail_if, whoami = task(app, "add"), task(app, "fail_if"), task(app, "whoami")
    assert add.apply((2, 3)).get() == 5
    failed = fail_if.apply((1, True))
    assert failed.state == "FAILURE" and failed.traceback
    with pytest.raises(TaskFailed):
        failed.get()
    assert json.loads(whoami.apply((0,)).get())[1] == 0  # a bound task's request works
    with pytest.raises(InvalidArguments):
        add.apply((2, "three"))
    assert task(app, "whoami").options.bind
    retried = whoami.apply((1,))  # retrying is not eager: the attempt fails with Retry
    assert retried.state == "FAILURE" and retried.get(propagate=False).exc_type == "Retry"


def test_ignore_result_stores_nothing_but_commits(app: App) -> None:
    quiet = task(app, "quiet")
    with taskstream.testing.run(app) as stub:
        r = quiet.delay(4)
        stub.join()
        assert CALLS == [("quiet", 4)]
        assert app.store.get(r.id) is None and r.state == "PENDING"


def test_update_state_shows_progress_until_the_final_outcome_wins(app: App) -> None:
    progress = task(app, "progress")
    with taskstream.testing.run(app) as stub:
        r = progress.delay(2)
        for step in range(2):
            deadline = time.monotonic() + 10
            while r.info != {"done": step, "of": 2} and time.monotonic() < deadline:
                time.sleep(0.01)
            assert r.state == "PROGRESS" and r.info == {"done": step, "of": 2}
            assert r.status == "STARTED" and not r.ready()
            RELEASE.set()
        assert r.get(timeout=10) == 2
        stub.join()
        assert r.state == "SUCCESS" and r.info == 2
    with pytest.raises(NoCurrentTask):
        progress.update_state(state="PROGRESS", meta={})


def test_a_join_found_due_again_after_a_crash_does_not_rerun_a_body_that_ran(app: App) -> None:
    add, tsum = task(app, "add"), task(app, "tsum")
    with taskstream.testing.run(app) as stub:
        result = chord([add.s(i, 1) for i in range(3)], tsum.s()).apply_async()
        assert result.get(timeout=10) == 6
        stub.join()
        gid = result.parent.id  # type: ignore[union-attr]
        store = app.store
        assert isinstance(store, MemoryStore)
        # As if the materializer died after the body was acknowledged, before recording it.
        info = store.group(gid)
        assert info is not None
        store._groups[gid] = dataclasses.replace(info, state=GroupState.DUE)
        body_events = len(stub.broker.records(task_topic("wf", "default")))
        assert stub.materializer._joiner().fire_due() == 1
        stub.join()
        assert len(stub.broker.records(task_topic("wf", "default"))) == body_events
        assert CALLS == [("tsum", [1, 2, 3])]
        again = store.group(gid)
        assert again is not None and again.state == GroupState.FIRED


def test_calling_a_task_directly_gives_it_a_request(app: App) -> None:
    whoami = task(app, "whoami")
    seen: list[Any] = []

    def call() -> None:  # on a thread of its own: no run's request around
        seen.append(json.loads(whoami(0)))
        try:
            current_request()  # the call's request does not outlive it
        except NoCurrentTask as exc:
            seen.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(10)
    (task_id, retries, key, group_id), after = seen
    assert retries == 0 and key is None and group_id is None and len(task_id) == 36
    assert isinstance(after, NoCurrentTask)
