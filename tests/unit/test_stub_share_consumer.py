"""The stub broker's share groups behave as Kafka's (KIP-932) where shared queues rest on it:
records locked per member, delivery counts, acknowledgements, lock expiry, the delivery limit."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import (
    AcknowledgeType,
    IllegalStateException,
    KafkaError,
    KafkaException,
    Message,
    ShareConsumer,
    TopicPartition,
)

from taskstream.errors import ConfigError
from taskstream.testing.stub_broker import StubBroker
from taskstream.testing.stub_share import RecordState, StubShareConsumer

LOCK_S = 15.0  # the group's lock in these tests (share.record.lock.duration.ms=15000)


class Clock:
    """The broker's clock: locks expire when a test moves it, not by waiting."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def setup(
    partitions: int = 1, records: int = 0, group: dict[str, str] | None = None
) -> tuple[StubBroker, Clock]:
    """A broker, its clock, topic "t" and share group "g" (earliest, 15 s locks)."""
    clock = Clock()
    broker = StubBroker(clock=clock)
    broker.create_topic("t", partitions)
    configs = {"share.auto.offset.reset": "earliest", "share.record.lock.duration.ms": "15000"}
    broker.alter_share_group_config("g", {**configs, **(group or {})})
    produce(broker, records)
    return broker, clock


def produce(broker: StubBroker, n: int, partition: int = 0) -> None:
    p = broker.producer({})
    for i in range(n):
        p.produce("t", f"v{i}".encode(), partition=partition)
    p.flush(1.0)


def member(broker: StubBroker, mode: str = "explicit", **extra: Any) -> StubShareConsumer:
    config = {
        "group.id": "g",
        "bootstrap.servers": "ignored:9092",
        "client.id": "test",
        "share.acknowledgement.mode": mode,
        **extra,
    }
    c = broker.share_consumer(config)
    assert isinstance(c, StubShareConsumer)
    c.subscribe(["t"])
    return c


def offsets(messages: list[Message]) -> list[int]:
    return [m.offset() or 0 for m in messages]


def take(c: ShareConsumer, timeout: float = 0.0) -> list[Message]:
    return c.poll(timeout).records()


def accept_all(c: ShareConsumer, messages: list[Message]) -> None:
    for m in messages:
        c.acknowledge(m)


def test_a_share_consumer_is_a_confluent_share_consumer_whose_messages_count_deliveries() -> None:
    broker, _ = setup(records=3)
    c = member(broker)
    assert isinstance(c, ShareConsumer) and isinstance(c, StubShareConsumer)
    assert c.subscription() == ["t"]
    batch = c.poll(0)
    assert len(batch) == 3 and [m.value() for m in batch] == [b"v0", b"v1", b"v2"]
    assert [m.delivery_count() for m in batch.records()] == [1, 1, 1]
    assert all(m.error() is None and m.topic() == "t" for m in batch)


def test_a_new_group_starts_at_the_end_by_default_and_at_the_start_with_earliest() -> None:
    clock = Clock()
    broker = StubBroker(clock=clock)
    broker.create_topic("t", 1)
    produce(broker, 2)
    latest = member(broker, "implicit")
    assert take(latest) == []  # the group's first fetch: it starts at offset 2
    produce(broker, 1)
    assert offsets(take(latest)) == [2]
    assert broker.share_group_state("g").start_offsets == {("t", 0): 2}  # 2 is acquired
    latest.commit_sync()  # implicit: accepted
    assert broker.share_group_state("g").start_offsets == {("t", 0): 3}

    broker.alter_share_group_config("g2", {"share.auto.offset.reset": "earliest"})
    early = broker.share_consumer({"group.id": "g2"})
    early.subscribe(["t"])
    assert offsets(take(early)) == [0, 1, 2]


def test_two_members_share_one_partition_and_no_record_goes_to_both() -> None:
    broker, _ = setup(records=10)
    a = member(broker, "implicit", **{"max.poll.records": 3})
    b = member(broker, "implicit", **{"max.poll.records": 3})
    seen: list[int] = []
    for _ in range(4):
        for c in (a, b):
            seen += offsets(take(c))
    assert sorted(seen) == list(range(10))  # each once: the implicit polls accepted them
    state = broker.share_group_state("g")
    assert state.acknowledged == 10 and state.deliveries == 10 and len(state.members) == 2


def test_an_accepted_record_is_never_delivered_again() -> None:
    broker, clock = setup(records=2)
    a, b = member(broker), member(broker)
    first = take(a)
    accept_all(a, first)
    assert a.commit_sync() == {TopicPartition("t", 0): None}
    assert a.commit_sync() == {}  # nothing pending
    clock.advance(LOCK_S * 4)
    assert take(a) == [] and take(b, 0.05) == []
    state = broker.share_group_state("g")
    assert state.acknowledged == 2 and state.accepted == 2 and state.start_offsets[("t", 0)] == 2


