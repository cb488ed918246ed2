"""The worker: a consumer-group member that runs tasks and commits only what is done.

The consumer runtime (runtime.py) owns the consumer and polls it from one thread; the
worker's handler (handler.py) decides what becomes of each record (dispatch.py) and hands
its runs to the executor (jobs.py), where task code runs, so a task of any length never
keeps the loop from polling (the worker stays in its group). A record's offset becomes
committable only when its outcome (a result event, a retry's next attempt, or the record
itself in the dead-letter topic) is acknowledged by the broker (acks=all), so a worker
killed at any moment loses no task: its uncommitted records are redelivered to the group's
other members. Partition ownership (the ownership package) counts the runs lost with a dying
worker, so that a task that kills its worker ends as a dead letter instead of a crash loop.
Each worker process also runs a delay scheduler (delays.py).

Shared queues (``shared_queues``) are read by share consumers instead (shared.py,
share_runtime.py): their loop runs on a thread of its own beside the consumer runtime's, and
either loop's end stops the other.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from taskstream import tracing
from taskstream.app import App
from taskstream.consumer.delays import DelayScheduler
from taskstream.consumer.handler import OwnershipOpener, TaskHandler
from taskstream.consumer.heartbeat import Heartbeat, Lag
from taskstream.consumer.instrumentation import PrometheusHooks, WorkerHooks
from taskstream.consumer.ownership import JournalReader, OwnershipJournal
from taskstream.consumer.partition_check import short_queues
from taskstream.consumer.rate_limits import RateLimited
from taskstream.consumer.revocation import ControlReader, Revocations
from taskstream.consumer.runtime import RuntimeOwner, TaskLoop
from taskstream.consumer.share_runtime import ShareLane
from taskstream.consumer.shared import SharedTaskHandler, configure_share_groups
from taskstream.consumer.time_limits import Watchdog
from taskstream.consumer.tracing import TracingHooks
from taskstream.consumer.transaction import open_transaction
from taskstream.kafka.broker import Access
from taskstream.kafka.clients import (
    consumer_config,
    incremental_assignment,
    producer_config,
    topic_partitions,
    worker_id,
)
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.share_groups import share_consumer_config
from taskstream.kafka.sizes import message_max_bytes
from taskstream.kafka.topics import (
    DELAY_TIERS_S,
    band_topics,
    control_topic,
    dead_letter_topic,
    delay_topic,
    delays_group,
    heartbeats_topic,
    ownership_topic,
    results_topic,
    share_group,
    worker_group,
)

log = logging.getLogger(__name__)

_CLOSE_FLUSH_S = 5.0  # at most this for the producer's last events when the worker stops
# A stop signal this soon after the first is that one repeated, not a second request: the
# kernel sends the parent-death signal (PR_SET_PDEATHSIG, dev's children) once per thread
# of a SIGKILLed parent as each exits, milliseconds apart. In seconds.
_SIGNAL_REPEAT_S = 0.25


class Worker(RuntimeOwner):
    """Runs an app's tasks from its queues' topics until stopped.

    ``run()`` blocks; ``stop()`` (or SIGTERM/SIGINT after ``install_signal_handlers()``)
    stops fetching, lets in-flight tasks finish within the shutdown grace, commits, returns.
    The runtime's handler (taskstream.consumer.handler) is made whole by ``run()``, before
    its loop starts; the worker keeps what surrounds it (threads, heartbeat, shutdown).
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
        # Shared queues (a share group), the others ordered (the consumer group).
        self.shared_queues = [q for q in self.queues if q in s.shared]
        self.ordered_queues = [q for q in self.queues if q not in s.shared]
        # Each ordered queue's bands, the highest first (priorities): drained in order.
        self.bands = [band_topics(s.topic_prefix, q) for q in self.ordered_queues]
        self.topics = [t for band in self.bands for t in band]
        # The shared queues' bands, the highest first: a share group (and consumer) each.
        self.shared_bands = [
            [band_topics(s.topic_prefix, q)[i] for q in self.shared_queues] for i in (0, 1)
        ] if self.shared_queues else []  # fmt: skip
        self.shared_topics = [t for band in self.shared_bands for t in band]
        share_id = f"{group_id}.shared" if group_id else share_group(s.topic_prefix)
        self.share_groups = [f"{share_id}.high", share_id] if self.shared_queues else []
        self.warnings: list[str] = []  # set-up problems found at the start (heartbeats)
        self.group_id = group_id or worker_group(s.topic_prefix)
        self.concurrency = concurrency or s.concurrency
        self.max_in_flight = max(max_tasks_in_flight or s.max_tasks_in_flight, self.concurrency)
        self.worker_id = worker_id()
        self._signalled_at: float | None = None  # time.monotonic() of the first stop signal
        # Revoked task ids, from the control topic.
        self.revocations = Revocations(app.settings.revokes_max)
        self._handlers: list[TaskHandler] = []  # while run() runs: ordered, then shared
        self._loops: list[TaskLoop] = []  # their loops, to stop
        self._starting = False  # run() is setting up: nothing taken from Kafka yet
        self._message_max_bytes = 0  # the producer's, set by run()
        self._loop_error: BaseException | None = None  # a loop thread's, raised by run()

    @property
    def lag(self) -> Lag:
        """Records and seconds not committed per partition, as of the last commit (ordered
        queues: a share group's members have no partitions of their own)."""
        handlers = self._handlers
        return handlers[0].lag if handlers else Lag({}, {})

    @property
    def in_flight(self) -> int:
        """Fetched records whose outcome is not yet delivered."""
        return sum(h.in_flight for h in self._handlers)

    def describe(self) -> str:
        """Where its records wait (a test prints it when a task never gets its outcome)."""
        return "\n".join(h.describe() for h in self._handlers) or "not running"

    def stop(self) -> None:
        """Ask ``run()`` to drain and return (safe from any thread, before or during it)."""
        self._stop_requested = True
        for loop in list(self._loops):
            loop.stop()

    # -- lifecycle --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._repeated_signal():
                return
            if self._starting:
                # Still starting: nothing taken, nothing to commit. End now (as Ctrl-C's
                # KeyboardInterrupt would), not after a start-up call to a broker that is gone
                # (dev's children when dev is killed): those wait a second at a time.
                log.warning("received %s while starting: stopping", name)
                raise SystemExit(0)
            if self._stop_requested:
                # A second signal: at once. Unfinished tasks are not committed, so the next
                # owner of their partitions runs them (at least once, as after a crash).
                log.warning("received %s again: stopping at once, %d tasks unfinished (run "
                            "again by the next worker)", name, self.in_flight)  # fmt: skip
                logging.shutdown()
                os._exit(1)
            log.warning("received %s: stopping; waiting up to %.0f s for %d tasks in flight "
                        "(send %s again to stop at once)", name, self.settings.shutdown_grace_s,
                        self.in_flight, name)  # fmt: skip
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
        self._starting = True
        app.ensure_topics(sorted({*app.queues, *self.queues}))  # chains send to the others
        # Credentials, certificate and ACLs checked before any task is taken: a worker that
        # may not publish outcomes must not consume (taskstream.kafka.preflight).
        app.broker.check_access(s, self._access())
        if self.shared_queues:  # the group's lock and delivery limit, or why it cannot be
            configure_share_groups(app, self.share_groups, self.shared_queues)
        counts = app.broker.partition_counts(s, [*self.topics, *self.shared_topics])
        self.warnings = short_queues(app, self.queues, counts)
        producer_settings = producer_config(s)
        producer = EventProducer(producer_settings, broker=app.broker)
        self._message_max_bytes = message_max_bytes(producer_settings)
        watchdog = Watchdog()
        handlers = self._handlers = self._make_handlers(producer, watchdog, counts)
        self._starting = False  # from here on a stop signal drains (threads start to read)
        control = ControlReader(app, self.revocations, watchdog.terminate, self.worker_id)
        control_thread = control.start()
        delays = DelayScheduler(app, self.revocations, self.worker_id)
        delays_thread = threading.Thread(target=delays.run, name="taskstream-delays", daemon=True)
        delays_thread.start()
        # Every revocation made so far is known before the first task is taken.
        control.wait_ready(s.delivery_timeout_ms / 1000, lambda: self._stop_requested)
        for handler, topics in zip(handlers, self._handler_topics(), strict=True):
            self._start_loop(handler.runtime)
            handler.runtime.subscribe(topics)
        heartbeat = self._heartbeat(producer, handlers) if s.worker_heartbeat_s > 0 else None
        log.info("worker %s consuming %s as group %s%s, %s", self.worker_id, self.topics,
                 self.group_id, self._shared_text(), s.processing_guarantee)  # fmt: skip
        loops = [h.runtime for h in handlers]
        others = [
            threading.Thread(
                target=self._run_loop, args=(loop,), name="taskstream-shared", daemon=True
            )
            for loop in loops[1:]
        ]
        try:
            for thread in others:
                thread.start()
            self._run_loop(loops[0])  # closing revokes: releases, commits
            for thread in others:
                thread.join()
            if self._loop_error is not None:
                raise self._loop_error
        finally:
            if heartbeat is not None:
                heartbeat.stop()  # its last beat says "offline"; the producer's close sends it
            for handler in handlers:
                handler.ownership.close()
                if handler.transaction is not None:
                    handler.transaction.close()  # what is left uncommitted runs again elsewhere
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
            for handler in handlers:
                handler.stop_rate_limits()
                handler.executor.shutdown()
            log.info("worker %s stopped", self.worker_id)

    def _run_loop(self, loop: TaskLoop) -> None:
        """Run one loop; when it ends (a stop, or an error), the worker's others stop too.
        An error ends run() with it, whichever thread's loop raised it."""
        try:
            loop.run(grace=self.settings.shutdown_grace_s)
        except BaseException as exc:
            if self._loop_error is None:
                self._loop_error = exc
            raise
        finally:
            self.stop()

    def _start_loop(self, loop: TaskLoop) -> None:
        """Keep ``loop`` as one to stop (a stop() that came first stops it at once)."""
        self._loops.append(loop)
        if self._stop_requested:
            loop.stop()

    def _handler_topics(self) -> list[list[str]]:
        """Each handler's topics, in the order of _make_handlers."""
        return [t for t in (self.topics, self.shared_topics) if t]

    def _shared_text(self) -> str:
        if not self.shared_topics:
            return ""
        return f" and {self.shared_topics} as share groups {self.share_groups}"

    def _make_handlers(
        self, producer: EventProducer, watchdog: Watchdog, counts: dict[str, int]
    ) -> list[TaskHandler]:
        """The ordered queues' handler (a consumer group member), then the shared queues'
        (a share group member), each whole before its loop starts."""
        s, app = self.settings, self.app
        handlers: list[TaskHandler] = []
        if self.topics:
            config = consumer_config(
                s, self.group_id, strategy="cooperative-sticky", on_commit=self._commit_answered
            )
            handlers.append(self._handler(
                TaskHandler, app.broker.consumer(config), producer, watchdog,
                cooperative=incremental_assignment(config),
                ownership=self._journal_opener(producer) if s.worker_lost_max_deliveries else None,
                rate_limits=RateLimited.of(app, self.ordered_queues, counts), bands=self.bands,
                transaction=(
                    open_transaction(s, app.broker, self.group_id, self.worker_id)
                    if s.exactly_once
                    else None
                ),
            ))  # fmt: skip
        if self.shared_topics:
            lanes = [
                ShareLane(app.broker.share_consumer(share_consumer_config(s, group)), topics)
                for group, topics in zip(self.share_groups, self.shared_bands, strict=True)
            ]
            handlers.append(self._handler(SharedTaskHandler, lanes, producer, watchdog))
        return handlers

    def _handler(
        self, kind: type[TaskHandler], consumer: Consumer | list[ShareLane],
        producer: EventProducer, watchdog: Watchdog, **options: Any,
    ) -> TaskHandler:  # fmt: skip
        return kind(
            self.app, self.settings, consumer, producer, hooks=self.hooks,
            revocations=self.revocations, watchdog=watchdog, worker_id=self.worker_id,
            concurrency=self.concurrency, max_in_flight=self.max_in_flight,
            message_max_bytes=self._message_max_bytes,  # what a result may take
            traced=self._traced, **options,
        )  # fmt: skip

    def _access(self) -> Access:
        """The topics and groups a worker reads and writes."""
        prefix = self.settings.topic_prefix
        delays = tuple(delay_topic(prefix, t) for t in DELAY_TIERS_S)
        own = (ownership_topic(prefix), *delays)
        topics = (*self.topics, *self.shared_topics)
        return Access(
            reads=(*topics, control_topic(prefix), *own),
            writes=(results_topic(prefix), dead_letter_topic(prefix), heartbeats_topic(prefix),
                    *topics, *own),
            # (Share groups are not described here: the consumer groups' API does not know
            # them; a share group's ACL refusal shows at its first poll.)
            groups=(self.group_id, delays_group(prefix)),
        )  # fmt: skip

    def _journal_opener(self, producer: EventProducer) -> OwnershipOpener:
        """Opens the ownership journal, which counts the runs lost with a dying worker."""
        s = self.settings

        def open_journal(
            high_watermark: Callable[[str, int], int | None],
            admitted: Callable[[Message, int | None], None],
            skipped: Callable[[Message], None],
        ) -> OwnershipJournal:
            topic = ownership_topic(s.topic_prefix)
            # Never joined nor committed: the reader assigns, only while a claim waits (with
            # the worker's own fetch wait then: new partitions wait for it).
            reader_config = consumer_config(s, f"{self.group_id}.journal")
            reader = self.app.broker.consumer(reader_config)
            partitions = len(topic_partitions(reader, topic)) or s.partitions
            return OwnershipJournal(
                JournalReader(reader, topic, partitions), producer, self.worker_id,
                self.max_in_flight, admitted, high_watermark, skip=skipped,
                lease_s=self._handover_lease_s(),
                probation=s.worker_lost_max_deliveries >= 3,  # else one death too many
            )  # fmt: skip

        return open_journal

    def _handover_lease_s(self) -> float:
        """A previous owner's hand-over report silent this long: it died (its reports come
        every HANDOVER_BEAT_S while it lives; a few session timeouts cover a slow broker)."""
        return max(10.0, 2 * self.settings.session_timeout_ms / 1000)

    def _heartbeat(self, producer: EventProducer, handlers: list[TaskHandler]) -> Heartbeat:
        s = self.settings
        # Partitions owned: the ordered queues' (a share group's members own none).
        trackers = [h.tracker for h in handlers if not isinstance(h, SharedTaskHandler)]
        running = [h.context.running for h in handlers]
        heartbeat = Heartbeat(
            producer,
            heartbeats_topic(s.topic_prefix),
            Heartbeat.identity(
                self.worker_id,
                self.queues,
                self.concurrency,
                self.warnings,
                s.processing_guarantee,
            ),
            # Copies made in one step under the GIL, on the heartbeat's thread.
            partitions=lambda: [p for t in trackers for p in list(t.partitions)],
            runs=lambda: [job.run_ for r in running for job in list(r)],
            lag=lambda: self.lag,
            interval=s.worker_heartbeat_s,
            throttled=lambda: sum(h.throttled() for h in handlers),
        )
        heartbeat.start()
        return heartbeat

    def _commit_answered(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's on_commit, for an asynchronous commit."""
        self.hooks.commit_result(err is None and all(tp.error is None for tp in partitions))
