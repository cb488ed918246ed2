"""Shared queues on the stub broker's share groups: each record acknowledged once its
outcome is durable, the broker's delivery count as crash counting, records delivered again
run last and alone, the group set up from the tasks' time limits, and the whole worker
through taskstream.testing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import taskstream.testing
from taskstream import App, Retry, chain, clock
from taskstream.consumer.instrumentation import WorkerHooks
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.share_runtime import ShareLane
from taskstream.consumer.shared import SharedTaskHandler, configure_share_groups
from taskstream.consumer.time_limits import Watchdog
from taskstream.kafka.clients import producer_config
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.share_groups import SharedQueueError, ShareGroupConfig, share_consumer_config
from taskstream.kafka.topics import dead_letter_topic, results_topic, task_topic
from taskstream.task import Task
from taskstream.testing.stub_broker import StubBroker
from taskstream.testing.stub_share import RecordState, StubShareConsumer

PREFIX = "sq"
JOBS = task_topic(PREFIX, "jobs")
GROUP = "sq.workers.shared"
RAN: list[int] = []  # what sq.note ran, in order
GATE = threading.Event()  # sq.gated waits for it


@pytest.fixture
def app() -> Iterator[App]:
    app = App(
        "sq", bootstrap_servers="stub:9092", topic_prefix=PREFIX, partitions=1,
        shared_queues=["jobs"], worker_lost_max_deliveries=2,
    )  # fmt: skip

    @app.task(name="sq.add", queue="jobs", time_limit=5)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="sq.gated", queue="jobs", time_limit=5)
    def gated() -> int:
        assert GATE.wait(10)
        return 1

    @app.task(name="sq.note", queue="jobs", time_limit=5)
    def note(i: int) -> int:
        RAN.append(i)
        return i

    app.broker = StubBroker(clock=clock.now)
    app.ensure_topics()
    RAN.clear()
    GATE.clear()
    yield app
    GATE.set()
    app.close()
    clock.reset()


def stub(app: App) -> StubBroker:
    assert isinstance(app.broker, StubBroker)
    return app.broker


def shared_handler(app: App) -> SharedTaskHandler:
    s = app.settings
    configure_share_groups(app, [GROUP], ["jobs"])
    lane = ShareLane(app.broker.share_consumer(share_consumer_config(s, GROUP)), [JOBS])
    h = SharedTaskHandler(
        app, s, [lane], EventProducer(producer_config(s), broker=app.broker),
        hooks=WorkerHooks(), revocations=Revocations(), watchdog=Watchdog(),
        worker_id="host:1", concurrency=2, max_in_flight=10, message_max_bytes=1_000_000,
    )  # fmt: skip
    h.runtime.subscribe([JOBS])
    return h


def turn_until_done(app: App, h: SharedTaskHandler, records: int) -> None:
    """Loop turns until ``records`` records ended in the group (acknowledged or archived)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        h.share_runtime.turn()
        state = stub(app).share_group_state(GROUP)
        if not h.in_flight and state.acknowledged + state.archived >= records:
            return
    raise AssertionError(f"{h.describe()}: {state}")


def crash_holding_all(app: App) -> None:
    """Another member acquires every available record, dies, and its locks expire."""
    member = stub(app).share_consumer({"group.id": GROUP, "share.acknowledgement.mode": "explicit"})
    assert isinstance(member, StubShareConsumer)
    member.subscribe([JOBS])
    assert len(member.poll(1.0).records()) > 0
    member.crash()
    clock.advance(ShareGroupConfig.plan(app.settings, 5).lock_ms / 1000 + 1)


def statuses(app: App) -> dict[str, tuple[str, str | None]]:
    found = [app.envelopes.decode_result(m.value() or b"") for m in stub(app).records(
        results_topic(PREFIX))]  # fmt: skip
    return {r.id: (r.status.value, r.error.type if r.error else None) for r in found}


def test_a_record_is_accepted_only_once_its_outcome_is_acknowledged(app: App) -> None:
    result = app.tasks["sq.gated"].delay()
    app.publisher.flush(1)
    h = shared_handler(app)
    runtime = h.share_runtime
    while not h.in_flight:
        runtime.turn()
    runtime.turn()
    state = stub(app).share_group_state(GROUP)
    assert state.acquired == 1 and state.accepted == 0  # running: held
    GATE.set()
    turn_until_done(app, h, 1)
    assert stub(app).share_group_state(GROUP).acknowledged == 1
    assert statuses(app)[result.id] == ("SUCCESS", None)
    h.executor.shutdown()


