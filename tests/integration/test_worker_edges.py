"""The worker at the edges: tasks longer than max.poll.interval.ms, tasks that kill their
worker. Real worker processes on the real broker."""

from __future__ import annotations

import json
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from taskstream import App, Status, TaskFailed
from taskstream.consumer.materializer import Materializer
from taskstream.kafka.topics import dead_letter_topic, ownership_topic
from tests.conftest import BrokerHandle, Scope
from tests.integration.running import (
    assigned_partitions,
    free_port,
    read_topic,
    running,
    spawn_worker,
    wait_until,
)

pytestmark = pytest.mark.integration


def final(app: App, ids: list[str]) -> dict[str, object]:
    return {i: r for i, r in app.store.get_many(ids).items() if r.status.is_final}


def two_workers_in_the_group(
    scope: Scope,
    processes: list[subprocess.Popen[bytes]],
    *,
    concurrency: int,
    max_poll_interval_ms: int,
) -> list[int]:
    """Two worker processes, once they own 12 partitions each (of the queue's 12 and its
    high band's 12); their metrics ports."""
    ports = [free_port() for _ in range(2)]
    env = {"TASKSTREAM_MAX_POLL_INTERVAL_MS": str(max_poll_interval_ms)}
    processes += [
        spawn_worker(scope, "--concurrency", str(concurrency), "--metrics-port", str(port), **env)
        for port in ports
    ]
    wait_until(
        lambda: [assigned_partitions(port) for port in ports] == [12, 12],
        90,
        "both workers in the group, 12 partitions each",
    )
    return ports


