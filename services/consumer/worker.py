"""The worker: a consumer-group member that runs tasks and commits only what is done.

One thread owns the consumer, the offset tracker and the producer's delivery reports; task
code runs on the executor. A record's offset becomes committable only when its outcome (a
result event, a retry's next attempt, or the record itself in the dead-letter topic) is
acknowledged by the broker (acks=all), so a worker killed at any moment loses no task: its
uncommitted records are redelivered to the group's other members. Each worker process also
runs a delay scheduler (delays.py) that brings retries and countdowns back when due.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from confluent_kafka import Consumer, Message, TopicPartition

from taskstream.app import App
from taskstream.consumer.dead_letter import Reason
from taskstream.consumer.delays import DelayScheduler
from taskstream.consumer.execution import Outcome, Run, run_async, run_sync
from taskstream.consumer.executor import Executor
from taskstream.consumer.instrumentation import PrometheusHooks, WorkerHooks
from taskstream.consumer.offsets import OffsetTracker, PartitionOffsets, commit
from taskstream.consumer.outcomes import Outcomes
from taskstream.consumer.time_limits import Watchdog
from taskstream.envelope import now_micros
from taskstream.errors import TimeLimitExceeded, UnknownSchema
from taskstream.kafka import (
    EventProducer,
    consumer_config,
    producer_config,
    record_position,
    worker_id,
)
from taskstream.topics import task_topic

log = logging.getLogger(__name__)

_BATCH = 500  # records taken from the consumer per loop turn, at most
_POLL_S = 0.05  # consumer poll wait when idle
_BUSY_POLL_S = 0.005  # ... with tasks in flight; bounds how late delivery reports are served
_PAUSE_AFTER_S = 0.5  # at the in-flight bound this long: pause the partitions (see _fetch)
_RESUME_RATIO = 0.8  # fetching resumes when in-flight tasks fall below this share of the bound
_IDLE_COMMIT_S = 0.05  # with nothing in flight, commit this soon after the last commit
_EARLY_TOLERANCE_US = 5_000  # an event due within this is run now, not delayed again


def worker_group(prefix: str) -> str:
    return f"{prefix}.workers"


class _TaskJob:
    """One record's run on the executor; its outcome is published exactly once."""

    __slots__ = (
        "_published",
        "is_async",
        "key",
        "limited",
        "message",
        "offsets",
        "released",
        "run_",
        "worker",
    )

    def __init__(
        self, worker: Worker, run: Run, message: Message, offsets: PartitionOffsets
    ) -> None:
        self.worker = worker
        self.run_ = run
        self.message = message
        self.offsets = offsets
        self.key = run.event.key
        self.is_async = run.task.is_async
        self.limited = run.task.options.time_limited
        self.released = False
        self._published = False

    def _begin(self) -> None:
        self.worker.hooks.run_started(self.run_)
        if self.run_.task.options.track_started:
            self.worker.outcomes.started(self.run_.started_event())

    def run(self) -> None:
        self._begin()
        self.publish(run_sync(self.run_, self.worker.watchdog, self.abandon))

    async def run_async(self) -> None:
        self._begin()
        self.publish(await run_async(self.run_))

    def abandon(self) -> None:
        """Past its hard time limit and still stuck: record the failure, free the slot."""
        limit = self.run_.task.options.time_limit
        self.publish(self.run_.failed(TimeLimitExceeded(f"hard time limit of {limit}s exceeded")))
        self.worker.executor.abandon(self)

    def publish(self, outcome: Outcome) -> None:
        if self.limited:  # the watchdog's thread may abandon the run meanwhile
            with self.worker.publish_lock:
                if self._published:
                    return  # an abandoned run came back after all
                self._published = True
        self.worker.hooks.outcome(self.run_, outcome)
        self.worker.outcomes.publish(self.offsets, self.message, outcome)


