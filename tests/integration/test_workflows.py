"""Workflows on the real broker: chain, group and chord, failing members, killed processes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskstream import App, AsyncResult, CanvasError, GroupResult, TaskFailed, chain, chord, group
from taskstream.canvas import callback_id
from taskstream.envelope import Envelopes
from taskstream.kafka.topics import results_topic, task_topic
from taskstream.producer.http import HttpService
from taskstream.status import Status
from taskstream.store import GroupState
from tests.conftest import Scope
from tests.integration.http_server import serving
from tests.integration.running import (
    read_topic,
    spawn_materializer,
    spawn_worker,
    wait_until,
    worker_and_materializer,
)


def t(app: App, name: str) -> Any:
    return app.tasks[f"itest.{name}"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_chain_group_and_chord_examples(app: App) -> None:
    add, mul, tsum = t(app, "add"), t(app, "mul"), t(app, "tsum")
    with worker_and_materializer(app, concurrency=4):
        assert chain(add.s(2, 3), add.s(10), mul.s(2)).apply_async().get(timeout=60) == 30
        assert (add.s(2, 3) | add.s(10)).delay().get(timeout=60) == 15
        res = group(add.s(i, i) for i in range(100)).apply_async()
        assert res.get(timeout=60) == [2 * i for i in range(100)]
        assert res.completed_count() == 100 and res.ready() and res.successful()
        again = app.group_result(res.id)
        assert isinstance(again, GroupResult) and len(again) == 100
        big = chord(group(add.s(i, i) for i in range(1000)), tsum.s()).apply_async()
        assert big.get(timeout=120) == sum(2 * i for i in range(1000))
        assert big.id == callback_id(big.parent.id)  # type: ignore[union-attr]
        linked = add.apply_async((2, 3), link=mul.s(10))
        assert linked.get(timeout=60) == 5


def test_link_error_runs_once_for_a_failed_task(app: App, tmp_path: Path) -> None:
    log = tmp_path / "errbacks.log"
    fail, report = t(app, "fail"), t(app, "report")
    with worker_and_materializer(app):
        failed = fail.apply_async(("boom",), link_error=report.s(str(log)))
        assert failed.get(timeout=60, propagate=False).exc_type == "ValueError"
        wait_until(lambda: len(lines(log)) >= 1, 60, "the errback")
        time.sleep(0.5)
        assert lines(log) == [failed.id]


def test_a_chord_of_1000_with_3_failing_members_fails_naming_them(app: App, tmp_path: Path) -> None:
    runs, errbacks = tmp_path / "members.log", tmp_path / "errbacks.log"
    member, tsum, report = t(app, "member"), t(app, "tsum"), t(app, "report")
    bad = {17, 500, 999}
    header = group(member.s(i, i in bad, 0.0, str(runs)) for i in range(1000))
    with worker_and_materializer(app, concurrency=4):
        result = chord(header, tsum.s()).apply_async(link_error=report.s(str(errbacks)))
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=120)
        wait_until(lambda: len(lines(errbacks)) >= 1, 60, "the errback")
        time.sleep(1.0)  # time for a second errback, if there were one
    error = failed.value
    assert error.exc_type == "ChordError"
    assert "3 of 1000 members failed" in error.message
    for i in bad:
        assert f"[{i}]" in error.message and f"member {i} refuses" in error.message
    assert lines(errbacks) == [result.id]
    assert isinstance(result, AsyncResult) and result.state == Status.FAILURE.value


def test_a_chord_of_1000_survives_a_worker_sigkilled_twice(
    app: App, scope: Scope, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    runs, bodies = tmp_path / "members.log", tmp_path / "bodies.log"
    member, logged_sum = t(app, "member"), t(app, "logged_sum")
    header = group(member.s(i, False, 0.03, str(runs)) for i in range(1000))
    result = chord(header, logged_sum.s(str(bodies))).apply_async()
    processes.append(spawn_materializer(scope))
    workers = [spawn_worker(scope, "--concurrency", "2") for _ in range(2)]
    processes.extend(workers)
    for at, victim in ((100, 0), (500, 1)):
        wait_until(lambda at=at: len(lines(runs)) >= at, 120, f"{at} member runs")  # type: ignore[misc]
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait(10)
        workers[victim] = spawn_worker(scope, "--concurrency", "2")
        processes.append(workers[victim])
    assert result.get(timeout=180) == sum(range(1000))
    time.sleep(1.0)  # time for a second body run, if there were one
    assert len(lines(bodies)) == 1 and lines(bodies)[0] == f"{result.id} 1000"
    ran = lines(runs)
    assert {int(i) for i in ran} == set(range(1000))
    print(f"\n1000 members, {len(ran)} runs ({len(ran) - 1000} again after the kills)")
    envelopes = Envelopes(app.codec)
    outcomes = [
        envelopes.decode_result(m.value() or b"")
        for m in read_topic(scope, results_topic(scope.topic_prefix), 1001, idle=1.0)
    ]
    assert [o.status for o in outcomes if o.id == result.id] == [Status.SUCCESS]


def test_a_chord_survives_its_materializer_sigkilled(
    app: App, scope: Scope, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    runs, bodies = tmp_path / "members.log", tmp_path / "bodies.log"
    member, logged_sum = t(app, "member"), t(app, "logged_sum")
    header = group(member.s(i, False, 0.005, str(runs)) for i in range(500))
    result = chord(header, logged_sum.s(str(bodies))).apply_async()
    materializer = spawn_materializer(scope)
    processes.append(materializer)
    processes.append(spawn_worker(scope, "--concurrency", "4"))
    wait_until(lambda: app.store.count() >= 100, 120, "100 stored members")
    materializer.send_signal(signal.SIGKILL)
    materializer.wait(10)
    processes.append(spawn_materializer(scope))
    assert result.get(timeout=180) == sum(range(500))
    time.sleep(1.0)
    assert lines(bodies) == [f"{result.id} 500"]
    info = app.store.group(result.parent.id)  # type: ignore[union-attr]
    assert info is not None and info.state == GroupState.FIRED and info.completed == 500


def test_a_chain_of_chords_of_chains_of_groups_survives_worker_and_materializer_kills(
    app: App, scope: Scope, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Depth 4: chain -> chord -> chain -> group. 300 inner groups join into the chord's
    header, whose body's result goes on to a second chord; a worker and the materializer are
    SIGKILLed on the way, and every join still fires once."""
    runs, bodies = tmp_path / "members.log", tmp_path / "bodies.log"
    member, add, tsum = t(app, "member"), t(app, "add"), t(app, "tsum")
    nested_sum = t(app, "logged_nested_sum")
    n = 300
    header = [
        chain(member.s(i, False, 0.01, str(runs)), group(add.s(0), add.s(1000))) for i in range(n)
    ]
    workflow = chain(
        chord(header, nested_sum.s(str(bodies))),
        chord([add.s(1), add.s(2)], tsum.s()),
    )
    result = workflow.apply_async()
    materializer = spawn_materializer(scope)
    processes.append(materializer)
    workers = [spawn_worker(scope, "--concurrency", "2") for _ in range(2)]
    processes.extend(workers)
    wait_until(lambda: len(lines(runs)) >= 100, 120, "100 member runs")
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait(10)
    processes.append(spawn_worker(scope, "--concurrency", "2"))
    wait_until(lambda: app.store.count() >= 400, 120, "400 stored outcomes")
    materializer.send_signal(signal.SIGKILL)
    materializer.wait(10)
    processes.append(spawn_materializer(scope))
    total = sum(2 * i + 1000 for i in range(n))
    assert result.get(timeout=180) == 2 * total + 3
    time.sleep(1.0)  # time for a second body run, if there were one
    assert len(lines(bodies)) == 1 and lines(bodies)[0].endswith(f" {n}")
    assert {int(i) for i in lines(runs)} == set(range(n))
    second = result.parent
    assert isinstance(second, GroupResult)
    first = second.parent
    assert isinstance(first, AsyncResult) and first.get(timeout=1) == total
    for joined in (first.parent, second):
        assert isinstance(joined, GroupResult)
        info = app.store.group(joined.id)
        assert info is not None and info.state == GroupState.FIRED
    envelopes = Envelopes(app.codec)
    outcomes = [
        envelopes.decode_result(m.value() or b"")
        for m in read_topic(scope, results_topic(scope.topic_prefix), 100, idle=1.0)
    ]
    assert [o.status for o in outcomes if o.id == first.id] == [Status.SUCCESS]
    assert [o.status for o in outcomes if o.id == result.id] == [Status.SUCCESS]


def test_a_typed_canvas_mismatch_raises_before_sending(app: App, scope: Scope) -> None:
    add, text_len, tsum = t(app, "add"), t(app, "text_len"), t(app, "tsum")
    with pytest.raises(CanvasError) as wrong:
        chain(add.s(2, 3), text_len.s()).apply_async()
    assert (wrong.value.parent, wrong.value.child, wrong.value.parameter) == (
        "itest.add",
        "itest.text_len",
        "text",
    )
    with pytest.raises(CanvasError, match="not a list"):
        chord(group(text_len.s("x") for _ in range(3)), add.s(1)).apply_async()
    with pytest.raises(CanvasError, match="errback"):
        tsum.apply_async(([1],), link_error=add.s(1))
    # Nothing was sent: the task topic holds only the event sent afterwards.
    sentinel = add.delay(1, 1)
    sentinel.wait_delivered(30)
    records = read_topic(scope, task_topic(scope.topic_prefix, "default"), 1, idle=0.5)
    assert [m.key() for m in records] == [sentinel.id.encode()]


def test_progress_is_seen_through_python_and_http(app: App, tmp_path: Path) -> None:
    stepper = t(app, "stepper")
    with (
        worker_and_materializer(app),
        serving(HttpService.for_app(app)) as url,
        httpx.Client(base_url=url, timeout=40) as http,
    ):
        r = stepper.delay(2, str(tmp_path))
        wait_until(lambda: r.state == "PROGRESS", 60, "the first PROGRESS")
        assert r.info == {"step": 0, "of": 2}
        body = http.get(f"/v1/tasks/{r.id}").json()
        assert (body["status"], body["state"], body["meta"]) == (
            "STARTED", "PROGRESS", {"step": 0, "of": 2},
        )  # fmt: skip
        (tmp_path / "0").touch()
        # a long-poll with change=1 is answered by the next update, not the final outcome
        changed = http.get(f"/v1/tasks/{r.id}", params={"wait": 30, "change": 1}).json()
        assert changed["state"] == "PROGRESS" and changed["meta"] == {"step": 1, "of": 2}
        (tmp_path / "1").touch()
        final = http.get(f"/v1/tasks/{r.id}", params={"wait": 30}).json()
        assert (final["status"], final["state"], final["result"]) == ("SUCCESS", "SUCCESS", 2)
        assert r.get(timeout=30) == 2 and r.state == "SUCCESS" and r.info == 2


