"""Exactly-once processing on the stub broker: a record's events wait for the transaction
that commits its offset, a commit of a member whose generation is over is aborted (its
events never visible), and a worker in that mode runs tasks, chains and retries with one
outcome each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

import taskstream.testing
from taskstream import App, clock
from taskstream.config import Settings
from taskstream.consumer.offsets import OffsetTracker, PartitionOffsets
from taskstream.consumer.transaction import Transaction
from taskstream.envelope import ResultEvent
from taskstream.errors import ConfigError
from taskstream.kafka.topics import delays_group, results_topic, task_topic
from taskstream.testing.stub_broker import StubBroker, StubProducer

TOPIC, OUT, GROUP = "in", "out", "g"


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    broker.create_topic(TOPIC, 1)
    broker.create_topic(OUT, 1)
    return broker


def member(broker: StubBroker) -> Consumer:
    consumer = broker.consumer(
        {"group.id": GROUP, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([TOPIC])
    consumer.poll(0)  # joins: the generation its metadata carries
    return consumer


def ran_first(txn: Transaction, offsets: PartitionOffsets, value: bytes) -> None:
    """The partition's record at offset 0 ran: its one event, ``value``, held by ``txn``."""
    offsets.add(0)
    txn.hold(offsets, 0, [(OUT, value, None, None)])
    offsets.finish(0)


def transaction(broker: StubBroker) -> Transaction:
    return Transaction(lambda: broker.producer({"transactional.id": "t"}), 5.0)


def outputs(broker: StubBroker) -> list[bytes | None]:
    return [m.value() for m in broker.records(OUT)]


def test_events_wait_for_the_commit_that_covers_their_record_in_offset_order(
    broker: StubBroker,
) -> None:
    consumer, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    offsets = tracker.assign(TOPIC, 0)
    for offset in range(3):
        offsets.add(offset)
    txn.hold(offsets, 2, [(OUT, b"two", None, None)])
    offsets.finish(2)
    txn.hold(offsets, 1, [(OUT, b"one", None, None)])
    offsets.finish(1)
    assert txn.commit(consumer, tracker) is True  # nothing committable: 0 still runs
    assert outputs(broker) == [] and txn.held == 2 and txn.unsent == 2
    assert broker.committed(GROUP, TOPIC, 0) == 0  # the partition's start, nothing done

    txn.hold(offsets, 0, [(OUT, b"zero", None, None), (OUT, b"zero again", None, None)])
    offsets.finish(0)
    assert txn.commit(consumer, tracker) is True
    assert outputs(broker) == [b"zero", b"zero again", b"one", b"two"]
    assert broker.committed(GROUP, TOPIC, 0) == 3
    assert offsets.committed == 3 and txn.held == 0 and txn.unsent == 0


def test_a_commit_after_the_group_moved_on_is_aborted_and_nothing_becomes_visible(
    broker: StubBroker,
) -> None:
    zombie, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    offsets = tracker.assign(TOPIC, 0)
    ran_first(txn, offsets, b"late")
    member(broker)  # a second member joins: a new generation the zombie has not seen

    assert txn.commit(zombie, tracker) is False
    assert outputs(broker) == []  # the aborted event is hidden from every reader
    assert broker.committed(GROUP, TOPIC, 0) is None
    assert txn.aborted == 1 and txn.held == 1  # kept for the next commit, if still owned

    tracker.revoke(TOPIC, 0)  # the rebalance takes the partition: its events are dropped
    assert txn.commit(zombie, tracker) is True
    assert txn.held == 0 and outputs(broker) == []


def test_a_member_that_rejoined_commits_the_events_it_kept(broker: StubBroker) -> None:
    consumer, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    offsets = tracker.assign(TOPIC, 0)
    ran_first(txn, offsets, b"kept")
    other = member(broker)
    assert txn.commit(consumer, tracker) is False
    other.close()  # it leaves; the next poll runs the new generation's rebalance
    consumer.poll(0)
    assert txn.commit(consumer, tracker) is True
    assert outputs(broker) == [b"kept"]
    assert broker.committed(GROUP, TOPIC, 0) == 1


def test_a_fenced_producer_is_replaced_and_the_events_committed_by_the_new_one(
    broker: StubBroker,
) -> None:
    consumer, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    offsets = tracker.assign(TOPIC, 0)
    ran_first(txn, offsets, b"once")
    broker.producer({"transactional.id": "t"}).init_transactions()  # fences txn's producer
    assert txn.commit(consumer, tracker) is False
    assert txn.commit(consumer, tracker) is True
    assert outputs(broker) == [b"once"]


