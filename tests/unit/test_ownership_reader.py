"""The ownership journal's reader on the stub: whole when constructed, it fetches only while
read, from the journal's beginning, and goes on from where it stopped."""

from __future__ import annotations

from confluent_kafka import Consumer

from taskstream.consumer.ownership import JournalReader
from taskstream.testing.stub_broker import StubBroker

JOURNAL = "t.deliveries"


def journal(partitions: int = 2) -> tuple[StubBroker, Consumer]:
    broker = StubBroker()
    broker.create_topic(JOURNAL, partitions)
    consumer = broker.consumer({"group.id": "t.journal", "enable.auto.commit": False})
    return broker, consumer


def write(broker: StubBroker, *records: tuple[int, str]) -> None:
    """(partition, key) records of the journal."""
    producer = broker.producer({"bootstrap.servers": "stub"})
    for partition, key in records:
        producer.produce(JOURNAL, b"{}", key.encode(), partition=partition)
    producer.flush(1)


def keys(reader: JournalReader) -> list[tuple[int, str]]:
    return sorted(((m.partition() or 0), (m.key() or b"").decode()) for m in reader.read_new())


def test_a_new_reader_fetches_nothing_until_it_is_read() -> None:
    broker, consumer = journal()
    write(broker, (0, "a"))
    reader = JournalReader(consumer, JOURNAL, 2)
    assert (reader.topic, reader.reading) == (JOURNAL, False)
    assert consumer.assignment() == []


def test_a_reader_reads_every_partition_from_the_beginning() -> None:
    broker, consumer = journal()
    write(broker, (0, "a"), (1, "b"), (0, "c"))
    reader = JournalReader(consumer, JOURNAL, 2)
    assert keys(reader) == [(0, "a"), (0, "c"), (1, "b")]
    assert reader.reading
    assert sorted(tp.partition for tp in consumer.assignment()) == [0, 1]
    assert keys(reader) == [], "nothing new"


def test_a_stopped_reader_is_unassigned_and_reads_on_from_where_it_got_to() -> None:
    broker, consumer = journal()
    write(broker, (0, "a"), (1, "b"))
    reader = JournalReader(consumer, JOURNAL, 2)
    assert keys(reader) == [(0, "a"), (1, "b")]
    reader.stop_reading()
    assert (reader.reading, consumer.assignment()) == (False, [])
    write(broker, (1, "c"), (0, "d"))
    assert keys(reader) == [(0, "d"), (1, "c")], "not from the beginning again"


def test_a_reader_stopped_before_it_read_anything_reads_from_the_beginning() -> None:
    broker, consumer = journal()
    reader = JournalReader(consumer, JOURNAL, 2)
    assert keys(reader) == []  # an empty journal: no position yet
    reader.stop_reading()
    write(broker, (0, "a"), (1, "b"))
    assert keys(reader) == [(0, "a"), (1, "b")]
