"""``task.apply()``: a task run here and now, through its Avro schemas as on a worker."""

from __future__ import annotations

import contextvars
import socket
import traceback as tb
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskstream.errors import NoCurrentTask, TaskFailed
from taskstream.status import Status
from taskstream.task import RunInfo, current_request, set_current_event, set_progress_sink

if TYPE_CHECKING:
    from taskstream.task import Task

R = TypeVar("R")


class EagerResult(Generic[R]):
    """The outcome of ``task.apply()``: AsyncResult's API, with nothing to wait for."""

    def __init__(
        self,
        task_id: str,
        state: str,
        value: Any = None,
        error: TaskFailed | None = None,
    ) -> None:
        self.id = task_id
        self.state = self.status = state
        self._value = value
        self._error = error
        self.date_done = datetime.now(UTC)
        self.parent = None

    def __repr__(self) -> str:
        return f"<EagerResult {self.id} {self.state}>"

    @property
    def result(self) -> Any:
        return self._error if self._error is not None else self._value

    @property
    def info(self) -> Any:
        return self.result

    @property
    def traceback(self) -> str | None:
        return None if self._error is None else self._error.traceback

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self.state == Status.SUCCESS.value

    def failed(self) -> bool:
        return self.state == Status.FAILURE.value

    def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        if self._error is not None:
            if propagate:
                raise self._error
            value: Any = self._error
            return value  # type: ignore[no-any-return]
        result: R = self._value
        return result


def _discard(_state: str, _meta: str | None) -> None:
    pass


def apply(
    task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any
) -> EagerResult[R]:
    """Run ``task`` in this thread with its arguments and return value encoded and decoded
    by its schemas (InvalidArguments for arguments that do not fit, before it runs)."""
    encoded = task.encode_args(args, kwargs)
    event = task.event(encoded, key=options.get("key"), task_id=options.get("task_id"))
    try:  # applied inside a task: that task is its parent (and its root, the root), as in Celery
        caller = current_request()
    except NoCurrentTask:
        pass
    else:
        event.parent_id, event.root_id = caller.id, caller.root_id
    decoded = task.decode_args(encoded)
    info = RunInfo(task, decoded, socket.gethostname(), is_eager=True)

    def run() -> Any:
        set_current_event(event, info)  # in a copy of the context: a caller's request stays
        # self.update_state() works as in Celery's eager mode; nobody else can see this run,
        # so its custom states go nowhere (the caller holds the outcome).
        set_progress_sink(_discard)
        return task.decode_result(task.encode_result(task.invoke(decoded)))

    try:
        value = contextvars.copy_context().run(run)
    except Exception as exc:
        trace = "".join(tb.format_exception(exc))
        error = TaskFailed(event.id, type(exc).__name__, str(exc), trace)
        return EagerResult(event.id, Status.FAILURE.value, error=error)
    return EagerResult(event.id, Status.SUCCESS.value, value)
