"""The worker's handler on the stub broker: each record's decision (run, delay tier, revoked,
expired, unknown task, dead letter, lost), where it ends up, backpressure and revoke."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Message, TopicPartition

from taskstream import App, AsyncResult, clock
from taskstream.consumer.dead_letter import Reason
from taskstream.consumer.dispatch import DeadLetter, Delay, Lost, Revoked, UnknownTask
from taskstream.consumer.handler import OwnershipOpener, TaskHandler
from taskstream.consumer.instrumentation import WorkerHooks
from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.ownership import (
    OWN,
    RELEASE,
    JournalReader,
    Ownership,
    OwnershipJournal,
    PartitionState,
    UncountedOwnership,
    journal_key,
)
from taskstream.consumer.record import Record
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.run import EXPIRED, REVOKED, Outcome, Run
from taskstream.consumer.time_limits import Watchdog
from taskstream.envelope import TaskEvent, now_micros
from taskstream.kafka.clients import consumer_config, producer_config
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.topics import (
    dead_letter_topic,
    delay_tier,
    delay_topic,
    ownership_topic,
    results_topic,
    task_topic,
)
from taskstream.testing.stub_broker import StubBroker

PREFIX = "wh"
TASKS = task_topic(PREFIX, "default")
GATE = threading.Event()  # unit.gated waits for it
MADE: list[TaskHandler] = []  # their executors' threads end with the test


@pytest.fixture
def app() -> Iterator[App]:
    yield from made_app(partitions=1)


@pytest.fixture
def app2() -> Iterator[App]:
    """The app with two partitions per topic."""
    yield from made_app(partitions=2)


def made_app(partitions: int) -> Iterator[App]:
    app = App("wh", bootstrap_servers="stub:9092", topic_prefix=PREFIX, partitions=partitions)

    @app.task(name="wh.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="wh.gated")
    def gated() -> int:
        assert GATE.wait(10)
        return 1

    app.broker = StubBroker(clock=clock.now)
    app.ensure_topics()
    GATE.clear()
    try:
        yield app
    finally:
        GATE.set()
        while MADE:
            MADE.pop().executor.shutdown()
        app.close()
        clock.reset()


class Hooks(WorkerHooks):
    """What the handler reported."""

    def __init__(self) -> None:
        self.revokes: list[tuple[str, str]] = []
        self.dead: list[str] = []
        self.outcomes: list[Outcome] = []
        self.partitions: list[tuple[str, int, list[tuple[str, int]]]] = []

    def revoked(self, task: str, reason: str) -> None:
        self.revokes.append((task, reason))

    def dead_lettered(self, reason: str) -> None:
        self.dead.append(reason)

    def outcome(self, run: Run, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def partitions_changed(self, event: str, assigned: int, gone: list[tuple[str, int]]) -> None:
        self.partitions.append((event, assigned, gone))


def handler(
    app: App,
    *,
    max_in_flight: int = 10,
    ownership: OwnershipOpener | None = None,
    **settings: object,
) -> TaskHandler:
    s = app.settings.replace(**settings)
    broker = app.broker
    return made(TaskHandler(
        app, s, broker.consumer(consumer_config(s, "wh.workers")),
        EventProducer(producer_config(s), broker=broker), hooks=Hooks(),
        revocations=Revocations(), watchdog=Watchdog(), worker_id="host:1", concurrency=2,
        max_in_flight=max_in_flight, message_max_bytes=1_000_000, ownership=ownership,
    ))  # fmt: skip


def made(h: TaskHandler) -> TaskHandler:
    MADE.append(h)
    return h


def hooks(h: TaskHandler) -> Hooks:
    assert isinstance(h.hooks, Hooks)
    return h.hooks


def settle(h: TaskHandler) -> None:
    """Serve delivery reports until every record's outcome is acknowledged."""
    deadline = time.monotonic() + 10
    while h.in_flight and time.monotonic() < deadline:
        h.serve(0.01)
    assert h.in_flight == 0


def tasks(app: App) -> list[Message]:
    assert isinstance(app.broker, StubBroker)
    return app.broker.records(TASKS)


def record(app: App, index: int = -1) -> Record:
    return Record(tasks(app)[index], OffsetTracker())


