"""Turning JSON submissions into acknowledged task events.

``Ingestor.submit`` validates each item against its task's Avro argument schema, encodes it
like ``task.delay`` (single-object Avro args inside a TaskEvent), checks that the event fits
the producer's ``message.max.bytes`` (else 413: the broker would refuse it every time),
settles Idempotency-Keys with the lookup store, publishes, and waits for the broker's
acknowledgements (acks=all) up to the publish timeout. An item is ``accepted`` only once its
delivery future resolved: what the service answers 202 for is never lost.
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

from confluent_kafka import KafkaError, KafkaException

from taskstream.envelope import TaskEvent, now_micros
from taskstream.errors import DeliveryFailed, InvalidArguments, MessageTooLarge, TaskstreamError
from taskstream.publishing import DeliveryHandle
from taskstream.text import id_problem

from .catalog import Catalog, TaskSpec
from .errors import error_detail
from .idempotency import (
    Claim,
    IdempotencyKeys,
    KeyRequest,
    RecentIds,
    store_key,
)
from .metrics import HttpMetrics


class Publisher(Protocol):
    """What the ingestor needs of taskstream.producer.publisher.TaskPublisher."""

    def publish(self, event: TaskEvent) -> DeliveryHandle: ...

    def close(self, timeout: float = 30.0) -> int: ...


@dataclass(slots=True)
class Submission:
    task: TaskSpec
    args: Any  # the JSON arguments object
    key: str | None = None
    queue: str | None = None
    idempotency_key: str | None = None
    priority: int | None = None  # checked (0-9); None: the task's


@dataclass(slots=True)
class Answer:
    """One item's answer: 202 with a task id, or an error status with code and message
    (and, for some errors, more detail fields: ``extra``)."""

    status: int
    task_id: str | None = None
    code: str | None = None
    message: str | None = None
    path: str | None = None
    replayed: bool = False
    extra: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202

    @classmethod
    def of(cls, exc: TaskstreamError) -> Answer:
        """The answer to `exc`, as the API's error table (errors.ANSWERS) maps it."""
        status, detail = error_detail(exc)
        code, message, path = detail.pop("code"), detail.pop("message"), detail.pop("path", None)
        return cls(status, code=code, message=message, path=path, extra=detail or None)

    def error(self) -> dict[str, Any]:
        """The ``error`` object of this answer."""
        detail: dict[str, Any] = {"code": self.code or "error", "message": self.message or ""}
        if self.path is not None:
            detail["path"] = self.path
        if self.extra:
            detail.update(self.extra)
        return detail


@dataclass(slots=True)
class _Item:
    """A valid item's event, and its Idempotency-Key claim request if it has a key."""

    event: TaskEvent
    key: KeyRequest | None


@dataclass(slots=True)
class _Pending:
    index: int
    event: TaskEvent
    claim: Claim | None = None
    inflight: asyncio.Future[bool] | None = None  # resolved for later requests with the key


def _invalid(code: str, message: str, path: str | None = None) -> Answer:
    return Answer(422, code=code, message=message, path=path)


def _unavailable(message: str) -> Answer:
    return Answer(503, code="broker_unavailable", message=message)


def _key_reused() -> Answer:
    return Answer(
        409, code="idempotency_key_reused", path="Idempotency-Key",
        message="this Idempotency-Key was used with a different request",
    )  # fmt: skip


