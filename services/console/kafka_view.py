"""What the console reads from Kafka: backlogs of a consumer group, and single records.

A backlog is, per partition, the group's committed offset against the partition's end, and
the first record not yet done (its timestamp says how long it has waited). The end comes
from a fetch response (the cached high watermark), because queried watermarks are wrong on
some brokers (see BROKER.md): the probe assigns each partition at the group's committed
offset, without joining the group or committing, and reads until it has the head record or
knows the partition is caught up. Fetches are kept small: at most one record per partition
is looked at.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from taskstream.app import App
from taskstream.errors import BrokerError
from taskstream.kafka.clients import consumer_config, topic_partitions

# Small fetches: the probe needs one record per partition, not a backlog's megabytes.
_PROBE_FETCH: dict[str, Any] = {
    "enable.partition.eof": True,
    "max.partition.fetch.bytes": 65536,
    "fetch.max.bytes": 1048576,
    "queued.max.messages.kbytes": 1024,
}


@dataclass(frozen=True)
class PartitionBacklog:
    topic: str
    partition: int
    committed: int | None  # the group's next offset to read; None: never committed
    end: int | None  # the high watermark; None: not learnt within the timeout
    head: Message | None  # the first record not yet done, if any was read

    @property
    def records(self) -> int | None:
        """Records not yet done (end minus committed offset), None when the end is unknown."""
        if self.end is None:
            return None
        return max(0, self.end - (self.committed or 0))

    @property
    def head_time(self) -> datetime | None:
        """When the head record was written (its Kafka timestamp)."""
        if self.head is None:
            return None
        _kind, millis = self.head.timestamp()
        return datetime.fromtimestamp(millis / 1000, tz=UTC) if millis > 0 else None


def backlog(
    app: App, group: str, topics: list[str], timeout_s: float = 3.0
) -> list[PartitionBacklog]:
    """Every partition of `topics` (those that exist) with `group`'s backlog in it."""
    consumer = app.broker.consumer(consumer_config(app.settings, group, **_PROBE_FETCH))
    try:
        partitions = _partitions(consumer, topics, timeout_s)
        if not partitions:
            return []
        committed = {
            (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
            for tp in consumer.committed(partitions, timeout=timeout_s)
        }
        starts = {k: OFFSET_BEGINNING if c is None else c for k, c in committed.items()}
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
        heads = _heads(consumer, starts, time.monotonic() + timeout_s)
        return [
            PartitionBacklog(t, p, committed[(t, p)], _end(consumer, t, p), heads.get((t, p)))
            for (t, p) in sorted(starts)
        ]
    except KafkaException as exc:
        raise BrokerError.wrap(exc, f"reading the backlog of {group!r}") from exc
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topics: list[str], timeout_s: float) -> list[TopicPartition]:
    found = []
    for topic in topics:  # one not created yet has no partitions: no backlog
        found += [TopicPartition(topic, p) for p in topic_partitions(consumer, topic, timeout_s)]
    return found


def _heads(
    consumer: Consumer, starts: dict[tuple[str, int], int], deadline: float
) -> dict[tuple[str, int], Message]:
    """The first record of each partition from its start, until every partition has one or
    is known to be at its end, or the deadline."""
    heads: dict[tuple[str, int], Message] = {}
    done: set[tuple[str, int]] = set()
    while len(done) < len(starts) and time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is not None:
            key = (message.topic() or "", message.partition() or 0)
            error = message.error()
            if error is None and key not in heads:
                heads[key] = message
                consumer.pause([TopicPartition(*key)])  # one record is all it needs
                done.add(key)
            elif error is not None and error.code() == KafkaError._PARTITION_EOF:
                done.add(key)
        for key, start in starts.items():
            end = _end(consumer, *key)
            if key not in done and end is not None and end <= max(start, 0):
                done.add(key)  # caught up: the end is where the group stands
    return heads


def _end(consumer: Consumer, topic: str, partition: int) -> int | None:
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
    return high if high is not None and high >= 0 else None


def read_record(
    app: App, topic: str, partition: int, offset: int, timeout_s: float = 5.0
) -> Message | None:
    """The record at `offset` of a partition, None if it is gone (retention) or not read
    within the timeout. Joins no group and commits nothing."""
    group = f"{app.settings.topic_prefix}.console-{uuid.uuid4().hex[:8]}"
    consumer = app.broker.consumer(consumer_config(app.settings, group, **_PROBE_FETCH))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return None
                continue
            found: int | None = message.offset()
            if found == offset:
                return message
            if found is not None and found > offset:
                return None  # compacted or deleted: the record is no longer there
        return None
    except KafkaException as exc:
        raise BrokerError.wrap(exc, f"reading {topic}[{partition}]@{offset}") from exc
    finally:
        consumer.close()
