"""AsyncResult: a handle on a task's outcome, read from the lookup store."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskstream.errors import ResultTimeout, TaskFailed, TaskRevoked
from taskstream.status import Status
from taskstream.store import ResultRecord

if TYPE_CHECKING:
    from taskstream.app import App
    from taskstream.group_result import GroupResult
    from taskstream.publishing import DeliveryHandle

R = TypeVar("R")

# Results often land within milliseconds: poll the store every few ms for the first second
# (a lookup by primary key costs microseconds), then back off.
_FIRST_POLL_S = 0.001
_FAST_POLL_MAX_S = 0.004
_FAST_PHASE_S = 1.0
_SLOW_POLL_S = 0.05


class AsyncResult(Generic[R]):
    """The outcome of one task, by id. Returned at once by ``delay``/``apply_async``."""

    def __init__(
        self,
        task_id: str,
        app: App,
        delivery: DeliveryHandle | None = None,
        *,
        parent: AsyncResult[Any] | GroupResult | None = None,
    ) -> None:
        self.id = task_id
        self._app = app
        self._delivery = delivery
        # The result this one's task was sent by, when known here: a chain's previous step,
        # a chord's header (a GroupResult); else looked up in the store.
        self._parent = parent
        # Sent with ignore_result (Celery's ``ignored``): no result will be stored, so get()
        # returns None at once instead of waiting for one.
        self.ignored = False

    @property
    def parent(self) -> AsyncResult[Any] | GroupResult | None:
        """The result whose outcome sent this task (a chain's previous step, a callback's
        task, a chord's header as a GroupResult), or None."""
        if self._parent is None:
            link = self._app.store.link(self.id)
            if link is not None and link.parent_id is not None:
                group = self._app.group_result(link.parent_id)
                self._parent = (
                    group if group is not None else AsyncResult(link.parent_id, self._app)
                )
        return self._parent

    @property
    def children(self) -> list[AsyncResult[Any]]:
        """The tasks this one's outcome sent (a chain's next step, callbacks, errbacks), as
        far as the store has seen them."""
        return [AsyncResult(c, self._app) for c in self._app.store.children(self.id)]

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def record(self) -> ResultRecord | None:
        """The stored outcome as the store keeps it, or None while there is none."""
        return self._app.store.get(self.id)

    @property
    def status(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE (also when delivery failed) or REVOKED.
        PENDING too for an id with no stored outcome: unknown, or expired (result_expires)."""
        record = self.record
        if record is not None:
            return record.status.value
        if self._delivery is not None and self._delivery.done() and self._delivery.exception():
            return Status.FAILURE.value
        return Status.PENDING.value

    @property
    def state(self) -> str:
        """The status, or while the task runs the custom state it set with
        ``update_state()`` (e.g. PROGRESS); the final outcome always wins."""
        record = self.record
        if record is not None and record.status is Status.STARTED:
            progress = self._app.store.progress(self.id)
            if progress is not None:
                return progress.state
        return self.status

    @property
    def result(self) -> Any:
        """The return value once SUCCESS, the error (a TaskFailed) once FAILURE, and while in
        RETRY the error it is retried for (as in Celery); else None."""
        record = self.record
        if record is not None and record.status is Status.RETRY:
            return self._error(record)
        if record is None or not record.status.is_final:
            return None
        return self._value(record)

    @property
    def info(self) -> Any:
        """Celery's ``info``: the value or error once final (as :attr:`result`); while the
        task runs, the ``meta`` of its latest ``update_state()``."""
        record = self.record
        if record is not None and record.status is Status.STARTED:
            progress = self._app.store.progress(self.id)
            if progress is not None:
                return None if progress.meta is None else json.loads(progress.meta)
        return self.result

    @property
    def traceback(self) -> str | None:
        """The remote traceback of a FAILURE (or of the error a RETRY is for), else None."""
        record = self.record
        if record is None or record.status not in (Status.FAILURE, Status.RETRY):
            return None
        return record.error_traceback

    @property
    def date_done(self) -> datetime | None:
        """When the final outcome was reached (UTC), else None."""
        record = self.record
        if record is None or not record.status.is_final:
            return None
        return record.finished_at

    def _value(self, record: ResultRecord) -> Any:
        try:
            return self._outcome(record)
        except (TaskFailed, TaskRevoked) as exc:
            return exc

    def outcome(self, record: ResultRecord, *, propagate: bool = True) -> Any:
        """The value of this task's final ``record`` (its error raised, or with
        ``propagate=False`` returned)."""
        return self._outcome(record) if propagate else self._value(record)

    def ready(self) -> bool:
        return Status(self.status).is_final

    def forget(self) -> None:
        """Remove the task's outcome: a tombstone on the results topic (every materializer
        deletes it; compaction drops it from the topic), and the row in this app's store at
        once. Afterwards the id reads as PENDING (unknown), as in Celery."""
        self._app.control.tombstone_result(self.id)
        self._app.store.forget([self.id])

    def revoke(self, *, terminate: bool = False) -> None:
        """Revoke the task (``app.control.revoke(self.id, terminate=terminate)``)."""
        self._app.control.revoke(self.id, terminate=terminate)

    def successful(self) -> bool:
        return self.status == Status.SUCCESS.value

    def failed(self) -> bool:
        return self.status == Status.FAILURE.value

    def wait_delivered(self, timeout: float | None = None) -> None:
        """Block until the broker acknowledged the task event; raises DeliveryFailed."""
        if self._delivery is not None:
            self._delivery.result(timeout)

    def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        """The task's return value once its result is in the store.

        Raises TaskFailed when the task raised (with ``propagate=False``: returns it),
        TaskRevoked when it was revoked (or expired before it ran), DeliveryFailed when its
        event never reached the broker, ResultTimeout (a TimeoutError) when there is no final
        outcome within ``timeout`` seconds. None at once when :attr:`ignored` (sent with
        ``ignore_result``), as in Celery.
        """
        if self.ignored:
            return None  # type: ignore[return-value]
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        interval = _FIRST_POLL_S
        while True:
            record = self._app.store.get(self.id)
            if record is not None and record.status.is_final:
                if not propagate:
                    value: Any = self._value(record)
                    return value  # type: ignore[no-any-return]
                return self._outcome(record)
            if self._delivery is not None and self._delivery.done():
                self._delivery.result()  # raises DeliveryFailed
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                status = record.status.value if record else Status.PENDING.value
                raise ResultTimeout(self.id, timeout, status)
            sleep = interval if deadline is None else min(interval, deadline - now)
            time.sleep(max(sleep, 0.0))
            fast = now - started < _FAST_PHASE_S
            interval = min(interval * 2, _FAST_POLL_MAX_S) if fast else _SLOW_POLL_S

    def _error(self, record: ResultRecord) -> TaskFailed:
        """The error a FAILURE or RETRY record describes."""
        return TaskFailed(
            self.id,
            record.error_type or "Exception",
            record.error_message or "",
            record.error_traceback or "",
        )

    def _outcome(self, record: ResultRecord) -> R:
        if record.status is Status.REVOKED:
            raise TaskRevoked(self.id, record.error_message or "revoked")
        if record.status is Status.FAILURE:
            raise self._error(record)
        value: Any = self._app.decode_result(record.task, record.result)
        return value  # type: ignore[no-any-return]