def test_the_setting_reads_quix_streams_names_and_sets_the_commit_interval() -> None:
    assert Settings.load({}).commit_every_s == 0.2
    exactly = Settings.load({"TASKSTREAM_PROCESSING_GUARANTEE": "exactly-once"})
    assert exactly.exactly_once and exactly.commit_every_s == 0.1
    assert (
        Settings.load({}, processing_guarantee="exactly-once", commit_interval_ms=50).commit_every_s
        == 0.05
    )
    with pytest.raises(ConfigError, match="processing_guarantee='exactly_once'"):
        Settings.load({}, processing_guarantee="exactly_once")
    uncommitted = {"TASKSTREAM_KAFKA_ISOLATION_LEVEL": "read_uncommitted"}
    with pytest.raises(ConfigError, match="read_committed"):
        Settings.load(uncommitted, processing_guarantee="exactly-once")


# -- a worker in exactly-once mode ----------------------------------------------------------


@pytest.fixture
def app() -> Iterator[App]:
    app = App(
        "eos", bootstrap_servers="stub:9092", topic_prefix="eos", partitions=2,
        processing_guarantee="exactly-once",
    )  # fmt: skip
    attempts: dict[str, int] = {}

    @app.task(name="eos.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="eos.note")
    def note(key: str, n: int) -> int:
        RAN.append((key, n))
        return n

    @app.task(name="eos.flaky", bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self, n: int) -> int:  # type: ignore[no-untyped-def]
        attempts[self.request.id] = attempts.get(self.request.id, 0) + 1
        if attempts[self.request.id] < 2:
            raise self.retry()
        return n

    yield app


RAN: list[tuple[str, int]] = []  # eos.note's runs, in order


def test_tasks_of_one_key_run_in_order_exactly_once(app: App) -> None:
    RAN.clear()
    note = app.tasks["eos.note"]
    with taskstream.testing.run(app, concurrency=4) as stub:
        sent = [note.apply_async((f"k{n % 3}", n), key=f"k{n % 3}") for n in range(60)]
        stub.join()
        assert [r.get(timeout=10) for r in sent] == list(range(60))
    for key in ("k0", "k1", "k2"):
        runs = [n for k, n in RAN if k == key]
        assert runs == sorted(runs) and len(runs) == 20


def result_events(stub: taskstream.testing.Stub, app: App) -> list[ResultEvent]:
    records = stub.broker.records(results_topic("eos"))
    return [app.envelopes.decode_result(m.value() or b"") for m in records]


def waiting(stub: taskstream.testing.Stub) -> list[tuple[str, Message]]:
    """The records in the delay tiers."""
    broker = stub.broker
    tiers = [t for t in broker.topics() if t.startswith("eos.delay.")]
    return [(t, m) for t in tiers for m in broker.records(t)]


def test_a_worker_in_exactly_once_mode_publishes_one_final_outcome_per_task(app: App) -> None:
    add, flaky = app.tasks["eos.add"], app.tasks["eos.flaky"]
    with taskstream.testing.run(app, concurrency=4) as stub:
        sums = [add.delay(i, i) for i in range(40)]
        chained = (add.s(1, 2) | add.s(3)).delay()
        retried = flaky.delay(7)
        later = add.apply_async((5, 5), countdown=3)  # through a delay tier's transaction
        stub.broker.wait_until(lambda: bool(waiting(stub)), 10)  # forwarded, committed
        stub.advance(4)
        stub.join()
        assert later.get(timeout=10) == 10
        assert [r.get(timeout=10) for r in sums] == [2 * i for i in range(40)]
        assert chained.get(timeout=10) == 6
        assert retried.get(timeout=10) == 7
        events = result_events(stub, app)
        finals = [e.id for e in events if e.status in ("SUCCESS", "FAILURE")]
        assert len(finals) == len(set(finals)) == 40 + 2 + 1 + 1
        results = results_topic("eos")
        written = sum(stub.broker.end_offset(results, p) for p in range(2))
        assert written > len(events)  # transaction markers: outcomes came in transactions
        ((tier, waited),) = waiting(stub)  # the countdown's, moved on in the scheduler's
        p = waited.partition()  # transaction with its offset
        assert p is not None
        assert stub.broker.committed(delays_group("eos"), tier, p) == (waited.offset() or 0) + 1
        topic, group = task_topic("eos", "default"), stub.worker.group_id
        for p in range(2):  # every task record's offset, in a transaction (markers past)
            assert stub.broker.committed(group, topic, p) == stub.broker.end_offset(topic, p)
    assert clock.offset() == 0


def test_a_tracker_partition_reassigned_keeps_no_events_of_its_earlier_assignment(
    broker: StubBroker,
) -> None:
    consumer, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    earlier = tracker.assign(TOPIC, 0)
    earlier.add(0)
    earlier.add(1)
    txn.hold(earlier, 1, [(OUT, b"stale", None, None)])  # finished after the revoke
    tracker.revoke(TOPIC, 0)
    now = tracker.assign(TOPIC, 0)
    now.add(0)
    txn.hold(now, 0, [(OUT, b"fresh", None, None)])
    now.finish(0)
    assert txn.commit(consumer, tracker) is True
    assert outputs(broker) == [b"fresh"]
    assert [TopicPartition(TOPIC, 0, 1)] == [
        TopicPartition(TOPIC, 0, broker.committed(GROUP, TOPIC, 0) or -1)
    ]


def test_events_sent_for_a_partition_lost_before_the_commit_never_become_visible() -> None:
    broker = StubBroker()
    broker.create_topic(TOPIC, 2)
    broker.create_topic(OUT, 1)
    consumer, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    kept, lost = tracker.assign(TOPIC, 0), tracker.assign(TOPIC, 1)
    for offsets, value in ((kept, b"kept"), (lost, b"lost")):
        ran_first(txn, offsets, value)
    txn.send()  # both in the open transaction now
    tracker.revoke(TOPIC, 1)  # lost: another member may run it already
    assert txn.commit(consumer, tracker) is True
    assert outputs(broker) == [b"kept"]  # the lost partition's event went with an abort
    assert txn.aborted == 1 and txn.held == 0
    assert broker.committed(GROUP, TOPIC, 0) == 1 and broker.committed(GROUP, TOPIC, 1) is None


def test_a_revoke_s_commit_commits_every_partition_whose_events_were_sent() -> None:
    broker = StubBroker()
    broker.create_topic(TOPIC, 2)
    broker.create_topic(OUT, 1)
    consumer, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    for partition in (0, 1):
        offsets = tracker.assign(TOPIC, partition)
        ran_first(txn, offsets, str(partition).encode())
    txn.send()
    assert txn.commit(consumer, tracker, False, {(TOPIC, 0)}) is True  # a revoke of 0 only
    assert sorted(v or b"" for v in outputs(broker)) == [b"0", b"1"]
    assert broker.committed(GROUP, TOPIC, 1) == 1  # 1's event is visible: so is its offset


def test_a_revoked_partition_s_late_finishes_are_never_sent(broker: StubBroker) -> None:
    consumer, txn = member(broker), transaction(broker)
    tracker = OffsetTracker()
    offsets = tracker.assign(TOPIC, 0)
    offsets.add(0)
    tracker.revoke(TOPIC, 0)  # revoked while its record ran
    txn.hold(offsets, 0, [(OUT, b"late", None, None)])
    offsets.finish(0)
    txn.send()
    assert txn.commit(consumer, tracker) is True
    assert outputs(broker) == [] and txn.aborted == 0 and txn.unsent == 0


class _RefusingOnce(StubProducer):
    """Refuses its first produce as librdkafka does once a transaction is in error."""

    refused = False

    def produce(self, *args: Any, **kwargs: Any) -> None:
        if not self.refused:
            self.refused = True
            raise KafkaException(KafkaError(KafkaError._STATE, "Erroneous state"))
        super().produce(*args, **kwargs)


def test_a_produce_refused_mid_transaction_aborts_it_at_the_commit_and_sends_again(
    broker: StubBroker,
) -> None:
    consumer, tracker = member(broker), OffsetTracker()
    txn = Transaction(lambda: _RefusingOnce(broker, {"transactional.id": "t"}), 5.0)
    offsets = tracker.assign(TOPIC, 0)
    ran_first(txn, offsets, b"once")
    txn.send()  # refused: the loop goes on
    assert txn.commit(consumer, tracker) is False and txn.aborted == 1
    assert txn.commit(consumer, tracker) is True
    assert outputs(broker) == [b"once"] and broker.committed(GROUP, TOPIC, 0) == 1
