"""Running one task event: decoded arguments in, a result event out."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from taskstream.envelope import ResultEvent, TaskError, TaskEvent, now_micros
from taskstream.status import Status
from taskstream.task import Task


@dataclass(slots=True)
class Source:
    """Where the task event was read from."""

    topic: str
    partition: int
    offset: int


def _result_event(
    event: TaskEvent, source: Source, worker: str, started: int, status: Status,
    result: bytes | None, error: TaskError | None,
) -> ResultEvent:  # fmt: skip
    return ResultEvent(
        id=event.id,
        task=event.task,
        status=status,
        attempt=event.attempt,
        key=event.key,
        result=result,
        error=error,
        worker=worker,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        enqueued_at=event.enqueued_at,
        started_at=started,
        finished_at=now_micros(),
    )


def _error(exc: BaseException) -> TaskError:
    return TaskError(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def outcome(
    task: Task[Any, Any], event: TaskEvent, source: Source, worker: str, started: int,
    value: Any = None, exc: BaseException | None = None,
) -> ResultEvent:  # fmt: skip
    """The result event for a finished run: SUCCESS with the encoded return value, or
    FAILURE with the exception (also when the return value breaks the result schema)."""
    if exc is None:
        try:
            encoded = task.encode_result(value)
        except Exception as encode_exc:
            exc = encode_exc
        else:
            return _result_event(event, source, worker, started, Status.SUCCESS, encoded, None)
    return _result_event(event, source, worker, started, Status.FAILURE, None, _error(exc))


def run_sync(
    task: Task[Any, Any], event: TaskEvent, kwargs: dict[str, Any], source: Source, worker: str
) -> ResultEvent:
    started = now_micros()
    try:
        value = task.invoke(kwargs)
    except Exception as exc:
        return outcome(task, event, source, worker, started, exc=exc)
    return outcome(task, event, source, worker, started, value)


async def run_async(
    task: Task[Any, Any], event: TaskEvent, kwargs: dict[str, Any], source: Source, worker: str
) -> ResultEvent:
    started = now_micros()
    try:
        value = await task.invoke(kwargs)
    except Exception as exc:
        return outcome(task, event, source, worker, started, exc=exc)
    return outcome(task, event, source, worker, started, value)
