"""The stub broker behaves like the real one: the same small scenarios, run on both.

Each scenario gets a Broker (taskstream.kafka's seam): the StubBroker, or KafkaBroker on the
test session's broker. A difference here means the unit tests built on the stub prove less
than they claim.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from taskstream.config import Settings
from taskstream.kafka.broker import Broker, KafkaBroker
from taskstream.kafka.topics import TopicSpec
from taskstream.testing.stub_broker import StubBroker
from tests.conftest import BrokerHandle

pytestmark = pytest.mark.integration

_WAIT_S = 30.0  # a real group join takes seconds (BROKER.md)


@dataclass
class Backend:
    broker: Broker
    settings: Settings
    prefix: str

    def topic(self, name: str, partitions: int) -> str:
        full = f"{self.prefix}.{name}"
        self.broker.ensure_topics(self.settings, [TopicSpec(full, partitions, 1)])
        return full

    def producer(self, **extra: Any) -> Producer:
        config = {"bootstrap.servers": self.settings.bootstrap_servers, **extra}
        producer: Producer = self.broker.producer(config)
        return producer

    def consumer(self, group: str) -> Consumer:
        consumer: Consumer = self.broker.consumer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "group.id": f"{self.prefix}.{group}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "fetch.wait.max.ms": 10,
            }
        )
        return consumer


@pytest.fixture(params=["stub", "kafka"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    prefix = f"parity-{uuid.uuid4().hex[:10]}"
    if request.param == "stub":
        yield Backend(StubBroker(), Settings(bootstrap_servers="stub:9092"), prefix)
        return
    handle: BrokerHandle = request.getfixturevalue("broker")
    yield Backend(KafkaBroker(), Settings(bootstrap_servers=handle.bootstrap_servers), prefix)


def read(consumer: Consumer, n: int, timeout: float = _WAIT_S) -> list[Message]:
    """Poll until ``n`` records arrived (or the timeout)."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            out.append(message)
    return out


def counted(backend: Backend, name: str, records: int) -> str:
    """A one-partition topic holding the records ``b"0"``, ``b"1"``, ...: its name."""
    topic = backend.topic(name, 1)
    producer = backend.producer()
    for i in range(records):
        producer.produce(topic, str(i).encode())
    assert producer.flush(_WAIT_S) == 0
    return topic


def test_records_of_one_key_land_in_one_partition_in_order(backend: Backend) -> None:
    topic = backend.topic("keys", 3)
    producer = backend.producer()
    for i in range(12):
        producer.produce(topic, str(i).encode(), f"key-{i % 4}")
    assert producer.flush(_WAIT_S) == 0
    consumer = backend.consumer("keys")
    try:
        consumer.subscribe([topic])
        got = read(consumer, 12)
    finally:
        consumer.close()
    assert len(got) == 12
    for k in range(4):
        key = f"key-{k}".encode()
        mine = [m for m in got if m.key() == key]
        assert {m.partition() for m in mine} == {zlib.crc32(key) % 3}  # librdkafka's hash
        assert [m.value() for m in mine] == [str(i).encode() for i in range(k, 12, 4)]


def test_a_new_member_resumes_after_the_committed_offset(backend: Backend) -> None:
    topic = counted(backend, "resume", 5)
    first = backend.consumer("resume")
    try:
        first.subscribe([topic])
        got = read(first, 3)
        assert [m.value() for m in got] == [b"0", b"1", b"2"]
        committed = first.commit(message=got[-1], asynchronous=False)
        assert [(tp.partition, tp.offset) for tp in committed] == [(0, 3)]
    finally:
        first.close()
    second = backend.consumer("resume")
    try:
        second.subscribe([topic])
        assert [m.value() for m in read(second, 2)] == [b"3", b"4"]
        assert second.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 3
    finally:
        second.close()


def test_a_paused_partition_returns_nothing_and_seek_rewinds_it(backend: Backend) -> None:
    topic = counted(backend, "pause", 4)
    consumer = backend.consumer("pause")
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert [m.value() for m in read(consumer, 1)] == [b"0"]
        consumer.pause([TopicPartition(topic, 0)])
        assert consumer.poll(0.5) is None
        consumer.seek(TopicPartition(topic, 0, 0))
        consumer.resume([TopicPartition(topic, 0)])
        values = [m.value() for m in read(consumer, 4)]
        assert values == [b"0", b"1", b"2", b"3"]
    finally:
        consumer.close()


