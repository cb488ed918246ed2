"""The worker's handler of a shared queue: the task handler over a share consumer.

Each record is decided, run and published exactly as on an ordered queue (handler.py); what
differs is how it ends. Where an ordered queue's record makes its partition's offset
committable, a shared record is acknowledged to the share group (share_runtime.py): ACCEPT
once its outcome (a result, the retry's hop to a delay tier, the dead letter) is
acknowledged by the broker, nothing earlier; REJECT for a record delivered at the group's
delivery limit, which is not run (a ``WorkerLost`` failure and a dead letter, as on an
ordered queue, from the broker's delivery count instead of the ownership journal's).

Not on a shared queue: partitions owned by one member (so no per-key order, no hand-over
of running tasks at a rebalance, which has no meaning here) and rate limits (shared out by
partitions owned).
"""

from __future__ import annotations

from collections import deque

from confluent_kafka import AcknowledgeType, Consumer, Message

from taskstream.app import App
from taskstream.consumer.handler import TaskHandler
from taskstream.consumer.record import Record
from taskstream.consumer.runtime import LoopTiming, TaskLoop
from taskstream.consumer.share_runtime import ShareLane, ShareRuntime
from taskstream.kafka.share_groups import (
    OUTCOME_MARGIN_S,
    SharedQueueError,
    ShareGroupConfig,
    ShareGroupRefused,
)


def configure_share_groups(app: App, groups: list[str], queues: list[str]) -> ShareGroupConfig:
    """Set the shared queues' share groups up for the tasks they serve (the tasks whose queue
    is one of ``queues``): a record lock that outlasts the longest run and the publication of
    its outcome, and the delivery limit of ``worker_lost_max_deliveries``. A task that could
    outlive any lock the cluster allows stops the worker here, before it takes a record:
    its run would go on while the broker delivers its record to another worker."""
    s = app.settings
    tasks = sorted((t for t in app.tasks.values() if t.queue in queues), key=lambda t: t.name)
    names = ", ".join(queues)
    unlimited = [t.name for t in tasks if t.options.time_limit is None]
    if unlimited:
        raise SharedQueueError(
            f"task(s) {', '.join(unlimited)} of shared queue(s) {names} have no time_limit: a "
            f"shared queue's record is locked for the share group's "
            f"share.record.lock.duration.ms (15-60 s on a default broker), and a run that "
            f"outlives its lock runs again on another worker. Give each a time_limit "
            f"(@app.task(time_limit=...)) or serve them from an ordered queue"
        )
    longest = max(tasks, key=lambda t: t.options.time_limit or 0.0, default=None)
    limit = 0.0 if longest is None else longest.options.time_limit or 0.0
    config = ShareGroupConfig.plan(s, limit)
    try:
        for group in groups:
            app.broker.alter_share_group(s, group, config.entries())
    except ShareGroupRefused as exc:
        if longest is None or "lock.duration" not in str(exc):
            raise
        raise SharedQueueError(
            f"task {longest.name!r} (shared queue {longest.queue!r}) has time_limit={limit:g} "
            f"s, so its record's lock must last {config.lock_ms} ms (the run and "
            f"{OUTCOME_MARGIN_S:g} s to publish its outcome), and the cluster refuses that: "
            f"{exc}. Lower its time_limit, serve it from an ordered queue, or raise the "
            f"brokers' group.share.max.record.lock.duration.ms"
        ) from exc
    return config


class SharedTaskHandler(TaskHandler):
    """Runs the records a share consumer acquires; acknowledges each once its outcome is
    durable."""

    _rejected: set[tuple[str, int, int]]  # records at the delivery limit: REJECT when done
    _careful: deque[tuple[Record, int | None]]  # delivered again: run alone, after the others

    def _loop(
        self, consumer: Consumer | list[ShareLane], timing: LoopTiming, cooperative: bool,
        bands: list[list[str]] | None,
    ) -> TaskLoop:  # fmt: skip
        assert isinstance(consumer, list)
        self._rejected = set()
        self._careful = deque()
        self.share_runtime = ShareRuntime(
            consumer, self, timing=timing, on_commit=self.hooks.commit_result
        )
        return self.share_runtime

    def records(self, batch: list[Message]) -> None:
        tracker, hooks = self.tracker, self.hooks
        lost_max = self.settings.worker_lost_max_deliveries
        hooks.shared("acquired", len(batch))
        for message in batch:
            record = Record(message, tracker)
            record.offsets.add(record.offset, message.timestamp()[1])
            self.in_flight += 1
            count = message.delivery_count() or 1
            hooks.delivered_times(count)
            lost = count - 1 if lost_max else None  # deliveries that ended without an ACCEPT
            if lost is not None and lost >= lost_max:  # the group's last delivery: not run
                self._rejected.add((record.topic, record.partition, record.offset))
            elif count > 1:
                self._careful.append((record, lost))
                continue
            self.dispatch(record, lost)
        self._next_careful()

    def _next_careful(self) -> None:
        """Records delivered again run last, one at a time, each once every other record in
        hand is done and acknowledged to the broker. Records a worker held when it died all
        come back with one delivery more, whichever of them killed it: run first and alone
        they would take the fresh records of their batch down with them again."""
        careful = self._careful
        if careful and self.in_flight == len(careful):
            record, lost = careful.popleft()
            self.share_runtime.commit_now()
            self.dispatch(record, lost)

    def drain(self, grace: float) -> None:
        super().drain(grace)
        if self.in_flight:  # the broker releases them when the consumer leaves its group
            self.hooks.shared("released", self.in_flight)

    def serve(self, timeout: float) -> None:
        self.reports.serve(timeout)
        finished, runtime, rejected = self._finished, self.share_runtime, self._rejected
        accepted = 0
        while finished:
            done = finished.popleft()
            offsets, offset = done.offsets, done.offset
            offsets.finish(offset)
            self.in_flight -= 1
            key = (offsets.topic, offsets.partition, offset)
            if rejected and key in rejected:
                rejected.discard(key)
                runtime.acknowledge(*key, AcknowledgeType.REJECT)
                self.hooks.shared("rejected")
            else:
                runtime.acknowledge(*key, AcknowledgeType.ACCEPT)
                accepted += 1
        if accepted:
            self.hooks.shared("accepted", accepted)
        if self._careful:
            self._next_careful()
