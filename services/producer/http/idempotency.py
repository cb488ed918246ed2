"""Idempotency-Key and recently accepted task ids: bounded, in memory, per process.

A key is remembered for ``ttl_s`` seconds from its first use; within that time a request with
the same key (for the same task) gets the same task id. If the first attempt was answered
503, a retry publishes again under the *same* task id, so at most one task id exists per key
(a task id may then run twice, which at-least-once delivery allows anyway). Several service
processes do not share this memory: route one client's retries to one process, or accept
that a retry landing elsewhere gets a new task id.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class KeyEntry:
    task_id: str
    fingerprint: bytes  # of the request the key was first used with
    expires: float
    accepted: bool = False
    inflight: asyncio.Future[bool] | None = field(default=None)


class IdempotencyKeys:
    """Idempotency-Key -> task id, oldest first, at most ``max_entries`` kept."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, KeyEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: str, fingerprint: bytes, task_id: str) -> tuple[KeyEntry, bool]:
        """The entry of `key`, and whether it was created now (with `task_id`)."""
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None:
            return entry, False
        entry = self._entries[key] = KeyEntry(task_id, fingerprint, now + self.ttl_s)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry, True

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first.expires > now:
                return
            entries.popitem(last=False)


class RecentIds:
    """Task ids this process accepted lately, so that GET answers PENDING rather than 404."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, task_id: str) -> None:
        self._ids[task_id] = None
        if len(self._ids) > self.max_entries:
            self._ids.popitem(last=False)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids
