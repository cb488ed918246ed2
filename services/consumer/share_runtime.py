"""The share consumer's loop: poll, hand the records over, acknowledge each one when done.

A shared queue's worker reads its topics as a member of a share group (KIP-932,
taskstream.kafka.share_groups). The loop owns the share consumer and calls it from one thread
only (it is not thread-safe), as the consumer runtime (runtime.py) does with a consumer, and
gives its records to the same kind of handler (handler.py).

What differs: there are no partitions to own, no offsets to commit and no rebalances. The
broker acquires each record for this member under a time-limited lock, and the member
acknowledges it: ACCEPT once its outcome is durable, REJECT to end it (a record at the
group's delivery limit), RELEASE to give it back. In explicit acknowledgement mode every
record of a poll must be acknowledged before the next poll (librdkafka raises otherwise), and a
poll returns whole producer batches whatever ``max.poll.records`` says, so the loop takes a
batch, serves the handler until all of it is acknowledged, and only then polls that
consumer again. A queue's high band is read by a consumer of its own (:class:`ShareLane`).
Acknowledgements are sent with the next poll, or by a commit every commit interval while the
batch's stragglers run (each record acknowledged early is safe from its lock's expiry).

A member that dies leaves its records acquired until the broker sees it gone (the group's
session timeout) or their locks expire; then they are delivered again, to any member, with
their delivery count one higher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import AcknowledgeType, KafkaException, Message, ShareConsumer

from taskstream.consumer.runtime import Handler, LoopTiming

log = logging.getLogger(__name__)


class ShareLane:
    """One share consumer and the topics it reads: a band of the shared queues.

    A queue's bands are read by share groups of their own: a share group spreads its
    members over every partition it reads (members per partition: members / partitions),
    so a group reading a queue's topic and its high band's, which is mostly empty, left half
    of twelve members on idle partitions."""

    __slots__ = ("acknowledged", "consumer", "topics", "unacknowledged")

    def __init__(self, consumer: ShareConsumer, topics: list[str]) -> None:
        self.consumer = consumer
        self.topics = topics
        self.unacknowledged = 0  # records of its last poll not acknowledged yet
        self.acknowledged = 0  # acknowledged since its last poll or commit (not sent yet)


class ShareRuntime:
    """Runs share consumers (one per band, the highest first) for one handler until
    stopped (``subscribe``, ``run``)."""

    def __init__(
        self,
        lanes: list[ShareLane],
        handler: Handler,
        *,
        timing: LoopTiming | None = None,
        on_commit: Callable[[bool], None] | None = None,
    ) -> None:
        self.lanes = lanes
        self._lane_of = {t: lane for lane in lanes for t in lane.topics}
        self.handler = handler
        self.timing = timing or LoopTiming()
        self._on_commit = on_commit or (lambda ok: None)
        self._stopping = threading.Event()
        self._last_commit = time.monotonic()
        self.last_record_at = time.monotonic()
        self.paused = False  # (the handler's interface: a share consumer never pauses)

    def subscribe(self, topics: list[str]) -> None:
        """Each lane subscribes to its topics (of ``topics``)."""
        for lane in self.lanes:
            lane.consumer.subscribe([t for t in lane.topics if t in topics])

    def stop(self) -> None:
        """Ask the loop to drain and return; safe from any thread."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, *, grace: float = 0.0) -> None:
        """Loop until stop(), then let the records in hand finish within ``grace``, send
        their acknowledgements and leave the groups (what is left unacknowledged is released
        by the broker and delivered again)."""
        try:
            while not self._stopping.is_set():
                self.turn()
            self.handler.drain(grace)
            self.commit_now()
        finally:
            self._stopping.set()
            for lane in self.lanes:
                try:
                    lane.consumer.close()
                except KafkaException as exc:
                    log.warning("closing a share consumer: %s", exc)

    def run_unlocked(self, call: Callable[[], None]) -> None:
        """Run ``call`` (a task, at concurrency 1) on the loop's thread: the share consumers'
        membership is kept by librdkafka's own threads meanwhile."""
        call()

    def turn(self) -> None:
        """One turn: poll each lane whose batch in hand is acknowledged (the highest band
        first, without waiting while another lane has records in hand), then serve."""
        timing, lanes = self.timing, self.lanes
        free = [lane for lane in lanes if not lane.unacknowledged]
        busy = len(free) < len(lanes)
        for i, lane in enumerate(free):
            last = i == len(free) - 1
            self._poll(lane, timing.poll_s if last and not busy else 0)
        if any(lane.unacknowledged for lane in lanes):
            self.handler.serve(timing.busy_poll_s)
            if time.monotonic() - self._last_commit >= timing.commit_every_s:
                self._commit(asynchronous=True)

    def _poll(self, lane: ShareLane, timeout: float) -> None:
        try:
            batch = lane.consumer.poll(timeout)  # sends the acknowledgements made
        except KafkaException as exc:
            log.warning("share consumer poll failed: %s", exc)
            time.sleep(timeout)
            return
        lane.acknowledged = 0
        records: list[Message] = []
        for message in batch.records():
            error = message.error()
            if error is None:
                records.append(message)
            else:
                log.warning("share consumer: %s", error)
        if records:
            self.last_record_at = time.monotonic()
            lane.unacknowledged = len(records)
            self.handler.records(records)
            self.handler.serve(0)

    def acknowledge(self, topic: str, partition: int, offset: int, kind: AcknowledgeType) -> None:
        """A record in hand is done (on the loop's thread: the handler's serve())."""
        lane = self._lane_of[topic]
        lane.consumer.acknowledge_offset(topic, partition, offset, kind)
        lane.unacknowledged -= 1
        lane.acknowledged += 1

    def commit_now(self) -> None:
        """Send the acknowledgements made, and wait for the broker's answer."""
        self._commit(asynchronous=False)

    def _commit(self, *, asynchronous: bool) -> None:
        self._last_commit = time.monotonic()
        for lane in self.lanes:
            if not lane.acknowledged:
                continue
            try:
                if asynchronous:
                    lane.consumer.commit_async()
                else:
                    lane.consumer.commit_sync(self.timing.committed_timeout_s)
            except KafkaException as exc:  # the next poll carries them
                log.warning("acknowledgement commit failed: %s", exc)
                self._on_commit(False)
                continue
            lane.acknowledged = 0
            self._on_commit(True)

    # -- what the handler asks of a loop (a share group has no partitions of its own) -------

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def lag_seconds(self, now: float) -> dict[tuple[str, int], float]:
        return {}

    def high_watermark(self, topic: str, partition: int) -> int | None:
        return None

    def end_offset(self, topic: str, partition: int) -> int | str:
        return "unknown (shared)"
