"""Partition ownership: the journal attributes a worker's death to the record it ran, on the
stub; and partitions handed over with runs in progress wait for them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import Message

from taskstream import clock
from taskstream.consumer.ownership import (
    CLAIM,
    OWN,
    RELEASE,
    JournalReader,
    OwnershipJournal,
    PartitionState,
    takeover,
)
from taskstream.kafka.producer import EventProducer
from taskstream.testing.stub_broker import StubBroker

TASKS, JOURNAL = "t.tasks.default", "t.deliveries"


class Worker:
    """A journal with what a worker gives it; "dies" by being dropped without a release."""

    def __init__(
        self,
        broker: StubBroker,
        name: str,
        window: int = 1000,
        lease_s: float = 60.0,
        probation: bool = True,
    ) -> None:
        self.broker = broker
        self.producer = EventProducer({"bootstrap.servers": "stub"}, broker=broker)
        reader = broker.consumer({"group.id": f"reader-{name}", "enable.auto.commit": False})
        self.reader = reader
        self.runs: list[tuple[int, int | None]] = []  # (offset, lost) handed to the worker
        self.ran: list[tuple[int, int, int | None]] = []  # the same with the partition first
        self.skips: list[int] = []  # done by the previous owner: not run
        self.threads: set[int] = set()  # where the runs were handed to the worker
        self.journal = OwnershipJournal(
            JournalReader(reader, JOURNAL, 1), self.producer, name, window, self.run,
            lambda t, p: broker.end_offset(t, p),
            skip=lambda m: self.skips.append(m.offset() or 0), lease_s=lease_s,
            probation=probation,
        )  # fmt: skip

    def run(self, message: Message, lost: int | None) -> None:
        self.threads.add(threading.get_ident())
        self.runs.append((message.offset() or 0, lost))
        self.ran.append((message.partition() or 0, message.offset() or 0, lost))

    def take(self, records: list[Message], partition: int = 0, busy: int = 0) -> None:
        self.journal.assigned(TASKS, partition)
        for message in records:
            if self.journal.admit(message):
                self.run(message, None)
        self.pump(busy)

    def pump(self, busy: int = 0) -> None:
        """Loop turns with ``busy`` runs in progress beside what the journal holds."""
        for _ in range(4):
            held = self.journal.held(TASKS, 0) + self.journal.held(TASKS, 1)
            self.journal.serve(held + busy)
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
    first.journal.revoked(TASKS, 0)
    first.producer.flush(1)
    second = Worker(broker, "b")
    second.take(records)
    assert second.runs == [(0, None), (1, None), (2, None)]


def test_a_journal_is_whole_when_constructed() -> None:
    # No start() to remember: a journal serves, describes itself and closes as it is made.
    broker, _records = setup(1)
    a = Worker(broker, "a")
    a.journal.serve(0)
    assert "reading=False" in a.journal.describe()
    assert a.reader.assignment() == [], "nothing waits: the journal is not read"
    a.journal.close()


def test_a_journal_write_acknowledged_on_a_task_thread_takes_effect_on_the_loop_s_thread() -> None:
    # A task thread serves the producer's reports after producing its outcome. Run there,
    # the claim's "owned" would take the partition's held records while the loop's thread
    # adds to them, and a record added just after could stay held for good.
    broker, records = setup(2)
    a = Worker(broker, "a")
    a.journal.assigned(TASKS, 0)
    assert not any(a.journal.admit(m) for m in records)  # held until the claim is durable
    a.journal.serve(2)  # the loop reads its claim and writes the partition's state
    assert a.runs == [] and a.journal.held(TASKS, 0) == 2
    served = threading.Thread(target=lambda: a.producer.flush(1))  # a task thread
    served.start()
    served.join()
    assert a.runs == [], "nothing moves on the task thread"
    a.journal.serve(2)  # the loop's next turn
    assert a.runs == [(0, None), (1, None)]
    assert a.threads == {threading.get_ident()}


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
    a.journal.revoked(TASKS, 0)
    a.take(records[1:])  # the partition comes back to it
    assert a.reader.assignment() == []
    assert read == [0, 1, 2, 3], "the own state, the release and the new claim: not from 0 again"


def die_on_probation(broker: StubBroker, records: list[Message]) -> None:
    """Two deaths with the records unfinished: a's (inferred, its suspects then run as usual
    at b, on probation) and b's (so they run carefully next)."""
    Worker(broker, "a").take(records)  # runs them as usual, then dies: no release
    b = Worker(broker, "b")
    b.take(records)
    assert b.runs == [(r.offset() or 0, None) for r in records], "on probation: as usual"
    assert not b.journal.isolating


