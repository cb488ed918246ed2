"""The materializer: the results topic, applied to the lookup store.

Each batch of result events is written to the store in one transaction together with the
next offset of every partition it read, and on assignment the consumer starts from the
offsets the store holds, not from the group's: a crash between the two never loses a result
nor applies one twice. Offsets are also committed to Kafka, afterwards, only so that
operators see the group's lag.

A tombstone (a record without a value, written by ``AsyncResult.forget()``) deletes its task's
outcome. With ``result_expires`` set, outcomes older than it are deleted between batches, a
small batch at a time (``ResultStore.expire``); after a rebuild from a topic that still holds
older events, the next sweeps delete them again.

The hot path decodes each envelope to the codec's plain dict and builds the store's row tuple
from it (:func:`result_row`): at tens of thousands of events a second, a ResultEvent, three
datetimes and a ResultRecord per event cost more than the SQLite write itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from taskstream.app import App
from taskstream.consumer.dead_letter import DeadLetters, Reason
from taskstream.consumer.instrumentation import MaterializerHooks, PrometheusMaterializerHooks
from taskstream.consumer.joins import Joiner, MemberResults, workflow_rows
from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming, RuntimeOwner
from taskstream.envelope import now_micros
from taskstream.errors import CorruptMessage, DeliveryFailed, StoreRejected
from taskstream.kafka.broker import Access
from taskstream.kafka.clients import consumer_config, incremental_assignment, producer_config
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.sizes import producer_limit
from taskstream.kafka.topics import dead_letter_topic, materializer_group, results_topic
from taskstream.status import Status
from taskstream.store import GroupMember, Link, Progress, ResultRow, ResultStore
from taskstream.store.base import from_micros, redacted_url

log = logging.getLogger(__name__)

_BATCH = 2000  # result events applied per store transaction, at most
_POLL_S = 0.1
_EXPIRE_BATCH = 500  # outcomes deleted per store transaction by the expiry sweep
_SWEEP_MIN_S, _SWEEP_MAX_S = 1.0, 60.0  # how often expired outcomes are looked for
_STATUSES = frozenset(s.value for s in Status)


def result_row(d: dict[str, Any]) -> ResultRow:
    """The store row of a result envelope decoded to its Avro dict (schemas/result_event.avsc).

    Raises CorruptMessage for a status taskstream does not know.
    """
    status = d["status"]
    if status not in _STATUSES:
        raise CorruptMessage(f"unknown status {status!r}")
    error = d["error"]
    source = d["source"]
    if error is None:
        error_type = error_message = error_traceback = None
    else:
        error_type, error_message, error_traceback = (
            error["type"], error["message"], error["traceback"]
        )  # fmt: skip
    return (
        d["id"], d["task"], status, d["attempt"], d["result"],
        error_type, error_message, error_traceback, d["worker"], d["key"],
        d["enqueued_at"], d["started_at"], d["finished_at"],
        source["topic"], source["partition"], source["offset"],
    )  # fmt: skip


class Materializer(RuntimeOwner):
    """Consumes the results topic into ``store`` until stopped (a consumer runtime handler)."""

    def __init__(
        self,
        app: App,
        store: ResultStore | None = None,
        group_id: str | None = None,
        *,
        rebuild: bool = False,
        hooks: MaterializerHooks | None = None,
    ) -> None:
        s = app.settings
        self.app = app
        self.store = store or app.store
        self.topic = results_topic(s.topic_prefix)
        self.group_id = group_id or materializer_group(s.topic_prefix)
        self._tracker = OffsetTracker()
        self._producer: EventProducer | None = None  # opened for the first dead letter
        self._join: Joiner | None = None  # chords' joins (opened on the first assignment)
        self._members = MemberResults()  # open groups' members' results, for their joins
        self._letters = DeadLetters(s.topic_prefix, producer_limit(s))
        self.hooks = hooks if hooks is not None else PrometheusMaterializerHooks()
        self.applied = 0  # result events written to the store by this process
        # Drop the store's rows and offsets first: with no stored offsets, every partition is
        # read from the beginning (the compacted topic holds each task's latest outcome).
        self.rebuild = rebuild
        self.expired = 0  # outcomes deleted by result_expires in this process
        expires = s.result_expires or None
        self._expires_us = None if expires is None else int(expires * 1_000_000)
        self._sweep_every_s = (
            0.0 if expires is None else min(max(expires / 4, _SWEEP_MIN_S), _SWEEP_MAX_S)
        )
        self._next_sweep = 0.0  # monotonic time of the next sweep

    def run(self) -> None:
        s = self.app.settings
        self.app.ensure_topics()
        # A store-rejected record goes to the dead-letter topic (taskstream.kafka.preflight).
        access = Access((self.topic,), (dead_letter_topic(s.topic_prefix),), (self.group_id,))
        self.app.broker.check_access(s, access)
        if self.rebuild:
            log.warning("rebuilding %s: dropping its rows and offsets", redacted_url(s.store))
            self.store.reset(self.topic)
            self.rebuild = False  # once: a second run() resumes from the rebuilt offsets
        # Eager assignment, so that assigned() can place every partition at the store's offset.
        config = consumer_config(s, self.group_id, strategy="range")
        consumer = self.app.broker.consumer(config)
        # The store holds the offsets that count; the group's commits (every commit
        # interval) only let operators see the lag.
        runtime = self._started(
            ConsumerRuntime(
                consumer,
                self,
                self._tracker,
                timing=LoopTiming(poll_s=_POLL_S, batch=_BATCH, commit_every_s=s.commit_every_s),
                capacity=_BATCH,
                cooperative=incremental_assignment(config),
                skip_markers=True,  # past transaction markers: lag 0 when nothing waits
            )
        )
        runtime.subscribe([self.topic])
        log.info("materializing %s into %s", self.topic, redacted_url(s.store))
        try:
            runtime.run()
        finally:
            if self._producer is not None:
                self._producer.close()

    def describe(self) -> str:
        """What it applied, per partition (a test prints it when a result never comes)."""
        runtime = self._runtime
        parts = [f"applied={self.applied}"]
        for (topic, partition), offsets in sorted(self._tracker.partitions.items()):
            high = runtime.high_watermark(topic, partition) if runtime is not None else None
            end = runtime.end_offset(topic, partition) if runtime is not None else None
            parts.append(f"  {topic}[{partition}] next={offsets.next_offset} high={high} end={end}")
        return "\n".join(parts)

    # -- the runtime's handler --------------------------------------------------------------

    def room(self) -> int:
        return _BATCH  # each batch is applied before the next fetch

    def busy(self) -> bool:
        return False

    def serve(self, timeout: float) -> None:
        if self._producer is not None:
            self._producer.poll(0)
        if self._expires_us is not None and time.monotonic() >= self._next_sweep:
            self._sweep()

    def _sweep(self) -> None:
        """One small batch of expired outcomes; the next turn takes another while the last
        was full, else the next sweep is an interval away."""
        assert self._expires_us is not None
        before = from_micros(now_micros() - self._expires_us)
        assert before is not None
        deleted = self.store.expire(before, _EXPIRE_BATCH)
        self.expired += deleted
        if deleted < _EXPIRE_BATCH:
            self._next_sweep = time.monotonic() + self._sweep_every_s
        if deleted:
            log.debug("%d expired outcomes deleted", deleted)

    def drain(self, grace: float) -> None:
        pass

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        pass  # every applied batch is in the store already, with its offsets

    def assigned(self, partitions: list[TopicPartition]) -> None:
        stored = self.store.offsets(self.topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        # Chords found complete before a crash, whose join was never acknowledged.
        self._joiner().fire_due()

    def _joiner(self) -> Joiner:
        if self._join is None:
            s = self.app.settings
            self._join = Joiner(
                self.store, self.app.envelopes, s.topic_prefix, self._producer_(), self._members
            )
        return self._join

    def _producer_(self) -> EventProducer:
        if self._producer is None:
            config = producer_config(self.app.settings)
            self._producer = EventProducer(config, broker=self.app.broker)
        return self._producer

    def records(self, batch: list[Message]) -> None:
        decode = self.app.envelopes.decode_result_datum
        rows: list[ResultRow] = []
        positions: dict[tuple[str, int], int] = {}
        forgotten: set[str] = set()
        members: list[GroupMember] = []
        progress: list[Progress] = []
        links: list[Link] = []
        grouped: list[dict[str, Any]] = []  # members' results, remembered once applied
        for message in batch:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            positions[(topic, partition)] = offset + 1
            value = message.value()
            if value is None:  # a tombstone: AsyncResult.forget()
                rows = self._forget(message, rows, forgotten)
                continue
            try:
                d = decode(value)
                rows.append(result_row(d))
                if d["root_id"] is not None or d["state"] is not None:  # workflows
                    workflow_rows(d, value, members, progress, links)
                    if d["group_id"] is not None:
                        grouped.append(d)
            except Exception as exc:
                self._dead_letter(message, str(exc))
        if self._producer is not None and self._producer.flush(30.0):
            raise DeliveryFailed(self._letters.topic, "not advancing the store's offsets")
        started = time.perf_counter()
        try:
            if forgotten:
                # Idempotent, so a crash before the batch's offsets are stored only repeats it.
                self.store.forget(list(forgotten))
            self.store.apply_rows(rows, positions, members, progress, links)
            applied = len(rows)
            if grouped or forgotten:
                self._remember(grouped, forgotten)
        except StoreRejected as exc:
            log.warning("the store refused a batch (%s): applying it record by record", exc)
            applied = self._one_by_one(batch, positions)
        if members:
            self._joiner().fire_due()
        seconds = time.perf_counter() - started
        self.applied += applied
        assert self._runtime is not None
        lag = {}
        for (topic, partition), position in positions.items():
            self._tracker.get(topic, partition).advance(position)
            high = self._runtime.high_watermark(topic, partition)
            if high is not None:
                lag[partition] = max(0, high - position)
        self.hooks.applied(len(rows), seconds, lag)

    def _remember(self, grouped: list[dict[str, Any]], forgotten: set[str]) -> None:
        """Members' results the store applied, for their chord's join (taskstream.consumer.joins);
        a forgotten result may be a member's: then forget them all (the joins read the store)."""
        results = self._members
        if forgotten:
            results.clear()
        for d in grouped:
            results.applied(d)

    def _one_by_one(self, batch: list[Message], positions: dict[tuple[str, int], int]) -> int:
        """Apply `batch` a record at a time, in order, dead-lettering each record the store
        refuses (StoreRejected: its content, such as a key over an index's limit), then store
        the batch's offsets; how many rows were applied. One record's content never stops
        the results of the others."""
        decode = self.app.envelopes.decode_result_datum
        applied = 0
        for message in batch:
            value = message.value()
            if value is None:
                self.store.forget([_key_text(message)])
                continue
            members: list[GroupMember] = []
            progress: list[Progress] = []
            links: list[Link] = []
            try:
                d = decode(value)
                row = result_row(d)
                if d["root_id"] is not None or d["state"] is not None:
                    workflow_rows(d, value, members, progress, links)
            except Exception:
                continue  # dead-lettered by the first pass
            try:
                self.store.apply_rows([row], {}, members, progress, links)
                applied += 1
            except StoreRejected as exc:
                self._dead_letter(message, f"the lookup store refused it: {exc}", Reason.UNSTORABLE)
        if self._producer is not None and self._producer.flush(30.0):
            raise DeliveryFailed(self._letters.topic, "not advancing the store's offsets")
        self.store.apply_rows([], positions)
        return applied

    @staticmethod
    def _forget(message: Message, rows: list[ResultRow], forgotten: set[str]) -> list[ResultRow]:
        """A tombstone of a task id: its outcome goes, and its rows earlier in this batch;
        rows after it in the batch stay (a later outcome of the same id)."""
        task_id = _key_text(message)
        forgotten.add(task_id)
        return [r for r in rows if r[0] != task_id]

    def _dead_letter(
        self, message: Message, error: str, reason: Reason = Reason.UNDECODABLE
    ) -> None:
        topic, value, key, headers = self._letters.letter(message, reason, error)
        self.hooks.dead_lettered(reason.value)
        self._producer_().produce(topic, value, key, headers=headers)


def _key_text(message: Message) -> str:
    key = message.key()
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
