"""The worker: a consumer-group member that runs tasks and commits only what is done.

The consumer runtime (runtime.py) owns the consumer and polls it from one thread; the
worker is its handler: it decodes each record and hands it to the executor, where task code
runs, so a task of any length never keeps the loop from polling (the worker stays in its
group). A record's offset becomes committable only when its outcome (a result event, a
retry's next attempt, or the record itself in the dead-letter topic) is acknowledged by the
broker (acks=all), so a worker killed at any moment loses no task: its uncommitted records
are redelivered to the group's other members. Partition ownership (the ownership package) counts
the runs lost with a dying worker, so that a task that kills its worker ends as a dead
letter instead of a crash loop. Each worker process also runs a delay scheduler (delays.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from types import FrameType

from confluent_kafka import KafkaError, Message, TopicPartition

from taskstream import clock, tracing
from taskstream.app import App
from taskstream.consumer import workflow
from taskstream.consumer.dead_letter import DeadLetters, Reason
from taskstream.consumer.delays import DelayScheduler
from taskstream.consumer.execution import (
    TERMINATED,
    Outcome,
    Run,
    revoked,
    run_async,
    run_sync,
    unknown_task,
)
from taskstream.consumer.executor import Executor
from taskstream.consumer.heartbeat import Heartbeat, Lag
from taskstream.consumer.instrumentation import PrometheusHooks, WorkerHooks
from taskstream.consumer.offsets import OffsetTracker, PartitionOffsets
from taskstream.consumer.outcomes import Outcomes
from taskstream.consumer.ownership import Ownership, OwnershipJournal, UncountedOwnership
from taskstream.consumer.partition_check import short_queues
from taskstream.consumer.reports import ReportServer
from taskstream.consumer.revocation import ControlReader, Revocations
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming, RuntimeOwner
from taskstream.consumer.time_limits import Watchdog
from taskstream.consumer.tracing import TracingHooks
from taskstream.envelope import now_micros
from taskstream.errors import TimeLimitExceeded, UnknownSchema
from taskstream.kafka import (
    Access,
    EventProducer,
    consumer_config,
    header_pairs,
    incremental_assignment,
    producer_config,
    topic_partitions,
    worker_id,
)
from taskstream.sizes import message_max_bytes
from taskstream.topics import (
    DELAY_TIERS_S,
    control_topic,
    dead_letter_topic,
    delay_topic,
    delays_group,
    deliveries_topic,
    heartbeats_topic,
    results_topic,
    task_topic,
    worker_group,
)

log = logging.getLogger(__name__)

_EARLY_TOLERANCE_US = 5_000  # an event due within this is run now, not delayed again
_CLOSE_FLUSH_S = 5.0  # at most this for the producer's last events when the worker stops
# A stop signal this soon after the first is that one repeated, not a second request: the
# kernel sends the parent-death signal (PR_SET_PDEATHSIG, dev's children) once per thread
# of a SIGKILLed parent as each exits, milliseconds apart. In seconds.
_SIGNAL_REPEAT_S = 0.25


class JobContext:
    """What a task job uses: the worker's collaborators, handed in."""

    __slots__ = (
        "executor", "hooks", "outcomes", "publish_lock", "reports", "revocations", "running",
        "watchdog",
    )  # fmt: skip

    def __init__(
        self,
        hooks: WorkerHooks,
        outcomes: Outcomes,
        executor: Executor,
        watchdog: Watchdog,
        reports: ReportServer,
        revocations: Revocations,
    ) -> None:
        self.revocations = revocations
        self.hooks = hooks
        self.outcomes = outcomes
        self.executor = executor
        self.watchdog = watchdog
        self.reports = reports
        self.publish_lock = threading.Lock()  # one outcome per record, even when abandoned
        self.running: set[TaskJob] = set()  # the runs in progress, for the heartbeat