def results(app: App) -> list[tuple[str, str]]:
    assert isinstance(app.broker, StubBroker)
    found = [app.envelopes.decode_result(m.value() or b"") for m in app.broker.records(
        results_topic(PREFIX))]  # fmt: skip
    return [(r.id, r.status.value) for r in found]


def raw(app: App, value: bytes) -> None:
    producer = app.broker.producer({"bootstrap.servers": "stub"})
    producer.produce(TASKS, value)
    producer.flush(1)


def test_a_due_task_is_run_and_its_offset_becomes_committable(app: App) -> None:
    result = app.tasks["wh.add"].delay(2, 3)
    h = handler(app)
    decision = h.dispatcher.decide(record(app), None)
    assert isinstance(decision, Run) and decision.kwargs == {"a": 2, "b": 3}
    h.records(tasks(app))
    settle(h)
    assert results(app) == [(result.id, "SUCCESS")]
    assert h.tracker.partitions[(TASKS, 0)].committable() == 1


def test_a_task_not_due_goes_unchanged_to_its_delay_tier_and_runs_once_due(app: App) -> None:
    result = app.tasks["wh.add"].apply_async((1, 1), countdown=30)
    h = handler(app)
    assert h.dispatcher.decide(record(app), None) == Delay(delay_topic(PREFIX, delay_tier(30)))
    h.records(tasks(app))
    settle(h)
    assert isinstance(app.broker, StubBroker)
    (forwarded,) = app.broker.records(delay_topic(PREFIX, 10))
    assert forwarded.value() == tasks(app)[0].value()
    assert results(app) == []  # not run, nothing said
    assert h.tracker.partitions[(TASKS, 0)].committable() == 1  # forwarded: done here
    clock.advance(30)
    due = h.dispatcher.decide(Record(forwarded, OffsetTracker()), None)
    assert isinstance(due, Run) and due.event.id == result.id  # due now: runs


def test_a_revoked_task_is_never_run_and_reads_revoked(app: App) -> None:
    result = app.tasks["wh.add"].delay(1, 2)
    h = handler(app)
    h.dispatcher._revocations.add(result.id, now_micros())
    decision = h.dispatcher.decide(record(app), None)
    assert isinstance(decision, Revoked) and (decision.task, decision.why) == ("wh.add", REVOKED)
    h.records(tasks(app))
    settle(h)
    assert results(app) == [(result.id, "REVOKED")]
    assert hooks(h).revokes == [("wh.add", REVOKED)]
    assert hooks(h).outcomes == []  # never ran


def test_a_task_past_its_expiry_is_revoked_as_expired(app: App) -> None:
    result = app.tasks["wh.add"].apply_async((1, 2), expires=10)
    h = handler(app)
    assert isinstance(h.dispatcher.decide(record(app), None), Run)  # not yet
    clock.advance(11)
    decision = h.dispatcher.decide(record(app), None)
    assert isinstance(decision, Revoked) and decision.why == EXPIRED
    h.records(tasks(app))
    settle(h)
    assert results(app) == [(result.id, "REVOKED")]
    assert hooks(h).revokes == [("wh.add", EXPIRED)]


def test_a_task_the_app_does_not_define_fails_and_is_dead_lettered(app: App) -> None:
    other = App("other", bootstrap_servers="stub:9092", topic_prefix=PREFIX, partitions=1)

    @other.task(name="other.only_here")
    def only_here() -> int:
        return 1

    other.broker = app.broker
    try:
        result = only_here.delay()
    finally:
        other.close()
    h = handler(app)
    assert isinstance(h.dispatcher.decide(record(app), None), UnknownTask)
    h.records(tasks(app))
    settle(h)
    assert results(app) == [(result.id, "FAILURE")]
    assert hooks(h).dead == [Reason.UNKNOWN_TASK.value]
    assert isinstance(app.broker, StubBroker)
    (letter,) = app.broker.records(dead_letter_topic(PREFIX))
    assert letter.value() == tasks(app)[0].value()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not avro at all", Reason.UNDECODABLE),
        (b"\xc3\x01" + bytes(8) + b"\x00", Reason.UNKNOWN_SCHEMA),  # a fingerprint no one has
    ],
)
def test_a_record_that_is_no_task_event_is_dead_lettered(
    app: App, value: bytes, reason: Reason
) -> None:
    raw(app, value)
    h = handler(app)
    decision = h.dispatcher.decide(record(app), None)
    assert isinstance(decision, DeadLetter) and decision.reason == reason
    h.records(tasks(app))
    settle(h)
    assert hooks(h).dead == [reason.value]
    assert results(app) == []
    assert isinstance(app.broker, StubBroker)
    (letter,) = app.broker.records(dead_letter_topic(PREFIX))
    assert letter.value() == value


