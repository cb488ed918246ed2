"""The worker's handler of the consumer runtime: task records in, jobs out, offsets done.

:class:`TaskHandler` is whole when constructed: it makes its runtime, outcomes, executor,
report server and partition ownership in ``__init__``, before any loop starts, so none of
its methods depends on what a ``run()`` happened to set. Each record gets one decision
(taskstream.consumer.dispatch), applied in one place (:meth:`TaskHandler.dispatch`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from taskstream import clock
from taskstream.app import App
from taskstream.config import Settings
from taskstream.consumer.dead_letter import DeadLetters, Reason
from taskstream.consumer.delivery_reports import ReportServer
from taskstream.consumer.dispatch import (
    DeadLetter,
    Decision,
    Delay,
    Dispatcher,
    Lost,
    Revoked,
    UnknownTask,
)
from taskstream.consumer.executor import Executor
from taskstream.consumer.heartbeat import Lag
from taskstream.consumer.instrumentation import WorkerHooks
from taskstream.consumer.jobs import JobContext, TaskJob
from taskstream.consumer.offsets import OffsetTracker, commit
from taskstream.consumer.outcomes import Acks, Outcomes
from taskstream.consumer.ownership import Ownership, UncountedOwnership
from taskstream.consumer.rate_limits import RateLimited, RateLimits
from taskstream.consumer.record import Record
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.run import Run
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming, TaskLoop
from taskstream.consumer.share_runtime import ShareLane
from taskstream.consumer.time_limits import Watchdog
from taskstream.consumer.transaction import Transaction
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.topics import HIGH_PRIORITY

log = logging.getLogger(__name__)

# Exactly once: records done whose events wait for the commit in progress, per record the
# worker may have in flight, before it fetches no more. A transaction's commit takes 100-300
# ms on a busy three-node cluster; counted one for one, they held a worker at half its rate
# (measured with benchmarks workload 12: 8,236 tasks/s against 19,148-20,950 with this bound).
_UNSENT_BOUND = 10

# What partition ownership is opened with: the partition ends the consumer knows (the
# runtime's high_watermark), where records it held go when they may run, and where records
# done by a previous owner go.
OwnershipOpener = Callable[
    [
        Callable[[str, int], int | None],
        Callable[[Message, int | None], None],
        Callable[[Message], None],
    ],
    Ownership,
]


class TaskHandler:
    """Runs the task records a consumer fetches; commits only what is done."""

    def __init__(
        self,
        app: App,
        settings: Settings,
        consumer: Consumer | list[ShareLane],  # share consumers: SharedTaskHandler's
        producer: EventProducer,
        *,
        hooks: WorkerHooks,
        revocations: Revocations,
        watchdog: Watchdog,
        worker_id: str,
        concurrency: int,
        max_in_flight: int,
        message_max_bytes: int,
        traced: bool = False,
        cooperative: bool = False,
        ownership: OwnershipOpener | None = None,  # None: lost runs are not counted
        timing: LoopTiming | None = None,
        rate_limits: RateLimited | None = None,
        bands: list[list[str]] | None = None,
        transaction: Transaction | None = None,  # exactly once: outcomes commit with offsets
    ) -> None:
        self.settings = settings
        self.transaction = transaction
        self.hooks = hooks
        self.max_in_flight = max_in_flight
        self.tracker = OffsetTracker()
        self.lag = Lag({}, {})  # as of the last commit; replaced whole (heartbeat's thread)
        self.in_flight = 0  # fetched records whose outcome is not yet delivered (or held)
        # Records whose outcome is acknowledged (appended on whichever thread served the
        # report): the loop's thread settles them at its next serve().
        self._finished: deque[Acks] = deque()
        letters = DeadLetters(settings.topic_prefix, message_max_bytes)
        self.outcomes = Outcomes(
            producer, settings.topic_prefix, app.envelopes, self._finished.append, letters,
            hooks.dead_lettered, transaction,
        )  # fmt: skip
        self.dispatcher = Dispatcher(
            app, revocations, worker_id, message_max_bytes=message_max_bytes,
            lost_max=settings.worker_lost_max_deliveries,
            destination=self.outcomes.destination, on_progress=self.outcomes.started,
            traced=traced,
        )  # fmt: skip
        self.runtime: TaskLoop = self._loop(
            consumer, timing or LoopTiming(commit_every_s=settings.commit_every_s), cooperative,
            bands,
        )  # fmt: skip
        self.executor = Executor(concurrency, inline=self.runtime.run_unlocked)
        self.rate_limits: RateLimits | None = None
        if rate_limits is not None and rate_limits.tasks:
            self.rate_limits = RateLimits(
                self.executor.start, rate_limits.tasks, rate_limits.partitions
            )
            self.executor.gate(self.rate_limits)
        self.reports = ReportServer(producer)
        self.context = JobContext(
            hooks, self.outcomes, self.executor, watchdog, self.reports, revocations
        )
        self.ownership: Ownership = (
            ownership(self.runtime.high_watermark, self._admitted, self._skipped)
            if ownership is not None
            else UncountedOwnership()
        )

    def _loop(
        self, consumer: Consumer | list[ShareLane], timing: LoopTiming, cooperative: bool,
        bands: list[list[str]] | None,
    ) -> TaskLoop:  # fmt: skip
        """The loop that feeds this handler: a consumer group member's runtime."""
        assert isinstance(consumer, Consumer)
        transaction = self.transaction
        return ConsumerRuntime(
            consumer,
            self,
            self.tracker,
            timing=timing,
            capacity=self.max_in_flight,
            cooperative=cooperative,
            skip_markers=True,  # past transaction markers: lag 0 when nothing waits
            on_commit=self._committed,
            keep_alive=self._keep_alive,
            bands=bands,  # a higher band drained first (priorities)
            committer=transaction.commit if transaction is not None else commit,
        )

    def _keep_alive(self) -> None:
        self.ownership.keep_alive()

    def _committed(self, ok: bool) -> None:
        runtime = self.runtime
        lag = Lag(runtime.lag(), runtime.lag_seconds(clock.now()))
        self.hooks.committed(ok, lag.records, self.in_flight)
        self.hooks.lagged(lag.seconds)
        self.lag = lag  # for the heartbeat's thread: replaced whole

    def _skipped(self, message: Message) -> None:
        """Done by the partition's previous owner (its outcome is published): not run."""
        record = Record(message, self.tracker)
        self._finished.append(Acks(record.offsets, record.offset, 0))

    # -- the runtime's handler --------------------------------------------------------------

    def room(self) -> int:
        transaction = self.transaction
        if transaction is not None and transaction.unsent >= _UNSENT_BOUND * self.max_in_flight:
            return 0  # exactly once: records done, their events waiting for a slow commit
        return self.max_in_flight - self.in_flight

    def busy(self) -> bool:
        return self.in_flight > 0

    def serve(self, timeout: float) -> None:
        self.reports.serve(timeout)
        finished = self._finished
        ownership = self.ownership
        while finished:
            done = finished.popleft()
            offsets, offset = done.offsets, done.offset
            offsets.finish(offset)
            offsets.keys.pop(offset, None)
            self.in_flight -= 1
            ownership.finished(offsets.topic, offsets.partition, offset)
        if self.transaction is not None:
            self.transaction.send()  # exactly once: the events of records now done in order
        ownership.serve(self.in_flight)

    def records(self, batch: list[Message]) -> None:
        tracker, ownership = self.tracker, self.ownership
        for message in batch:
            record = Record(message, tracker)
            offsets, offset = record.offsets, record.offset
            # The timestamp: lag in seconds (taskstream_consumer_lag_seconds) at commit time.
            offsets.add(offset, message.timestamp()[1])
            offsets.keys[offset] = message.key()
            self.in_flight += 1
            if ownership.admit(message):  # else ownership holds it: in flight, not running
                self.dispatch(record, None)

    def _admitted(self, message: Message, lost: int | None) -> None:
        """A record ownership held may run now (``lost``: after that many lost runs)."""
        self.dispatch(Record(message, self.tracker), lost)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.ownership.assigned(tp.topic, tp.partition)
        self._share_rates(
            set(self.tracker.partitions) | {(p.topic, p.partition) for p in partitions}
        )
        self.hooks.partitions_changed("assign", len(self.tracker.partitions), [])

    def _share_rates(self, owned: set[tuple[str, int]]) -> None:
        """Rate limits are the cluster's: this worker's share follows its partitions."""
        if self.rate_limits is not None:
            for topic in self.rate_limits.topics:
                self.rate_limits.owned(topic, sum(1 for t, _p in owned if t == topic))

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if not lost and not self.runtime.stopping:
            self._wait_for(keys, self.settings.revoke_grace_s)  # then handed over as they are
        ownership, tracked = self.ownership, self.tracker.partitions
        for topic, partition in keys:
            offsets = tracked.get((topic, partition))
            if lost or offsets is None:
                dropped = ownership.revoked(topic, partition, lost=lost)
            elif self.transaction is not None:
                # Exactly once, what the revoke's commit does not cover drops its events and
                # runs again at the next owner: nothing is handed over as done or running.
                dropped = ownership.revoked(topic, partition)
            else:  # handed over with what still runs here (this worker finishes those runs;
                # the new owner waits for their keys) and what is done above the commit
                dropped = ownership.revoked(topic, partition, offsets.keys, offsets.done_above())
            self.in_flight -= dropped  # held, never run here: the next owner runs them
        self._share_rates(set(self.tracker.partitions) - keys)
        remaining = len(self.tracker.partitions) - len(keys)
        self.hooks.partitions_changed("lost" if lost else "revoke", remaining, sorted(keys))

    def throttled(self) -> int:
        """Runs waiting for their task's rate limit."""
        return self.rate_limits.waiting() if self.rate_limits is not None else 0

    def stop_rate_limits(self) -> None:
        """Start no more rate-limited runs (their records are not committed: run again)."""
        if self.rate_limits is not None:
            self.rate_limits.stop()

    def drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        self._wait_for(set(self.tracker.partitions), grace)
        while self.ownership.handing and time.monotonic() < deadline:
            self.serve(0.01)  # runs handed over at a rebalance: their reports end them
        if self.in_flight:
            log.warning("%d tasks still running after the grace period", self.in_flight)

    def describe(self) -> str:
        """Where records wait, one line per partition (a test prints it when a task never
        gets its outcome): read from another thread, so a snapshot, not exact."""
        runtime, lines = self.runtime, []
        lines.append(
            f"in_flight={self.in_flight} finished={len(self._finished)}"
            f" paused={runtime.paused} throttled={self.throttled()} "
            f"executor: {self.executor.describe()} ownership: {self.ownership.describe()}"
        )
        for (topic, partition), offsets in sorted(self.tracker.partitions.items()):
            lines.append(
                f"  {topic}[{partition}] committed={offsets.committed} next={offsets.next_offset}"
                f" pending={offsets.pending} in_flight={offsets.in_flight}"
                f" high={runtime.high_watermark(topic, partition)}"
                f" end={runtime.end_offset(topic, partition)}"
                f" held={self.ownership.held(topic, partition)}"
            )
        return "\n".join(lines)

    # -- dispatch ---------------------------------------------------------------------------

    def dispatch(self, record: Record, lost: int | None) -> None:
        """Decide what becomes of a record, and do it: the one place a decision is applied."""
        decision: Decision = self.dispatcher.decide(record, lost)
        if type(decision) is Run:  # the common case first
            job = TaskJob(self.context, decision, record.message, record.offsets)
            priority = decision.event.priority
            if priority is None or priority < HIGH_PRIORITY:
                self.executor.submit(job)
            else:  # the high band's: before the jobs fetched earlier
                self.executor.submit_urgent(job)
            return
        outcomes, hooks, message, offsets = (
            self.outcomes,
            self.hooks,
            record.message,
            record.offsets,
        )
        match decision:
            case Delay(topic):
                outcomes.forward(offsets, message, topic)
            case Revoked(task, why, outcome):
                hooks.revoked(task, why)
                outcomes.publish(offsets, message, outcome)
            case UnknownTask(outcome):
                hooks.dead_lettered(Reason.UNKNOWN_TASK.value)
                outcomes.publish(offsets, message, outcome)
            case Lost(run, outcome):
                hooks.outcome(run, outcome)
                outcomes.publish(offsets, message, outcome)
            case DeadLetter(reason, error, task):
                outcomes.dead_letter(offsets, message, reason, error, task)

    def _wait_for(self, partitions: set[tuple[str, int]], grace: float) -> None:
        """Serve delivery reports until the partitions' in-flight tasks are done."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            ownership = self.ownership
            busy = [
                p
                for key, p in self.tracker.partitions.items()
                if key in partitions and p.in_flight > ownership.held(*key)
            ]
            if not busy:
                return
            self.serve(0.01)