class TaskJob:
    """One record's run on the executor; its outcome is published exactly once."""

    __slots__ = (
        "_published",
        "context",
        "is_async",
        "key",
        "limited",
        "message",
        "offsets",
        "on_loop",
        "released",
        "run_",
    )

    def __init__(
        self, context: JobContext, run: Run, message: Message, offsets: PartitionOffsets
    ) -> None:
        self.context = context
        self.run_ = run
        self.message = message
        self.offsets = offsets
        self.key = run.event.key
        self.is_async = run.task.is_async
        event = run.event  # limits of the task, or of this call (apply_async)
        self.limited = run.task.options.time_limited or (
            event.time_limit is not None or event.soft_time_limit is not None
        )
        self.released = False
        self.on_loop = False  # runs on the consumer loop's thread (concurrency 1)
        self._published = False

    def _skipped(self) -> bool:
        """Revoked (or expired) while it waited in the worker: REVOKED, not run."""
        reason = self.context.revocations.why_not_run(self.run_.event)
        if reason is None:
            return False
        context = self.context  # it never ran: counted as revoked, not as a run
        context.hooks.revoked(self.run_.task.name, reason)
        context.outcomes.publish(self.offsets, self.message, self.run_.revoked(reason))
        context.reports.serve_ready()
        return True

    def _begin(self) -> None:
        self.context.running.add(self)  # set.add/discard: atomic, no lock, no Python call
        self.context.hooks.run_started(self.run_)
        if self.run_.task.options.track_started:
            self.context.outcomes.started(self.run_.started_event())

    def run(self) -> None:
        if self._skipped():
            return
        self.on_loop = threading.get_ident() == self.context.executor.owner
        self._begin()
        self.publish(run_sync(self.run_, self.context.watchdog, self.abandon))

    async def run_async(self) -> None:
        if self._skipped():
            return
        self._begin()
        self.publish(await run_async(self.run_, self.context.watchdog))

    def abandon(self, terminated: bool) -> None:
        """Still stuck past its hard time limit (or after Terminated was raised in it, for a
        revoke with terminate): record the outcome, free the slot."""
        if terminated:
            self.run_.terminated = True
            self.publish(self.run_.revoked(TERMINATED))
            if self.on_loop:
                return  # the loop's own thread: no pool thread to replace
        else:
            limit = self.run_.time_limits[1]
            error = TimeLimitExceeded(f"hard time limit of {limit}s exceeded")
            self.publish(self.run_.failed(error))
        self.context.executor.abandon(self)

    def publish(self, outcome: Outcome) -> None:
        context = self.context
        if self.limited or self.run_.terminated:  # the watchdog may abandon the run meanwhile
            with context.publish_lock:
                if self._published:
                    return  # an abandoned run came back after all
                self._published = True
        context.running.discard(self)
        if workflow.wants_follow_up(self.run_.event):
            outcome = workflow.follow(self.run_, outcome)
        context.hooks.outcome(self.run_, outcome)
        context.outcomes.publish(self.offsets, self.message, outcome)
        context.reports.serve_ready()