def test_arguments_that_break_the_tasks_schema_are_dead_lettered(app: App) -> None:
    now = now_micros()
    event = TaskEvent("id-1", "wh.add", "default", None, 1, now, None, b"\x00\x01junk")
    raw(app, app.envelopes.encode_task(event))
    h = handler(app)
    decision = h.dispatcher.decide(record(app), None)
    assert isinstance(decision, DeadLetter)
    assert (decision.reason, decision.task) == (Reason.INVALID_ARGUMENTS, "wh.add")


def test_a_task_that_took_too_many_workers_down_is_dead_lettered_not_run(app: App) -> None:
    result = app.tasks["wh.add"].delay(1, 2)
    admitted: list[Callable[[Message, int | None], None]] = []

    class Holding(UncountedOwnership):
        """Holds every record, as the journal holds one whose last runs were lost."""

        def admit(self, message: Message) -> bool:
            return False

    def opener(
        _high: object, admit: Callable[[Message, int | None], None], _skip: object
    ) -> Ownership:
        admitted.append(admit)
        return Holding()

    h = handler(app, worker_lost_max_deliveries=3, ownership=opener)
    assert isinstance(h.dispatcher.decide(record(app), 2), Run)  # a careful run
    decision = h.dispatcher.decide(record(app), 3)
    assert isinstance(decision, Lost) and decision.outcome.reason == Reason.WORKER_LOST
    h.records(tasks(app))
    assert h.in_flight == 1 and results(app) == []  # held by the journal
    admitted[0](tasks(app)[0], 3)  # the journal learnt it took 3 workers down
    settle(h)
    assert results(app) == [(result.id, "FAILURE")]
    assert [o.reason for o in hooks(h).outcomes] == [Reason.WORKER_LOST]
    assert isinstance(app.broker, StubBroker)
    assert len(app.broker.records(dead_letter_topic(PREFIX))) == 1


def test_the_room_left_shrinks_with_the_records_in_flight_and_comes_back(app: App) -> None:
    for _ in range(3):
        app.tasks["wh.gated"].delay()
    h = handler(app, max_in_flight=4)
    assert (h.room(), h.busy()) == (4, False)
    h.records(tasks(app))
    assert (h.room(), h.busy()) == (1, True)  # runs wait on the gate: still in flight
    GATE.set()
    settle(h)
    assert (h.room(), h.busy()) == (4, False)
    assert [status for _id, status in results(app)] == ["SUCCESS"] * 3


def test_a_revoked_partition_is_handed_over_once_its_runs_are_done(app: App) -> None:
    result = app.tasks["wh.gated"].delay()

    class Probe(TaskHandler):
        def serve(self, timeout: float) -> None:
            GATE.set()  # the revoke waits, serving reports: now let the run end
            super().serve(timeout)

    s = app.settings
    h = made(Probe(
        app, s, app.broker.consumer(consumer_config(s, "wh.workers")),
        EventProducer(producer_config(s), broker=app.broker), hooks=Hooks(),
        revocations=Revocations(), watchdog=Watchdog(), worker_id="host:1", concurrency=2,
        max_in_flight=10, message_max_bytes=1_000_000,
    ))  # fmt: skip
    h.records(tasks(app))
    assert h.in_flight == 1 and not GATE.is_set()
    h.revoked([TopicPartition(TASKS, 0)], lost=False)
    assert h.in_flight == 0
    assert results(app) == [(result.id, "SUCCESS")]  # its outcome published before hand-over
    assert h.tracker.partitions[(TASKS, 0)].committable() == 1  # what the runtime commits next
    assert hooks(h).partitions == [("revoke", 0, [(TASKS, 0)])]


