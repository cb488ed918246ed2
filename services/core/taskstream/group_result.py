"""GroupResult: the results of a group's members, in the group's order, and ResultSet, any
several results (Celery's names)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from taskstream.errors import ResultTimeout
from taskstream.status import Status
from taskstream.store import ResultReader, ResultRecord

if TYPE_CHECKING:
    from taskstream.app import App
    from taskstream.result import AsyncResult

_FIRST_POLL_S = 0.002
_POLL_MAX_S = 0.1


class ResultSet:
    """Several AsyncResults, looked up together (Celery's ``ResultSet``): ``get()`` lists
    their values in order."""

    def __init__(self, results: list[AsyncResult[Any]], app: App | None = None) -> None:
        self.results = list(results)
        # None only while empty: an empty set has nothing to look up.
        self._app = app if app is not None or not results else results[0]._app

    def __repr__(self) -> str:
        return f"<ResultSet ({len(self.results)} results)>"

    def add(self, result: AsyncResult[Any]) -> None:
        """Add a result to the set (Celery's ``ResultSet.add``)."""
        if result not in self.results:
            self.results.append(result)
        if self._app is None:
            self._app = result._app

    def _store(self) -> ResultReader:
        assert self._app is not None, "an empty set has no results to look up"
        return self._app.store

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult[Any]]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any]:
        return self.results[index]

    def _statuses(self) -> list[str]:
        if not self.results:
            return []
        found = self._store().get_many([r.id for r in self.results])
        return [
            found[r.id].status.value if r.id in found else Status.PENDING.value
            for r in self.results
        ]

    def completed_count(self) -> int:
        """How many members succeeded (Celery counts successes only)."""
        return sum(1 for s in self._statuses() if s == Status.SUCCESS.value)

    def ready(self) -> bool:
        """Whether every member has a final outcome."""
        return all(s in (Status.SUCCESS.value, Status.FAILURE.value) for s in self._statuses())

    def successful(self) -> bool:
        return all(s == Status.SUCCESS.value for s in self._statuses())

    def failed(self) -> bool:
        return any(s == Status.FAILURE.value for s in self._statuses())

    def waiting(self) -> bool:
        return not self.ready()

    def join(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Celery's ``join``: the same as :meth:`get`."""
        return self.get(timeout=timeout, propagate=propagate)

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """The members' values in the group's order once all are final. Raises the first
        failed member's TaskFailed (``propagate=False``: it takes that member's place),
        ResultTimeout when not all are final within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = {r.id for r in self.results}
        if not pending:
            return []
        store = self._store()
        final: dict[str, ResultRecord] = {}
        interval = _FIRST_POLL_S
        while pending:
            found = store.get_many(list(pending))
            final.update((i, record) for i, record in found.items() if record.status.is_final)
            pending -= final.keys()
            if not pending:
                break
            if deadline is not None and time.monotonic() >= deadline:
                done = len(self.results) - len(pending)
                what = getattr(self, "id", "a result set")
                raise ResultTimeout(what, timeout, f"{done}/{len(self.results)} final")
            time.sleep(interval)
            interval = min(interval * 2, _POLL_MAX_S)
        return [r.outcome(final[r.id], propagate=propagate) for r in self.results]


class GroupResult(ResultSet):
    """A group's members' AsyncResults; ``id`` is the group's id (``app.group_result(id)``
    finds it again once the materializer has seen one of its members)."""

    def __init__(
        self,
        group_id: str,
        results: list[AsyncResult[Any]],
        app: App | None,
        *,
        parent: AsyncResult[Any] | GroupResult | None = None,
    ) -> None:
        super().__init__(results, app)
        self.id = group_id
        self.parent = parent  # what sent the group in a chain, when known here

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} ({len(self.results)} members)>"