class Worker:
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
        self.queues = queues or app.queues
        self.topics = [task_topic(s.topic_prefix, q) for q in self.queues]
        self.group_id = group_id or worker_group(s.topic_prefix)
        self.concurrency = concurrency or s.concurrency
        self.max_in_flight = max(max_tasks_in_flight or s.max_tasks_in_flight, self.concurrency)
        self.worker_id = worker_id()
        self.watchdog = Watchdog()
        self._stopping = threading.Event()
        self._tracker = OffsetTracker()
        self._in_flight = 0  # dispatched records whose outcome is not yet delivered
        self._paused = False
        self._full_since: float | None = None  # since when in-flight tasks are at the bound
        self._producer: EventProducer | None = None
        self.publish_lock = threading.Lock()  # one outcome per record, even when abandoned

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to drain and return from run(); safe from any thread."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: draining", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> None:
        s = self.settings
        self.app.ensure_topics(self.queues)
        producer = self._producer = EventProducer(producer_config(s), broker=self.app.broker)
        self.outcomes = Outcomes(producer, s.topic_prefix, self.app.envelopes, self._done)
        self.executor = Executor(self.concurrency)
        delays = DelayScheduler(self.app)
        delays_thread = threading.Thread(target=delays.run, name="taskstream-delays", daemon=True)
        delays_thread.start()
        consumer = self.app.broker.consumer(
            consumer_config(s, self.group_id, on_commit=self.hooks.commit_result)
        )
        consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("worker %s consuming %s as group %s", self.worker_id, self.topics, self.group_id)
        commit_every = s.commit_interval_ms / 1000
        last_commit = time.monotonic()
        try:
            while not self._stopping.is_set():
                self._fetch(consumer)
                producer.poll(0)
                self._apply_backpressure(consumer)
                now = time.monotonic()
                # Every commit interval while busy; soon after everything in flight is done
                # (the group's lag reads 0 then, not a commit interval later).
                since = now - last_commit
                if since >= commit_every or (
                    not self._in_flight and since >= _IDLE_COMMIT_S and self._tracker.uncommitted()
                ):
                    ok = commit(consumer, self._tracker, asynchronous=True)
                    self.hooks.committed(consumer, self._tracker, ok)
                    self.hooks.in_flight(self._in_flight)
                    last_commit = now
            self._drain(consumer)
        finally:
            consumer.close()  # revokes: commits what is done
            delays.stop()
            delays_thread.join(s.delivery_timeout_ms / 1000)
            producer.close(s.delivery_timeout_ms / 1000)
            self.executor.shutdown()
            log.info("worker %s stopped", self.worker_id)

    # -- fetching and dispatch --------------------------------------------------------------

    def _fetch(self, consumer: Consumer) -> None:
        room = self.max_in_flight - self._in_flight
        assert self._producer is not None
        if room <= 0 and not self._paused:
            # Full: take no records, wait for outcomes. Pausing here would cost a refetch on
            # resume (about a second on some brokers), so it waits for _PAUSE_AFTER_S first.
            self._producer.poll(_BUSY_POLL_S)
            return
        if room <= 0 or self._paused:
            # Paused (until in-flight tasks fall below the resume mark): a consumer poll would
            # only wait out its timeout, while the delivery reports that free room go unserved.
            self._producer.poll(_POLL_S)  # wait for outcomes instead of records
            # Serve rebalances. A paused partition returns nothing, but one assigned since
            # the pause may: such a record is dispatched, never dropped.
            message = consumer.poll(0)
            if message is not None:
                self._dispatch(message)
            return
        # With tasks in flight, wait briefly: their delivery reports are served between polls.
        first = consumer.poll(_BUSY_POLL_S if self._in_flight else _POLL_S)
        if first is None:
            return
        self._dispatch(first)
        if room > 1:
            # Take what else is ready without waiting (consume(n, t) would wait for all n).
            for message in consumer.consume(min(room - 1, _BATCH), 0):
                self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        position = record_position(message)
        if position is None:
            return
        topic, partition, offset = position
        offsets = self._tracker.get(topic, partition)
        offsets.add(offset)
        self._in_flight += 1
        app, outcomes = self.app, self.outcomes
        try:
            event = app.envelopes.decode_task(message.value() or b"")
        except UnknownSchema as exc:
            return self._dead_letter(offsets, message, Reason.UNKNOWN_SCHEMA, str(exc))
        except Exception as exc:
            return self._dead_letter(offsets, message, Reason.UNDECODABLE, str(exc))
        task = app.tasks.get(event.task)
        if task is None:
            reason = f"task {event.task!r} is not defined by app {app.name!r}"
            return self._dead_letter(offsets, message, Reason.UNKNOWN_TASK, reason, event.task)
        if event.not_before and event.not_before - now_micros() > _EARLY_TOLERANCE_US:
            return outcomes.forward(offsets, message, outcomes.destination(event))
        try:
            kwargs = task.decode_args(event.args)
        except Exception as exc:
            return self._dead_letter(
                offsets, message, Reason.INVALID_ARGUMENTS, str(exc), event.task
            )
        run = Run(task, event, kwargs, topic, partition, offset, self.worker_id)
        self.executor.submit(_TaskJob(self, run, message, offsets))

    def _dead_letter(
        self,
        offsets: PartitionOffsets,
        message: Message,
        reason: Reason,
        error: str,
        task: str | None = None,
    ) -> None:
        self.hooks.dead_lettered(reason.value)
        self.outcomes.dead_letter(offsets, message, reason, error, task)

    def _done(self, offsets: PartitionOffsets, offset: int) -> None:
        """Every event of a record's outcome is acknowledged (on this thread)."""
        offsets.finish(offset)
        self._in_flight -= 1

    # -- offsets and rebalances -------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._tracker.assign(tp.topic, tp.partition)
        self.hooks.partitions_changed("assign", len(self._tracker.partitions), [])
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        if not self._stopping.is_set():
            self._wait_for(revoked, self.settings.revoke_grace_s)
        ok = commit(consumer, self._tracker, asynchronous=False, only=revoked)
        self.hooks.committed(consumer, self._tracker, ok)
        for topic, partition in revoked:
            self._tracker.revoke(topic, partition)
        self.hooks.partitions_changed("revoke", len(self._tracker.partitions), partitions)
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them already: committing now could skip its work.
        for tp in partitions:
            self._tracker.revoke(tp.topic, tp.partition)
        self.hooks.partitions_changed("lost", len(self._tracker.partitions), partitions)
        log.warning("lost %s", _names(partitions))

    def _wait_for(self, partitions: set[tuple[str, int]], grace: float) -> None:
        """Serve delivery reports until the partitions' in-flight tasks are done."""
        assert self._producer is not None
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            busy = [
                p
                for key, p in self._tracker.partitions.items()
                if key in partitions and p.in_flight
            ]
            if not busy:
                return
            self._producer.poll(0.01)

    def _apply_backpressure(self, consumer: Consumer) -> None:
        """Full, the loop takes no more records; full for _PAUSE_AFTER_S (slow tasks), the
        partitions are paused so that the consumer can be polled for rebalances again."""
        full = self._in_flight >= self.max_in_flight
        if not full:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = time.monotonic()
        if (
            not self._paused and full and time.monotonic() - self._full_since >= _PAUSE_AFTER_S  # type: ignore[operator]
        ):
            consumer.pause(consumer.assignment())
            self._paused = True
        elif self._paused and self._in_flight < self.max_in_flight * _RESUME_RATIO:
            consumer.resume(consumer.assignment())
            self._paused = False

    def _drain(self, consumer: Consumer) -> None:
        """Stop fetching; give in-flight tasks the shutdown grace to finish; commit."""
        consumer.pause(consumer.assignment())
        self._wait_for(set(self._tracker.partitions), self.settings.shutdown_grace_s)
        if self._in_flight:
            log.warning("%d tasks still running after the grace period", self._in_flight)
        ok = commit(consumer, self._tracker, asynchronous=False)
        self.hooks.committed(consumer, self._tracker, ok)


def _names(partitions: list[TopicPartition]) -> str:
    """``topic[0,1,2]`` per topic, for logs that stay one line with many partitions."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    parts = [f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items())]
    return ", ".join(parts) or "nothing"
