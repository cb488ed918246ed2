"""Lost deliveries: the journal attributes a worker's death to the record it ran, on the stub;
and partitions handed over with runs in progress wait for them."""

from __future__ import annotations

import time

from confluent_kafka import Message, TopicPartition

from taskstream.consumer.deliveries import (
    CLAIM,
    OWN,
    RELEASE,
    DeliveryJournal,
    PartitionState,
    takeover,
)
from taskstream.kafka import EventProducer
from taskstream.stub_broker import StubBroker

TASKS, JOURNAL = "t.tasks.default", "t.deliveries"


class Worker:
    """A journal with what a worker gives it; "dies" by being dropped without a release."""

    def __init__(
        self, broker: StubBroker, name: str, window: int = 1000, lease_s: float = 60.0
    ) -> None:
        self.broker = broker
        self.producer = EventProducer({"bootstrap.servers": "stub"}, broker=broker)
        reader = broker.consumer({"group.id": f"reader-{name}", "enable.auto.commit": False})
        self.reader = reader
        self.runs: list[tuple[int, int | None]] = []  # (offset, lost) handed to the worker
        self.skips: list[int] = []  # done by the previous owner: not run
        self.journal = DeliveryJournal(
            JOURNAL, reader, self.producer, name, window,
            lambda m, lost: self.runs.append((m.offset() or 0, lost)),
            lambda t, p: broker.end_offset(t, p),
            skip=lambda m: self.skips.append(m.offset() or 0), lease_s=lease_s,
        )  # fmt: skip
        self.journal.start(1)

    def take(self, records: list[Message]) -> None:
        self.journal.claim(TopicPartition(TASKS, 0))
        for message in records:
            if self.journal.admit(message):
                self.runs.append((message.offset() or 0, None))
        self.pump()

    def pump(self) -> None:
        for _ in range(4):
            self.journal.serve(lambda: True)
            self.producer.poll(0)


def setup(count: int, keys: str = "") -> tuple[StubBroker, list[Message]]:
    """``count`` records on key "k", or one per letter of ``keys`` on that key."""
    broker = StubBroker()
    broker.create_topic(TASKS, 1)
    broker.create_topic(JOURNAL, 1)
    add(broker, keys or "k" * count)
    return broker, broker.records(TASKS)


def add(broker: StubBroker, keys: str) -> list[Message]:
    producer = broker.producer({"bootstrap.servers": "stub"})
    before = len(broker.records(TASKS))
    for key in keys:
        producer.produce(TASKS, b"task", key.encode())
    producer.flush(1)
    return broker.records(TASKS)[before:]


def test_a_partition_handed_over_cleanly_runs_as_usual() -> None:
    broker, records = setup(3)
    first = Worker(broker, "a")
    first.take(records)
    assert first.runs == [(0, None), (1, None), (2, None)]
    first.journal.release(TASKS, 0)
    first.producer.flush(1)
    second = Worker(broker, "b")
    second.take(records)
    assert second.runs == [(0, None), (1, None), (2, None)]


def test_the_journal_is_read_only_while_a_claim_waits_and_on_from_where_it_stopped() -> None:
    broker, records = setup(2)
    a = Worker(broker, "a")
    read: list[int] = []  # journal offsets the reader fetched
    consume = a.reader.consume

    def counted(num_messages: int = 1, timeout: float = -1) -> list[Message]:
        batch = consume(num_messages, timeout)
        read.extend(m.offset() or 0 for m in batch)
        return batch

    a.reader.consume = counted  # type: ignore[method-assign]
    a.take(records)
    assert a.runs == [(0, None), (1, None)]
    assert a.reader.assignment() == [], "idle: no fetches"
    assert read == [0]  # its own claim
    a.journal.release(TASKS, 0)
    a.take(records[1:])  # the partition comes back to it
    assert a.reader.assignment() == []
    assert read == [0, 1, 2, 3], "the own state, the release and the new claim: not from 0 again"


def test_a_record_that_kills_three_workers_is_handed_over_with_three_lost_deliveries() -> None:
    broker, records = setup(3)
    Worker(broker, "a").take(records)  # runs all three as usual, then dies: no release
    suspects = Worker(broker, "b")
    suspects.take(records)
    # Careful: one record at a time, each durable first; 0 runs and "kills" b.
    assert suspects.runs == [(0, 0)]
    third = Worker(broker, "c")
    third.take(records)
    assert third.runs == [(0, 2)], "its recorded death plus the inferred first one"
    fourth = Worker(broker, "d")
    fourth.take(records)
    assert fourth.runs == [(0, 3)]  # the worker dead-letters it: WorkerLost
    fourth.journal.finished(TASKS, 0, 0)
    fourth.pump()
    assert fourth.runs == [(0, 3), (1, None), (2, None)], "then the rest as usual"
    assert not fourth.journal.isolating


