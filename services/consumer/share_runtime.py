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
batch, serves the handler until all of it is acknowledged, and only then polls again.
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


class ShareRuntime:
    """Runs one share consumer for one handler until stopped (``subscribe``, ``run``)."""

    def __init__(
        self,
        consumer: ShareConsumer,
        handler: Handler,
        *,
        timing: LoopTiming | None = None,
        on_commit: Callable[[bool], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.handler = handler
        self.timing = timing or LoopTiming()
        self._on_commit = on_commit or (lambda ok: None)
        self._stopping = threading.Event()
        self._unacknowledged = 0  # records of the last poll not acknowledged yet
        self._acknowledged = 0  # acknowledged since the last poll or commit (not sent yet)
        self._last_commit = time.monotonic()
        self.last_record_at = time.monotonic()
        self.paused = False  # (the handler's interface: a share consumer never pauses)

    def subscribe(self, topics: list[str]) -> None:
        self.consumer.subscribe(topics)

    def stop(self) -> None:
        """Ask the loop to drain and return; safe from any thread."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, *, grace: float = 0.0) -> None:
        """Loop until stop(), then let the records in hand finish within ``grace``, send
        their acknowledgements and leave the group (what is left unacknowledged is released
        by the broker and delivered again)."""
        try:
            while not self._stopping.is_set():
                self.turn()
            self.handler.drain(grace)
            self._commit(asynchronous=False)
        finally:
            self._stopping.set()
            try:
                self.consumer.close()
            except KafkaException as exc:
                log.warning("closing the share consumer: %s", exc)

    def run_unlocked(self, call: Callable[[], None]) -> None:
        """Run ``call`` (a task, at concurrency 1) on the loop's thread: the share consumer's
        membership is kept by librdkafka's own threads meanwhile."""
        call()

    def turn(self) -> None:
        """One turn: wait for the batch in hand to be acknowledged, else poll the next."""
        handler, timing = self.handler, self.timing
        if self._unacknowledged > 0:
            handler.serve(timing.busy_poll_s)
            if self._acknowledged and time.monotonic() - self._last_commit >= timing.commit_every_s:
                self._commit(asynchronous=True)
            return
        try:
            batch = self.consumer.poll(timing.poll_s)  # sends the acknowledgements made
        except KafkaException as exc:
            log.warning("share consumer poll failed: %s", exc)
            time.sleep(timing.poll_s)
            return
        self._acknowledged = 0
        records: list[Message] = []
        for message in batch.records():
            error = message.error()
            if error is None:
                records.append(message)
            else:
                log.warning("share consumer: %s", error)
        if records:
            self.last_record_at = time.monotonic()
            self._unacknowledged = len(records)
            handler.records(records)
            handler.serve(0)

    def acknowledge(self, topic: str, partition: int, offset: int, kind: AcknowledgeType) -> None:
        """A record of the batch in hand is done (on the loop's thread: the handler's
        serve())."""
        self.consumer.acknowledge_offset(topic, partition, offset, kind)
        self._unacknowledged -= 1
        self._acknowledged += 1

    def commit_now(self) -> None:
        """Send the acknowledgements made, and wait for the broker's answer."""
        self._commit(asynchronous=False)

    def _commit(self, *, asynchronous: bool) -> None:
        self._last_commit = time.monotonic()
        if not self._acknowledged:
            return
        try:
            if asynchronous:
                self.consumer.commit_async()
            else:
                self.consumer.commit_sync(self.timing.committed_timeout_s)
        except KafkaException as exc:  # the next poll carries them
            log.warning("acknowledgement commit failed: %s", exc)
            self._on_commit(False)
            return
        self._acknowledged = 0
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