def test_a_first_death_runs_its_suspects_as_usual_and_then_the_partition_is_clean() -> None:
    """Most deaths are not a record's doing (an OOM kill, a lost node): the suspects run
    concurrently once; when they all end, the partition is as if handed over cleanly."""
    broker, records = setup(3)
    Worker(broker, "a").take(records)
    b = Worker(broker, "b")
    b.take(records)
    assert b.runs == [(0, None), (1, None), (2, None)]
    for offset in range(3):
        b.journal.finished(TASKS, 0, offset)
    b.pump()
    b.producer.flush(1)
    assert b.journal.admit(add(broker, "k")[0]), "the partition runs as usual"
    c = Worker(broker, "c")  # b dies later: a first death again, not a second one
    c.take(broker.records(TASKS))
    assert c.runs == [(r.offset() or 0, None) for r in broker.records(TASKS)]


def test_a_record_that_kills_three_workers_is_handed_over_with_three_lost_deliveries() -> None:
    broker, records = setup(3)
    die_on_probation(broker, records)
    suspects = Worker(broker, "c")
    suspects.take(records)
    # Careful: one record at a time, each durable first; 0 runs and "kills" c.
    assert suspects.runs == [(0, 0)]
    fourth = Worker(broker, "d")
    fourth.take(records)
    assert fourth.runs == [(0, 3)], "its recorded death plus the two inferred ones"
    # the worker dead-letters it: WorkerLost
    fourth.journal.finished(TASKS, 0, 0)
    fourth.pump()
    assert fourth.runs == [(0, 3), (1, None), (2, None)], "then the rest as usual"
    assert not fourth.journal.isolating


def test_without_probation_a_first_death_runs_the_suspects_carefully() -> None:
    """worker_lost_max_deliveries below 3: probation would cost the one death too many."""
    broker, records = setup(2)
    Worker(broker, "a").take(records)
    b = Worker(broker, "b", probation=False)
    b.take(records)
    assert b.runs == [(0, 0)] and b.journal.isolating


def test_careful_runs_wait_until_nothing_else_runs() -> None:
    broker, records = setup(2)
    die_on_probation(broker, records)
    c = Worker(broker, "c")
    c.journal.assigned(TASKS, 0)
    for m in records:
        assert not c.journal.admit(m)
    for _ in range(4):
        c.journal.serve(c.journal.held(TASKS, 0) + 1)  # a usual task still runs
        c.producer.poll(0)
    assert c.runs == [] and c.journal.isolating
    c.pump()
    assert c.runs == [(0, 0)]


def test_the_suspects_are_bounded_by_the_dead_owners_window() -> None:
    broker, records = setup(5)
    Worker(broker, "a", window=2).take(records)
    b = Worker(broker, "b", window=2)
    b.take(records)
    assert b.runs[:2] == [(0, None), (1, None)]  # on probation: dies with them unfinished
    c = Worker(broker, "c")
    c.take(records)
    for offset in range(2):
        c.journal.finished(TASKS, 0, offset)
        c.pump()
    assert c.runs == [(0, 0), (1, 0), (2, None), (3, None), (4, None)]


