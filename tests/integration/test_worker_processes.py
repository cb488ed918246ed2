"""Worker processes in a consumer group: spread, crash, drain, and dead letters."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from taskstream import App, Status
from taskstream.consumer.materializer import Materializer
from taskstream.consumer.worker import Worker
from taskstream.kafka.topics import dead_letter_topic, task_topic, worker_group
from tests.conftest import REPO, BrokerHandle, Scope
from tests.integration.running import (
    APP_SPEC,
    assigned_partitions,
    free_port,
    headers_of,
    read_topic,
    running,
    spawn_worker,
    wait_until,
    worker_metrics,
)

pytestmark = pytest.mark.integration


def stored(app: App, ids: list[str]) -> dict[str, object]:
    return {i: r for i, r in app.store.get_many(ids).items() if r.status.is_final}


def test_two_worker_processes_share_2000_tasks_across_12_partitions(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    add = app.tasks["itest.add"]
    ports = [free_port(), free_port()]
    processes += [
        spawn_worker(scope, "--concurrency", "4", "--metrics-port", str(port)) for port in ports
    ]
    # Sent once both share the partitions: sent before, the first worker to join could run
    # all 2000 before the group moves half of them to the second.
    wait_until(
        # (of the queue's 12 partitions and its high band's 12)
        lambda: sorted(assigned_partitions(port) for port in ports) == [12, 12],
        90,
        "a 12/12 split",
    )
    results = [add.delay(i, i) for i in range(2000)]
    for r in results:
        r.wait_delivered(30)
    ids = [r.id for r in results]
    with running(Materializer(app)):
        wait_until(lambda: len(stored(app, ids)) == 2000, 120, "2000 results")
    records = app.store.get_many(ids)
    assert len(records) == 2000
    assert all(records[r.id].status is Status.SUCCESS for r in results)
    assert [r.get(timeout=1) for r in results] == [2 * i for i in range(2000)]
    assert len({rec.worker for rec in records.values()}) == 2, "both workers ran tasks"
    assert len({rec.source_partition for rec in records.values()}) == 12


def test_a_worker_killed_mid_run_loses_no_task(
    app: App, scope: Scope, broker: BrokerHandle, processes: list[subprocess.Popen[bytes]]
) -> None:
    broker.require_crash_failover()
    nap = app.tasks["itest.nap"]
    results = [nap.delay(0.005, i) for i in range(600)]
    ids = [r.id for r in results]
    # The survivor runs the dead worker's suspects (at most max_tasks_in_flight records per
    # partition past its commit) one at a time, each after a durable journal write: with the
    # default 1000 every one of the ~500 left would be a suspect, minutes on a loaded cluster.
    flags = ("--concurrency", "2", "--max-tasks-in-flight", "10")
    ports = [free_port(), free_port()]
    processes += [spawn_worker(scope, *flags, "--metrics-port", str(port)) for port in ports]
    victim, survivor = processes[-2:]
    with running(Materializer(app)):
        wait_until(lambda: len(stored(app, ids)) >= 100, 90, "the first 100 results")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        done_at_kill = len(stored(app, ids))
        assert done_at_kill < 600, "the kill came too late to prove anything"
        wait_until(
            lambda: len(stored(app, ids)) == 600,
            180,
            "all 600 results after the kill",
            state=lambda: progress(app, scope, ids, done_at_kill, survivor, ports[1]),
        )
    assert [r.get(timeout=1) for r in results] == list(range(600))


def test_sigterm_drains_in_flight_tasks_commits_and_exits_zero(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    nap = app.tasks["itest.nap"]
    results = [nap.delay(0.3, i) for i in range(40)]
    ids = [r.id for r in results]
    worker = spawn_worker(scope, "--concurrency", "4", "--max-tasks-in-flight", "4")
    processes.append(worker)
    with running(Materializer(app)):
        wait_until(lambda: len(stored(app, ids)) >= 4, 60, "the first results")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        wait_until(lambda: len(stored(app, ids)) >= 4, 10, "drained results")
    first_run = {i: r.worker for i, r in app.store.get_many(ids).items()}
    assert 4 <= len(first_run) < 40

    # Every task below the committed offsets has its result: nothing is skipped...
    committed = committed_offsets(app, scope)
    records = app.store.get_many(ids).values()
    by_position = {(r.source_partition, r.source_offset) for r in records}
    for partition, offset in committed.items():
        assert all((partition, o) in by_position for o in range(offset)), "a gap was committed"

    # ...and a new worker finishes the rest without re-running what was done.
    with running(Materializer(app)), running(Worker(app, concurrency=8)):
        wait_until(lambda: len(stored(app, ids)) == 40, 90, "the remaining results")
    after = app.store.get_many(ids)
    assert all(after[i].worker == w for i, w in first_run.items()), "a drained task ran again"


def progress(
    app: App,
    scope: Scope,
    ids: list[str],
    done_at_kill: int,
    survivor: subprocess.Popen[bytes],
    port: int,
) -> str:
    """What a stuck run shows: results so far, each partition's commit against its end, the
    survivor's gauges; and the survivor prints its threads' tracebacks (SIGUSR1) to stderr."""
    ends = end_offsets(scope)
    committed = committed_offsets(app, scope)
    behind = {p: f"{committed.get(p, 0)}/{e}" for p, e in ends.items() if committed.get(p, 0) < e}
    gauges = worker_metrics(port, "taskstream_assigned_partitions", "taskstream_tasks_")
    if survivor.poll() is None:
        survivor.send_signal(signal.SIGUSR1)
    return (
        f"{len(stored(app, ids))} results, {done_at_kill} at the kill; committed/end of the "
        f"partitions behind: {behind}; the survivor (exit {survivor.poll()}): {gauges}"
    )


def committed_offsets(app: App, scope: Scope) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": scope.bootstrap_servers, "group.id": worker_group(scope.topic_prefix)}
    )
    try:
        topic = task_topic(scope.topic_prefix, "default")
        tps = consumer.committed([TopicPartition(topic, p) for p in range(12)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


def end_offsets(scope: Scope) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": scope.bootstrap_servers, "group.id": "ends"})
    try:
        topic = task_topic(scope.topic_prefix, "default")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(12)
        }
    finally:
        consumer.close()


def test_garbage_goes_to_the_dead_letter_topic_and_the_worker_goes_on(
    app: App, scope: Scope
) -> None:
    topic = task_topic(scope.topic_prefix, "default")
    producer = Producer({"bootstrap.servers": scope.bootstrap_servers})
    garbage = [b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"unknown fingerprint", b""]
    for i, value in enumerate(garbage):
        producer.produce(topic, value, key=f"junk-{i}")
    # A well-formed envelope for a task this worker does not define.
    unknown = app.tasks["itest.add"].event(app.tasks["itest.add"].encode_args((1, 2), {}))
    unknown.task = "itest.nope"
    producer.produce(topic, app.envelopes.encode_task(unknown), key="junk-3")
    # A well-formed envelope whose arguments are not the task's.
    wrong = app.tasks["itest.add"].event(app.tasks["itest.fail"].encode_args(("x",), {}))
    producer.produce(topic, app.envelopes.encode_task(wrong), key="junk-4")
    producer.flush(10)
    good = app.tasks["itest.add"].delay(20, 22)

    with running(Materializer(app)), running(Worker(app)):
        assert good.get(timeout=60) == 42
        letters = read_topic(scope, dead_letter_topic(scope.topic_prefix), 5)
    reasons = {
        (m.key() or b"").decode(): headers_of(m)["taskstream.reason"].decode() for m in letters
    }
    assert reasons == {
        "junk-0": "undecodable",
        "junk-1": "unknown-schema",
        "junk-2": "undecodable",
        "junk-3": "unknown-task",
        "junk-4": "invalid-arguments",
    }
    first = next(m for m in letters if m.key() == b"junk-0")
    headers = headers_of(first)
    assert first.value() == b"not avro at all"
    assert headers["taskstream.topic"].decode() == topic
    assert int(headers["taskstream.offset"]) >= 0
    assert headers["taskstream.error"]


def test_four_worker_processes_get_three_partitions_each(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    ports = [free_port() for _ in range(4)]
    processes += [spawn_worker(scope, "--metrics-port", str(port)) for port in ports]
    wait_until(
        lambda: [assigned_partitions(port) for port in ports] == [6, 6, 6, 6],
        90,
        "an even spread of 24 partitions (the queue's 12, its high band's 12) over 4 workers",
    )


def test_sigusr1_prints_every_threads_traceback_and_the_worker_goes_on(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "worker", APP_SPEC, "--metrics-port", str(port)],
        env=scope.env(),
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    processes.append(worker)
    wait_until(lambda: assigned_partitions(port) == 24, 90, "the worker's 24 partitions (2 bands)")
    worker.send_signal(signal.SIGUSR1)
    with running(Materializer(app)):
        assert app.tasks["itest.add"].delay(2, 3).get(timeout=60) == 5, "it runs on after it"
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0
    dump = stderr.decode()
    assert "most recent call first" in dump
    assert "in run" in dump and "runtime.py" in dump, "the consumer loop's thread is in the dump"
