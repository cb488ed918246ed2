"""The ownership journal's reader: the journal topic read by assignment, only when asked.

Not on the consumer runtime (taskstream.consumer.runtime): the runtime is a loop of its own
(a thread, a keeper, a group's commits), where this reader is read from the worker loop's
own turn, without waiting, and only while a claim or a hand-over waits. What it reads must
be applied on that thread (:meth:`OwnershipJournal.serve`), so a loop of its own would only
add a thread and a queue back.
"""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

_BATCH = 500  # journal records taken per read, at most


class JournalReader:
    """Reads the journal topic's ``partitions`` from their beginnings (the latest state per
    key is what counts), in no group and never committed.

    Assigned only while :meth:`read_new` is called, and unassigned by :meth:`stop_reading`, so an
    idle journal costs the broker no fetches. Unassigned, not paused: librdkafka resumes a
    paused partition's fetching only about 500 ms later, where an assignment fetches at once
    (each rebalance held a worker's new partitions that long).
    """

    def __init__(self, consumer: Consumer, topic: str, partitions: int) -> None:
        self.topic = topic
        self._consumer = consumer
        self._positions = {p: OFFSET_BEGINNING for p in range(partitions)}  # next to read
        self.reading = False  # assigned

    def read_new(self) -> list[Message]:
        """What the journal has new, without waiting (assigned where it got to, if it was
        not). Error events included: the caller logs them."""
        if not self.reading:
            self._consumer.assign(
                [TopicPartition(self.topic, p, o) for p, o in self._positions.items()]
            )
            self.reading = True
        return self._consumer.consume(_BATCH, 0)

    def stop_reading(self) -> None:
        """Unassign, keeping where it got to: the next read goes on from there."""
        partitions = [TopicPartition(self.topic, p) for p in self._positions]
        for tp in self._consumer.position(partitions):
            if tp.offset >= 0:  # OFFSET_INVALID: nothing read there yet
                self._positions[tp.partition] = tp.offset
        self._consumer.unassign()
        self.reading = False

    def close(self) -> None:
        self._consumer.close()
