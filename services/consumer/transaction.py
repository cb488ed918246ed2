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
from collections.abc import Callable
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


class Transaction:
    """One transactional producer and the events held for its next commit.

    ``open_producer`` makes a producer with a ``transactional.id`` (called again after a fatal
    error). ``commit`` is the runtime's committer: the consumer it is given has the group
    metadata that fences a commit of partitions this member no longer owns. ``hold`` is
    called from any thread, the rest from the loop's.
    """

    def __init__(self, open_producer: Callable[[], Producer], timeout_s: float) -> None:
        self._open_producer = open_producer
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        # Each assignment's offsets (by identity: a revoked one is stale) -> offset -> events.
        self._held: dict[PartitionOffsets, dict[int, list[Part]]] = {}
        self.committed = 0  # transactions committed
        self.aborted = 0  # transactions aborted (their events held again, or dropped)
        self._producer = self._begin_first()

    def _begin_first(self) -> Producer:
        producer = self._open_producer()
        producer.init_transactions(self._timeout_s)
        producer.begin_transaction()
        return producer

    @property
    def held(self) -> int:
        """Records whose events wait for a commit."""
        with self._lock:
            return sum(len(h) for h in self._held.values())

    def hold(self, offsets: PartitionOffsets, offset: int, parts: list[Part]) -> None:
        """A record's events, for the commit that covers its offset."""
        with self._lock:
            held = self._held.get(offsets)
            if held is None:
                held = self._held[offsets] = {}
            held[offset] = parts

    def commit(
        self,
        consumer: Consumer,
        tracker: OffsetTracker,
        asynchronous: bool = False,
        only: set[tuple[str, int]] | None = None,
    ) -> bool:
        """The runtime's commit: every tracked partition's committable offset (or only those
        in ``only``) with the events of the records below it, in one transaction. False when
        it did not commit (the next commit carries the same or newer offsets)."""
        self._drop_stale(tracker)
        items = [
            (p, pos)
            for p, pos in tracker.committable()
            if only is None or (p.topic, p.partition) in only
        ]
        if not items:
            return True
        producer = self._producer
        try:
            for p, pos in items:
                for topic, value, key, headers in self._due(p, pos):
                    self._produce(producer, topic, value, key, headers)
            offsets = [TopicPartition(p.topic, p.partition, pos) for p, pos in items]
            producer.send_offsets_to_transaction(
                offsets, consumer.consumer_group_metadata(), self._timeout_s
            )
            self._commit(producer)
        except KafkaException as exc:
            self._failed(exc)
            return False
        self.committed += 1
        with self._lock:
            for p, pos in items:
                p.committed = pos
                held = self._held.get(p)
                if held:
                    for offset in [o for o in held if o < pos]:
                        del held[offset]
        try:
            producer.begin_transaction()
        except KafkaException as exc:
            self._failed(exc)
        return True

    def close(self) -> None:
        """Stopping: what is not committed is aborted (run again by the next owner)."""
        try:
            self._producer.abort_transaction(self._timeout_s)
        except KafkaException as exc:
            log.debug("abort at close: %s", exc)
        self._producer.flush(0)

    # -- inside ------------------------------------------------------------------------------

    def _due(self, offsets: PartitionOffsets, position: int) -> list[Part]:
        """The held events of ``offsets``' records below ``position``, in offset order."""
        with self._lock:
            held = self._held.get(offsets)
            if not held:
                return []
            return [part for o in sorted(o for o in held if o < position) for part in held[o]]

    def _drop_stale(self, tracker: OffsetTracker) -> None:
        """Forget the events of partitions no longer assigned (their records run again)."""
        with self._lock:
            for p in [
                p for p in self._held if tracker.partitions.get((p.topic, p.partition)) is not p
            ]:
                del self._held[p]

    @staticmethod
    def _produce(
        producer: Producer, topic: str, value: bytes, key: Any, headers: Headers | None
    ) -> None:
        while True:
            try:
                if headers is None:
                    producer.produce(topic, value, key)
                else:
                    producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries make room
                producer.poll(0.05)

    def _commit(self, producer: Producer) -> None:
        for attempt in range(_COMMIT_RETRIES):
            try:
                producer.commit_transaction(self._timeout_s)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if not error.retriable() or attempt == _COMMIT_RETRIES - 1:
                    raise
                log.info("transaction commit: %s; trying again", error.str())

    def _failed(self, exc: KafkaException) -> None:
        """Abort (or, fenced, replace the producer): the held events wait for the next commit."""
        error: KafkaError = exc.args[0]
        self.aborted += 1
        if error.fatal():
            log.warning("transaction failed for good (%s): a new transactional producer",
                        error.str())  # fmt: skip
            try:
                self._producer.flush(0)
            finally:
                self._producer = self._begin_first()
            return
        log.warning("transaction aborted (%s): its events are produced again at the next "
                    "commit, for the partitions still owned", error.str())  # fmt: skip
        try:
            self._producer.abort_transaction(self._timeout_s)
            self._producer.begin_transaction()
        except KafkaException as again:
            # A new producer with the same transactional id aborts what this one left open.
            log.warning("abort failed (%s): a new transactional producer", again.args[0].str())
            self._producer.flush(0)
            self._producer = self._begin_first()


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