def test_a_partition_handed_over_running_waits_for_its_runs_keys_only() -> None:
    # a ran A (0), B (1), A (2), C (3): B and C are done, 0 runs and 2 waits behind it (same
    # key) when the partition moves to b.
    broker, records = setup(0, "ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.revoked(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
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
    assert b.journal.held(TASKS, 0) == 0 and not b.journal.isolating
    for message in add(broker, "A"):
        assert b.journal.admit(message), "then the partition runs as usual"


def test_a_partition_moved_twice_still_waits_for_the_first_owners_runs() -> None:
    broker, records = setup(0, "ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.revoked(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.producer.flush(1)
    b = Worker(broker, "b")
    b.take(records)
    assert b.skips == [1, 3]
    b.journal.revoked(TASKS, 0, None, [1, 3])  # moved on at once: b relays a's reports
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
    a.journal.revoked(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.journal.close()  # stopping with 0 and 2 unfinished: abandoned
    a.producer.flush(1)
    b = Worker(broker, "b")
    b.take(records)
    b.pump()
    assert b.skips == [1, 3]
    assert b.runs == [(0, None), (2, None)]


@pytest.fixture
def moved_clock() -> Iterator[None]:
    yield
    clock.reset()


@pytest.mark.usefixtures("moved_clock")
def test_runs_handed_over_by_a_worker_that_died_run_carefully_after_the_lease() -> None:
    broker, records = setup(0, "ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.revoked(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.producer.flush(1)  # then a dies: no more reports
    b = Worker(broker, "b", lease_s=0.2)
    b.take(records)
    assert b.runs == []
    clock.advance(0.3)  # past the lease, without waiting for it
    b.pump()
    assert b.runs == [(0, 0)], "a suspect: alone, recorded first"
    b.journal.finished(TASKS, 0, 0)
    b.pump()
    assert b.runs == [(0, 0), (2, 0)]
    b.journal.finished(TASKS, 0, 2)
    b.pump()
    assert not b.journal.isolating


def two_partitions(keys: str) -> tuple[StubBroker, list[Message]]:
    """The task topic with two partitions; one record per letter of ``keys`` in the first."""
    broker = StubBroker()
    broker.create_topic(TASKS, 2)
    broker.create_topic(JOURNAL, 1)
    return broker, add_to(broker, 0, keys)


def add_to(broker: StubBroker, partition: int, keys: str) -> list[Message]:
    producer = broker.producer({"bootstrap.servers": "stub"})
    before = len(broker.records(TASKS, partition))
    for key in keys:
        producer.produce(TASKS, b"task", key.encode(), partition=partition)
    producer.flush(1)
    return broker.records(TASKS, partition)[before:]


def states(broker: StubBroker, partition: int) -> list[PartitionState]:
    key = f"{TASKS}:{partition}".encode()
    return [PartitionState.decode(m.value() or b"") for m in broker.records(JOURNAL)
            if m.key() == key]  # fmt: skip


def test_other_partitions_records_wait_for_the_careful_runs_then_run_in_order() -> None:
    """A careful run runs alone: records of a partition that runs as usual, fetched while
    one is due, wait in the journal (held, so the worker counts them as not running) and
    run in order once the careful runs end."""
    broker, records = two_partitions("kk")
    die_on_probation(broker, records)
    c = Worker(broker, "c")
    c.take(records)
    assert c.ran == [(0, 0, 0)], "careful: alone, recorded first"
    c.take(add_to(broker, 1, "xyz"), partition=1, busy=1)
    assert c.ran == [(0, 0, 0)] and c.journal.held(TASKS, 1) == 3
    c.journal.finished(TASKS, 0, 0)
    c.pump(busy=1)  # the worker still runs something: the next careful run waits
    assert c.ran == [(0, 0, 0)] and c.journal.isolating
    c.pump()  # only what the journal holds is in flight: nothing runs
    assert c.ran == [(0, 0, 0), (0, 1, 0)] and c.journal.held(TASKS, 1) == 3
    c.journal.finished(TASKS, 0, 1)
    c.pump()
    assert c.ran[2:] == [(1, 0, None), (1, 1, None), (1, 2, None)], "then the others, in order"
    assert c.journal.held(TASKS, 1) == 0 and not c.journal.isolating
    assert c.journal.admit(add_to(broker, 1, "w")[0]), "and it runs as usual again"


@pytest.mark.parametrize("lost", [False, True])
def test_a_partition_revoked_while_its_records_wait_drops_them_unrun(lost: bool) -> None:
    broker, records = two_partitions("kk")
    die_on_probation(broker, records)
    c = Worker(broker, "c")
    c.take(add_to(broker, 1, "x"), partition=1)
    assert c.ran == [(1, 0, None)], "runs as usual: no careful run is due yet"
    c.take(records, busy=1)  # careful, but x runs: the careful run waits for it
    for message in add_to(broker, 1, "yz"):
        assert not c.journal.admit(message), "a careful run is due: they wait"
    assert c.ran == [(1, 0, None)] and c.journal.held(TASKS, 1) == 2
    running = {0: b"x", 1: b"y", 2: b"z"}  # what the worker has in flight of partition 1
    assert c.journal.revoked(TASKS, 1, running, [], lost=lost) == 2, "y and z: never run here"
    c.producer.flush(1)
    assert c.journal.held(TASKS, 1) == 0
    if lost:
        assert [s.state for s in states(broker, 1)] == [CLAIM, OWN], "fenced: nothing written"
    else:
        assert states(broker, 1)[-1].handed == {0: b"x".hex()}, "only x runs on here"
    c.journal.finished(TASKS, 1, 0)  # x ends
    for offset in (0, 1):
        c.pump()
        c.journal.finished(TASKS, 0, offset)
    c.pump()
    assert c.ran == [(1, 0, None), (0, 0, 0), (0, 1, 0)], "y and z are the next owner's"
    assert not c.journal.isolating


@pytest.mark.usefixtures("moved_clock")
def test_records_fetched_once_a_lease_ran_out_wait_for_its_careful_runs() -> None:
    broker, records = two_partitions("ABAC")
    a = Worker(broker, "a")
    a.take(records)
    a.journal.revoked(TASKS, 0, {0: b"A", 2: b"A"}, [1, 3])
    a.producer.flush(1)  # then a dies: no more reports
    b = Worker(broker, "b", lease_s=0.2)
    b.take(records)
    b.take(add_to(broker, 1, "x"), partition=1)
    assert b.ran == [(1, 0, None)] and b.skips == [1, 3], "0 and 2 wait for a's reports"
    clock.advance(0.3)  # past the lease, without waiting for it
    b.pump(busy=1)  # x still runs: 0 and 2 are suspects now, to run alone once it ends
    assert b.ran == [(1, 0, None)] and b.journal.isolating
    for message in add_to(broker, 1, "y"):
        assert not b.journal.admit(message)
    b.journal.finished(TASKS, 1, 0)
    b.pump()
    assert b.ran == [(1, 0, None), (0, 0, 0)]
    b.journal.finished(TASKS, 0, 0)
    b.pump()
    assert b.ran == [(1, 0, None), (0, 0, 0), (0, 2, 0)]
    assert b.journal.held(TASKS, 1) == 1
    b.journal.finished(TASKS, 0, 2)
    b.pump()
    assert b.ran[3:] == [(1, 1, None)] and not b.journal.isolating


CLEAN = PartitionState("a", "t1", RELEASE)
DIED = PartitionState("a", "t1", OWN, window=50)  # no careful run recorded
ON_PROBATION = PartitionState("a", "t1", OWN, -1, 1, window=50, suspects=50, probation=True)
CAREFUL = PartitionState("a", "t1", OWN, 60, 1, window=50, suspects=50)
DIED_RUNNING = PartitionState("a", "t1", OWN, 9, 2, 7, {7: 1})  # mid careful run of 7

# previous, takeover's keywords -> (careful_until, inferred, probation, lost, running)
TAKEOVER_RULES: list[tuple[PartitionState | None, dict[str, bool], tuple[object, ...]]] = [
    (None, {}, (None, 0, False, {}, None)),
    (CLEAN, {}, (None, 0, False, {}, None)),
    (DIED, {}, (-1, 1, True, {}, None)),  # a first death: probation
    (DIED, {"probation": False}, (-1, 1, False, {}, None)),  # careful at once
    (ON_PROBATION, {}, (-1, 2, False, {}, None)),  # died again: careful, two to attribute
    (CAREFUL, {}, (-1, 1, False, {}, None)),  # died careful, no run recorded
    (DIED_RUNNING, {}, (8, 0, False, {7: 4}, None)),  # the record did it: 1 + 2 inferred
    # Lost and assigned back to the same (live) process: no death, even mid careful run.
    (DIED_RUNNING, {"mine": True}, (9, 2, False, {7: 1}, None)),
    (DIED, {"mine": True}, (None, 0, False, {}, None)),
]


def test_takeover_rules() -> None:
    for previous, how, expected in TAKEOVER_RULES:
        state = takeover(previous, "b", "t2", 10, **how)
        got = (state.careful_until, state.inferred, state.probation, state.lost, state.running)
        assert got == expected, (previous, how)
        assert (state.owner, state.token, state.state, state.window) == ("b", "t2", OWN, 10)
    for state in (DIED_RUNNING, ON_PROBATION, CAREFUL):
        assert PartitionState.decode(state.encode()) == state
    old = b'{"owner":"a","token":"t","state":"own","careful_until":-1,"inferred":true}'
    assert PartitionState.decode(old).inferred == 1, "journals written before probation"
    assert CLAIM == "claim"


def test_a_partition_lost_and_assigned_back_to_its_process_runs_as_usual() -> None:
    """A session timeout (a lost coordinator, say) takes the partition away and gives it
    back: the process never died, so its records are no suspects."""
    broker, records = setup(3)
    worker = Worker(broker, "a")
    worker.take(records)
    assert worker.journal.revoked(TASKS, 0, lost=True) == 0
    worker.runs.clear()
    worker.take(records)
    assert worker.runs == [(0, None), (1, None), (2, None)]
    assert not worker.journal.isolating


def test_a_restarted_process_with_the_same_worker_id_still_counts_the_death() -> None:
    """A container restarted in its pod keeps host name and pid, so its worker id: the
    claim tokens tell it from the process that died."""
    broker, records = setup(3)
    Worker(broker, "a").take(records)  # dies: never releases
    again = Worker(broker, "a")
    again.take(records)
    assert again.runs == [(0, None), (1, None), (2, None)], "a first death: on probation"
    again = Worker(broker, "a")  # dies once more: the suspects run carefully
    again.take(records)
    assert again.runs == [(0, 0)]
    assert again.journal.isolating