def careful_first(app: App) -> tuple[TaskHandler, int, AsyncResult[int]]:
    """A handler that counts lost deliveries, running a partition whose previous owner died
    running its first record alone (a gated task): that record runs carefully here, alone.
    Returns the handler, that partition, and the gated task's result."""
    assert isinstance(app.broker, StubBroker)
    broker, s = app.broker, app.settings
    gated = app.tasks["wh.gated"].apply_async(key="careful")
    (first,) = tasks(app)
    partition = first.partition() or 0
    journal = ownership_topic(PREFIX)
    dead = PartitionState("gone:1", "t0", OWN, careful_until=1, running=0, window=10)
    writer = broker.producer({"bootstrap.servers": "stub"})
    writer.produce(journal, dead.encode(), journal_key(TASKS, partition))
    writer.flush(1)
    producer = EventProducer(producer_config(s), broker=broker)

    def opener(
        high: Callable[[str, int], int | None],
        dispatch: Callable[[Message, int | None], None],
        skip: Callable[[Message], None],
    ) -> Ownership:
        reader = broker.consumer({"group.id": "wh.journal", "enable.auto.commit": False})
        return OwnershipJournal(
            JournalReader(reader, journal, s.partitions), producer, "host:1", 10, dispatch,
            high, skip=skip, lease_s=60,
        )  # fmt: skip

    h = made(TaskHandler(
        app, s, broker.consumer(consumer_config(s, "wh.workers")), producer, hooks=Hooks(),
        revocations=Revocations(), watchdog=Watchdog(), worker_id="host:1", concurrency=2,
        max_in_flight=10, message_max_bytes=1_000_000, ownership=opener,
    ))  # fmt: skip
    h.assigned([TopicPartition(TASKS, 0), TopicPartition(TASKS, 1)])
    h.records(tasks(app))
    deadline = time.monotonic() + 10
    while running(h) == 0 and time.monotonic() < deadline:
        h.serve(0.01)  # the claims are read back, then the careful run starts
    assert (running(h), h.in_flight) == (1, 1) and results(app) == []
    return h, partition, gated


def running(h: TaskHandler) -> int:
    """Records in flight that run (those the journal holds do not)."""
    return h.in_flight - h.ownership.held(TASKS, 0) - h.ownership.held(TASKS, 1)


def test_records_fetched_while_a_careful_run_runs_wait_for_it_then_run(app2: App) -> None:
    h, partition, gated = careful_first(app2)
    sent = [app2.tasks["wh.add"].apply_async((i, i), key=f"k{i}") for i in range(6)]
    h.records([m for m in tasks(app2) if (m.partition(), m.offset()) != (partition, 0)])
    for _ in range(5):
        h.serve(0.01)
    assert h.in_flight == 7 and running(h) == 1, "the others wait, counted in flight"
    assert results(app2) == []
    GATE.set()
    settle(h)  # in flight falls to exactly 0
    assert hooks(h).outcomes[0].result.id == gated.id, "the careful run ended first"
    assert sorted(results(app2)) == sorted((r.id, "SUCCESS") for r in [gated, *sent])
    assert h.ownership.held(TASKS, 0) == h.ownership.held(TASKS, 1) == 0


def test_a_partition_revoked_while_its_records_wait_takes_them_out_of_flight(app2: App) -> None:
    h, partition, gated = careful_first(app2)
    other = 1 - partition
    for i in range(6):
        app2.tasks["wh.add"].apply_async((i, i), key=f"k{i}")
    assert isinstance(app2.broker, StubBroker)
    waiting = app2.broker.records(TASKS, other)
    assert waiting, "keys k0..k5 reach both partitions"
    h.records(waiting)
    assert h.in_flight == 1 + len(waiting) and running(h) == 1
    h.revoked([TopicPartition(TASKS, other)], lost=False)  # nothing of it runs: no wait
    assert h.in_flight == 1, "never run here: the next owner runs them"
    key = journal_key(TASKS, other).encode()
    written = [m for m in app2.broker.records(ownership_topic(PREFIX)) if m.key() == key]
    release = PartitionState.decode(written[-1].value() or b"")
    assert (release.state, release.handed) == (RELEASE, {}), "none of them named as running"
    GATE.set()
    settle(h)
    assert results(app2) == [(gated.id, "SUCCESS")]
    assert hooks(h).partitions[-1] == ("revoke", 1, [(TASKS, other)])
