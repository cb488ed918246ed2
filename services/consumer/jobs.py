"""A task record's run on the executor, and what it uses of the worker (handed in).

A job publishes its outcome exactly once, even when the watchdog abandons it past its hard
time limit and it comes back after all.
"""

from __future__ import annotations

import threading

from confluent_kafka import Message

from taskstream.consumer import workflow
from taskstream.consumer.delivery_reports import ReportServer
from taskstream.consumer.executor import Executor
from taskstream.consumer.instrumentation import WorkerHooks
from taskstream.consumer.offsets import PartitionOffsets
from taskstream.consumer.outcomes import Outcomes
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.run import TERMINATED, Outcome, Run, run_async, run_sync
from taskstream.consumer.time_limits import Watchdog
from taskstream.errors import TimeLimitExceeded


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
        "task_name",
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
        self.task_name = run.task.name
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
