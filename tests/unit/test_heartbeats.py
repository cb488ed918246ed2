"""Heartbeats: a worker on the stub broker beats, the directory sees it online, running,
counting and lagging; a clean stop says offline; silence past a few beats is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import taskstream.testing
from taskstream import App, clock
from taskstream.consumer.heartbeat import COUNTERS, Heartbeat, Lag, counts
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.topics import heartbeats_topic, topic_specs
from taskstream.testing.stub_broker import StubBroker
from taskstream.worker_directory import (
    LOST,
    MISSED_BEATS,
    OFFLINE,
    ONLINE,
    WorkerDirectory,
    decode_beat,
    encode_beat,
    worker_state,
)

KEYS = {
    "worker_id", "hostname", "pid", "version", "queues", "partitions", "concurrency",
    "processing_guarantee",
    "running", "throttled", "counts", "lag", "state", "last_beat", "warnings",
}  # fmt: skip


@pytest.fixture
def app() -> Iterator[App]:
    app = App(
        "beats", bootstrap_servers="stub:9092", topic_prefix="beats", partitions=3,
        worker_heartbeat_s=0.05,
    )  # fmt: skip
    release = threading.Event()

    @app.task(name="beats.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="beats.hold")
    def hold(seconds: float) -> int:
        release.wait(seconds)
        return 1

    @app.task(name="beats.fail")
    def fail() -> int:
        raise ValueError("no")

    app.release = release  # type: ignore[attr-defined]
    yield app
    clock.reset()


def directory_of(app: App, broker: StubBroker) -> WorkerDirectory:
    directory = WorkerDirectory(app.settings, broker)
    assert directory.read_to_end(5)
    return directory


def wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_heartbeat_topic_is_compacted_keyed_by_worker_and_named_in_topics() -> None:
    specs = {s.name: s for s in topic_specs("ts", ["default"], 12, 3)}
    spec = specs[heartbeats_topic("ts")]
    assert spec.name == "ts.heartbeats"
    assert spec.config["cleanup.policy"] == "compact,delete"
    assert spec.partitions == 1


def test_a_running_worker_is_online_with_its_tasks_counts_partitions_and_lag(app: App) -> None:
    before = counts()  # the process's counters: other tests' workers counted too
    with taskstream.testing.run(app, concurrency=2) as stub:
        assert app.tasks["beats.add"].delay(2, 3).get(timeout=5) == 5
        with pytest.raises(Exception, match="no"):
            app.tasks["beats.fail"].delay().get(timeout=5)
        held = app.tasks["beats.hold"].delay(30)
        directory = WorkerDirectory(app.settings, app.broker)

        def running_seen() -> bool:
            directory.read_to_end(5)
            found = directory.workers_json()
            return len(found) == 1 and len(found[0]["running"]) == 1  # type: ignore[arg-type]

        wait_for(running_seen)
        (worker,) = directory.workers_json()
        assert set(worker) == KEYS
        assert worker["state"] == ONLINE
        assert worker["worker_id"] == stub.worker.worker_id
        assert worker["queues"] == ["default"]
        assert worker["concurrency"] == 2
        assert worker["processing_guarantee"] == "at-least-once"
        running: list[dict[str, Any]] = worker["running"]  # type: ignore[assignment]
        assert [(r["task_id"], r["task"]) for r in running] == [(held.id, "beats.hold")]
        assert abs(running[0]["started_at"] - clock.now()) < 30
        counted: dict[str, int] = worker["counts"]  # type: ignore[assignment]
        assert set(counted) == set(COUNTERS)
        added = {k: counted[k] - before[k] for k in ("started", "succeeded", "failed")}
        assert added == {"started": 3, "succeeded": 1, "failed": 1}
        # the queue's topic and its high band's (priorities)
        assert {p["topic"] for p in worker["partitions"]} == {  # type: ignore[attr-defined]
            "beats.tasks.default",
            "beats.tasks-high.default",
        }
        assert len(worker["partitions"]) == 6  # type: ignore[arg-type]
        lag = {(e["topic"], e["partition"]): e for e in worker["lag"]}  # type: ignore[attr-defined]
        assert len(lag) == 6
        assert all(set(e) == {"topic", "partition", "records", "seconds"} for e in lag.values())
        app.release.set()  # type: ignore[attr-defined]
        assert held.get(timeout=5) == 1
        stub.join()
        directory.close()
    directory = directory_of(app, stub.broker)
    (worker,) = directory.workers_json()
    assert worker["state"] == OFFLINE
    assert worker["running"] == []
    directory.close()


def test_a_worker_that_stops_beating_is_lost_after_a_few_missed_beats() -> None:
    beat = {"worker_id": "h:1", "state": ONLINE, "sent_at": 100.0, "interval": 2.0}
    assert worker_state(beat, 100.0 + 2.0 * MISSED_BEATS) == ONLINE
    assert worker_state(beat, 100.0 + 2.0 * MISSED_BEATS + 1.5) == LOST
    assert worker_state({**beat, "state": OFFLINE}, 10_000.0) == OFFLINE


def test_the_directory_reads_beats_from_the_beginning_and_tails_new_ones(app: App) -> None:
    broker = StubBroker()
    app.broker = broker
    app.ensure_topics()
    producer = EventProducer({}, broker=broker)
    now = [1000.0]
    topic = heartbeats_topic("beats")
    lag = Lag({("beats.tasks.default", 0): 7}, {("beats.tasks.default", 0): 1.5})

    def heartbeat(worker: str, partitions: list[tuple[str, int]]) -> Heartbeat:
        identity = Heartbeat.identity(worker, ["default"], 1)
        return Heartbeat(
            producer, topic, identity, partitions=lambda: partitions, runs=lambda: [],
            lag=lambda: lag, interval=1.0, now=lambda: now[0],
        )  # fmt: skip

    first = heartbeat("a:1", [("beats.tasks.default", 0)])
    first.publish()
    producer.flush()
    directory = WorkerDirectory(app.settings, broker, now=lambda: now[0]).start()
    try:
        wait_for(lambda: len(directory.workers_json()) == 1)
        second = heartbeat("b:2", [])
        second.publish()
        producer.flush()
        wait_for(lambda: len(directory.workers_json()) == 2)
        now[0] += MISSED_BEATS + 2  # neither beats again
        second.publish()  # b beats: online; a stays silent: lost
        producer.flush()
        wait_for(lambda: {w["worker_id"]: w["state"] for w in directory.workers_json()}
                 == {"a:1": LOST, "b:2": ONLINE})  # fmt: skip
        a = directory.workers_json()[0]
        assert a["lag"] == [
            {"topic": "beats.tasks.default", "partition": 0, "records": 7, "seconds": 1.5}
        ]
    finally:
        directory.close()


def test_a_record_that_is_not_a_beat_is_skipped_and_a_tombstone_forgets(app: App) -> None:
    directory = WorkerDirectory(app.settings, StubBroker())
    directory.apply(b"x", b"not json")
    directory.apply(b"x", b'{"no": "id"}')
    assert directory.workers_json() == []
    directory.apply(b"a:1", encode_beat({"worker_id": "a:1", "sent_at": clock.now()}))
    assert [w["worker_id"] for w in directory.workers_json()] == ["a:1"]
    directory.apply(b"a:1", None)
    assert directory.workers_json() == []
    assert decode_beat(b"[]") is None
