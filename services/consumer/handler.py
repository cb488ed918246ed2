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
from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.outcomes import Acks, Outcomes
from taskstream.consumer.ownership import Ownership, UncountedOwnership
from taskstream.consumer.rate_limits import RateLimited, RateLimits
from taskstream.consumer.record import Record
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.run import Run
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming
from taskstream.consumer.time_limits import Watchdog
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.topics import HIGH_PRIORITY

log = logging.getLogger(__name__)

# What partition ownership is opened with: the partition ends the consumer knows (the
# runtime's high_watermark), where records it admits later go, and where records done by a
# previous owner go.
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
        consumer: Consumer,
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
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.max_in_flight = max_in_flight
        self.tracker = OffsetTracker()
        self.lag = Lag({}, {})  # as of the last commit; replaced whole (heartbeat's thread)
        self.in_flight = 0  # fetched records whose outcome is not yet delivered
        self._held: list[Record] = []  # may run, but wait for careful runs to end
        # Records whose outcome is acknowledged (appended on whichever thread served the
        # report): the loop's thread settles them at its next serve().
        self._finished: deque[Acks] = deque()
        letters = DeadLetters(settings.topic_prefix, message_max_bytes)
        self.outcomes = Outcomes(
            producer, settings.topic_prefix, app.envelopes, self._finished.append, letters,
            hooks.dead_lettered,
        )  # fmt: skip
        self.dispatcher = Dispatcher(
            app, revocations, worker_id, message_max_bytes=message_max_bytes,
            lost_max=settings.worker_lost_max_deliveries,
            destination=self.outcomes.destination, on_progress=self.outcomes.started,
            traced=traced,
        )  # fmt: skip
        self.runtime = ConsumerRuntime(
            consumer,
            self,
            self.tracker,
            timing=timing or LoopTiming(commit_every_s=settings.commit_interval_ms / 1000),
            capacity=max_in_flight,
            cooperative=cooperative,
            skip_markers=True,  # past transaction markers: lag 0 when nothing waits
            on_commit=self._committed,
            keep_alive=self._keep_alive,
            bands=bands,  # a higher band drained first (priorities)
        )
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
        self.journal: Ownership = (
            ownership(self.runtime.high_watermark, self._admitted_message, self._skipped)
            if ownership is not None
            else UncountedOwnership()
        )

    def _keep_alive(self) -> None:
        self.journal.keep_alive()

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
        return self.max_in_flight - self.in_flight

    def busy(self) -> bool:
        return self.in_flight > 0

    def serve(self, timeout: float) -> None:
        self.reports.serve(timeout)
        finished = self._finished
        journal = self.journal
        while finished:
            done = finished.popleft()
            offsets, offset = done.offsets, done.offset
            offsets.finish(offset)
            offsets.keys.pop(offset, None)
            self.in_flight -= 1
            journal.finished(offsets.topic, offsets.partition, offset)
        journal.serve(self._nothing_runs)
        if self._held and not journal.isolating:
            held, self._held = self._held, []
            for record in held:
                self.dispatch(record, None)

    def _nothing_runs(self) -> bool:
        return self.in_flight == self.journal.held() + len(self._held)

    def records(self, batch: list[Message]) -> None:
        tracker, journal = self.tracker, self.journal
        for message in batch:
            record = Record(message, tracker)
            offsets, offset = record.offsets, record.offset
            # The timestamp: lag in seconds (taskstream_consumer_lag_seconds) at commit time.
            offsets.add(offset, message.timestamp()[1])
            offsets.keys[offset] = message.key()
            self.in_flight += 1
            if journal.admit(message):  # as _admitted(record, None), one call less per record
                if journal.isolating:
                    self._held.append(record)
                else:
                    self.dispatch(record, None)

    def _admitted_message(self, message: Message, lost: int | None) -> None:
        """A record the journal held may run now (``lost``: after that many lost runs)."""
        self._admitted(Record(message, self.tracker), lost)

    def _admitted(self, record: Record, lost: int | None) -> None:
        """A record may run: as usual unless a careful run must run alone (then it waits)."""
        if lost is None and self.journal.isolating:
            self._held.append(record)
        else:
            self.dispatch(record, lost)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.journal.claim(tp)
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
        for topic, partition in keys:
            if lost:
                dropped = self.journal.lost(topic, partition)
            else:
                dropped = self._release(topic, partition)
            self.in_flight -= len(dropped)  # never run here: the next owner runs them
        if self._held:
            kept = [r for r in self._held if (r.topic, r.partition) not in keys]
            self.in_flight -= len(self._held) - len(kept)
            self._held = kept
        self._share_rates(set(self.tracker.partitions) - keys)
        remaining = len(self.tracker.partitions) - len(keys)
        self.hooks.partitions_changed("lost" if lost else "revoke", remaining, sorted(keys))

    def _release(self, topic: str, partition: int) -> list[Message]:
        """Hand a partition over with what still runs here (this worker finishes those
        runs; the new owner waits for their keys) and what is done above the commit."""
        offsets = self.tracker.partitions.get((topic, partition))
        if offsets is None:
            return self.journal.release(topic, partition)
        key = (topic, partition)
        waiting = {r.offset for r in self._held if (r.topic, r.partition) == key}
        running = {o: k for o, k in offsets.keys.items() if o not in waiting}
        return self.journal.release(topic, partition, running, offsets.done_above())

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
        while self.journal.handing and time.monotonic() < deadline:
            self.serve(0.01)  # runs handed over at a rebalance: their reports end them
        if self.in_flight:
            log.warning("%d tasks still running after the grace period", self.in_flight)

    def describe(self) -> str:
        """Where records wait, one line per partition (a test prints it when a task never
        gets its outcome): read from another thread, so a snapshot, not exact."""
        runtime, lines = self.runtime, []
        lines.append(
            f"in_flight={self.in_flight} held={len(self._held)} finished={len(self._finished)}"
            f" paused={runtime.paused} throttled={self.throttled()} "
            f"executor: {self.executor.describe()} journal: {self.journal.describe()}"
        )
        for (topic, partition), offsets in sorted(self.tracker.partitions.items()):
            lines.append(
                f"  {topic}[{partition}] committed={offsets.committed} next={offsets.next_offset}"
                f" pending={offsets.pending} in_flight={offsets.in_flight}"
                f" high={runtime.high_watermark(topic, partition)}"
                f" end={runtime.end_offset(topic, partition)}"
                f" journal_held={self.journal.held_in(topic, partition)}"
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

    def _held_in(self, key: tuple[str, int]) -> int:
        return sum(1 for r in self._held if (r.topic, r.partition) == key) if self._held else 0

    def _wait_for(self, partitions: set[tuple[str, int]], grace: float) -> None:
        """Serve delivery reports until the partitions' in-flight tasks are done."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            journal = self.journal
            busy = [
                p
                for key, p in self.tracker.partitions.items()
                if key in partitions and p.in_flight > journal.held_in(*key) + self._held_in(key)
            ]
            if not busy:
                return
            self.serve(0.01)
