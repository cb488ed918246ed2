"""A fetched task record, its position read once and typed.

confluent's ``Message`` getters are typed optional (an error event has no topic or offset),
but a consumer handler only ever gets records (the runtime filters the error events out), so
the worker reads the position once here, checks it once, and passes this on: one getter call
per field per record, instead of a call and a ``type: ignore`` at each use.
"""

from __future__ import annotations

from confluent_kafka import Message

from taskstream.consumer.offsets import OffsetTracker


class Record:
    """A record with its topic, partition, offset and the partition's offsets."""

    __slots__ = ("message", "offset", "offsets", "partition", "topic")

    def __init__(self, message: Message, tracker: OffsetTracker) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None  # a record
        self.message = message
        self.topic = topic
        self.partition = partition
        self.offset = offset
        offsets = tracker.partitions.get((topic, partition))  # tracker.get(), one call less
        self.offsets = offsets if offsets is not None else tracker.assign(topic, partition)
