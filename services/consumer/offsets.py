"""Offset tracking: what a worker may commit while tasks finish out of order.

A partition's committable offset is the lowest offset whose outcome is not yet delivered
(or one past the highest seen when all are). Tasks of different keys finish in any order,
so the window between the committed offset and the newest fetched one is bounded by the
worker's max-tasks-in-flight, not by how far a fast key runs ahead.
"""

from __future__ import annotations

import logging
from collections import deque

from confluent_kafka import Consumer, KafkaException, TopicPartition

log = logging.getLogger(__name__)


class PartitionOffsets:
    """The offsets of one partition, for one assignment of it.

    A revoked partition's object is dropped, so late completions of its tasks touch only
    that stale object and never the bookkeeping of a later assignment.
    """

    __slots__ = (
        "_done",
        "_pending",
        "_times",
        "committed",
        "keys",
        "next_offset",
        "partition",
        "revoked",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._pending: deque[int] = deque()  # received, in offset order, until committable
        self._times: deque[int] = deque()  # their record timestamps (ms; 0: not given)
        self._done: set[int] = set()  # finished but above an unfinished one
        self.next_offset: int | None = None  # one past the highest offset received
        self.committed: int | None = None  # the last offset committed
        # A worker's records not yet done: offset -> key, to hand a partition over running
        self.keys: dict[int, bytes | None] = {}
        self.revoked = False  # this assignment is over (late completions touch only it)

    def add(self, offset: int, timestamp: int = 0) -> None:
        """A record was received; offsets arrive in increasing order. ``timestamp``: the
        record's, in ms since the epoch, for :meth:`age_ms` (0: not tracked)."""
        self._pending.append(offset)
        self._times.append(timestamp)
        self.next_offset = offset + 1

    def finish(self, offset: int) -> None:
        """The record's outcome is delivered."""
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            times = self._times
            times.popleft()
            done = self._done
            while pending and pending[0] in done:
                done.discard(pending.popleft())
                times.popleft()
        else:
            self._done.add(offset)

    def advance(self, position: int) -> None:
        """Everything below ``position`` is done (a consumer that finishes in order)."""
        if not self._pending:
            self.next_offset = position

    @property
    def in_flight(self) -> int:
        return len(self._pending) - len(self._done)

    @property
    def pending(self) -> int:
        """Records received and not yet committable (unfinished, or above an unfinished)."""
        return len(self._pending)

    @property
    def done_up_to(self) -> int:
        """With nothing pending, every offset below this one is done (0 before any record
        or commit: a partition read from its start)."""
        if self.next_offset is not None:
            return self.next_offset
        return self.committed if self.committed is not None else 0

    def done_above(self) -> list[int]:
        """Offsets finished above an unfinished one (a commit cannot cover them yet)."""
        return sorted(self._done)

    def age_ms(self, now_ms: int, high: int | None) -> int | None:
        """How old the oldest record not yet done is, in ms, given the partition's end
        ``high``: the lowest unfinished record received, 0 when every record up to the end
        is done, None when records wait that were not received yet (their age is unknown
        here)."""
        if self._times:
            oldest = self._times[0]
            return max(0, now_ms - oldest) if oldest else 0
        position = self.next_offset if self.next_offset is not None else self.committed
        if high is None or high <= (position or 0):
            return 0
        return None

    def committable(self) -> int | None:
        """The offset to commit now (the next one to read), or None if nothing new."""
        position = self._pending[0] if self._pending else self.next_offset
        if position is None or position == self.committed:
            return None
        return position


class OffsetTracker:
    """Every assigned partition's offsets, keyed by (topic, partition)."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionOffsets] = {}

    def assign(self, topic: str, partition: int) -> PartitionOffsets:
        offsets = self.partitions[(topic, partition)] = PartitionOffsets(topic, partition)
        return offsets

    def get(self, topic: str, partition: int) -> PartitionOffsets:
        offsets = self.partitions.get((topic, partition))
        return offsets if offsets is not None else self.assign(topic, partition)

    def revoke(self, topic: str, partition: int) -> PartitionOffsets | None:
        offsets = self.partitions.pop((topic, partition), None)
        if offsets is not None:
            offsets.revoked = True
        return offsets

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.partitions.values())

    def uncommitted(self) -> bool:
        """Whether any partition has a committable offset not committed yet."""
        return any(p.committable() is not None for p in self.partitions.values())

    def committable(self) -> list[tuple[PartitionOffsets, int]]:
        out = []
        for p in self.partitions.values():
            position = p.committable()
            if position is not None:
                out.append((p, position))
        return out


def commit(
    consumer: Consumer,
    tracker: OffsetTracker,
    asynchronous: bool,
    only: set[tuple[str, int]] | None = None,
) -> bool:
    """Commit every tracked partition's committable offset (or only those in ``only``).

    Returns False when the commit failed; the next commit carries the same or newer offsets.
    """
    items = [
        (p, pos)
        for p, pos in tracker.committable()
        if only is None or (p.topic, p.partition) in only
    ]
    if not items:
        return True
    offsets = [TopicPartition(p.topic, p.partition, pos) for p, pos in items]
    try:
        # Branches on the literal: confluent-kafka's overloads type asynchronous as Literal.
        if asynchronous:
            consumer.commit(offsets=offsets, asynchronous=True)
        else:
            consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        log.warning("commit failed (the next one carries these offsets): %s", exc)
        return False
    for p, pos in items:
        p.committed = pos
    return True