def test_a_record_at_the_delivery_limit_is_not_run_but_fails_worker_lost(app: App) -> None:
    # worker_lost_max_deliveries=2: the group's limit is 3, its third delivery is not run.
    result = app.tasks["sq.note"].delay(7)
    app.publisher.flush(1)
    configure_share_groups(app, [GROUP], ["jobs"])
    crash_holding_all(app)
    crash_holding_all(app)
    h = shared_handler(app)
    turn_until_done(app, h, 1)
    assert RAN == []
    assert statuses(app)[result.id] == ("FAILURE", "WorkerLost")
    assert len(stub(app).records(dead_letter_topic(PREFIX))) == 1
    state = stub(app).share_group_state(GROUP)
    assert state.rejected == 1 and state.records[(JOBS, 0, 0)].state is RecordState.ARCHIVED


def test_records_delivered_again_run_after_the_fresh_ones_and_alone(app: App) -> None:
    note = app.tasks["sq.note"]
    for i in range(3):
        note.delay(i)
    app.publisher.flush(1)
    configure_share_groups(app, [GROUP], ["jobs"])
    crash_holding_all(app)  # records 0-2 come back with a second delivery
    for i in range(3, 6):
        note.delay(i)
    app.publisher.flush(1)
    h = shared_handler(app)
    turn_until_done(app, h, 6)
    assert RAN[:3] == [3, 4, 5] and sorted(RAN[3:]) == [0, 1, 2]
    assert stub(app).share_group_state(GROUP).acknowledged == 6


def test_the_group_lock_covers_the_longest_time_limit_and_its_outcome(app: App) -> None:
    @app.task(name="sq.slow", queue="jobs", time_limit=40)
    def slow() -> None: ...

    config = configure_share_groups(app, [GROUP], ["jobs"])
    assert config == ShareGroupConfig(lock_ms=45_000, delivery_limit=3)
    assert ShareGroupConfig.plan(app.settings.replace(worker_lost_max_deliveries=0), 1) == (
        ShareGroupConfig(lock_ms=15_000, delivery_limit=None)
    )


def test_a_task_that_could_outlive_the_lock_is_refused_naming_it(app: App) -> None:
    @app.task(name="sq.slower", queue="jobs", time_limit=120)
    def slower() -> None: ...

    with pytest.raises(SharedQueueError) as caught:
        configure_share_groups(app, [GROUP], ["jobs"])
    text = str(caught.value)
    assert "'sq.slower'" in text and "time_limit=120" in text and "125000 ms" in text
    assert "15000 to 60000" in text  # the broker's bounds, in its own words


def test_a_task_without_a_time_limit_is_refused_on_a_shared_queue(app: App) -> None:
    @app.task(name="sq.endless", queue="jobs")
    def endless() -> None: ...

    with pytest.raises(SharedQueueError, match=r"sq\.endless of shared queue\(s\) jobs have no"):
        configure_share_groups(app, [GROUP], ["jobs"])


def test_exactly_once_cannot_serve_shared_queues() -> None:
    with pytest.raises(Exception, match="cannot serve shared queues"):
        App("x", shared_queues="jobs", processing_guarantee="exactly-once")


def test_shared_queues_setting_takes_a_list_or_comma_separated_text() -> None:
    assert App("x", shared_queues="a, b,").settings.shared == {"a", "b"}
    assert App("x", shared_queues=["a", "b"]).settings.shared == {"a", "b"}
    assert App("x").settings.shared == frozenset()


def test_the_whole_worker_serves_shared_and_ordered_queues(app: App) -> None:
    @app.task(name="sq.flaky", queue="jobs", time_limit=5, bind=True, max_retries=2)
    def flaky(self: Task[..., Any], n: int) -> int:
        if not RAN:
            RAN.append(n)
            raise Retry(countdown=30)
        return n

    @app.task(name="sq.ordered")
    def ordered(a: int) -> int:
        return a * 10

    add = app.tasks["sq.add"]
    with taskstream.testing.run(app, concurrency=2) as s:
        assert add.delay(2, 3).get(timeout=5) == 5
        assert ordered.delay(4).get(timeout=5) == 40
        assert chain(add.s(1, 1), add.s(10)).delay().get(timeout=5) == 12
        retried = app.tasks["sq.flaky"].delay(9)
        s.join()
        s.advance(31)  # the retry's countdown: through the delay tiers, back to the queue
        assert retried.get(timeout=5) == 9
        s.join()
        state = s.broker.share_group_state(s.worker.share_groups[1])
        assert state.acknowledged == state.accepted and state.rejected == 0
