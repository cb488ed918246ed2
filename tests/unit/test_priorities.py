"""Priorities (Celery's ``priority``, 0-9, higher first) on the stub broker: the option's
plumbing and checks, the band topics, the runtime's drain order and its pause reasons, the
executor's urgent lane, and a retry or a countdown that comes back to its band."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Message, TopicPartition

import taskstream.testing
from taskstream import App, Retry, current_request
from taskstream.avro.codec import Codec
from taskstream.canvas import chain, group
from taskstream.consumer.executor import Executor
from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming
from taskstream.envelope import Envelopes
from taskstream.errors import CanvasError, InvalidOption
from taskstream.kafka.topics import band_topics, event_topic, high_topic, task_topic, topic_specs
from taskstream.producer.http import create_app
from taskstream.task import TaskOptions
from taskstream.testing.stub_broker import StubBroker, StubConsumer
from tests.unit.http_fakes import fake_service

HIGH, LOW, GROUP = "p.tasks-high.q", "p.tasks.q", "p.workers"
QUIET = dict(poll_s=0.01, busy_poll_s=0.001, commit_every_s=3600.0, idle_commit_s=3600.0)


# -- names and topics --------------------------------------------------------------------------


def test_a_queue_has_a_high_band_topic_beside_its_own_created_with_its_partitions() -> None:
    assert band_topics("p", "q") == [HIGH, LOW]
    assert [event_topic("p", "q", p) for p in (None, 0, 4, 5, 9)] == [LOW, LOW, LOW, HIGH, HIGH]
    specs = {s.name: s.partitions for s in topic_specs("p", ["q"], 6, 1)}
    assert specs[HIGH] == specs[LOW] == 6
    assert high_topic("p", "q") != task_topic("p", "high.q")  # never another queue's topic


# -- the option --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [10, -1, True, "5", 5.0])
def test_a_priority_outside_0_to_9_is_refused_naming_the_option(bad: object) -> None:
    with pytest.raises(InvalidOption, match=r"priority.*0 \(lowest\) to 9 \(highest\)"):
        TaskOptions(priority=bad)  # type: ignore[arg-type]


@pytest.fixture
def app() -> Iterator[App]:
    app = App("prio", bootstrap_servers=None, topic_prefix="p", partitions=2)

    @app.task(name="prio.add", queue="q")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="prio.urgent", queue="q", priority=9)
    def urgent(a: int) -> int:
        return a

    @app.task(name="prio.flaky", queue="q", max_retries=2)
    def flaky(a: int) -> int:
        if current_request().attempt < 2:
            raise Retry(countdown=30)
        return a

    yield app
    app.close()


def priorities(broker: StubBroker, topic: str) -> list[int | None]:
    envelopes = Envelopes(Codec())
    return [envelopes.decode_task(m.value() or b"").priority for m in broker.records(topic)]


def test_apply_async_the_task_default_and_signatures_send_to_the_band(app: App) -> None:
    add, urgent = app.tasks["prio.add"], app.tasks["prio.urgent"]
    with taskstream.testing.run(app) as stub:
        assert add.apply_async((1, 2), priority=7).get(timeout=5) == 3
        assert add.apply_async((1, 2), priority=2).get(timeout=5) == 3
        assert urgent.delay(1).get(timeout=5) == 1  # @app.task(priority=9)
        assert urgent.apply_async((1,), priority=0).get(timeout=5) == 1  # the call's wins
        assert add.s(1, 1).set(priority=6).apply_async().get(timeout=5) == 2
        assert add.s(2, 2).apply_async(priority=8).get(timeout=5) == 4
        assert add.delay(0, 0).get(timeout=5) == 0
        stub.join()
        broker = stub.broker
        assert sorted(map(str, priorities(broker, HIGH))) == ["6", "7", "8", "9"]
        assert sorted(map(str, priorities(broker, LOW))) == ["0", "2", "None"]  # (any partition)


def test_workflow_members_keep_their_priority(app: App) -> None:
    add = app.tasks["prio.add"]
    with taskstream.testing.run(app) as stub:
        assert chain(add.s(1, 1), add.s(1).set(priority=9)).apply_async().get(timeout=5) == 3
        assert group(add.s(1, 1).set(priority=5), add.s(2, 2)).apply_async().get(timeout=5) == [
            2,
            4,
        ]
        stub.join()
        # (the chain's second step sent by the worker that ran the first)
        assert sorted(map(str, priorities(stub.broker, HIGH))) == ["5", "9"]


def test_signatures_and_workflows_check_the_priority(app: App) -> None:
    add = app.tasks["prio.add"]
    with pytest.raises(InvalidOption, match="priority"):
        add.s(1, 2).set(priority=12)
    with pytest.raises(InvalidOption, match="priority"):
        add.apply_async((1, 2), priority=-1)
    with pytest.raises(CanvasError, match="unknown signature options"):
        add.s(1, 2).set(priorty=1)


def test_a_retry_and_a_countdown_come_back_to_their_band(app: App) -> None:
    flaky, add = app.tasks["prio.flaky"], app.tasks["prio.add"]
    with taskstream.testing.run(app) as stub:
        retried = flaky.apply_async((5,), priority=9)
        later = add.apply_async((1, 1), priority=9, countdown=30)
        stub.join()
        stub.advance(30)
        stub.join()
        assert retried.get(timeout=5) == 5 and later.get(timeout=5) == 2
        broker = stub.broker
        # The first run, its retry back from its delay tier, the countdown's event as sent
        # and back from its delay tier: all in the high band, none in the queue's own topic.
        assert priorities(broker, HIGH) == [9, 9, 9, 9]
        assert priorities(broker, LOW) == []
        assert set(priorities(broker, "p.delay.10s")) == {9}  # the tier kept it


# -- HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_http_takes_a_priority_and_answers_422_naming_the_field() -> None:
    from examples.app import app as example_app

    service, publisher = fake_service(example_app)
    transport = httpx.ASGITransport(app=create_app(service))
    add = "/v1/tasks/examples.app.add"
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        ok = await client.post(add, json={"a": 1, "b": 2}, params={"priority": "7"})
        assert ok.status_code == 202, ok.text
        for bad in ("10", "x", "-1"):
            r = await client.post(add, json={"a": 1, "b": 2}, params={"priority": bad})
            assert r.status_code == 422, r.text
            assert (r.json()["error"]["code"], r.json()["error"]["path"]) == (
                "invalid_priority",
                "priority",
            )
        batch = await client.post(
            f"{add}:batch",
            json={"items": [{"args": {"a": 1, "b": 1}, "priority": 9}, {"args": {"a": 1, "b": 1}}]},
        )
        assert batch.status_code == 202, batch.text
        wrong = await client.post(
            f"{add}:batch", json={"items": [{"args": {"a": 1, "b": 1}, "priority": "9"}]}
        )
        assert (wrong.status_code, wrong.json()["error"]["path"]) == (422, "items[0].priority")
    assert [e.priority for e in publisher.events] == [7, 9, None]


# -- the runtime's drain order -------------------------------------------------------------


class Taker:
    """A handler that takes every record (up to ``space``) and marks it done at once."""

    def __init__(self, tracker: OffsetTracker, space: int = 1000) -> None:
        self.tracker = tracker
        self.space = space
        self.got: list[str] = []  # topics, in the order taken

    def assigned(self, partitions: list[TopicPartition]) -> None:
        pass

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        pass

    def records(self, batch: list[Message]) -> None:
        for m in batch:
            topic, partition, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
            offsets = self.tracker.get(topic, partition)
            offsets.add(offset)
            offsets.finish(offset)
            self.got.append(topic)
            self.space -= 1

    def room(self) -> int:
        return self.space

    def serve(self, timeout: float) -> None:
        pass

    def busy(self) -> bool:
        return False

    def drain(self, grace: float) -> None:
        pass


def band_broker() -> StubBroker:
    broker = StubBroker()
    broker.create_topic(HIGH, 2)
    broker.create_topic(LOW, 2)
    return broker


def produce(broker: StubBroker, topic: str, n: int) -> None:
    producer = broker.producer({"bootstrap.servers": "stub"})
    for i in range(n):
        producer.produce(topic, b"r", partition=i % 2)
    producer.flush(1)


def banded(
    broker: StubBroker, space: int = 1000, **timing: Any
) -> tuple[ConsumerRuntime, Taker, StubConsumer]:
    config = {
        "bootstrap.servers": "stub", "group.id": GROUP, "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }  # fmt: skip
    consumer = StubConsumer(broker, config)
    tracker = OffsetTracker()
    taker = Taker(tracker, space)
    chosen: dict[str, Any] = {**QUIET, "batch": 2, "band_check_s": 0.0, **timing}
    runtime = ConsumerRuntime(
        consumer, taker, tracker, timing=LoopTiming(**chosen), capacity=10, bands=[[HIGH, LOW]]
    )
    runtime.subscribe([HIGH, LOW])
    return runtime, taker, consumer


def turns(runtime: ConsumerRuntime, until: Any, at_most: int = 300) -> None:
    for _ in range(at_most):
        if until():
            return
        runtime.turn()
    assert until()


def paused(consumer: StubConsumer) -> set[tuple[str, int]]:
    return set(consumer._paused)


def assigned(runtime: ConsumerRuntime, n: int) -> None:
    turns(runtime, lambda: len(runtime.tracker.partitions) == n)


def test_high_records_sent_after_a_low_backlog_are_taken_before_the_rest_of_it() -> None:
    broker = band_broker()
    produce(broker, LOW, 20)
    runtime, taker, consumer = banded(broker)
    turns(runtime, lambda: len(taker.got) >= 2)  # the backlog is being read, 2 a turn
    taken = len(taker.got)
    produce(broker, HIGH, 6)
    runtime.turn()  # the high band has records waiting: the low band is held
    assert runtime.held == {(LOW, 0), (LOW, 1)}
    turns(runtime, lambda: taker.got.count(HIGH) == 6)
    # From the turn after the high records arrived, only they until all were taken.
    assert taker.got[taken : taken + 6] == [HIGH] * 6
    turns(runtime, lambda: taker.got.count(LOW) == 20)  # then the backlog goes on
    assert runtime.held == set() and paused(consumer) == set()


def test_nothing_waiting_in_the_high_band_holds_nothing() -> None:
    broker = band_broker()
    produce(broker, LOW, 10)
    runtime, taker, consumer = banded(broker)
    turns(runtime, lambda: len(taker.got) == 10)
    assert runtime.held == set() and paused(consumer) == set()


def test_a_backpressure_resume_leaves_the_held_band_paused() -> None:
    broker = band_broker()
    runtime, taker, consumer = banded(broker, space=2, pause_after_s=0.0)
    assigned(runtime, 4)
    produce(broker, LOW, 4)
    turns(runtime, lambda: runtime.paused)  # 2 taken, full: paused for backpressure
    produce(broker, HIGH, 4)
    runtime.turn()  # high records wait: the low band is held as well
    assert runtime.held == {(LOW, 0), (LOW, 1)}
    taker.space = 10  # room: the backpressure resume resumes the high band only
    runtime.turn()
    assert not runtime.paused
    assert paused(consumer) == {(LOW, 0), (LOW, 1)}
    turns(runtime, lambda: taker.got.count(HIGH) == 4)
    assert taker.got.count(LOW) == 2  # only what came before the high records
    turns(runtime, lambda: taker.got.count(LOW) == 4)


def test_a_band_resume_leaves_a_backpressure_pause_alone() -> None:
    broker = band_broker()
    runtime, _taker, consumer = banded(broker)
    assigned(runtime, 4)
    lows = {(LOW, 0), (LOW, 1)}
    runtime._hold(lows)  # a higher band waits
    runtime._set_paused(True)  # and the handler is full
    runtime._hold(set())  # the higher band is drained: the low band stays paused, full
    assert runtime.held == set() and paused(consumer) == lows | {(HIGH, 0), (HIGH, 1)}
    runtime._set_paused(False)  # room again: everything resumes
    assert paused(consumer) == set()


def test_a_member_reads_its_partitions_of_both_bands_and_resumes_the_held_it_lets_go() -> None:
    """librdkafka keeps a pause across unassign/assign: a held partition let go is resumed."""
    broker = band_broker()
    first, taker, consumer = banded(broker, pause_after_s=0.0)
    assigned(first, 4)
    taker.space = 0
    produce(broker, HIGH, 2)
    first.turn()
    assert first.held == {(LOW, 0), (LOW, 1)}
    second, _, _ = banded(broker)
    for _ in range(30):  # the group splits the partitions
        first.turn()
        second.turn()
    kept = set(first.tracker.partitions)
    # co-partitioned: the member given partition p of the queue's topic reads p of its high band
    assert {p for t, p in kept if t == HIGH} == {p for t, p in kept if t == LOW}
    assert len(kept) == 2 and len(second.tracker.partitions) == 2
    assert first.held <= kept and paused(consumer) <= kept


# -- the executor's urgent lane ----------------------------------------------------------------


class Job:
    is_async = False
    limited = False
    released = False
    urgent = False

    def __init__(self, name: str, ran: list[str], gate: threading.Event | None = None) -> None:
        self.key: str | None = None
        self.task_name, self.ran, self.gate = name, ran, gate

    def run(self) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        self.ran.append(self.task_name)

    async def run_async(self) -> None: ...


def test_an_urgent_job_runs_before_the_jobs_queued_before_it() -> None:
    executor = Executor(1)
    ran: list[str] = []
    gate = threading.Event()
    executor.submit(Job("blocker", ran, gate))
    for i in range(5):
        executor.submit(Job(f"low{i}", ran))
    executor.submit_urgent(Job("high", ran))
    gate.set()
    done = threading.Event()
    executor.submit(Job("last", ran, None))
    executor.submit(type("Done", (Job,), {"run": lambda self: done.set()})("done", ran))
    assert done.wait(5)
    executor.shutdown()
    assert ran[:2] == ["blocker", "high"]
    assert ran[2:] == ["low0", "low1", "low2", "low3", "low4", "last"]
