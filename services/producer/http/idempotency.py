"""Idempotency-Keys, kept in the lookup store; recently accepted task ids, per process.

A key is bound to a task id for ``ttl_s`` seconds from its first use, in the lookup store, so
every process and host sharing the store agrees: within that time a request with the same key
(for the same task) gets the same task id, wherever the load balancer sends it. Once the
broker acknowledged the key's event, the binding says so and a retry is answered without a
second event. If the first attempt was answered 503, or is still in flight in another
process, a retry publishes again under the *same* task id, so at most one task id exists per
key (that task id may then run twice, which at-least-once delivery allows anyway). Within one
process, a retry waits for a first attempt still in flight instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from taskstream.errors import StoreError
from taskstream.store import IdempotencyStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """One request's claim: the store key (task and Idempotency-Key), a fresh task id, and
    the fingerprint of what it asks for."""

    key: str
    task_id: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """What a key is bound to, and whether this request bound it (``fresh``: it publishes)."""

    key: str
    task_id: str
    fingerprint: bytes
    fresh: bool
    accepted: bool = False


def store_key(task: str, idempotency_key: str) -> str:
    """The key a task's Idempotency-Key is stored under: readable task, hashed client key
    (any length and bytes the client sent fit in a fixed-size text column)."""
    return f"{task}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


class IdempotencyKeys:
    """Idempotency-Key -> task id in `store`, plus this process's publishes in flight."""

    def __init__(self, store: IdempotencyStore, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._inflight: dict[str, asyncio.Future[bool]] = {}

    async def claim(self, requests: Sequence[KeyRequest]) -> list[Claim]:
        """Each request's claim, in order, in a worker thread (the store may be remote).
        Raises StoreError if the store cannot be written."""
        if not requests:
            return []
        return await run_in_threadpool(self._claim_all, requests)

    def _claim_all(self, requests: Sequence[KeyRequest]) -> list[Claim]:
        claims = []
        for r in requests:
            bound = self.store.claim_idempotency_key(r.key, r.task_id, r.fingerprint, self.ttl_s)
            if bound is None:
                claims.append(Claim(r.key, r.task_id, r.fingerprint, fresh=True))
            else:
                claims.append(Claim(r.key, bound.task_id, bound.fingerprint, False, bound.accepted))
        return claims

    def inflight(self, key: str) -> asyncio.Future[bool] | None:
        """The outcome of this process's publish under `key` still in flight, if any."""
        return self._inflight.get(key)

    def start(self, key: str) -> asyncio.Future[bool]:
        """This process publishes under `key` now: later requests with it wait for the
        future this returns, which :meth:`finish` resolves."""
        future = self._inflight[key] = asyncio.get_running_loop().create_future()
        return future

    async def finish(self, outcomes: Sequence[tuple[Claim, asyncio.Future[bool], bool]]) -> None:
        """Each publish (its claim, the future :meth:`start` gave, whether it was delivered)
        ended: wake who waits, and record the delivered ones in the store (a failure there
        only costs a later retry a second event under the same task id)."""
        for claim, future, delivered in outcomes:
            if self._inflight.get(claim.key) is future:
                del self._inflight[claim.key]
            if not future.done():
                future.set_result(delivered)
        accepted = [claim for claim, _future, delivered in outcomes if delivered]
        if accepted:
            try:
                await run_in_threadpool(self._accept_all, accepted)
            except StoreError as exc:
                log.warning("cannot record %d accepted Idempotency-Keys: %s", len(accepted), exc)

    def _accept_all(self, claims: Sequence[Claim]) -> None:
        for c in claims:
            self.store.accept_idempotency_key(c.key, c.task_id)


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
