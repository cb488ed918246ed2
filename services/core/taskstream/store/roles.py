"""The lookup store's interface, split by the roles that use it.

The materializer reads the results topic and hands each batch to :meth:`ResultWriter.apply_rows`
(as plain :data:`ResultRow` tuples, built straight from the decoded events) together with the
next offset to read per partition; :meth:`ResultWriter.apply` does the same with
:class:`ResultRecord` objects. Because rows and offsets commit together, the store (not Kafka's
committed offsets) is the record of how far the results topic has been applied.

- :class:`ResultWriter`: the materializer (rows, offsets, forget, expiry);
- :class:`ResultReader`: callers (``AsyncResult``, ``GroupResult``);
- :class:`TaskSearch`: the console's task list and overview;
- :class:`IdempotencyStore`: the HTTP service (and the console's replays);
- :class:`GroupJoins`: the chord joiner.

:class:`ResultStore` is all of them, and what every backend implements (SQLite, PostgreSQL,
the in-memory fake); a component may ask for only the role it uses. Idempotency-Keys live here
so that every process and host serving one deployment gives a retried request the same task id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from taskstream.status import Status
from taskstream.store.base import (
    GroupInfo,
    GroupMember,
    IdempotencyKey,
    Link,
    MemberOutcome,
    OutcomeCount,
    Progress,
    ResultRecord,
    ResultRow,
    TaskQuery,
    to_row,
)


class ResultWriter(Protocol):
    """The materializer's side: outcomes and the offsets they were read up to."""

    @abstractmethod
    def apply(
        self, records: Sequence[ResultRecord], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Upsert `records` and set the next offset to read per (topic, partition), atomically.

        A crash never applies a result without its offset or vice versa. Records apply in
        order, each following :func:`~taskstream.store.base.supersedes`. Raises
        :class:`StoreError` if the batch cannot be written, in which case nothing of it is.
        """

    @abstractmethod
    def apply_rows(
        self,
        rows: Sequence[ResultRow],
        offsets: Mapping[tuple[str, int], int],
        members: Sequence[GroupMember] = (),
        progress: Sequence[Progress] = (),
        links: Sequence[Link] = (),
    ) -> None:
        """:meth:`apply` for :data:`ResultRow` tuples, with the same guarantees.

        ``members``: group members' final outcomes, in the same transaction (the join):
        each (group, index) counts once; a group whose members are all final moves from
        ``waiting`` to ``due`` (a chord) or ``done``, exactly once even with concurrent
        writers. ``progress``: custom states from ``update_state()``, latest wins.
        ``links``: workflow steps' places, latest wins (a task's place never changes).

        The materializer's path: it builds the rows from the decoded result envelopes, with
        no datetime or record object per event. A row with an unknown status is refused with
        :class:`StoreError`, like any row that cannot be written, and its whole batch with it.
        """

    @abstractmethod
    def offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read per partition of `topic`; partitions never applied are absent."""

    @abstractmethod
    def reset(self, topic: str) -> None:
        """Drop every row and stored offset in one transaction, to rebuild from `topic`.

        Offsets of every topic go, not only `topic`'s: rows from all topics are dropped, and an
        offset kept without its rows would make a rebuild skip them for good. Idempotency-Keys
        stay: they are not built from any topic.
        """

    @abstractmethod
    def forget(self, task_ids: Sequence[str]) -> int:
        """Delete the outcomes of `task_ids` (``AsyncResult.forget()``, or a tombstone read
        from the results topic); returns how many were stored. Raises :class:`StoreError`."""

    @abstractmethod
    def expire(self, before: datetime, limit: int = 1000) -> int:
        """Delete at most `limit` outcomes that finished before `before`, oldest first, in
        one short transaction (``result_expires``); returns how many. Call it again while it
        returns `limit`: small batches never hold the store's write lock for long. Raises
        :class:`StoreError`."""