def test_a_released_record_comes_back_with_delivery_count_two() -> None:
    broker, _ = setup(records=2)
    a = member(broker)
    r0, r1 = take(a)
    a.acknowledge(r0, AcknowledgeType.RELEASE)
    a.acknowledge(r1)
    again = take(a)  # the poll sends both acknowledgements first
    assert offsets(again) == [0] and again[0].delivery_count() == 2
    state = broker.share_group_state("g")
    assert state.released == 1 and state.records[("t", 0, 0)].delivery_count == 2


def test_an_expired_lock_gives_the_record_to_another_member_with_one_more_delivery() -> None:
    broker, clock = setup(records=1)
    a, b = member(broker), member(broker)
    assert [m.delivery_count() for m in take(a)] == [1]
    assert take(b) == []  # locked by a
    clock.advance(LOCK_S)
    got = take(b)
    assert offsets(got) == [0] and got[0].delivery_count() == 2
    state = broker.share_group_state("g")
    assert state.expired == 1 and state.records[("t", 0, 0)].member == b.member_id


def test_a_record_is_archived_at_the_delivery_limit() -> None:
    broker, clock = setup(records=2, group={"share.delivery.count.limit": "2"})
    a = member(broker)
    for _ in range(2):  # released twice: two deliveries, the limit
        r0, r1 = take(a)
        a.acknowledge(r0, AcknowledgeType.RELEASE)
        a.acknowledge(r1, AcknowledgeType.RELEASE)
        a.commit_sync()
    assert take(a) == []
    state = broker.share_group_state("g")
    assert state.archived == 2 and state.start_offsets[("t", 0)] == 2
    assert {r.delivery_count for r in state.records.values()} == {2}

    produce(broker, 1)  # the limit also archives a record whose lock expires
    for _ in range(2):
        assert offsets(take(a)) == [2]
        clock.advance(LOCK_S)
        a.acknowledge_offset("t", 0, 2)  # too late: refused, and the poll goes on
    assert take(a) == []
    assert broker.share_group_state("g").records[("t", 0, 2)].state is RecordState.ARCHIVED


def test_a_rejected_record_is_archived_at_once() -> None:
    broker, clock = setup(records=1)
    a = member(broker)
    (r0,) = take(a)
    a.acknowledge(r0, AcknowledgeType.REJECT)
    a.commit_async()
    clock.advance(LOCK_S * 2)
    assert take(a) == []
    state = broker.share_group_state("g")
    assert state.rejected == 1 and state.records[("t", 0, 0)].state is RecordState.ARCHIVED


def test_an_explicit_poll_with_records_not_acknowledged_raises() -> None:
    broker, _ = setup(records=3)
    a = member(broker)
    r0, _r1, _r2 = take(a)
    a.acknowledge(r0)
    with pytest.raises(IllegalStateException, match=r"^2 records from previous poll have not"):
        a.poll(0)
    with pytest.raises(IllegalStateException, match="Failed to acknowledge offset"):
        a.acknowledge_offset("t", 0, 7)  # never delivered to a
    with pytest.raises(ValueError):
        a.acknowledge(r0, 9)  # type: ignore[arg-type]


def test_implicit_mode_accepts_the_previous_polls_records_at_the_next_poll_or_commit() -> None:
    broker, clock = setup(records=2)
    a = member(broker, "implicit", **{"max.poll.records": 1})
    assert offsets(take(a)) == [0]
    with pytest.raises(IllegalStateException):
        a.acknowledge_offset("t", 0, 0)  # explicit mode only
    assert offsets(take(a)) == [1]  # record 0 accepted
    assert a.commit_sync() == {TopicPartition("t", 0): None}  # record 1 accepted
    clock.advance(LOCK_S)
    assert take(a) == [] and broker.share_group_state("g").accepted == 2


def test_close_sends_acknowledgements_and_gives_back_the_records_still_held() -> None:
    broker, _ = setup(records=3)
    a, b = member(broker), member(broker)
    r0, _r1, _r2 = take(a)
    a.acknowledge(r0)
    acks: list[tuple[dict[TopicPartition, set[int]], KafkaException | None]] = []
    a.set_acknowledgement_commit_callback(lambda offsets, error: acks.append((offsets, error)))
    a.close()
    assert acks == [({TopicPartition("t", 0): {0}}, None)]
    got = take(b)  # at once: no lock to wait for
    assert offsets(got) == [1, 2] and [m.delivery_count() for m in got] == [2, 2]
    with pytest.raises(IllegalStateException, match="closed"):
        a.poll(0)
    a.close()  # twice is fine


def test_a_crashed_member_keeps_its_records_until_their_locks_expire() -> None:
    broker, clock = setup(records=2)
    a, b = member(broker), member(broker)
    assert len(take(a)) == 2
    a.crash()
    assert take(b) == [] and broker.share_group_state("g").acquired == 2
    assert broker.share_group_state("g").members == (b.member_id,)
    clock.advance(LOCK_S)
    assert offsets(take(b)) == [0, 1]


