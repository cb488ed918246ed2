"""Exactly-once processing: a consumer loop's outcomes and the offsets they answer, in one
Kafka transaction (``processing_guarantee="exactly-once"``).

Outcomes hands each record's events here (:meth:`Transaction.hold`) instead of producing
them, and the record is done at once. At each commit of the runtime, on the loop's thread,
:meth:`Transaction.commit` produces the held events of the records the commit covers, in
offset order, adds those offsets with the consumer's group metadata (KIP-447: a member whose
generation is over cannot commit), and commits the transaction: the events and the offsets
become visible together, or neither does. Events of records finished above an unfinished one
wait here (at most max_tasks_in_flight records) for the commit that covers them, so an
outcome is never visible while its record can still be run again by the partition's next
owner.

Errors (librdkafka's transactional API): a retriable commit is retried; an abortable one (a
rebalance ended this member's generation: a zombie, or a broker lost mid-transaction) aborts
the transaction and keeps the events held, so the next commit produces them again for the
partitions still owned; a fatal one (this producer fenced) replaces the producer. A partition
revoked or lost drops its held events: its next owner runs its records again from the
committed offset, and the aborted events are never visible to ``read_committed`` readers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from taskstream.config import Settings
from taskstream.consumer.offsets import OffsetTracker, PartitionOffsets
from taskstream.kafka.broker import Broker
from taskstream.kafka.clients import Headers, producer_config

log = logging.getLogger(__name__)

Part = tuple[str, bytes, Any, Headers | None]  # topic, value, key, headers

# Kafka Streams' transaction.timeout.ms under exactly-once: how long an open transaction of
# a dead or paused member holds back read_committed readers of the partitions it wrote to.
TRANSACTION_TIMEOUT_MS = 10_000
_COMMIT_RETRIES = 3


class _Held:
    """One assignment's events: those waiting for their record's turn, and those sent in
    the open transaction (kept until it commits, to send again if it aborts)."""

    __slots__ = ("in_transaction", "sent_below", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[int, list[Part]] = {}  # offset -> its record's events
        self.in_transaction: list[Part] = []
        self.sent_below = 0  # every waiting record below this offset is sent


class Transaction:
    """One transactional producer and the events of its open transaction.

    ``open_producer`` makes a producer with a ``transactional.id`` (called again after a fatal
    error). ``hold`` is called from any thread; the rest from the loop's: ``send`` at each
    turn (a record's events go out once every record below it is done, so the producer
    works while the loop does, and a commit waits only for the last few), ``commit`` as the
    runtime's committer (the consumer it is given has the group metadata that fences a
    commit of partitions this member no longer owns).
    """

    def __init__(self, open_producer: Callable[[], Producer], timeout_s: float) -> None:
        self._open_producer = open_producer
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        # Each assignment's offsets (by identity: a revoked one is stale) -> its events.
        self._held: dict[PartitionOffsets, _Held] = {}
        self._due: list[PartitionOffsets] = []  # held a record since the last send
        self.unsent = 0  # records whose events wait to be sent (backpressure counts them)
        self.committed = 0  # transactions committed
        self.aborted = 0  # transactions aborted (their events sent again, or dropped)
        self.committing_s = 0.0  # time the loop spent in commits (sending offsets, ending)
        self._error: KafkaException | None = None  # a produce refused: abort at the commit
        self._producer = self._begin_first()
        self._committer: ThreadPoolExecutor | None = None  # a thread, from the first commit
        # A commit in progress: its partitions' positions, and its end (how long it took).
        self._pending: tuple[list[tuple[PartitionOffsets, int]], Future[float]] | None = None

    def _begin_first(self) -> Producer:
        """A new producer with the transactional id, its first transaction begun. A retriable
        refusal (the coordinator still ending the id's earlier transaction, or moving) is
        tried again, for up to the transaction timeout."""
        producer = self._open_producer()
        deadline = time.monotonic() + TRANSACTION_TIMEOUT_MS / 1000
        while True:
            try:
                producer.init_transactions(self._timeout_s)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if not error.retriable() or time.monotonic() >= deadline:
                    raise
                log.info("init_transactions: %s; trying again", error.str())
                time.sleep(0.1)
        producer.begin_transaction()
        return producer

    @property
    def held(self) -> int:
        """Events not committed yet (waiting to be sent, or in the open transaction)."""
        with self._lock:
            held = self._held.values()
            return sum(len(p) for h in held for p in h.waiting.values()) + sum(
                len(h.in_transaction) for h in held
            )

    def hold(self, offsets: PartitionOffsets, offset: int, parts: list[Part]) -> None:
        """A record's events, for the transaction that commits its offset."""
        with self._lock:
            held = self._held.get(offsets)
            if held is None:
                held = self._held[offsets] = _Held()
                held.sent_below = offsets.committed or 0
            held.waiting[offset] = parts
            self._due.append(offsets)
            self.unsent += 1

    def send(self) -> None:
        """Send the events of every record whose partition is done up to it (each loop
        turn, after the records finished meanwhile are marked done)."""
        if not self._due:
            return
        with self._lock:
            due, self._due = set(self._due), []
        for offsets in due:
            self._send(offsets)

    def commit(
        self,
        consumer: Consumer,
        tracker: OffsetTracker,
        asynchronous: bool = False,
        only: set[tuple[str, int]] | None = None,
    ) -> bool:
        """The runtime's commit: every tracked partition's committable offset with the events
        of the records below it, in one transaction. Every partition, even with ``only`` (a
        revoke's): the open transaction holds events of the others too, which must not
        become visible without their offsets.

        ``asynchronous``: the transaction commits on the committer's thread while the loop
        goes on (its records' events wait meanwhile: a transaction is not open again before
        the commit returns), and its outcome is taken at a later call; one commit at a time.
        Else it commits here, after any commit in progress. False when a commit failed (the
        next one carries the same or newer offsets)."""
        pending = self._pending
        if pending is not None:
            if asynchronous and not pending[1].done():
                return True
            if not self._committed(*pending):
                return False
        if self._error is not None:  # a produce was refused: this transaction is lost
            error, self._error = self._error, None
            self._failed(error)
            return False
        self._forget_stale(tracker)
        for offsets in list(self._held):
            self._send(offsets)
        items = tracker.committable()
        if not items:
            return True
        positions = [TopicPartition(p.topic, p.partition, pos) for p, pos in items]
        metadata = consumer.consumer_group_metadata()
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="taskstream-txn")
        self._pending = (items, self._committer.submit(self._end, positions, metadata))
        if asynchronous:
            return True
        return self._committed(*self._pending)

    def close(self) -> None:
        """Stopping: what is not committed is aborted (run again by the next owner)."""
        if self._pending is not None:
            self._committed(*self._pending)
        if self._committer is not None:
            self._committer.shutdown()
        log.info("transactions: %d committed (%.1f s in their commits), %d aborted",
                 self.committed, self.committing_s, self.aborted)  # fmt: skip
        try:
            self._producer.abort_transaction(self._timeout_s)
        except KafkaException as exc:
            log.debug("abort at close: %s", exc)
        self._producer.flush(0)

    # -- the commit --------------------------------------------------------------------------

    def _end(self, positions: list[TopicPartition], metadata: object) -> float:
        """On the committer's thread: the offsets into the transaction, and its commit (the
        loop's thread does not touch the producer meanwhile). Returns how long it took."""
        started = time.monotonic()
        self._producer.send_offsets_to_transaction(positions, metadata, self._timeout_s)
        for attempt in range(_COMMIT_RETRIES):
            try:
                self._producer.commit_transaction(self._timeout_s)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if not error.retriable() or attempt == _COMMIT_RETRIES - 1:
                    raise
                log.info("transaction commit: %s; trying again", error.str())
        return time.monotonic() - started

    def _committed(self, items: list[tuple[PartitionOffsets, int]], done: Future[float]) -> bool:
        """On the loop's thread: take a commit's outcome (waiting for it) and open the next
        transaction, with the events that waited sent into it."""
        self._pending = None
        try:
            self.committing_s += done.result()
        except KafkaException as exc:
            self._failed(exc)
            return False
        self.committed += 1
        for p, pos in items:
            p.committed = pos
        for held in self._held.values():
            held.in_transaction.clear()
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            self._failed(exc)
            return True
        for offsets in list(self._held):
            self._send(offsets)
        return True

    # -- inside ------------------------------------------------------------------------------

    def _send(self, offsets: PartitionOffsets) -> None:
        """Produce the waiting events of ``offsets``' records below its committable offset,
        in offset order, into the open transaction."""
        if self._pending is not None:
            return  # no transaction open until the commit in progress ends
        if offsets.revoked:
            return  # run again at the partition's next owner: dropped at the next commit
        position = offsets.committable()
        with self._lock:
            held = self._held.get(offsets)
            if held is None or position is None or position <= held.sent_below:
                return
            ready = sorted(o for o in held.waiting if o < position)
            parts = [part for o in ready for part in held.waiting.pop(o)]
            held.sent_below = position
            self.unsent -= len(ready)
        held.in_transaction += parts
        for part in parts:
            self._produce(part)

    def _forget_stale(self, tracker: OffsetTracker) -> None:
        """Forget the events of partitions no longer assigned (their records run again at
        their next owner). If some were sent in the open transaction, it is aborted first:
        they must never become visible."""
        assigned = tracker.partitions
        with self._lock:
            stale = [p for p in self._held if assigned.get((p.topic, p.partition)) is not p]
            sent = any(self._held[p].in_transaction for p in stale)
            for p in stale:
                self.unsent -= len(self._held.pop(p).waiting)
        if sent:
            log.info("partitions lost with events in the open transaction: aborting it")
            self._abort()

    def _produce(self, part: Part) -> None:
        """Into the open transaction; once the transaction is in error (librdkafka refuses
        every produce then), nothing more: the next commit aborts it and sends again."""
        if self._error is not None:
            return
        topic, value, key, headers = part
        producer = self._producer
        while True:
            try:
                if headers is None:
                    producer.produce(topic, value, key)
                else:
                    producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries make room
                producer.poll(0.05)
            except KafkaException as exc:  # the transaction failed (a zombie's, fenced...)
                self._error = exc
                return

    def _failed(self, exc: KafkaException) -> None:
        error: KafkaError = exc.args[0]
        if error.fatal():
            log.warning("transaction failed for good (%s): a new transactional producer",
                        error.str())  # fmt: skip
            self.aborted += 1
            self._replace()
            return
        log.warning("transaction aborted (%s): its events are sent again, for the partitions "
                    "still owned", error.str())  # fmt: skip
        self._abort()

    def _abort(self) -> None:
        """Abort the open transaction and begin the next with the same events sent again."""
        self.aborted += 1
        try:
            self._producer.abort_transaction(self._timeout_s)
            self._producer.begin_transaction()
        except KafkaException as again:
            # A new producer with the same transactional id aborts what this one left open.
            log.warning("abort failed (%s): a new transactional producer", again.args[0].str())
            self._replace()
            return
        self._send_again()

    def _replace(self) -> None:
        """A new transactional producer (the old one fenced, or its transaction stuck); if
        the cluster refuses one now, the next commit tries again."""
        self._producer.flush(0)
        try:
            self._producer = self._begin_first()
        except KafkaException as exc:
            log.warning("no new transactional producer yet (%s)", exc.args[0].str())
            self._error = exc
            return
        self._send_again()

    def _send_again(self) -> None:
        for held in self._held.values():
            for part in held.in_transaction:
                self._produce(part)


def open_transaction(settings: Settings, broker: Broker, group_id: str, member: str) -> Transaction:
    """The transaction of one consumer loop (group ``group_id``) of process ``member``. Its
    transactional id is one per process and group: KIP-447 fences by the group's generation,
    not by the id, so the id need only be unique while the process lives."""
    config = producer_config(
        settings,
        **{
            "transactional.id": f"{group_id}.{member}",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            # librdkafka: no longer than the transaction (an event late past it is aborted)
            "delivery.timeout.ms": min(settings.delivery_timeout_ms, TRANSACTION_TIMEOUT_MS),
            "client.id": f"taskstream-transactions-{member}",
        },
    )
    return Transaction(lambda: broker.producer(config), settings.delivery_timeout_ms / 1000)
