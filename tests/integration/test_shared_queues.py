"""Shared queues on Apache Kafka's share groups (KIP-932): more workers than partitions, an
acknowledgement per task, crash counting by the broker; and the clear refusal elsewhere."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskstream import App, TaskFailed, TaskRevoked, chord, group
from taskstream.consumer.materializer import Materializer
from taskstream.consumer.worker import Worker
from taskstream.kafka.share_groups import SharedQueueError
from tests.conftest import REPO, BrokerHandle, Scope
from tests.integration.running import running, wait_until
from tests.integration.shared_app import APP_SPEC, SHARED_QUEUE, build_app


@pytest.fixture
def shared(broker: BrokerHandle, scope: Scope) -> Iterator[App]:
    """The shared-queue app, on Apache Kafka: its topics with 3 partitions."""
    broker.require_cluster("share groups (KIP-932) are Apache Kafka's")
    app = build_app(**scope.settings(partitions=3))
    app.ensure_topics()
    yield app
    app.close()


def spawn(scope: Scope, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A worker process of the shared-queue app."""
    return subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "worker", APP_SPEC, *args],
        env=scope.env(TASKSTREAM_PARTITIONS="3", **env),
        cwd=REPO,
    )


def task(app: App, name: str) -> Any:
    return app.tasks[f"shared.{name}"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_twelve_workers_share_a_queue_of_three_partitions(
    shared: App, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A consumer group would give 3 of them a partition each; a share group feeds all 12."""
    pid = task(shared, "pid")
    workers = [spawn(scope) for _ in range(12)]
    processes.extend(workers)
    seen: set[int] = set()
    with running(Materializer(shared)):

        def all_served() -> bool:
            # Small rounds of short tasks, one record per producer batch: whoever polls
            # gets one, so every member gets some once it has joined.
            results = []
            for _ in range(24):
                results.append(pid.delay(0.05))
                shared.publisher.flush(10)
            seen.update(r.get(timeout=120) for r in results)
            return seen >= {w.pid for w in workers}

        wait_until(all_served, 240, "every worker to run a task")
    assert seen == {w.pid for w in workers}


def test_a_task_that_kills_its_worker_ends_worker_lost_and_the_rest_complete(
    broker: BrokerHandle, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    broker.require_cluster("share groups (KIP-932) are Apache Kafka's")
    # Two lost runs allowed: the group's delivery limit is 3, the third delivery not run.
    app = build_app(**scope.settings(partitions=3, worker_lost_max_deliveries=2))
    app.ensure_topics()
    env = {"TASKSTREAM_WORKER_LOST_MAX_DELIVERIES": "2"}
    workers = [spawn(scope, **env) for _ in range(3)]
    processes.extend(workers)
    add = task(app, "add")
    with running(Materializer(app)):
        killer = task(app, "kill_worker").delay()
        wait_until(lambda: any(w.poll() is not None for w in workers), 120, "a worker killed")
        adds = [add.delay(i, i) for i in range(20)]  # fresh records: run before the killer's
        outcome = killer.get(timeout=180, propagate=False)
        assert isinstance(outcome, TaskFailed) and outcome.exc_type == "WorkerLost", outcome
        assert [r.get(timeout=120) for r in adds] == [2 * i for i in range(20)]
    assert sum(w.poll() is not None for w in workers) == 2  # the third did not run it
    app.close()


def test_a_worker_killed_with_20_tasks_in_hand_loses_none(
    shared: App, scope: Scope, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    note = task(shared, "note")
    log = tmp_path / "runs.log"
    first = spawn(scope)
    processes.append(first)
    with running(Materializer(shared)):
        results = [note.delay(str(log), str(i)) for i in range(20)]
        shared.publisher.flush(10)
        wait_until(lambda: len(lines(log)) >= 1, 120, "the first worker to start")
        first.send_signal(signal.SIGSTOP)  # holding the rest of its batch
        first.kill()
        first.wait(30)
        processes.append(spawn(scope))
        assert sorted(int(r.get(timeout=120)) for r in results) == list(range(20))
    assert set(lines(log)) == {str(i) for i in range(20)}  # (some ran twice: at least once)


def test_a_revoked_task_on_a_shared_queue_does_not_run(shared: App, tmp_path: Path) -> None:
    note = task(shared, "note")
    log = tmp_path / "runs.log"
    revoked = note.delay(str(log), "revoked")
    revoked.revoke()
    with running(Materializer(shared)), running(Worker(shared, concurrency=2)):
        after = note.delay(str(log), "after")
        assert after.get(timeout=60) == "after"
        assert isinstance(revoked.get(timeout=60, propagate=False), TaskRevoked)
    assert lines(log) == ["after"]


def test_a_chord_of_1000_members_on_a_shared_queue_completes_once(
    shared: App, scope: Scope, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    add, tsum = task(shared, "add"), task(shared, "tsum")
    log = tmp_path / "bodies.log"
    processes.extend(spawn(scope, "--concurrency", "4") for _ in range(3))
    with running(Materializer(shared)):
        big = chord(group(add.s(i, i) for i in range(1000)), tsum.s(str(log))).apply_async()
        assert big.get(timeout=240) == sum(2 * i for i in range(1000))
    assert lines(log) == ["ran"]


def test_a_task_that_can_outlive_the_lock_stops_the_worker_naming_it(shared: App) -> None:
    @shared.task(name="shared.slow", queue=SHARED_QUEUE, time_limit=300)
    def slow() -> None: ...

    with pytest.raises(SharedQueueError) as caught:
        Worker(shared).run()
    text = str(caught.value)
    assert "'shared.slow'" in text and "time_limit=300" in text
    assert "share.record.lock.duration.ms" in text and "60000" in text  # the broker's bound

    @shared.task(name="shared.unbounded", queue=SHARED_QUEUE)
    def unbounded() -> None: ...

    with pytest.raises(SharedQueueError, match=r"shared\.unbounded.* no time_limit"):
        Worker(shared).run()


def test_a_shared_queue_on_a_broker_without_share_groups_refuses_to_start(
    broker: BrokerHandle, scope: Scope
) -> None:
    if broker.cluster is not None:
        pytest.skip("Apache Kafka has share groups")
    app = build_app(**scope.settings())
    try:
        with pytest.raises(SharedQueueError, match="need Kafka share groups"):
            Worker(app).run()
    finally:
        app.close()


def test_ordered_and_shared_queues_in_one_worker(shared: App) -> None:
    """One worker serves an ordered queue (its consumer group) and a shared one."""

    @shared.task(name="shared.ordered_add", queue="ordered")
    def ordered(a: int, b: int) -> int:
        return a + b

    shared.ensure_topics()
    add = task(shared, "add")
    queues = [SHARED_QUEUE, "ordered"]
    with running(Materializer(shared)), running(Worker(shared, queues=queues, concurrency=2)):
        assert add.delay(1, 2).get(timeout=60) == 3
        assert ordered.delay(3, 4).get(timeout=60) == 7
