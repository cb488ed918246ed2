"""The in-memory broker behaves as librdkafka does where taskstream depends on it."""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from taskstream.config import Settings
from taskstream.kafka.topics import TopicSpec
from taskstream.testing.stub_broker import StubBroker, StubConsumer, StubProducer, murmur2

Calls = list[tuple[str, list[tuple[str, int]]]]


def consumer(broker: StubBroker, group: str = "g", **extra: Any) -> StubConsumer:
    config = {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    config.update(extra)
    c = broker.consumer(config)
    assert isinstance(c, StubConsumer)
    return c


def producer(broker: StubBroker, **extra: Any) -> StubProducer:
    p = broker.producer({"bootstrap.servers": "stub", **extra})
    assert isinstance(p, StubProducer)
    return p


def recorder(calls: Calls, name: str) -> Any:
    def record(_consumer: Any, partitions: list[TopicPartition]) -> None:
        calls.append((name, sorted((tp.topic, tp.partition) for tp in partitions)))

    return record


def drain(c: StubConsumer, polls: int = 5) -> list[Message]:
    out = []
    for _ in range(polls):
        out += c.consume(1000, 0)
    return out


def values(messages: list[Message]) -> list[bytes | None]:
    return [m.value() for m in messages]


def test_ensure_topics_creates_the_missing_ones_with_their_partitions() -> None:
    broker = StubBroker()
    broker.create_topic("a", 2)
    specs = [TopicSpec("a", 5, 1), TopicSpec("b", 3, 1)]
    assert broker.ensure_topics(Settings(), specs) == ["b"]
    assert broker.topics() == {"a": 2, "b": 3}
    metadata = consumer(broker).list_topics()
    assert sorted(metadata.topics["b"].partitions) == [0, 1, 2]
    assert metadata.topics["b"].error is None


def test_a_key_always_goes_to_the_partition_librdkafka_picks() -> None:
    broker = StubBroker()
    broker.create_topic("t", 6)
    p = producer(broker)
    for i in range(30):
        p.produce("t", b"v", f"key-{i % 3}")
    for key in ("key-0", "key-1", "key-2"):
        expected = zlib.crc32(key.encode()) % 6  # librdkafka's consistent_random
        assert {m.partition() for m in broker.records("t") if m.key() == key.encode()} == {expected}
    assert murmur2(b"21") == -973932308  # Kafka's own test vector


def test_keyless_records_spread_round_robin() -> None:
    broker = StubBroker()
    broker.create_topic("t", 3)
    p = producer(broker)
    for _ in range(6):
        p.produce("t", b"v")
    assert [broker.end_offset("t", i) for i in range(3)] == [2, 2, 2]


def test_delivery_callbacks_run_only_inside_poll_or_flush_on_the_calling_thread() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    p = producer(broker)
    reports: list[tuple[KafkaError | None, int | None, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        reports.append((err, msg.offset(), threading.get_ident()))

    p.produce("t", b"a", None, -1, on_delivery)  # positional, as EventProducer calls it
    p.produce("t", b"b", on_delivery=on_delivery)
    assert len(broker.records("t")) == 2  # in the log at once
    assert reports == [] and len(p) == 2
    assert p.poll(0) == 2
    assert reports == [(None, 0, threading.get_ident()), (None, 1, threading.get_ident())]
    p.produce("t", b"c", on_delivery=on_delivery)
    assert p.flush(1.0) == 0 and len(p) == 0 and len(reports) == 3


def test_an_oversized_record_raises_synchronously_like_librdkafka() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    p = producer(broker, **{"message.max.bytes": 1000})
    p.produce("t", b"x" * 964)  # librdkafka's limit: value + key + 36 bytes
    with pytest.raises(KafkaException) as info:
        p.produce("t", b"x" * 965)
    assert info.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    with pytest.raises(KafkaException):
        p.produce("t", b"x" * 952, b"k", headers=[("a", b"v" * 10)])
    assert len(broker.records("t")) == 1
    with pytest.raises(KafkaException):
        producer(broker).produce("t", b"x" * 1_000_000)  # the 1,000,000-byte default


def test_an_unknown_topic_is_reported_to_the_delivery_callback() -> None:
    broker = StubBroker()
    p = producer(broker)
    errors: list[KafkaError | None] = []
    p.produce("nowhere", b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(1.0)
    assert errors[0] is not None and errors[0].code() == KafkaError._UNKNOWN_TOPIC


def test_failed_deliveries_are_reported_and_not_appended() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    p = producer(broker)
    errors: list[int | None] = []
    broker.fail_deliveries(1)
    for value in (b"lost", b"kept"):
        p.produce("t", value, on_delivery=lambda e, m: errors.append(e if e is None else e.code()))
    p.flush(1.0)
    assert errors == [KafkaError._MSG_TIMED_OUT, None]
    assert values(broker.records("t")) == [b"kept"]


def test_records_carry_the_clocks_create_time() -> None:
    now = [1_700_000_000.25]
    broker = StubBroker(clock=lambda: now[0])
    broker.create_topic("t", 1)
    p = producer(broker)
    p.produce("t", b"a")
    now[0] += 60
    p.produce("t", b"b", headers=[("h", b"1")])
    first, second = broker.records("t")
    assert first.timestamp() == (TIMESTAMP_CREATE_TIME, 1_700_000_000_250)
    assert second.timestamp() == (TIMESTAMP_CREATE_TIME, 1_700_000_060_250)
    assert second.headers() == [("h", b"1")] and second.error() is None and len(second) == 1


def test_two_members_split_the_partitions_and_each_record_is_read_once() -> None:
    broker = StubBroker()
    broker.create_topic("t", 4)
    p = producer(broker)
    for i in range(40):
        p.produce("t", str(i).encode(), f"k{i}")
    a, b = consumer(broker), consumer(broker)
    a.subscribe(["t"])
    b.subscribe(["t"])
    got_a, got_b = drain(a), drain(b)
    assert len(a.assignment()) == len(b.assignment()) == 2
    assert sorted(values(got_a) + values(got_b), key=lambda v: int(v or b"")) == [
        str(i).encode() for i in range(40)
    ]
    assert {m.partition() for m in got_a}.isdisjoint({m.partition() for m in got_b})


def test_eager_rebalance_revokes_everything_then_assigns_everything() -> None:
    broker = StubBroker()
    broker.create_topic("t", 4)
    calls: Calls = []
    a = consumer(broker, **{"partition.assignment.strategy": "range"})
    a.subscribe(["t"], on_assign=recorder(calls, "assign"), on_revoke=recorder(calls, "revoke"))
    a.poll(0)
    assert calls == [("assign", [("t", 0), ("t", 1), ("t", 2), ("t", 3)])]
    b = consumer(broker, **{"partition.assignment.strategy": "range"})
    b.subscribe(["t"])
    calls.clear()
    a.poll(0)
    assert calls[0] == ("revoke", [("t", 0), ("t", 1), ("t", 2), ("t", 3)])
    assert calls[1][0] == "assign" and len(calls[1][1]) == 2
    b.poll(0)
    assert len(b.assignment()) == 2


def test_an_eager_member_waits_until_the_old_owner_revoked() -> None:
    broker = StubBroker()
    broker.create_topic("t", 2)
    strategy = {"partition.assignment.strategy": "roundrobin"}
    a = consumer(broker, **strategy)
    a.subscribe(["t"])
    a.poll(0)
    b = consumer(broker, **strategy)
    b.subscribe(["t"])
    b.poll(0)  # a still holds both partitions: the join barrier
    assert b.assignment() == []
    a.poll(0)
    b.poll(0)
    assert len(a.assignment()) == len(b.assignment()) == 1


def test_cooperative_rebalance_moves_only_the_increment() -> None:
    broker = StubBroker()
    broker.create_topic("t", 4)
    strategy = {"partition.assignment.strategy": "cooperative-sticky"}
    calls_a: Calls = []
    calls_b: Calls = []
    a = consumer(broker, **strategy)
    a.subscribe(["t"], on_assign=recorder(calls_a, "assign"), on_revoke=recorder(calls_a, "revoke"))
    a.poll(0)
    assert calls_a == [("assign", [("t", 0), ("t", 1), ("t", 2), ("t", 3)])]
    b = consumer(broker, **strategy)
    b.subscribe(["t"], on_assign=recorder(calls_b, "assign"), on_revoke=recorder(calls_b, "revoke"))
    calls_a.clear()
    b.poll(0)  # nothing free yet: an empty increment
    a.poll(0)  # gives up two, keeps two
    b.poll(0)  # takes the two released
    assert [name for name, _ in calls_a] == ["revoke", "assign"]
    moved = calls_a[0][1]
    assert len(moved) == 2 and calls_a[1] == ("assign", [])
    assert calls_b == [("assign", []), ("assign", moved)]
    assert sorted((tp.topic, tp.partition) for tp in b.assignment()) == moved
    assert len(a.assignment()) == 2


def test_a_cooperative_member_is_not_revoked_when_nothing_leaves_it() -> None:
    broker = StubBroker()
    broker.create_topic("t", 2)
    broker.create_topic("u", 2)
    strategy = {"partition.assignment.strategy": "cooperative-sticky"}
    calls: Calls = []
    a = consumer(broker, **strategy)
    a.subscribe(["t"], on_assign=recorder(calls, "assign"), on_revoke=recorder(calls, "revoke"))
    a.poll(0)
    b = consumer(broker, **strategy)
    b.subscribe(["u"])  # another topic: a keeps all it has
    calls.clear()
    a.poll(0)
    assert calls == [("assign", [])]


def test_a_new_member_resumes_from_the_groups_committed_offsets() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    p = producer(broker)
    for i in range(5):
        p.produce("t", str(i).encode())
    a = consumer(broker)
    a.subscribe(["t"])
    first = [a.poll(1.0) for _ in range(3)]
    assert a.commit(message=first[-1], asynchronous=False) == [TopicPartition("t", 0, 3)]
    a.close()
    assert broker.committed("g", "t", 0) == 3
    b = consumer(broker)
    b.subscribe(["t"])
    assert values(drain(b)) == [b"3", b"4"]
    assert b.committed([TopicPartition("t", 0)])[0].offset == 3


def test_auto_offset_reset_latest_skips_what_was_there() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    p = producer(broker)
    p.produce("t", b"old")
    c = consumer(broker, **{"auto.offset.reset": "latest"})
    c.subscribe(["t"])
    assert c.poll(0) is None
    p.produce("t", b"new")
    assert values(drain(c)) == [b"new"]


def test_a_killed_member_commits_nothing_and_its_records_are_redelivered() -> None:
    broker = StubBroker()
    broker.create_topic("t", 2)
    p = producer(broker)
    for i in range(10):
        p.produce("t", str(i).encode(), partition=i % 2)
    revoked: Calls = []
    a = consumer(broker)
    a.subscribe(["t"], on_revoke=recorder(revoked, "revoke"))
    b = consumer(broker)
    b.subscribe(["t"])
    read = [m for m in (a.poll(0), b.poll(0), a.poll(0)) if m is not None]  # settled
    (mine,) = a.assignment()
    read = [m for m in read + drain(a) if m.partition() == mine.partition]
    a.commit(offsets=[TopicPartition(mine.topic, mine.partition, 2)], asynchronous=False)
    a.kill()
    assert revoked == [] and broker.committed("g", "t", mine.partition) == 2
    again = [m for m in drain(b) if m.partition() == mine.partition]
    assert values(again) == values(read)[2:]
    with pytest.raises(RuntimeError):
        a.poll(0)


def test_close_runs_the_revoke_callback_where_offsets_can_be_committed() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    producer(broker).produce("t", b"x")
    c = consumer(broker)

    def on_revoke(cons: Any, partitions: list[TopicPartition]) -> None:
        cons.commit(offsets=[TopicPartition("t", 0, 1)], asynchronous=False)

    c.subscribe(["t"], on_revoke=on_revoke)
    assert c.poll(1.0) is not None
    c.close()
    assert broker.committed("g", "t", 0) == 1 and broker.members("g") == []


def test_pause_stops_a_partition_and_seek_moves_its_position() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    p = producer(broker)
    for i in range(4):
        p.produce("t", str(i).encode())
    c = consumer(broker)
    c.assign([TopicPartition("t", 0, OFFSET_BEGINNING)])
    first = c.poll(0)
    assert first is not None and first.value() == b"0"
    assert c.position([TopicPartition("t", 0)])[0].offset == 1
    c.pause([TopicPartition("t", 0)])
    assert c.poll(0.01) is None
    c.seek(TopicPartition("t", 0, 0))
    c.resume([TopicPartition("t", 0)])
    assert values(drain(c)) == [b"0", b"1", b"2", b"3"]
    with pytest.raises(KafkaException):
        c.seek(TopicPartition("t", 7, 0))


def test_an_eager_on_assign_may_choose_the_start_offsets() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    p = producer(broker)
    for i in range(3):
        p.produce("t", str(i).encode())
    c = consumer(broker)

    def on_assign(cons: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = 2
        cons.assign(partitions)

    c.subscribe(["t"], on_assign=on_assign)
    assert values(drain(c)) == [b"2"]


def test_on_commit_runs_inside_the_next_poll() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    commits: list[tuple[KafkaError | None, list[int]]] = []
    c = consumer(broker, on_commit=lambda e, ps: commits.append((e, [tp.offset for tp in ps])))
    c.assign([TopicPartition("t", 0)])
    c.commit(offsets=[TopicPartition("t", 0, 0)])
    assert commits == []
    c.poll(0)
    assert commits == [(None, [0])]
    c.commit()  # nothing stored: librdkafka's _NO_OFFSET
    c.poll(0)
    err = commits[-1][0]
    assert err is not None and err.code() == KafkaError._NO_OFFSET


def test_poll_wakes_up_when_a_record_arrives_from_another_thread() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    c = consumer(broker)
    c.assign([TopicPartition("t", 0, OFFSET_BEGINNING)])
    timer = threading.Timer(0.05, lambda: producer(broker).produce("t", b"late"))
    timer.start()
    started = time.monotonic()
    message = c.poll(5.0)
    timer.join()
    assert message is not None and message.value() == b"late"
    assert time.monotonic() - started < 1.0


def test_auto_commit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"enable\.auto\.commit"):
        StubBroker().consumer({"group.id": "g"})


def test_join_waits_for_the_group_to_commit_everything() -> None:
    broker = StubBroker()
    broker.create_topic("t", 2)
    p = producer(broker)
    for i in range(20):
        p.produce("t", str(i).encode())
    c = consumer(broker)
    c.subscribe(["t"])
    with pytest.raises(TimeoutError):
        broker.join("g", ["t"], timeout=0.01)

    def work() -> None:
        while drain(c, 1) or c.assignment() == []:
            pass
        c.commit(asynchronous=False)

    thread = threading.Thread(target=work)
    thread.start()
    broker.join("g", ["t"], timeout=5.0)
    thread.join()
    assert broker.caught_up("g", ["t"])