class ResultReader(Protocol):
    """The caller's side: one task's outcome, progress and place in its workflow."""

    @abstractmethod
    def get(self, task_id: str) -> ResultRecord | None:
        """The stored outcome of `task_id`, or None if there is none yet (PENDING)."""

    @abstractmethod
    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        """Outcomes by task id, for those of `task_ids` that have one."""

    @abstractmethod
    def progress(self, task_id: str) -> Progress | None:
        """The latest custom state of a task (``update_state()``), if any."""

    @abstractmethod
    def link(self, task_id: str) -> Link | None:
        """A workflow step's place, if the store has seen it."""

    @abstractmethod
    def children(self, task_id: str) -> list[str]:
        """The tasks sent by ``task_id``'s outcome (chain's next step, callbacks, errbacks)."""


class TaskSearch(Protocol):
    """The console's side: pages of outcomes and counts over time."""

    @abstractmethod
    def search(self, query: TaskQuery) -> list[ResultRecord]:
        """At most ``query.limit`` outcomes matching `query`, newest ``finished_at`` first.

        Only rows with a ``finished_at`` are found (the materializer always sets it). Indexed
        in the SQL stores: a page costs about the same on a million rows as on a thousand.
        """

    @abstractmethod
    def outcome_counts(self, since: datetime, bucket_s: int) -> list[OutcomeCount]:
        """Stored outcomes with ``finished_at >= since``, counted per status and per
        `bucket_s`-second bucket (see :func:`~taskstream.store.base.bucket_start`), oldest
        bucket first. Each task counts once, by its latest outcome: the console's throughput
        and failures."""

    @abstractmethod
    def count(self, status: Status | None = None) -> int:
        """Number of stored outcomes, or of those with `status` (for tests and operations)."""


class IdempotencyStore(Protocol):
    """The HTTP service's side: Idempotency-Keys shared by its processes and hosts."""

    @abstractmethod
    def claim_idempotency_key(
        self, key: str, task_id: str, fingerprint: bytes, ttl_s: float
    ) -> IdempotencyKey | None:
        """Bind `key` to `task_id` and `fingerprint` for `ttl_s` seconds, unless it is bound.

        Returns None when the claim succeeded (the key was free, or its binding had expired),
        else the live binding, unchanged. Atomic across every process sharing the store: of
        concurrent claims of a free key exactly one gets None. Expired bindings are purged
        now and then. Raises :class:`StoreError` if the store cannot be written.
        """

    @abstractmethod
    def accept_idempotency_key(self, key: str, task_id: str) -> None:
        """Mark `key`'s binding to `task_id` as accepted (its event was acknowledged).

        Does nothing if `key` is no longer bound to `task_id` (it expired and was claimed
        again). Raises :class:`StoreError` if the store cannot be written.
        """


class GroupJoins(Protocol):
    """The chord joiner's side: groups whose members the materializer counted in."""

    @abstractmethod
    def group(self, group_id: str) -> GroupInfo | None:
        """What the store knows of a group (None before any member's final outcome)."""

    @abstractmethod
    def member_outcomes(self, group_id: str) -> list[MemberOutcome]:
        """The counted members' outcomes, by position: one query, for a chord's join."""

    @abstractmethod
    def due_groups(self) -> list[GroupInfo]:
        """The chords whose members are all final and whose join is not yet published."""

    @abstractmethod
    def mark_fired(self, group_id: str) -> None:
        """Record that a due chord's body (or FAILURE) was published and acknowledged."""


class ResultStore(ResultWriter, ResultReader, TaskSearch, IdempotencyStore, GroupJoins, ABC):
    """Where task outcomes are materialized and looked up: every role. Use as a context
    manager."""

    def apply(
        self, records: Sequence[ResultRecord], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        self.apply_rows([to_row(r) for r in records], offsets)

    @abstractmethod
    def close(self) -> None:
        """Release the store; further calls raise :class:`StoreError`. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
