"""Turning JSON submissions into acknowledged task events.

``Ingestor.submit`` validates each item against its task's Avro argument schema, encodes it
like ``task.delay`` (single-object Avro args inside a TaskEvent), publishes, and waits for the
broker's acknowledgements (acks=all) up to the publish timeout. An item is ``accepted`` only
once its delivery future resolved: what the service answers 202 for is never lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaException

from taskstream.envelope import TaskEvent, now_micros
from taskstream.errors import DeliveryFailed, InvalidArguments
from taskstream.producer.http.catalog import Catalog, TaskSpec
from taskstream.producer.http.idempotency import IdempotencyKeys, KeyEntry, RecentIds
from taskstream.producer.http.metrics import HttpMetrics
from taskstream.producer.publisher import Delivery


class Publisher(Protocol):
    """What the ingestor needs of taskstream.producer.publisher.TaskPublisher."""

    def publish(self, event: TaskEvent) -> Delivery: ...

    def close(self, timeout: float = 30.0) -> int: ...


@dataclass(slots=True)
class Submission:
    task: TaskSpec
    args: Any  # the JSON arguments object
    key: str | None = None
    queue: str | None = None
    idempotency_key: str | None = None


@dataclass(slots=True)
class Outcome:
    """One item's answer: 202 with a task id, or an error status with code and message."""

    status: int
    task_id: str | None = None
    code: str | None = None
    message: str | None = None
    path: str | None = None
    replayed: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == 202


def _invalid(code: str, message: str, path: str | None = None) -> Outcome:
    return Outcome(422, code=code, message=message, path=path)


def _unavailable(message: str) -> Outcome:
    return Outcome(503, code="broker_unavailable", message=message)


class Ingestor:
    def __init__(
        self,
        catalog: Catalog,
        publisher: Publisher,
        metrics: HttpMetrics,
        *,
        publish_timeout_s: float,
        idempotency: IdempotencyKeys,
        recent: RecentIds,
    ) -> None:
        self.catalog = catalog
        self.publisher = publisher
        self.metrics = metrics
        self.publish_timeout_s = publish_timeout_s
        self.idempotency = idempotency
        self.recent = recent
        self._queues = frozenset(catalog.queues)

    async def submit(self, items: Sequence[Submission]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        outcomes: list[Outcome | None] = [None] * len(items)
        pending: list[tuple[int, TaskEvent, KeyEntry | None]] = []
        waiting: list[tuple[int, KeyEntry]] = []  # same key as a request still in flight
        for i, item in enumerate(items):
            prepared = self._prepare(item)
            if isinstance(prepared, Outcome):
                outcomes[i] = prepared
                continue
            event, entry, fresh = prepared
            if entry is not None and not fresh:
                if entry.accepted:
                    outcomes[i] = Outcome(202, task_id=entry.task_id, replayed=True)
                    continue
                if entry.inflight is not None:
                    waiting.append((i, entry))
                    continue
            if entry is not None:  # a later request with this key waits for this one
                entry.inflight = loop.create_future()
            pending.append((i, event, entry))
        if pending:
            await self._publish(pending, outcomes)
        for i, entry in waiting:
            assert entry.inflight is not None
            delivered = await asyncio.shield(entry.inflight)
            outcomes[i] = (
                Outcome(202, task_id=entry.task_id, replayed=True)
                if delivered
                else _unavailable("the broker did not acknowledge the event in time; retry")
            )
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(items)
        for o in done:
            if not o.accepted:
                self.metrics.rejected.labels(o.code or "error").inc()
        return done

    def _prepare(self, item: Submission) -> Outcome | tuple[TaskEvent, KeyEntry | None, bool]:
        spec = item.task
        queue = spec.queue if item.queue is None else item.queue
        if queue not in self._queues:
            return _invalid(
                "unknown_queue",
                f"queue {queue!r} is not served here; one of {sorted(self._queues)}",
                "queue",
            )  # fmt: skip
        try:
            datum = spec.converter.to_datum(item.args, task=spec.name, root="args")
            encoded = self.catalog.codec.encode(spec.args, datum)
        except InvalidArguments as exc:
            return _invalid("invalid_arguments", exc.message, exc.path)
        except (ValueError, OverflowError, TypeError) as exc:  # e.g. a date fastavro cannot write
            return _invalid("invalid_arguments", f"cannot encode the arguments: {exc}", "args")
        entry, fresh = None, True
        task_id = str(uuid.uuid4())
        if item.idempotency_key is not None:
            fingerprint = _fingerprint(spec.name, item.args, item.key, queue)
            entry, fresh = self.idempotency.claim(
                f"{spec.name}\0{item.idempotency_key}", fingerprint, task_id
            )
            if entry.fingerprint != fingerprint:
                return Outcome(
                    409, code="idempotency_key_reused", path="Idempotency-Key",
                    message="this Idempotency-Key was used with a different request",
                )  # fmt: skip
            task_id = entry.task_id
        event = TaskEvent(
            id=task_id,
            task=spec.name,
            queue=queue,
            key=item.key,
            attempt=1,
            enqueued_at=now_micros(),
            not_before=None,
            args=encoded,
        )
        return event, entry, fresh

    async def _publish(
        self,
        pending: list[tuple[int, TaskEvent, KeyEntry | None]],
        outcomes: list[Outcome | None],
    ) -> None:
        futures: list[Delivery | None] = []
        for i, event, _entry in pending:
            try:
                futures.append(self.publisher.publish(event))
            except (KafkaException, BufferError, ValueError) as exc:
                futures.append(None)
                outcomes[i] = _unavailable(f"cannot produce the event: {exc}")
        await _settle([f for f in futures if f is not None], self.publish_timeout_s)
        for (i, event, entry), future in zip(pending, futures, strict=True):
            delivered = future is not None and future.done() and future.exception() is None
            if delivered:
                outcomes[i] = Outcome(202, task_id=event.id)
                self.recent.add(event.id)
                self.metrics.accepted.labels(event.task).inc()
            elif future is not None:
                error = future.exception() if future.done() else None
                reason = (
                    error.reason if isinstance(error, DeliveryFailed)
                    else f"no acknowledgement within {self.publish_timeout_s:g}s"
                )  # fmt: skip
                outcomes[i] = _unavailable(f"the broker did not take the event: {reason}; retry")
            if entry is not None:
                entry.accepted = delivered
                assert entry.inflight is not None
                entry.inflight.set_result(delivered)
                entry.inflight = None


async def _settle(futures: list[Delivery], timeout: float) -> None:
    """Wait until every future is done or `timeout` passed, whichever comes first.

    Never cancels them: the producer's delivery callback must still be able to resolve them.
    """
    if not futures:
        return
    loop = asyncio.get_running_loop()
    all_done: asyncio.Future[None] = loop.create_future()
    remaining = len(futures)
    lock = threading.Lock()

    def finish() -> None:
        if not all_done.done():
            all_done.set_result(None)

    def on_done(_f: Delivery) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            last = remaining == 0
        if last:
            try:
                loop.call_soon_threadsafe(finish)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass

    for f in futures:
        f.add_done_callback(on_done)
    try:
        await asyncio.wait_for(all_done, timeout)
    except TimeoutError:
        pass


def _fingerprint(task: str, args: Any, key: str | None, queue: str) -> bytes:
    text = json.dumps([task, args, key, queue], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()