def test_careful_runs_wait_until_nothing_else_runs() -> None:
    broker, records = setup(2)
    Worker(broker, "a").take(records)
    b = Worker(broker, "b")
    b.journal.claim(TopicPartition(TASKS, 0))
    for m in records:
        assert not b.journal.admit(m)
    for _ in range(4):
        b.journal.serve(lambda: False)  # a usual task still runs
        b.producer.poll(0)
    assert b.runs == [] and b.journal.isolating
    b.pump()
    assert b.runs == [(0, 0)]


def test_the_suspects_are_bounded_by_the_dead_owners_window() -> None:
    broker, records = setup(5)
    Worker(broker, "a", window=2).take(records)
    b = Worker(broker, "b")
    b.take(records)
    for offset in range(2):
        b.journal.finished(TASKS, 0, offset)
        b.pump()
    assert b.runs == [(0, 0), (1, 0), (2, None), (3, None), (4, None)]


def test_a_partition_handed_over_running_waits_for_its_runs_keys_only() -> None:
    # a ran A (0), B (1), A (2), C (3): B and C are done, 0 runs and 2 waits behind it (same
    # key) when the partition moves to b.
    broker, records = setup(0, "ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.release(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.producer.flush(1)
    b = Worker(broker, "b")
    b.take(records)
    assert b.skips == [1, 3], "done by a: not run again"
    assert b.runs == [], "A's records wait for a"
    for message in add(broker, "AD"):  # 4: A, behind a's runs; 5: D, another key
        assert not b.journal.admit(message)
    assert b.runs == [(5, None)], "another key runs at once"
    a.journal.finished(TASKS, 0, 0)  # a's run of 0 ends: its outcome is acknowledged
    a.producer.flush(1)
    b.pump()
    assert b.skips == [1, 3, 0] and b.runs == [(5, None)], "2 still runs at a"
    assert a.journal.handing
    a.journal.finished(TASKS, 0, 2)
    a.producer.flush(1)
    b.pump()
    assert not a.journal.handing
    assert b.skips == [1, 3, 0, 2]
    assert b.runs == [(5, None), (4, None)], "A's next record, after a's"
    assert b.journal.held() == 0 and not b.journal.isolating
    for message in add(broker, "A"):
        assert b.journal.admit(message), "then the partition runs as usual"


def test_a_partition_moved_twice_still_waits_for_the_first_owners_runs() -> None:
    broker, records = setup(0, "ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.release(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.producer.flush(1)
    b = Worker(broker, "b")
    b.take(records)
    assert b.skips == [1, 3]
    b.journal.release(TASKS, 0, None, [1, 3])  # moved on at once: b relays a's reports
    b.producer.flush(1)
    c = Worker(broker, "c")
    c.take(records)
    assert c.runs == [] and c.skips == [1, 3], "0 and 2 still run at a"
    for offset in (0, 2):
        a.journal.finished(TASKS, 0, offset)
        a.producer.flush(1)
        for _ in range(3):
            b.pump()
            c.pump()
    assert c.skips == [1, 3, 0, 2] and c.runs == []
    assert not a.journal.handing and not b.journal.handing


def test_runs_handed_over_by_a_worker_that_stops_run_at_the_new_owner() -> None:
    broker, records = setup(0, "ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.release(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.journal.close()  # stopping with 0 and 2 unfinished: abandoned
    a.producer.flush(1)
    b = Worker(broker, "b")
    b.take(records)
    b.pump()
    assert b.skips == [1, 3]
    assert b.runs == [(0, None), (2, None)]


def test_runs_handed_over_by_a_worker_that_died_run_carefully_after_the_lease() -> None:
    broker, records = setup(0, "ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.release(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.producer.flush(1)  # then a dies: no more reports
    b = Worker(broker, "b", lease_s=0.2)
    b.take(records)
    assert b.runs == []
    time.sleep(0.3)
    b.pump()
    assert b.runs == [(0, 0)], "a suspect: alone, recorded first"
    b.journal.finished(TASKS, 0, 0)
    b.pump()
    assert b.runs == [(0, 0), (2, 0)]
    b.journal.finished(TASKS, 0, 2)
    b.pump()
    assert not b.journal.isolating


def test_takeover_rules() -> None:
    clean = PartitionState("a", "t1", RELEASE)
    assert takeover(None, "b", "t2", 10) == PartitionState("b", "t2", OWN, window=10)
    assert takeover(clean, "b", "t2", 10).careful_until is None
    died_running = PartitionState("a", "t1", OWN, 9, True, 7, {7: 1})
    state = takeover(died_running, "b", "t2", 10)
    assert (state.lost, state.careful_until, state.inferred) == ({7: 3}, 8, False)
    died = PartitionState("a", "t1", OWN, window=50)
    state = takeover(died, "b", "t2", 10)
    assert (state.careful_until, state.inferred, state.suspects) == (-1, True, 50)
    assert PartitionState.decode(died_running.encode()) == died_running
    assert CLAIM == "claim"