def test_workflows_over_http(app: App, tmp_path: Path) -> None:
    errbacks = tmp_path / "errbacks.log"
    add = {"task": "itest.add", "args": {"a": 2, "b": 3}}
    with (
        worker_and_materializer(app, concurrency=4),
        serving(HttpService.for_app(app)) as url,
        httpx.Client(base_url=url, timeout=40) as http,
    ):
        chained = {"chain": [add, {"task": "itest.add", "args": {"b": 10}},
                             {"task": "itest.mul", "args": {"b": 2}}]}  # fmt: skip
        sent = http.post("/v1/workflows", json=chained)
        assert sent.status_code == 202, sent.text
        task_id = sent.json()["task_id"]
        assert sent.headers["location"] == f"/v1/tasks/{task_id}"
        assert http.get(f"/v1/tasks/{task_id}", params={"wait": 30}).json()["result"] == 30
        grouped = {"group": [{"task": "itest.add", "args": {"a": i, "b": i}} for i in range(10)]}
        sent = http.post("/v1/workflows", json=grouped)
        assert sent.status_code == 202, sent.text
        gid = sent.json()["group_id"]
        ids = sent.json()["task_ids"]
        for i, member in enumerate(ids):
            got = http.get(f"/v1/tasks/{member}", params={"wait": 30}).json()
            assert got["result"] == 2 * i
        wait_until(lambda: http.get(f"/v1/groups/{gid}").status_code == 200, 30, "the group")
        wait_until(
            lambda: http.get(f"/v1/groups/{gid}").json()["completed"] == 10, 30, "10 members"
        )
        group_body = http.get(f"/v1/groups/{gid}").json()
        assert group_body["join"] == "done" and len(group_body["members"]) == 10
        assert {m["status"] for m in group_body["members"]} == {"SUCCESS"}
        chorded = {"chord": {"header": grouped["group"], "body": {"task": "itest.tsum"}}}
        sent = http.post("/v1/workflows", json=chorded)
        assert sent.status_code == 202, sent.text
        body_id, gid = sent.json()["task_id"], sent.json()["group_id"]
        assert http.get(f"/v1/tasks/{body_id}", params={"wait": 30}).json()["result"] == 90
        joined = http.get(f"/v1/groups/{gid}").json()
        assert joined["join"] == "fired" and joined["chord"] == {
            "task_id": body_id, "status": "SUCCESS",
        }  # fmt: skip
        assert http.get("/v1/groups/nope").status_code == 404
        # nested: a group in a chain (a chord with what follows), then a chord
        after = {"task": "itest.add", "args": {"b": 1}}
        nested = {"chain": [
            add,
            {"group": [after, {"task": "itest.add", "args": {"b": 2}}]},
            {"task": "itest.tsum"},
            {"chord": {"header": [{"task": "itest.add", "args": {"b": 10}},
                                  {"task": "itest.mul", "args": {"b": 2}}],
                       "body": {"task": "itest.tsum"}}},
        ]}  # fmt: skip
        sent = http.post("/v1/workflows", json=nested)
        assert sent.status_code == 202, sent.text
        # 5 -> [6, 7] -> 13 -> [23, 26] -> 49
        got = http.get(f"/v1/tasks/{sent.json()['task_id']}", params={"wait": 30}).json()
        assert got["result"] == 49
        # errbacks: a chain's (on each task), a step's own callbacks
        log = str(errbacks)
        report = {"task": "itest.report", "args": {"log_path": log}}
        failing = {"chain": [
            {**add, "link": [{"task": "itest.mul", "args": {"b": 2}}]},
            {"task": "itest.fail", "args": {"message": "no"}, "immutable": True},
            after,
        ], "link_error": [report]}  # fmt: skip
        sent = http.post("/v1/workflows", json=failing)
        assert sent.status_code == 202, sent.text
        fail_id = sent.json()["task_ids"][1]
        got = http.get(f"/v1/tasks/{sent.json()['task_id']}", params={"wait": 30}).json()
        assert got["status"] == "FAILURE" and "not run" in got["error"]["message"]
        wait_until(lambda: lines(errbacks) == [fail_id], 30, "the chain's errback")