class Ingestor:
    def __init__(
        self,
        catalog: Catalog,
        publisher: Publisher,
        metrics: HttpMetrics,
        *,
        publish_timeout_s: float,
        max_event_bytes: int,
        idempotency: IdempotencyKeys,
        recent: RecentIds,
    ) -> None:
        self.catalog = catalog
        self.publisher = publisher
        self.metrics = metrics
        self.publish_timeout_s = publish_timeout_s
        self.max_event_bytes = max_event_bytes
        self.idempotency = idempotency
        self.recent = recent
        self._queues = frozenset(catalog.queues)

    async def submit(self, items: Sequence[Submission]) -> list[Answer]:
        """Each item's outcome, in order. Raises StoreError if Idempotency-Keys cannot be
        claimed (then nothing was published)."""
        prepared = [self._prepare(item) for item in items]
        answers = [p if isinstance(p, Answer) else None for p in prepared]
        valid = [(i, p) for i, p in enumerate(prepared) if isinstance(p, _Item)]
        keyed = [(i, p.key) for i, p in valid if p.key is not None]
        bound = await self.idempotency.claim([k for _, k in keyed])
        claims = {i: claim for (i, _), claim in zip(keyed, bound, strict=True)}
        pending: list[_Pending] = []
        waiting: list[tuple[int, Claim, asyncio.Future[bool]]] = []
        for i, item in valid:
            claim = claims.get(i)
            if claim is None:
                pending.append(_Pending(i, item.event))
            else:
                answers[i] = self._settle_key(i, item, claim, pending, waiting)
        try:
            await self._publish(pending, answers)
        finally:  # whatever happened, later requests with these keys must not wait forever
            await self.idempotency.finish(
                [(p.claim, p.inflight, _accepted(answers[p.index])) for p in pending
                 if p.claim is not None and p.inflight is not None]
            )  # fmt: skip
        for i, claim, inflight in waiting:
            delivered = await asyncio.shield(inflight)
            answers[i] = (
                Answer(202, task_id=claim.task_id, replayed=True)
                if delivered
                else _unavailable("the broker did not acknowledge the event in time; retry")
            )
        done = [o for o in answers if o is not None]
        assert len(done) == len(items)
        for o in done:
            if not o.accepted:
                self.metrics.rejected.labels(o.code or "error").inc()
        return done

    def _settle_key(
        self,
        i: int,
        item: _Item,
        claim: Claim,
        pending: list[_Pending],
        waiting: list[tuple[int, Claim, asyncio.Future[bool]]],
    ) -> Answer | None:
        """What a keyed item does: an answer now, or None once it is queued to publish or
        to wait for the publish in flight with its key."""
        assert item.key is not None
        if claim.fingerprint != item.key.fingerprint:
            return _key_reused()
        if claim.accepted:
            return Answer(202, task_id=claim.task_id, replayed=True)
        inflight = None if claim.fresh else self.idempotency.inflight(claim.key)
        if inflight is not None:
            waiting.append((i, claim, inflight))
            return None
        item.event.id = claim.task_id
        pending.append(_Pending(i, item.event, claim, self.idempotency.start(claim.key)))
        return None

    def _prepare(self, item: Submission) -> Answer | _Item:
        spec = item.task
        for path, value in (("key", item.key), ("idempotency_key", item.idempotency_key)):
            problem = None if value is None else id_problem(value)
            if problem is not None:
                return _invalid(f"invalid_{path}", f"the {path} {problem}", path)
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
            return Answer.of(exc)
        except (ValueError, OverflowError, TypeError) as exc:  # e.g. a date fastavro cannot write
            return _invalid("invalid_arguments", f"cannot encode the arguments: {exc}", "args")
        event = TaskEvent(
            id=str(uuid.uuid4()),
            task=spec.name,
            queue=queue,
            key=item.key,
            attempt=1,
            enqueued_at=now_micros(),
            not_before=None,
            args=encoded,
            ignore_result=spec.ignore_result,
            priority=spec.priority if item.priority is None else item.priority,
        )
        if spec.expires_s is not None:  # @app.task(expires=...), as task.delay() sends it
            event.expires = event.enqueued_at + int(spec.expires_s * 1_000_000)
        size = self.event_size(event)
        if size > self.max_event_bytes:
            return Answer.of(MessageTooLarge(spec.name, size, self.max_event_bytes))
        if item.idempotency_key is None:
            return _Item(event, None)
        fingerprint = _fingerprint(spec.name, item.args, item.key, queue)
        key = KeyRequest(store_key(spec.name, item.idempotency_key), event.id, fingerprint)
        return _Item(event, key)

    def event_size(self, event: TaskEvent) -> int:
        """Bytes of `event` as produced, as ``message.max.bytes`` counts them: the encoded
        envelope and the record key (the ordering key, else the task id)."""
        value = self.catalog.envelopes.encode_task(event)
        return len(value) + len((event.key or event.id).encode())

    async def _publish(self, pending: list[_Pending], answers: list[Answer | None]) -> None:
        futures: list[DeliveryHandle | None] = []
        for p in pending:
            try:
                futures.append(self.publisher.publish(p.event))
            except (KafkaException, BufferError, ValueError) as exc:
                futures.append(None)
                answers[p.index] = self._refused(p.event, exc)
        await _settle([f for f in futures if f is not None], self.publish_timeout_s)
        for p, future in zip(pending, futures, strict=True):
            delivered = future is not None and future.done() and future.exception() is None
            if delivered:
                answers[p.index] = Answer(202, task_id=p.event.id)
                self.recent.add(p.event.id)
                self.metrics.accepted.labels(p.event.task).inc()
            elif future is not None:
                error = future.exception() if future.done() else None
                reason = (
                    error.reason if isinstance(error, DeliveryFailed)
                    else f"no acknowledgement within {self.publish_timeout_s:g}s"
                )  # fmt: skip
                answers[p.index] = _unavailable(
                    f"the broker did not take the event: {reason}; retry"
                )

    def _refused(self, event: TaskEvent, exc: Exception) -> Answer:
        """The answer to a publish that raised: 413 for an event too large (the publisher's
        own check, or librdkafka's, which also counts the record overhead), else 503."""
        if isinstance(exc, MessageTooLarge):
            return Answer.of(exc)
        if isinstance(exc, KafkaException) and _is_too_large(exc):
            size = self.event_size(event)
            return Answer.of(MessageTooLarge(event.task, size, self.max_event_bytes))
        return _unavailable(f"cannot produce the event: {exc}")


def _accepted(outcome: Answer | None) -> bool:
    return outcome is not None and outcome.accepted


def _is_too_large(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE


async def _settle(futures: list[DeliveryHandle], timeout: float) -> None:
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

    def on_done(_f: DeliveryHandle) -> None:
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