def test_an_acknowledgement_after_the_lock_expired_is_refused_and_reported() -> None:
    broker, clock = setup(records=2)
    a, b = member(broker), member(broker)
    acks: list[tuple[dict[TopicPartition, set[int]], KafkaException | None]] = []
    a.set_acknowledgement_commit_callback(lambda offsets, error: acks.append((offsets, error)))
    late = take(a)
    clock.advance(LOCK_S)
    held = take(b)
    assert offsets(held) == [0, 1]  # b holds them now
    accept_all(a, late)
    (outcome,) = a.commit_sync().values()
    assert isinstance(outcome, KafkaException)
    assert outcome.args[0].code() == KafkaError.INVALID_RECORD_STATE
    assert "The record state is invalid" in outcome.args[0].str()
    assert acks == [({TopicPartition("t", 0): {0, 1}}, outcome)]
    state = broker.share_group_state("g")
    assert state.acquired == 2 and state.accepted == 0  # b's, unchanged
    accept_all(b, held)
    assert b.commit_sync() == {TopicPartition("t", 0): None}
    assert broker.share_group_state("g").acknowledged == 2


def test_group_configs_out_of_range_raise_kafkas_message_and_change_nothing() -> None:
    broker = StubBroker()
    with pytest.raises(
        ConfigError,
        match=r"^share\.record\.lock\.duration\.ms must be in the range 15000 to 60000 inclusive",
    ):
        broker.alter_share_group_config(
            "g", {"share.delivery.count.limit": "3", "share.record.lock.duration.ms": "120000"}
        )
    with pytest.raises(
        ConfigError, match=r"^share\.delivery\.count\.limit must be in the range 2 to 10"
    ):
        broker.alter_share_group_config("g", {"share.delivery.count.limit": "11"})
    with pytest.raises(ConfigError, match=r"^Invalid value x for .*: Not a number of type INT$"):
        broker.alter_share_group_config("g", {"share.delivery.count.limit": "x"})
    with pytest.raises(
        ConfigError, match=r"^Invalid value soon for configuration share\.auto\.offset\.reset"
    ):
        broker.alter_share_group_config("g", {"share.auto.offset.reset": "soon"})
    with pytest.raises(ConfigError, match=r"^Unknown group config name: share\.lock\.ms$"):
        broker.alter_share_group_config("g", {"share.lock.ms": "1"})
    broker.alter_share_group_config("g", {"share.session.timeout.ms": "45000"})  # ignored
    broker.create_topic("t")
    produce(broker, 5)
    c = member(broker)
    assert take(c) == []  # latest, the default: the group starts at the end
    produce(broker, 1)
    for _ in range(5):  # the default limit, 5, not the refused 3: released four times
        (m,) = take(c)
        c.acknowledge(m, AcknowledgeType.RELEASE)
    c.commit_sync()
    assert take(c) == [] and broker.share_group_state("g").archived == 1
    with pytest.raises(ValueError, match=r"group\.id must be set"):
        broker.share_consumer({"share.acknowledgement.mode": "explicit"})
    with pytest.raises(ValueError):
        broker.share_consumer({"group.id": "g", "share.acknowledgement.mode": "manual"})


def test_short_locks_in_real_time_wake_a_waiting_poll() -> None:
    broker = StubBroker(share_lock_ms_range=(10, 60_000))
    broker.create_topic("t")
    broker.alter_share_group_config(
        "g", {"share.auto.offset.reset": "earliest", "share.record.lock.duration.ms": "50"}
    )
    produce(broker, 1)
    a, b = member(broker), member(broker)
    assert len(take(a)) == 1
    started = time.monotonic()
    got = take(b, 2.0)  # waits for a's lock to run out, not for the timeout
    assert offsets(got) == [0] and got[0].delivery_count() == 2
    assert time.monotonic() - started < 1.0


def test_a_produce_wakes_a_waiting_poll_and_hidden_records_are_never_delivered() -> None:
    broker, _ = setup()
    p = broker.producer({"transactional.id": "tx"})
    p.init_transactions()
    p.begin_transaction()
    p.produce("t", b"aborted", partition=0)
    p.abort_transaction()
    c = member(broker, "implicit")
    got: list[Message] = []
    waiter = threading.Thread(target=lambda: got.extend(take(c, 2.0)))
    waiter.start()
    time.sleep(0.05)
    p.begin_transaction()
    p.produce("t", b"committed", partition=0)
    p.commit_transaction()
    waiter.join(2.0)
    assert [m.value() for m in got] == [b"committed"]  # offsets 0, 1: aborted, its marker
    assert offsets(got) == [2]
    c.commit_sync()
    assert broker.share_group_state("g").start_offsets[("t", 0)] == 4  # past the marker


def test_a_poll_spreads_over_partitions_and_members_fetch_every_partition() -> None:
    broker, _ = setup(partitions=2)
    produce(broker, 3, partition=0)
    produce(broker, 3, partition=1)
    a = member(broker, "implicit", **{"max.poll.records": 2})
    b = member(broker, "implicit")
    first = take(a)
    assert len(first) == 2
    rest = take(b)
    assert {(m.partition(), m.offset()) for m in first + rest} == {
        (p, o) for p in (0, 1) for o in range(3)
    }
    assert {m.partition() for m in rest} == {0, 1}  # no exclusive assignment
    b.unsubscribe()
    with pytest.raises(IllegalStateException, match=r"^Consumer is not subscribed to any topics$"):
        b.poll(0)