def test_workflow_errors_over_http_name_the_step_and_field(app: App) -> None:
    add = {"task": "itest.add", "args": {"a": 2, "b": 3}}
    with (
        serving(HttpService.for_app(app)) as url,
        httpx.Client(base_url=url, timeout=40) as http,
    ):

        def error(body: Any) -> dict[str, Any]:
            answer = http.post("/v1/workflows", json=body)
            assert answer.status_code == 422, answer.text
            found: dict[str, Any] = answer.json()["error"]
            return found

        wrong = error({"chain": [add, {"task": "itest.add", "args": {"b": "ten"}}]})
        assert wrong["path"] == "chain[1].args.b"
        typed = error({"chain": [add, {"task": "itest.text_len"}]})
        assert typed["path"] == "chain[1]" and "itest.add" in typed["message"]
        assert "'text'" in typed["message"]
        assert error({"chain": [{"task": "itest.nope"}]})["path"] == "chain[0].task"
        body = error({"chord": {"header": [add], "body": {"task": "itest.add", "args": {"b": 1}}}})
        assert body["path"] == "chord.body" and "not a list" in body["message"]
        assert error({"chain": []})["path"] == "chain"
        after = {"task": "itest.add", "args": {"b": 1}}
        header = [after, after, after, {"task": "itest.add", "args": {"b": "x"}}]
        deep = {
            "chain": [add, after, {"chord": {"header": header, "body": {"task": "itest.tsum"}}}]
        }
        assert error(deep)["path"] == "chain[2].chord.header[3].args.b"
        listed = error({"chain": [add, {"group": [after]}, after]})
        assert listed["path"] == "chain[2]" and "not a list" in listed["message"]
        text = {"task": "itest.text_len"}
        body = error({"chain": [add, {"chord": {"header": [after], "body": text}}]})
        assert body["path"] == "chain[1].chord.body"
        grouped = error({"group": [{"chain": [add, text]}]})
        assert grouped["path"] == "group[0].chain[1]" and "'text'" in grouped["message"]
        assert error({"pipeline": []})["code"] == "invalid_workflow"