def test_a_partition_paused_before_its_unassign_comes_back_paused(backend: Backend) -> None:
    """librdkafka keeps a partition's pause across unassign and assign (the consumer runtime
    resumes what it lets go for that reason): the stub must too."""
    topic = counted(backend, "repause", 3)
    consumer = backend.consumer("repause")
    try:
        consumer.incremental_assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert [m.value() for m in read(consumer, 1)] == [b"0"]
        consumer.pause([TopicPartition(topic, 0)])
        consumer.incremental_unassign([TopicPartition(topic, 0)])
        consumer.incremental_assign([TopicPartition(topic, 0, 1)])
        assert consumer.poll(1.0) is None  # still paused
        consumer.resume([TopicPartition(topic, 0)])
        assert [m.value() for m in read(consumer, 2)] == [b"1", b"2"]
    finally:
        consumer.close()


def test_a_record_over_message_max_bytes_raises_at_produce(backend: Backend) -> None:
    topic = backend.topic("size", 1)
    producer = backend.producer(**{"message.max.bytes": 1000})
    producer.produce(topic, b"x" * 964)  # value + 36 bytes: exactly the limit
    with pytest.raises(KafkaException) as info:
        producer.produce(topic, b"x" * 965)
    assert info.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert producer.flush(_WAIT_S) == 0


def test_a_transaction_commits_its_records_and_a_newer_producer_fences_the_older(
    backend: Backend,
) -> None:
    """What the beat rests on (taskstream.consumer.beat): init_transactions() with the same
    transactional.id fences the older producer, whose records then never reach readers."""
    topic = backend.topic("txn", 1)
    transactional_id = f"{backend.prefix}.txn"
    older = backend.producer(**{"transactional.id": transactional_id})
    older.init_transactions(_WAIT_S)
    older.begin_transaction()
    older.produce(topic, b"a")
    older.commit_transaction(_WAIT_S)
    newer = backend.producer(**{"transactional.id": transactional_id})
    newer.init_transactions(_WAIT_S)
    fenced = {KafkaError.PRODUCER_FENCED, KafkaError._FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
    with pytest.raises(KafkaException) as caught:
        older.begin_transaction()
        older.produce(topic, b"zombie")
        older.commit_transaction(_WAIT_S)
    assert caught.value.args[0].code() in fenced
    newer.begin_transaction()
    newer.produce(topic, b"b")
    newer.commit_transaction(_WAIT_S)
    consumer = backend.consumer("txn")
    try:
        consumer.subscribe([topic])
        got = read(consumer, 2)
        got += read(consumer, 1, timeout=2)  # nothing more: the zombie's record is not there
    finally:
        consumer.close()
    assert [m.value() for m in got] == [b"a", b"b"]


def test_a_transaction_marker_takes_an_offset_that_a_reader_moves_past(backend: Backend) -> None:
    """A transaction's end writes a marker to each partition it wrote to: never delivered,
    counted in the high watermark, and position() moves past it. Lag that is "high
    watermark minus committed offset" rests on this (taskstream.consumer.runtime). (Aborted
    records are left out: Tansu delivers them to read_committed readers, see beat.py.)"""
    topic = backend.topic("markers", 1)
    txn = backend.producer(**{"transactional.id": f"{backend.prefix}.markers"})
    txn.init_transactions(_WAIT_S)
    txn.begin_transaction()
    txn.produce(topic, b"a", partition=0)
    txn.produce(topic, b"b", partition=0)
    txn.commit_transaction(_WAIT_S)  # offsets 0, 1; its commit marker 2
    consumer = backend.consumer("markers")
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = read(consumer, 2)
        deadline = time.monotonic() + _WAIT_S
        while time.monotonic() < deadline:
            assert consumer.poll(0.2) is None  # nothing more to deliver
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high == 3 and consumer.position([tp])[0].offset == 3:
                break
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        position = consumer.position([tp])[0].offset
    finally:
        consumer.close()
    assert [(m.offset(), m.value()) for m in got] == [(0, b"a"), (1, b"b")]
    assert (high, position) == (3, 3)
