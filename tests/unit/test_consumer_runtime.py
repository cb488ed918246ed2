"""The consumer runtime on the stub broker: commit on revoke, pause and resume under
backpressure, and the keeper that polls while a task holds the loop's thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message, TopicPartition

from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming
from taskstream.testing.stub_broker import StubBroker, StubConsumer

TOPIC, GROUP = "rt.tasks", "rt.group"
QUIET = dict(poll_s=0.01, busy_poll_s=0.001, commit_every_s=3600.0, idle_commit_s=3600.0)


class Recording(StubConsumer):
    """A stub consumer that notes its pauses and resumes, and on which thread."""

    def __init__(self, broker: StubBroker, config: dict[str, Any]) -> None:
        super().__init__(broker, config)
        self.calls: list[tuple[str, str]] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", threading.current_thread().name))
        super().pause(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", threading.current_thread().name))
        super().resume(partitions)


class Handler:
    """Takes up to ``space`` records and marks each done at once."""

    def __init__(self, tracker: OffsetTracker, broker: StubBroker, space: int = 100) -> None:
        self.tracker = tracker
        self.broker = broker
        self.space = space
        self.got: list[tuple[int, int]] = []  # (partition, offset)
        self.revokes: list[tuple[list[int], bool, list[int | None]]] = []
        self.on_record: Callable[[Message], None] = lambda m: None
        self.on_assign: Callable[[], None] = lambda: None

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self.on_assign()

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        ps = sorted(tp.partition for tp in partitions)
        committed = [self.broker.committed(GROUP, TOPIC, p) for p in ps]  # before the commit
        self.revokes.append((ps, lost, committed))

    def records(self, batch: list[Message]) -> None:
        for m in batch:
            partition, offset = m.partition() or 0, m.offset() or 0
            offsets = self.tracker.get(TOPIC, partition)
            offsets.add(offset)
            self.on_record(m)
            offsets.finish(offset)
            self.got.append((partition, offset))
            self.space -= 1

    def room(self) -> int:
        return self.space

    def serve(self, timeout: float) -> None:
        pass

    def busy(self) -> bool:
        return False

    def drain(self, grace: float) -> None:
        pass


def setup(partitions: int, records: int) -> StubBroker:
    broker = StubBroker()
    broker.create_topic(TOPIC, partitions)
    add(broker, records, partitions)
    return broker


def add(broker: StubBroker, records: int, partitions: int = 1) -> None:
    producer = broker.producer({"bootstrap.servers": "stub"})
    for i in range(records):
        producer.produce(TOPIC, b"r", partition=i % partitions)
    producer.flush(1)


def member(
    broker: StubBroker, space: int = 100, **timing: float
) -> tuple[ConsumerRuntime, Handler, Recording]:
    config = {
        "bootstrap.servers": "stub", "group.id": GROUP, "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }  # fmt: skip
    consumer = Recording(broker, config)
    tracker = OffsetTracker()
    handler = Handler(tracker, broker, space)
    chosen: dict[str, Any] = {**QUIET, **timing}
    loop_timing = LoopTiming(**chosen)
    runtime = ConsumerRuntime(consumer, handler, tracker, timing=loop_timing, capacity=10)
    runtime.subscribe([TOPIC])
    return runtime, handler, consumer


def turns(runtime: ConsumerRuntime, until: Callable[[], bool], at_most: int = 200) -> None:
    for _ in range(at_most):
        if until():
            return
        runtime.turn()
    assert until()


def test_revoked_partitions_are_committed_after_the_handler_let_them_go() -> None:
    broker = setup(partitions=2, records=4)
    first, handler, _ = member(broker)
    turns(first, lambda: len(handler.got) == 4)
    assert [broker.committed(GROUP, TOPIC, p) for p in (0, 1)] == [None, None]  # not due yet
    second, other, _ = member(broker)
    turns(first, lambda: bool(handler.revokes))
    # Not lost: the handler is told first (nothing committed yet), then what is done commits.
    assert handler.revokes == [([0, 1], False, [None, None])]
    assert [broker.committed(GROUP, TOPIC, p) for p in (0, 1)] == [2, 2]
    for _ in range(20):
        first.turn()
        second.turn()
    assert other.got == []  # the new owner starts at the commit: nothing runs twice


def test_a_full_handler_pauses_its_partitions_and_resumes_with_room() -> None:
    broker = setup(partitions=1, records=1)
    runtime, handler, consumer = member(broker, space=1, pause_after_s=0.0)
    turns(runtime, lambda: len(handler.got) == 1)
    assert handler.space == 0
    add(broker, 3)
    for _ in range(10):
        runtime.turn()
    assert len(handler.got) == 1  # full: nothing fetched while records wait
    assert [c for c, _ in consumer.calls] == ["pause"]
    handler.space = 2  # 20% of the capacity of 10: the resume mark
    turns(runtime, lambda: len(handler.got) == 3)
    assert [c for c, _ in consumer.calls] == ["pause", "resume"]


def test_a_partition_taken_away_while_paused_is_fetched_when_it_comes_back() -> None:
    """librdkafka keeps a partition's pause across unassign and assign: the runtime resumes
    what it lets go, or a partition paused for backpressure would never be fetched again."""
    broker = setup(partitions=2, records=2)
    first, handler, _ = member(broker, space=1, pause_after_s=0.0)
    turns(first, lambda: len(handler.got) == 1 and first.paused)  # full: both paused
    second, _, _ = member(broker)
    for _ in range(20):  # the group splits the partitions; the first keeps one, paused
        first.turn()
        second.turn()
    assert len(first.tracker.partitions) == 1 and len(second.tracker.partitions) == 1
    handler.space = 100
    turns(first, lambda: not first.paused)  # room again: its one partition resumes
    second.consumer.close()  # the other partition comes back to the first
    turns(first, lambda: len(first.tracker.partitions) == 2)
    add(broker, 10, partitions=2)
    fetched = len(handler.got)
    turns(first, lambda: len(handler.got) >= fetched + 10)
    assert {p for p, _ in handler.got[fetched:]} == {0, 1}


def test_a_full_handler_within_the_pause_delay_fetches_nothing_and_is_not_paused() -> None:
    broker = setup(partitions=1, records=1)
    runtime, handler, consumer = member(broker, space=1, pause_after_s=3600.0)
    turns(runtime, lambda: len(handler.got) == 1)
    add(broker, 2)
    for _ in range(10):
        runtime.turn()
    assert len(handler.got) == 1
    assert consumer.calls == []  # a short burst costs no pause (and no refetch)
    handler.space = 5
    turns(runtime, lambda: len(handler.got) == 3)


def test_the_keeper_polls_while_a_task_runs_on_the_loops_thread() -> None:
    broker = setup(partitions=1, records=1)
    runtime, handler, consumer = member(
        broker, keeper_after_s=0.0, keeper_every_s=0.001, pause_after_s=3600.0
    )
    kept_alive = threading.Event()
    seen: dict[str, object] = {}

    def keep_alive() -> None:  # the keeper polled the consumer, holding the loop's lock
        seen.setdefault("keeper", (threading.current_thread().name, runtime._lock.locked()))
        kept_alive.set()

    runtime._keep_alive = keep_alive

    def task() -> None:
        seen["task lock"] = runtime._lock.locked()  # released for the keeper
        seen["kept"] = kept_alive.wait(10)

    def on_record(_m: Message) -> None:
        runtime.run_unlocked(task)
        seen["after"] = runtime._lock.locked()  # the loop holds it again
        runtime.stop()

    def on_assign() -> None:  # inside poll(): run at once, the lock kept
        locked: list[bool] = []
        runtime.run_unlocked(lambda: locked.append(runtime._lock.locked()))
        seen["in rebalance"] = locked

    handler.on_record = on_record
    handler.on_assign = on_assign
    loop = threading.Thread(target=runtime.run, name="loop")
    loop.start()
    loop.join(10)
    assert not loop.is_alive()
    assert seen["in rebalance"] == [True]
    assert seen["kept"] is True
    assert seen["keeper"] == ("taskstream-keeper", True)
    assert seen["after"] is True
    # The keeper paused fetching while the task ran; the runtime's drain pauses on stop.
    assert consumer.calls[0] == ("pause", "taskstream-keeper")
    assert not runtime._lock.locked()  # released when run() returned
    assert consumer.closed
