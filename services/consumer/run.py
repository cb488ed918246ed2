"""Running one task event: decoded arguments in, an outcome out.

The outcome is the result event to publish and, for a retry, the next attempt's event, or,
when retries are used up, the word that the event goes to the dead-letter topic.

Every result event fits in the producer's ``message.max.bytes``, or it could never be
published and its record never committed: a return value too large for it becomes a FAILURE
``ResultTooLarge``, and an error's message and traceback are cut to fit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from taskstream.consumer import retries
from taskstream.consumer.dead_letter import Reason
from taskstream.consumer.time_limits import Watchdog
from taskstream.envelope import ResultEvent, TaskError, TaskEvent, now_micros
from taskstream.errors import (
    MaxRetriesExceededError,
    ResultTooLarge,
    Retry,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLost,
)
from taskstream.kafka import sizes
from taskstream.kafka.clients import Headers
from taskstream.status import Status
from taskstream.task import (
    RunInfo,
    Task,
    event_time_limits,
    set_current_event,
    set_progress_sink,
)
from taskstream.text import storable

# Why a REVOKED task did not run or stopped: its error message (Celery's words).
REVOKED, EXPIRED, TERMINATED = "revoked", "expired", "terminated"


@dataclass(slots=True)
class Outcome:
    result: ResultEvent
    retry: TaskEvent | None = None  # the next attempt, due at its not_before
    dead_letter: str | None = None  # why the event goes to the dead-letter topic
    reason: Reason = Reason.RETRIES_EXHAUSTED  # ... in a word
    # The next attempt's headers when tracing (its trace context); else the record's own.
    retry_headers: Headers | None = None
    # Workflows (taskstream.consumer.workflow): task events this outcome sends (a chain's
    # next step, callbacks, errbacks), results of chain steps that will never run, and
    # whether the result itself is published (not a SUCCESS with ignore_result).
    follow: list[TaskEvent] = field(default_factory=list)
    more_results: list[ResultEvent] = field(default_factory=list)
    publish_result: bool = True


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
    # The producer's message.max.bytes (taskstream.kafka.sizes.producer_limit), in bytes: the
    # largest result event this run may publish.
    message_max_bytes: int = field(kw_only=True)
    terminated: bool = field(default=False, kw_only=True)  # revoked with terminate=True
    # Tracing only (taskstream.tracing): the record's trace context, then the run's span.
    trace: Any = field(default=None, kw_only=True)
    # Where update_state()'s STARTED events with a custom state go (the results topic).
    on_progress: Callable[[ResultEvent], None] | None = field(default=None, kw_only=True)
    info: RunInfo | None = field(default=None, kw_only=True)  # the request's, once entered

    def enter(self) -> None:
        """Mark the start of the run and make its request current for the task's code."""
        self.started = now_micros()
        event = self.event
        delivery = {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "key": event.key,
        }  # fmt: skip
        self.info = RunInfo(self.task, self.kwargs, self.worker, delivery)
        set_current_event(event, self.info)
        if self.on_progress is not None:
            set_progress_sink(self.progress)

    @property
    def time_limits(self) -> tuple[float | None, float | None]:
        """(soft, hard) in seconds: the call's (apply_async), else the task's."""
        return event_time_limits(self.event, self.task)

    def progress(self, state: str, meta: str | None) -> None:
        """update_state() in the task: a STARTED result with the custom state and meta."""
        assert self.on_progress is not None
        event = self._result(Status.STARTED)
        event.state, event.meta = state, meta
        self.on_progress(event)

    def started_event(self) -> ResultEvent:
        """The STARTED status of a task with ``track_started``, as the run begins."""
        self.started = now_micros()
        return self._result(Status.STARTED)

    def _result(
        self, status: Status, result: bytes | None = None, error: TaskError | None = None
    ) -> ResultEvent:
        event = self.event
        outcome = ResultEvent(
            event.id, event.task, status, event.attempt, event.key, result, error, self.worker,
            self.topic, self.partition, self.offset,
            event.enqueued_at, self.started, now_micros(),
        )  # fmt: skip
        if event.root_id is not None or event.group_id is not None:  # a workflow's step
            outcome.parent_id, outcome.root_id = event.parent_id, event.root_id
            outcome.group_id, outcome.group_index = event.group_id, event.group_index
            outcome.group_size, outcome.chord = event.group_size, event.chord
            outcome.join = None if event.then else event.join  # the end of a branch only
        return outcome

    def succeeded(self, value: Any) -> Outcome:
        """SUCCESS with the encoded return value; FAILURE if it breaks the result schema, and
        FAILURE ``ResultTooLarge`` (never retried) if its event would be over the limit."""
        try:
            encoded = self.task.encode_result(value)
        except Exception as exc:
            return self.failed(exc)
        result = self._result(Status.SUCCESS, encoded)
        limit = self.message_max_bytes
        if sizes.result_fits(result, limit):
            return Outcome(result)
        too_large = ResultTooLarge(self.event.task, sizes.result_record_size(result), limit)
        return Outcome(self._failure(Status.FAILURE, too_large))

    def revoked(self, reason: str) -> Outcome:
        """REVOKED: not run (revoked, expired) or stopped (terminated)."""
        return revoked(self.event, self.topic, self.partition, self.offset, self.worker, reason)

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
        exhausted = self.info is not None and self.info.exhausted is exc  # by self.retry()
        if not exhausted and not retries.wants_retry(options, exc):
            return Outcome(self._failure(Status.FAILURE, exc))
        recorded = exc.exc if isinstance(exc, Retry) and exc.exc is not None else exc
        retries_done = self.event.attempt - 1
        limit = retries.max_retries(options, exc)
        if exhausted or retries_done >= limit:
            if isinstance(recorded, Retry):  # raise Retry() past the limit, without exc
                recorded = MaxRetriesExceededError(self.task.name, self.event.id, limit)
            # The reason travels in a dead-letter header, next to the whole task event.
            reason = _cut(
                f"retries exhausted after {self.event.attempt} attempts: {recorded!r}",
                _REASON_MAX_BYTES,
            )
            return Outcome(self._failure(Status.FAILURE, recorded), None, reason)
        wait = retries.countdown(options, retries_done, retries.requested_countdown(options, exc))
        event = self.event
        # The next attempt keeps the event's workflow links (chain, callbacks, group) and
        # per-call options (headers, time limits).
        following = dataclasses.replace(
            event, attempt=event.attempt + 1, not_before=now_micros() + int(wait * 1_000_000)
        )
        if isinstance(exc, Retry) and exc.expires is not None:
            following.expires = exc.expires
        return Outcome(self._failure(Status.RETRY, recorded), following)

    def _failure(self, status: Status, exc: BaseException) -> ResultEvent:
        """A FAILURE or RETRY event describing ``exc``, its message and traceback cut so that
        the event fits in ``message_max_bytes``."""
        result = self._result(status, error=describe(exc))
        limit = self.message_max_bytes
        if sizes.result_fits(result, limit):
            return result
        error = result.error
        assert error is not None
        message, trace = error.message, error.traceback
        error.message = error.traceback = ""
        # What the event leaves for the two texts; 10: their lengths' varints may grow.
        room = max(0, limit - sizes.result_record_size(result) - 10)
        message_bytes, trace_bytes = sizes.utf8_len(message), sizes.utf8_len(trace)
        # A short text keeps all of it and leaves the rest to the other; else half each.
        if message_bytes <= room // 2:
            message_room = message_bytes
        elif trace_bytes <= room // 2:
            message_room = room - trace_bytes
        else:
            message_room = room // 2
        error.message = _cut(message, message_room)
        error.traceback = _cut(trace, room - sizes.utf8_len(error.message), tail=True)
        return result


