"""Running one task event: decoded arguments in, an outcome out.

The outcome is the result event to publish and, for a retry, the next attempt's event, or,
when retries are used up, the word that the event goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from taskstream.consumer import retries
from taskstream.consumer.dead_letter import Reason
from taskstream.consumer.time_limits import Watchdog
from taskstream.envelope import ResultEvent, TaskError, TaskEvent, now_micros
from taskstream.errors import Retry, SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLost
from taskstream.status import Status
from taskstream.task import Task, set_current_event


@dataclass(slots=True)
class Outcome:
    result: ResultEvent
    retry: TaskEvent | None = None  # the next attempt, due at its not_before
    dead_letter: str | None = None  # why the event goes to the dead-letter topic
    reason: Reason = Reason.RETRIES_EXHAUSTED  # ... in a word


@dataclass(slots=True)
class Run:
    """One run of one task event, and what its outcome is built from."""

    task: Task[Any, Any]
    event: TaskEvent
    kwargs: dict[str, Any]
    topic: str  # where the task event was read from
    partition: int
    offset: int
    worker: str
    started: int = 0  # µs since the epoch

    def enter(self) -> None:
        """Mark the start of the run and make its request current for the task's code."""
        self.started = now_micros()
        set_current_event(self.event)

    def started_event(self) -> ResultEvent:
        """The STARTED status of a task with ``track_started``, as the run begins."""
        self.started = now_micros()
        return self._result(Status.STARTED)

    def _result(
        self, status: Status, result: bytes | None = None, error: TaskError | None = None
    ) -> ResultEvent:
        event = self.event
        return ResultEvent(
            event.id, event.task, status, event.attempt, event.key, result, error, self.worker,
            self.topic, self.partition, self.offset,
            event.enqueued_at, self.started, now_micros(),
        )  # fmt: skip

    def succeeded(self, value: Any) -> Outcome:
        """SUCCESS with the encoded return value (FAILURE if it breaks the result schema)."""
        try:
            encoded = self.task.encode_result(value)
        except Exception as exc:
            return self.failed(exc)
        return Outcome(self._result(Status.SUCCESS, encoded))

    def worker_lost(self, lost: int) -> Outcome:
        """Not run again: ``lost`` runs of it ended with their worker's death."""
        self.started = now_micros()
        exc = WorkerLost(f"the worker died during {lost} runs of this task; not run again")
        reason = f"{lost} deliveries lost with their worker"
        return Outcome(
            self._result(Status.FAILURE, error=describe(exc)), None, reason, Reason.WORKER_LOST
        )

    def failed(self, exc: BaseException) -> Outcome:
        """FAILURE, or RETRY with the next attempt when the task's policy says so."""
        options = self.task.options
        if not retries.wants_retry(options, exc):
            return Outcome(self._result(Status.FAILURE, error=describe(exc)))
        recorded = exc.exc if isinstance(exc, Retry) and exc.exc is not None else exc
        retries_done = self.event.attempt - 1
        if retries_done >= options.max_retries:
            reason = f"retries exhausted after {self.event.attempt} attempts: {recorded!r}"
            return Outcome(self._result(Status.FAILURE, error=describe(recorded)), None, reason)
        requested = exc.countdown if isinstance(exc, Retry) else None
        wait = retries.countdown(options, retries_done, requested)
        event = self.event
        following = TaskEvent(
            id=event.id,
            task=event.task,
            queue=event.queue,
            key=event.key,
            attempt=event.attempt + 1,
            enqueued_at=event.enqueued_at,
            not_before=now_micros() + int(wait * 1_000_000),
            args=event.args,
        )
        return Outcome(self._result(Status.RETRY, error=describe(recorded)), following)


def describe(exc: BaseException) -> TaskError:
    return TaskError(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def run_sync(run: Run, watchdog: Watchdog, on_abandon: Callable[[], None]) -> Outcome:
    """Run a plain function on this thread, within its time limits."""
    options = run.task.options
    run.enter()
    watch = (
        watchdog.watch(options.soft_time_limit, options.time_limit, on_abandon)
        if options.time_limited
        else None
    )
    try:
        try:
            value = run.task.invoke(run.kwargs)
        finally:
            if watch is not None:
                watchdog.unwatch(watch)
    except Exception as exc:
        return run.failed(exc)
    return run.succeeded(value)


async def run_async(run: Run) -> Outcome:
    """Await a coroutine function on the worker's loop, within its time limits."""
    options = run.task.options
    run.enter()
    try:
        value = await _limited(
            run.task.invoke(run.kwargs), options.soft_time_limit, options.time_limit
        )
    except Exception as exc:
        return run.failed(exc)
    return run.succeeded(value)


async def _limited(coro: Awaitable[Any], soft: float | None, hard: float | None) -> Any:
    """Await ``coro``; at the soft limit cancel it (the task sees CancelledError and may
    clean up; if it lets it through, the run failed with SoftTimeLimitExceeded); at the hard
    limit give up on it: TimeLimitExceeded."""
    if soft is None and hard is None:
        return await coro
    task = asyncio.ensure_future(coro)
    if soft is not None and (hard is None or soft < hard):
        done, _ = await asyncio.wait({task}, timeout=soft)
        if not done:
            task.cancel("soft time limit")
            rest = None if hard is None else hard - soft
            done, _ = await asyncio.wait({task}, timeout=rest)
            if not done:
                raise TimeLimitExceeded(f"hard time limit of {hard}s exceeded")
            try:
                return task.result()
            except asyncio.CancelledError:
                raise SoftTimeLimitExceeded(f"soft time limit of {soft}s exceeded") from None
        return task.result()
    done, _ = await asyncio.wait({task}, timeout=hard)
    if not done:
        task.cancel("hard time limit")
        raise TimeLimitExceeded(f"hard time limit of {hard}s exceeded")
    return task.result()
