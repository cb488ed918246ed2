"""Finding revoked tasks that wait in a delay tier, so that they show REVOKED at once.

The delay scheduler reads a tier partition only up to its first unripe record, so a task
revoked while it waits an hour would stay PENDING until its next hop (where it is dropped).
When revocations arrive, the scheduler asks :class:`TierScan` for the revoked ids among the
records of the tier partitions it owns, from their committed offsets to their ends, and
publishes their REVOKED outcomes right away. The records stay where they are: at their hop
they are found revoked (a revocation is kept longer than the largest tier) and dropped, so
the task never runs. A scan reads with its own consumer, assigned, in no group (it never
commits); revocations are rare, and a scan reads only what waits in this scheduler's share.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, Message, TopicPartition

from taskstream.app import App
from taskstream.envelope import TaskEvent
from taskstream.kafka.clients import consumer_config
from taskstream.kafka.topics import delay_scanners

log = logging.getLogger(__name__)

_BATCH = 500  # records per consume() call
_POLL_S = 0.1
_WATERMARK_TIMEOUT_S = 5.0


class TierScan:
    """Looks for task ids in delay-tier partitions (opened on the first scan)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._consumer: Consumer | None = None

    def find(
        self, ids: set[str], starts: list[TopicPartition], timeout: float = 30.0
    ) -> list[tuple[Message, TaskEvent]]:
        """The records, with their decoded events, of the tasks in ``ids`` found in the
        partitions ``starts`` from each one's offset (negative: its beginning) to its end as
        it is now. Stops after ``timeout`` seconds with what it found (logged)."""
        consumer = self._open()
        ends = self._ends(consumer, starts)
        if not ends:
            return []
        found: list[tuple[Message, TaskEvent]] = []
        deadline = time.monotonic() + timeout
        try:
            while ends and time.monotonic() < deadline:
                self._read(consumer, ids, ends, found)
        finally:
            consumer.unassign()
        if ends:
            log.warning(
                "a revocation scan of the delay tiers stopped after %.0fs with %d partitions "
                "unread: their revoked tasks show REVOKED at their next hop",
                timeout,
                len(ends),
            )
        return found

    @staticmethod
    def _ends(consumer: Consumer, starts: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """Assign the partitions with records past their start; their ends (high watermarks)."""
        ends: dict[tuple[str, int], int] = {}
        assignment: list[TopicPartition] = []
        for tp in starts:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=_WATERMARK_TIMEOUT_S
            )
            start = tp.offset if tp.offset >= 0 else low
            if start < high:
                ends[(tp.topic, tp.partition)] = high
                assignment.append(TopicPartition(tp.topic, tp.partition, start))
        if assignment:
            consumer.assign(assignment)
        return ends

    def _read(
        self,
        consumer: Consumer,
        ids: set[str],
        ends: dict[tuple[str, int], int],
        found: list[tuple[Message, TaskEvent]],
    ) -> None:
        """One fetch: matches go to ``found``, partitions read to their end leave ``ends``."""
        decode = self.app.envelopes.decode_task
        for message in consumer.consume(_BATCH, _POLL_S):
            key = (message.topic() or "", message.partition() or 0)
            end = ends.get(key)
            if message.error() is not None or end is None:
                continue
            if (message.offset() or 0) >= end - 1:
                del ends[key]
            try:
                event = decode(message.value() or b"")
            except Exception:  # dead-lettered at its hop
                continue
            if event.id in ids:
                found.append((message, event))
        # A transaction's commit marker ends a partition with no record to read.
        for tp in consumer.position([TopicPartition(t, p) for t, p in ends]):
            if tp.offset >= ends[(tp.topic, tp.partition)]:
                del ends[(tp.topic, tp.partition)]

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _open(self) -> Consumer:
        if self._consumer is None:
            s = self.app.settings
            config = consumer_config(s, delay_scanners(s.topic_prefix))
            self._consumer = self.app.broker.consumer(config)
        return self._consumer