def test_a_task_longer_than_max_poll_interval_runs_once_while_other_keys_flow(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    two_workers_in_the_group(scope, processes, concurrency=2, max_poll_interval_ms=10000)
    runs = tmp_path / "runs.log"
    long = app.tasks["itest.logged_nap"].apply_async((30.0, str(runs)), key="long")
    add = app.tasks["itest.add"]
    with running(Materializer(app)) as materializer:
        wait_until(runs.exists, 30, "the long task to start")
        # Timed from when results can be read: the materializer's group join is the broker's
        # time, not the workers' (on the embedded broker it can be slow late in a session).
        wait_until(lambda: bool(materializer._tracker.partitions), 60, "the materializer's join")
        started = time.monotonic()
        others = [add.apply_async((i, 1), key=f"other-{i}") for i in range(40)]
        ids = [r.id for r in others]
        wait_until(lambda: len(final(app, ids)) == 40, 25, "40 short tasks beside the long one")
        took = time.monotonic() - started
        assert [r.get(timeout=1) for r in others] == [i + 1 for i in range(40)]
        assert long.get(timeout=60) > 0  # 30 s, three times max.poll.interval.ms
    assert len(runs.read_text().splitlines()) == 1, "the long task ran more than once"
    assert all(p.poll() is None for p in processes), "a worker died"
    assert took < 25


def test_a_task_that_kills_its_worker_ends_as_worker_lost_and_the_rest_runs(
    app: App,
    scope: Scope,
    broker: BrokerHandle,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    broker.require_crash_failover()
    deaths_log = tmp_path / "deaths.log"
    killer = app.tasks["itest.kill_worker"].apply_async((str(deaths_log),), key="poison")
    add = app.tasks["itest.add"]
    same_key = [add.apply_async((i, 100), key="poison") for i in range(5)]
    other_keys = [add.apply_async((i, 0), key=f"k{i}") for i in range(50)]
    ids = [r.id for r in [killer, *same_key, *other_keys]]

    def spawn() -> subprocess.Popen[bytes]:
        return spawn_worker(scope, "--concurrency", "2")

    workers = [spawn(), spawn()]
    processes += workers
    deaths = 0
    with running(Materializer(app)):
        deadline = time.monotonic() + 240
        while len(final(app, ids)) < len(ids):
            assert time.monotonic() < deadline, f"not done after {deaths} deaths"
            for i, worker in enumerate(workers):
                if worker.poll() is not None:  # died: restart it, as a supervisor would
                    deaths += 1
                    workers[i] = spawn()
                    processes.append(workers[i])
            time.sleep(0.2)
    with pytest.raises(TaskFailed) as failed:
        killer.get(timeout=1)
    assert failed.value.exc_type == "WorkerLost"
    assert killer.status == Status.FAILURE
    runs = len(deaths_log.read_text().splitlines())
    assert runs == deaths <= 3, f"{runs} runs, {deaths} deaths"
    assert [r.get(timeout=1) for r in same_key] == [i + 100 for i in range(5)]
    assert [r.get(timeout=1) for r in other_keys] == list(range(50))
    letters = read_topic(scope, dead_letter_topic(scope.topic_prefix), 1)
    reasons = [dict(m.headers() or [])["taskstream.reason"] for m in letters]
    assert reasons == [b"worker-lost"]


def test_at_concurrency_1_a_long_task_keeps_its_worker_in_the_group(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    ports = two_workers_in_the_group(scope, processes, concurrency=1, max_poll_interval_ms=7000)
    runs = tmp_path / "runs.log"
    long = app.tasks["itest.logged_nap"].apply_async((15.0, str(runs)), key="long")
    with running(Materializer(app)):
        wait_until(runs.exists, 30, "the long task to start")
        time.sleep(9)  # past max.poll.interval.ms: a worker that stopped polling is gone now
        assert [assigned_partitions(port) for port in ports] == [12, 12]
        assert long.get(timeout=30) > 0
    assert len(runs.read_text().splitlines()) == 1, "the long task ran more than once"
    assert all(p.poll() is None for p in processes), "a worker died"


def keys_for_every_partition(prefix: str, partitions: int = 12) -> list[str]:
    """A key per partition (librdkafka's consistent partitioner: CRC-32 of the key)."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < partitions:
        key = f"{prefix}-{i}"
        keys.setdefault(zlib.crc32(key.encode()) % partitions, key)
        i += 1
    return [keys[p] for p in range(partitions)]


def test_a_rebalance_hands_running_tasks_over_without_running_them_again(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """A long task runs on every partition when a second worker joins: the partitions that
    move go with their runs in progress, which finish where they started and run once; the
    records behind them on their keys run after them at the new owner; other keys flow."""
    runs = tmp_path / "runs.log"
    nap, add = app.tasks["itest.logged_nap"], app.tasks["itest.add"]
    env = {"TASKSTREAM_REVOKE_GRACE_S": "1"}
    first_port, second_port = free_port(), free_port()
    processes.append(
        spawn_worker(scope, "--concurrency", "16", "--metrics-port", str(first_port), **env)
    )
    keys = keys_for_every_partition("long")
    with running(Materializer(app)):
        wait_until(lambda: assigned_partitions(first_port) == 24, 60, "the first worker")
        longs = [nap.apply_async((45.0, str(runs)), key=key) for key in keys]
        wait_until(
            lambda: runs.exists() and len(runs.read_text().splitlines()) == 12, 60, "12 runs"
        )
        processes.append(
            spawn_worker(scope, "--concurrency", "4", "--metrics-port", str(second_port), **env)
        )
        wait_until(
            lambda: [assigned_partitions(p) for p in (first_port, second_port)] == [12, 12],
            90,
            "the second worker to get 12 of the 24 partitions (both bands)",
        )
        behind = [add.apply_async((i, 1000), key=key) for i, key in enumerate(keys)]
        others = [add.apply_async((i, 1), key=f"other-{i}") for i in range(20)]
        ids = [r.id for r in others]
        wait_until(lambda: len(final(app, ids)) == 20, 40, "other keys beside the long runs")
        assert len(final(app, [r.id for r in longs])) < 12, "the long runs ended first"
        assert [r.get(timeout=90) for r in behind] == [i + 1000 for i in range(12)]
        assert all(r.get(timeout=10) > 0 for r in longs)
        for long, after in zip(longs, behind, strict=True):
            done, started = app.store.get(long.id), app.store.get(after.id)
            assert done is not None and started is not None
            assert done.finished_at and started.started_at
            assert started.started_at >= done.finished_at, "a key's records out of order"
    assert len(runs.read_text().splitlines()) == 12, "a long task ran again at the new owner"
    assert all(p.poll() is None for p in processes), "a worker died"
    journal = read_topic(scope, ownership_topic(scope.topic_prefix), 1, idle=2.0)
    handed = [
        state
        for m in journal
        if m.value() and b'"state":"release"' in (m.value() or b"")
        for state in [json.loads(m.value() or b"{}")]
        if state["handed"]
    ]
    assert handed, "no partition was handed over with a run in progress"