# The longest dead-letter reason, in bytes: its exception's repr is cut beyond this.
_REASON_MAX_BYTES = 4096
# What _cut puts where it cut, with room for any size (and " ..." before a kept tail).
_CUT_MARK = "... [truncated {}]"
_CUT_MARK_MAX = len(_CUT_MARK.format("9999.9 GB") + " ...")


def _cut(text: str, max_bytes: int, *, tail: bool = False) -> str:
    """``text`` in at most ``max_bytes`` UTF-8 bytes: its head, and with ``tail`` its end
    too (a traceback's last lines say what was raised), marked with how much was cut."""
    size = sizes.utf8_len(text)
    if size <= max_bytes:
        return text
    keep = max_bytes - _CUT_MARK_MAX
    if keep <= 0:
        return ""
    data = text.encode("utf-8", "surrogatepass")
    back = keep // 2 if tail else 0
    # A character split at a cut is dropped ("ignore"), so count what is kept afterwards.
    head = data[: keep - back].decode("utf-8", "ignore")
    end = data[len(data) - back :].decode("utf-8", "ignore") if back else ""
    cut = size - sizes.utf8_len(head) - sizes.utf8_len(end)
    return head + _CUT_MARK.format(sizes.format_size(cut)) + (" ..." if back else "") + end


