"""An in-memory lookup store: the fake for unit tests and single-process demos."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from taskstream.errors import StoreError
from taskstream.status import Status
from taskstream.store.base import (
    GroupInfo,
    GroupMember,
    GroupState,
    IdempotencyKey,
    Link,
    MemberOutcome,
    OutcomeCount,
    Progress,
    ResultRecord,
    ResultRow,
    TaskQuery,
    bucket_start,
    from_row,
    matches,
    settled_state,
    supersedes,
)
from taskstream.store.roles import ResultStore

_PURGE_EVERY = 1024  # claims between sweeps of expired Idempotency-Keys


class MemoryStore(ResultStore):
    """A dict-backed :class:`ResultStore`, safe to share between threads; nothing persists."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, ResultRecord] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._keys: dict[str, tuple[IdempotencyKey, float]] = {}  # key -> (binding, expires)
        self._claims = 0
        self._clock = clock
        self._closed = False
        self._groups: dict[str, GroupInfo] = {}
        self._members: dict[str, set[int]] = {}
        self._member_tasks: dict[str, dict[int, str]] = {}
        self._progress: dict[str, Progress] = {}
        self._links: dict[str, Link] = {}

    def apply_rows(
        self,
        rows: Sequence[ResultRow],
        offsets: Mapping[tuple[str, int], int],
        members: Sequence[GroupMember] = (),
        progress: Sequence[Progress] = (),
        links: Sequence[Link] = (),
    ) -> None:
        offsets = dict(offsets)
        # Validate before touching anything, so a bad batch changes nothing, like the rolled-back
        # transaction of the SQL stores (whose CHECK constraints this mirrors).
        for (topic, partition), offset in offsets.items():
            if offset < 0:
                raise StoreError(f"memory store: negative offset {offset} for {topic}[{partition}]")
        try:
            records = [from_row(row) for row in rows]
        except (ValueError, TypeError, IndexError) as exc:
            raise StoreError(f"memory store: cannot write a row: {exc}") from exc
        with self._lock:
            self._check_open()
            for record in records:
                old = self._rows.get(record.task_id)
                if old is None or supersedes(record.status, old.status):
                    self._rows[record.task_id] = record
            self._offsets.update(offsets)
            self._progress.update((p.task_id, p) for p in progress)
            self._links.update((link.task_id, link) for link in links)
            for member in members:
                self._join(member)

    def _join(self, member: GroupMember) -> None:
        info = self._groups.get(member.group_id)
        if info is None:
            info = GroupInfo(member.group_id, member.size, 0, GroupState.WAITING, None)
        manifest = info.manifest if info.manifest is not None else member.manifest
        indexes = self._members.setdefault(member.group_id, set())
        indexes.add(member.index)
        self._member_tasks.setdefault(member.group_id, {})[member.index] = member.task_id
        state = info.state
        if state == GroupState.WAITING:
            state = settled_state(info.size, len(indexes), manifest)
        self._groups[member.group_id] = GroupInfo(
            member.group_id, info.size, len(indexes), state, manifest
        )

    def group(self, group_id: str) -> GroupInfo | None:
        with self._lock:
            self._check_open()
            return self._groups.get(group_id)

    def member_outcomes(self, group_id: str) -> list[MemberOutcome]:
        with self._lock:
            self._check_open()
            indexes = sorted(self._members.get(group_id, ()))
            tasks = self._member_tasks.get(group_id, {})
            out = []
            for i in indexes:
                r = self._rows.get(tasks[i])
                if r is not None:
                    out.append(MemberOutcome(i, r.task_id, r.task, r.status.value, r.result,
                                             r.error_type, r.error_message))  # fmt: skip
            return out

    def due_groups(self) -> list[GroupInfo]:
        with self._lock:
            self._check_open()
            return [g for g in self._groups.values() if g.state == GroupState.DUE]

    def mark_fired(self, group_id: str) -> None:
        with self._lock:
            self._check_open()
            info = self._groups[group_id]
            self._groups[group_id] = GroupInfo(
                group_id, info.size, info.completed, GroupState.FIRED, info.manifest
            )

    def link(self, task_id: str) -> Link | None:
        with self._lock:
            self._check_open()
            return self._links.get(task_id)

    def children(self, task_id: str) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(k.task_id for k in self._links.values() if k.parent_id == task_id)

    def progress(self, task_id: str) -> Progress | None:
        with self._lock:
            self._check_open()
            return self._progress.get(task_id)

    def get(self, task_id: str) -> ResultRecord | None:
        with self._lock:
            self._check_open()
            return self._rows.get(task_id)

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        with self._lock:
            self._check_open()
            return {t: self._rows[t] for t in task_ids if t in self._rows}

    def offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            self._check_open()
            return {p: o for (t, p), o in self._offsets.items() if t == topic}

    def count(self, status: Status | None = None) -> int:
        with self._lock:
            self._check_open()
            if status is None:
                return len(self._rows)
            return sum(1 for r in self._rows.values() if r.status == status)

    def search(self, query: TaskQuery) -> list[ResultRecord]:
        with self._lock:
            self._check_open()
            found = [r for r in self._rows.values() if matches(r, query)]
        found.sort(key=lambda r: (r.finished_at, r.task_id), reverse=True)
        return found[: query.limit]

    def outcome_counts(self, since: datetime, bucket_s: int) -> list[OutcomeCount]:
        with self._lock:
            self._check_open()
            counts = Counter(
                (bucket_start(r.finished_at, bucket_s), r.status)
                for r in self._rows.values()
                if r.finished_at is not None and r.finished_at >= since
            )
        return [OutcomeCount(b, s, n) for (b, s), n in sorted(counts.items())]

    def reset(self, topic: str) -> None:
        with self._lock:
            self._check_open()
            self._rows.clear()
            self._offsets.clear()
            self._groups.clear()
            self._members.clear()
            self._member_tasks.clear()
            self._progress.clear()
            self._links.clear()

    def claim_idempotency_key(
        self, key: str, task_id: str, fingerprint: bytes, ttl_s: float
    ) -> IdempotencyKey | None:
        now = self._clock()
        with self._lock:
            self._check_open()
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                self._keys = {k: v for k, v in self._keys.items() if v[1] > now}
            bound = self._keys.get(key)
            if bound is not None and bound[1] > now:
                return bound[0]
            self._keys[key] = (IdempotencyKey(task_id, fingerprint), now + ttl_s)
            return None

    def accept_idempotency_key(self, key: str, task_id: str) -> None:
        with self._lock:
            self._check_open()
            bound = self._keys.get(key)
            if bound is not None and bound[0].task_id == task_id:
                binding, expires = bound
                self._keys[key] = (IdempotencyKey(task_id, binding.fingerprint, True), expires)

    def forget(self, task_ids: Sequence[str]) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for t in set(task_ids) if self._rows.pop(t, None) is not None)

    def expire(self, before: datetime, limit: int = 1000) -> int:
        with self._lock:
            self._check_open()
            old = sorted(
                (r.finished_at, t)
                for t, r in self._rows.items()
                if r.finished_at is not None and r.finished_at < before
            )[:limit]
            for _finished, task_id in old:
                del self._rows[task_id]
            return len(old)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")