class Worker(RuntimeOwner):
    """Runs an app's tasks from its queues' topics until stopped.

    ``run()`` blocks; ``stop()`` (or SIGTERM/SIGINT after ``install_signal_handlers()``)
    stops fetching, lets in-flight tasks finish within the shutdown grace, commits, returns.
    """

    def __init__(
        self,
        app: App,
        *,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        max_tasks_in_flight: int | None = None,
        group_id: str | None = None,
        hooks: WorkerHooks | None = None,
    ) -> None:
        s = app.settings
        self.app = app
        self.settings = s
        self.hooks = hooks if hooks is not None else PrometheusHooks()
        # OpenTelemetry installed and a tracer provider set (by the app's module, loaded
        # before): a span per run. Else no hook, no header read.
        self._traced = tracing.active()
        if self._traced:
            self.hooks = TracingHooks(self.hooks)
        self.queues = queues or app.queues
        self.topics = [task_topic(s.topic_prefix, q) for q in self.queues]
        self.warnings: list[str] = []  # set-up problems found at the start (heartbeats)
        self.group_id = group_id or worker_group(s.topic_prefix)
        self.concurrency = concurrency or s.concurrency
        self.max_in_flight = max(max_tasks_in_flight or s.max_tasks_in_flight, self.concurrency)
        self.worker_id = worker_id()
        self._tracker = OffsetTracker()
        self.lag = Lag({}, {})  # as of the last commit
        self._in_flight = 0  # fetched records whose outcome is not yet delivered
        self._signalled_at: float | None = None  # time.monotonic() of the first stop signal
        self._held: list[Message] = []  # may run, but wait for careful runs to end
        self._finished: deque[tuple[PartitionOffsets, int]] = deque()  # outcomes acknowledged
        # Revoked task ids, from the control topic.
        self.revocations = Revocations(app.settings.revokes_max)

    # -- lifecycle --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._repeated_signal():
                return
            if self._stop_requested:
                # A second signal: at once. Unfinished tasks are not committed, so the next
                # owner of their partitions runs them (at least once, as after a crash).
                log.warning("received %s again: stopping at once, %d tasks unfinished (run "
                            "again by the next worker)", name, self._in_flight)  # fmt: skip
                logging.shutdown()
                os._exit(1)
            log.warning("received %s: stopping; waiting up to %.0f s for %d tasks in flight "
                        "(send %s again to stop at once)", name, self.settings.shutdown_grace_s,
                        self._in_flight, name)  # fmt: skip
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _repeated_signal(self) -> bool:
        """Whether this stop signal repeats the first (see _SIGNAL_REPEAT_S); notes the first."""
        now = time.monotonic()
        if self._signalled_at is None:
            self._signalled_at = now
            return False
        return now - self._signalled_at < _SIGNAL_REPEAT_S

    def run(self) -> None:
        s, app = self.settings, self.app
        app.ensure_topics(sorted({*app.queues, *self.queues}))  # chains send to the others
        # Credentials, certificate and ACLs checked before any task is taken: a worker that
        # may not publish outcomes must not consume (taskstream.preflight).
        app.broker.check_access(s, self._access())
        self.warnings = short_queues(app, self.queues)
        producer_settings = producer_config(s)
        self.message_max_bytes = message_max_bytes(producer_settings)  # what a result may take
        producer = self._producer = EventProducer(producer_settings, broker=app.broker)
        letters = DeadLetters(s.topic_prefix, self.message_max_bytes)
        self.outcomes = Outcomes(
            producer, s.topic_prefix, app.envelopes, self._done, letters, self.hooks.dead_lettered
        )
        config = consumer_config(
            s, self.group_id, strategy="cooperative-sticky", on_commit=self._commit_answered
        )
        consumer = app.broker.consumer(config)
        tracker = self._tracker
        runtime = ConsumerRuntime(
            consumer,
            self,
            tracker,
            timing=LoopTiming(commit_every_s=s.commit_interval_ms / 1000),
            capacity=self.max_in_flight,
            cooperative=incremental_assignment(config),
            skip_markers=True,  # past transaction markers: lag 0 when nothing waits
            on_commit=self._committed,
            keep_alive=lambda: self._journal.keep_alive(),
        )
        self.executor = Executor(self.concurrency, inline=runtime.run_unlocked)
        self._reports = ReportServer(producer)
        watchdog = Watchdog()
        self._context = JobContext(
            self.hooks, self.outcomes, self.executor, watchdog, self._reports, self.revocations
        )
        control = ControlReader(app, self.revocations, watchdog.terminate, self.worker_id)
        control_thread = control.start()
        self._journal: Ownership = (
            self._open_journal(runtime) if s.worker_lost_max_deliveries else UncountedOwnership()
        )
        delays = DelayScheduler(app, self.revocations, self.worker_id)
        delays_thread = threading.Thread(target=delays.run, name="taskstream-delays", daemon=True)
        delays_thread.start()
        # Every revocation made so far is known before the first task is taken.
        control.wait_ready(s.delivery_timeout_ms / 1000, lambda: self._stop_requested)
        self._started(runtime)
        runtime.subscribe(self.topics)
        heartbeat = self._heartbeat(producer) if s.worker_heartbeat_s > 0 else None
        log.info("worker %s consuming %s as group %s", self.worker_id, self.topics, self.group_id)
        try:
            runtime.run(grace=s.shutdown_grace_s)  # closing revokes: releases, commits
        finally:
            if heartbeat is not None:
                heartbeat.stop()  # its last beat says "offline"; the producer's close sends it
            self._journal.close()
            control.stop()
            control_thread.join(s.delivery_timeout_ms / 1000)
            delays.stop()
            delays_thread.join(s.delivery_timeout_ms / 1000)
            # Every outcome a commit depends on was acknowledged before the runtime's last
            # commit; what is left (the journal's releases, the last heartbeat) only saves the
            # next owner some work, so a broker gone with the worker's parent costs a second.
            producer.close(
                min(s.delivery_timeout_ms / 1000, _CLOSE_FLUSH_S),
                expendable="this worker's partition releases and its offline heartbeat; the "
                "next owner of its partitions treats them as a dead owner's",
            )
            self.executor.shutdown()
            log.info("worker %s stopped", self.worker_id)

    def _access(self) -> Access:
        """The topics and groups a worker reads and writes."""
        prefix = self.settings.topic_prefix
        delays = tuple(delay_topic(prefix, t) for t in DELAY_TIERS_S)
        own = (deliveries_topic(prefix), *delays)
        return Access(
            reads=(*self.topics, control_topic(prefix), *own),
            writes=(results_topic(prefix), dead_letter_topic(prefix), heartbeats_topic(prefix),
                    *self.topics, *own),
            groups=(self.group_id, delays_group(prefix)),
        )  # fmt: skip

    def _open_journal(self, runtime: ConsumerRuntime) -> OwnershipJournal:
        s = self.settings
        topic = deliveries_topic(s.topic_prefix)
        # Never joined nor committed: the reader assigns, only while a claim waits (with the
        # worker's own fetch wait then: new partitions wait for it).
        reader_config = consumer_config(s, f"{self.group_id}.journal")
        reader = self.app.broker.consumer(reader_config)
        journal = OwnershipJournal(
            topic, reader, self._producer, self.worker_id, self.max_in_flight, self._admitted,
            runtime.high_watermark, skip=self._skipped, lease_s=self._handover_lease_s(),
            probation=s.worker_lost_max_deliveries >= 3,  # else one death too many
        )  # fmt: skip
        journal.start(len(topic_partitions(reader, topic)) or s.partitions)
        return journal

    def _handover_lease_s(self) -> float:
        """A previous owner's hand-over report silent this long: it died (its reports come
        every HANDOVER_BEAT_S while it lives; a few session timeouts cover a slow broker)."""
        return max(10.0, 2 * self.settings.session_timeout_ms / 1000)

    def _skipped(self, message: Message) -> None:
        """Done by the partition's previous owner (its outcome is published): not run."""
        offsets = self._tracker.get(message.topic(), message.partition())  # type: ignore[arg-type]
        self._finished.append((offsets, message.offset()))  # type: ignore[arg-type]

    def _heartbeat(self, producer: EventProducer) -> Heartbeat:
        s = self.settings
        tracker, running = self._tracker, self._context.running
        heartbeat = Heartbeat(
            producer,
            heartbeats_topic(s.topic_prefix),
            Heartbeat.identity(self.worker_id, self.queues, self.concurrency, self.warnings),
            # Copies made in one step under the GIL, on the heartbeat's thread.
            partitions=lambda: list(tracker.partitions),
            runs=lambda: [job.run_ for job in list(running)],
            lag=lambda: self.lag,
            interval=s.worker_heartbeat_s,
        )
        heartbeat.start()
        return heartbeat

    def _committed(self, ok: bool) -> None:
        runtime = self._runtime
        assert runtime is not None
        lag = Lag(runtime.lag(), runtime.lag_seconds(clock.now()))
        self.hooks.committed(ok, lag.records, self._in_flight)
        self.hooks.lagged(lag.seconds)
        self.lag = lag  # for the heartbeat's thread: replaced whole

    def _commit_answered(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's on_commit, for an asynchronous commit."""
        self.hooks.commit_result(err is None and all(tp.error is None for tp in partitions))

    # -- the runtime's handler --------------------------------------------------------------

    def room(self) -> int:
        return self.max_in_flight - self._in_flight

    def busy(self) -> bool:
        return self._in_flight > 0

    def serve(self, timeout: float) -> None:
        self._reports.serve(timeout)
        finished = self._finished
        journal = self._journal
        while finished:
            offsets, offset = finished.popleft()
            offsets.finish(offset)
            offsets.keys.pop(offset, None)
            self._in_flight -= 1
            journal.finished(offsets.topic, offsets.partition, offset)
        journal.serve(self._nothing_runs)
        if self._held and not journal.isolating:
            held, self._held = self._held, []
            for message in held:
                self._dispatch(message, None)

    def _nothing_runs(self) -> bool:
        return self._in_flight == self._journal.held() + len(self._held)

    def records(self, batch: list[Message]) -> None:
        tracker, journal = self._tracker, self._journal
        for message in batch:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            offsets = tracker.get(topic, partition)  # type: ignore[arg-type]
            # The timestamp: lag in seconds (taskstream_consumer_lag_seconds) at commit time.
            offsets.add(offset, message.timestamp()[1])  # type: ignore[arg-type]
            offsets.keys[offset] = message.key()  # type: ignore[index]
            self._in_flight += 1
            if journal.admit(message):
                self._admitted(message, None)

    def _admitted(self, message: Message, lost: int | None) -> None:
        """A record may run: as usual unless a careful run must run alone (then it waits)."""
        if lost is None and self._journal.isolating:
            self._held.append(message)
        else:
            self._dispatch(message, lost)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._journal.claim(tp)
        self.hooks.partitions_changed("assign", len(self._tracker.partitions), [])

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if not lost and not self._stop_requested:
            self._wait_for(keys, self.settings.revoke_grace_s)  # then handed over as they are
        for topic, partition in keys:
            if lost:
                dropped = self._journal.lost(topic, partition)
            else:
                dropped = self._release(topic, partition)
            self._in_flight -= len(dropped)  # never run here: the next owner runs them
        if self._held:
            kept = [m for m in self._held if (m.topic(), m.partition()) not in keys]
            self._in_flight -= len(self._held) - len(kept)
            self._held = kept
        remaining = len(self._tracker.partitions) - len(keys)
        self.hooks.partitions_changed("lost" if lost else "revoke", remaining, sorted(keys))

    def _release(self, topic: str, partition: int) -> list[Message]:
        """Hand a partition over with what still runs here (this worker finishes those
        runs; the new owner waits for their keys) and what is done above the commit."""
        offsets = self._tracker.partitions.get((topic, partition))
        if offsets is None:
            return self._journal.release(topic, partition)
        key = (topic, partition)
        waiting = {m.offset() for m in self._held if (m.topic(), m.partition()) == key}
        running = {o: k for o, k in offsets.keys.items() if o not in waiting}
        return self._journal.release(topic, partition, running, offsets.done_above())

    def drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        self._wait_for(set(self._tracker.partitions), grace)
        while self._journal.handing and time.monotonic() < deadline:
            self.serve(0.01)  # runs handed over at a rebalance: their reports end them
        if self._in_flight:
            log.warning("%d tasks still running after the grace period", self._in_flight)

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, message: Message, lost: int | None) -> None:
        """Run a record (``lost``: a careful run, after that many lost deliveries)."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        offsets = self._tracker.get(topic, partition)  # type: ignore[arg-type]
        app, outcomes = self.app, self.outcomes
        try:
            event = app.envelopes.decode_task(message.value() or b"")
        except UnknownSchema as exc:
            return outcomes.dead_letter(offsets, message, Reason.UNKNOWN_SCHEMA, str(exc))
        except Exception as exc:
            return outcomes.dead_letter(offsets, message, Reason.UNDECODABLE, str(exc))
        task = app.tasks.get(event.task)
        if task is None:
            undefined = f"task {event.task!r} is not defined by app {app.name!r}"
            self.hooks.dead_lettered(Reason.UNKNOWN_TASK.value)
            unknown = unknown_task(event, topic, partition, offset, self.worker_id, undefined)  # type: ignore[arg-type]
            return outcomes.publish(offsets, message, unknown)
        why = self.revocations.why_not_run(event)
        if why is not None:  # revoked or expired: never runs
            self.hooks.revoked(event.task, why)
            worker = self.worker_id
            outcome = revoked(event, topic, partition, offset, worker, why)  # type: ignore[arg-type]
            return outcomes.publish(offsets, message, outcome)
        if event.not_before and event.not_before - now_micros() > _EARLY_TOLERANCE_US:
            return outcomes.forward(offsets, message, outcomes.destination(event))
        try:
            kwargs = workflow.arguments(app, task, event)
        except Exception as exc:
            return outcomes.dead_letter(
                offsets, message, Reason.INVALID_ARGUMENTS, str(exc), event.task
            )
        run = Run(
            task, event, kwargs, topic, partition, offset, self.worker_id,  # type: ignore[arg-type]
            message_max_bytes=self.message_max_bytes, on_progress=outcomes.started,
        )  # fmt: skip
        if self._traced:
            run.trace = tracing.extract(header_pairs(message))
        if lost is not None and lost >= self.settings.worker_lost_max_deliveries:
            log.error("task %s (%s) lost %d workers: dead-lettered", event.id, event.task, lost)
            outcome = run.worker_lost(lost)
            if workflow.wants_follow_up(event):
                outcome = workflow.follow(run, outcome)
            self.hooks.outcome(run, outcome)
            return outcomes.publish(offsets, message, outcome)
        self.executor.submit(TaskJob(self._context, run, message, offsets))

    def _done(self, offsets: PartitionOffsets, offset: int) -> None:
        """Every event of a record's outcome is acknowledged (on whichever thread served the
        report): the loop's thread settles it at its next serve()."""
        self._finished.append((offsets, offset))

    def _held_in(self, key: tuple[str, int]) -> int:
        return sum(1 for m in self._held if (m.topic(), m.partition()) == key) if self._held else 0

    def _wait_for(self, partitions: set[tuple[str, int]], grace: float) -> None:
        """Serve delivery reports until the partitions' in-flight tasks are done."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            journal = self._journal
            busy = [
                p
                for key, p in self._tracker.partitions.items()
                if key in partitions and p.in_flight > journal.held_in(*key) + self._held_in(key)
            ]
            if not busy:
                return
            self.serve(0.01)