def revoked(
    event: TaskEvent, topic: str, partition: int, offset: int, worker: str, reason: str
) -> Outcome:
    """The REVOKED outcome of a task event that does not run, or was terminated: the
    reason (revoked, expired, terminated) is the error's message, ``TaskRevoked`` its type."""
    now = now_micros()
    result = ResultEvent(
        event.id, event.task, Status.REVOKED, event.attempt, event.key, None,
        TaskError("TaskRevoked", reason, ""), worker, topic, partition, offset,
        event.enqueued_at, now, now,
    )  # fmt: skip
    return Outcome(result)


def unknown_task(
    event: TaskEvent, topic: str, partition: int, offset: int, worker: str, why: str
) -> Outcome:
    """The FAILURE (``UnknownTask``) of a task event this worker does not define: published
    for its id, so that a caller waiting for it learns why, and its event dead-lettered
    (``unknown-task``), so that a worker that defines it can run it after a replay."""
    now = now_micros()
    result = ResultEvent(
        event.id, event.task, Status.FAILURE, event.attempt, event.key, None,
        TaskError("UnknownTask", why, ""), worker, topic, partition, offset,
        event.enqueued_at, now, now,
    )  # fmt: skip
    return Outcome(result, None, why, Reason.UNKNOWN_TASK)


def describe(exc: BaseException) -> TaskError:
    """`exc` as its result event carries it; a lone surrogate in its text (which no UTF-8
    encoder takes, so the event could not be encoded) becomes U+FFFD."""
    return TaskError(
        type=storable(type(exc).__name__, nul=False),
        message=storable(str(exc), nul=False),
        traceback=storable("".join(traceback.format_exception(exc)), nul=False),
    )


def run_sync(run: Run, watchdog: Watchdog, on_abandon: Callable[[bool], None]) -> Outcome:
    """Run a plain function on this thread, within its time limits, terminable by its id
    (``on_abandon(terminated)``: the watchdog gave up on the thread)."""
    soft, hard = run.time_limits
    task_id = run.event.id
    run.enter()
    watchdog.track(task_id, on_abandon)
    limited = soft is not None or hard is not None
    watch = watchdog.watch(soft, hard, on_abandon) if limited else None
    terminated = False
    try:
        try:
            value = run.task.invoke(run.kwargs)
        finally:
            if watch is not None:
                watchdog.unwatch(watch)
            terminated = watchdog.untrack(task_id)  # also drops the run from the registry
            set_current_event(None)  # the thread runs other code between tasks
    except Exception as exc:
        if terminated or isinstance(exc, Terminated):
            run.terminated = True
            return run.revoked(TERMINATED)
        return run.failed(exc)
    if terminated:  # it caught Terminated and returned: still stopped by the revoke
        run.terminated = True
        return run.revoked(TERMINATED)
    return run.succeeded(value)


async def run_async(run: Run, watchdog: Watchdog | None = None) -> Outcome:
    """Await a coroutine function on the worker's loop, within its time limits, terminable
    by its id through ``watchdog`` (a revoke with terminate cancels it)."""
    soft, hard = run.time_limits
    run.enter()
    task = asyncio.ensure_future(_limited(run.task.invoke(run.kwargs), soft, hard))
    task_id = run.event.id
    if watchdog is not None:
        watchdog.track_async(task_id, task)
    try:
        value = await task
    except (Exception, asyncio.CancelledError) as exc:
        if watchdog is not None and watchdog.untrack_async(task_id):
            run.terminated = True
            return run.revoked(TERMINATED)
        if isinstance(exc, asyncio.CancelledError):
            raise  # the worker's loop is stopping
        return run.failed(exc)
    if watchdog is not None and watchdog.untrack_async(task_id):
        run.terminated = True  # it swallowed the cancellation and returned: still stopped
        return run.revoked(TERMINATED)
    return run.succeeded(value)


async def _limited(coro: Awaitable[Any], soft: float | None, hard: float | None) -> Any:
    """Await ``coro``; at the soft limit cancel it (the task sees CancelledError and may
    clean up; if it lets it through, the run failed with SoftTimeLimitExceeded); at the hard
    limit give up on it: TimeLimitExceeded."""
    if soft is None and hard is None:
        return await coro
    task = asyncio.ensure_future(coro)
    try:
        return await _within(task, soft, hard)
    except asyncio.CancelledError:
        task.cancel()  # cancelled from outside (terminated): the run itself stops too
        raise


async def _within(task: asyncio.Future[Any], soft: float | None, hard: float | None) -> Any:
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
