"""The delay scheduler: delayed task events wait in delay-tier topics until due.

A retry (or a task sent with a countdown) goes to ``<prefix>.delay.<N>s``, the largest tier
not longer than its remaining wait. Every record of a tier ripens N seconds after it was
written, so in each partition they ripen in order: the scheduler pauses a partition at its
first unripe record (seeking back to it) and resumes it when that record is ripe. A ripe
record moves on, unchanged, to its task topic when due, else to the tier for what remains.
Nothing waits in memory but one timestamp per paused partition; offsets are committed only
for records whose next hop is acknowledged. It is a handler of the consumer runtime.

A task revoked while it waits is found by a scan of this scheduler's tier partitions
(tier_scan.py) and shows REVOKED at once; its record is dropped at its hop.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException, Message, TopicPartition

from taskstream import clock
from taskstream.app import App
from taskstream.consumer.dead_letter import DeadLetters, Reason
from taskstream.consumer.offsets import OffsetTracker, commit
from taskstream.consumer.outcomes import Acks, Outcomes
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.run import REVOKED, revoked
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming, RuntimeOwner
from taskstream.consumer.tier_scan import TierScan
from taskstream.consumer.transaction import Transaction, open_transaction
from taskstream.kafka.clients import (
    consumer_config,
    incremental_assignment,
    producer_config,
    worker_id,
)
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.sizes import message_max_bytes
from taskstream.kafka.topics import DELAY_TIERS_S, delay_topic, delays_group, tier_of

log = logging.getLogger(__name__)

_TIER_FETCH_WAIT_MS = 250  # a retry is due a second or more after it was sent
_CAPACITY = 10_000  # records forwarded but not yet acknowledged, at most
_REVOKE_FLUSH_S = 5.0
_COMMITTED_TIMEOUT_S = 5.0


class DelayScheduler(RuntimeOwner):
    """``revocations``: the worker's; a ripe record revoked meanwhile, or past its
    ``expires``, ends here as REVOKED (recorded by ``worker``) instead of moving on."""

    def __init__(self, app: App, revocations: Revocations | None = None, worker: str = "") -> None:
        s = app.settings
        self.app = app
        self.revocations = revocations if revocations is not None else Revocations()
        self.worker = worker
        self.prefix = s.topic_prefix
        self.topics = [delay_topic(self.prefix, t) for t in DELAY_TIERS_S]
        self.group_id = delays_group(self.prefix)
        self._tracker = OffsetTracker()
        self._pending = 0  # forwarded, not yet acknowledged
        # paused partition -> (its unripe head's offset, when it ripens in epoch seconds)
        self._waiting: dict[tuple[str, int], tuple[int, float]] = {}
        self._scan = TierScan(app)
        self._transaction: Transaction | None = None  # exactly once, while run() runs

    def run(self) -> None:
        s = self.app.settings
        config = producer_config(s)
        producer = self._producer = EventProducer(config, broker=self.app.broker)
        letters = DeadLetters(self.prefix, message_max_bytes(config))
        # Exactly once: a hop and the offset of the record it moves, in one transaction.
        transaction = self._transaction = (
            open_transaction(s, self.app.broker, self.group_id, self.worker or worker_id())
            if s.exactly_once
            else None
        )
        self._outcomes = Outcomes(
            producer, self.prefix, self.app.envelopes, self._done, letters,
            transaction=transaction,
        )  # fmt: skip
        # Eager assignment: a new assignment starts unpaused at the committed offsets. A
        # delay tier is a second or more, so its fetches may wait long: with the tasks'
        # short wait, the idle fetches of every tier's partitions cost the broker more than
        # the tasks themselves (on brokers that answer a fetch only when its wait is over).
        config = consumer_config(
            s,
            self.group_id,
            strategy="range",
            **{"fetch.wait.max.ms": max(s.fetch_wait_max_ms, _TIER_FETCH_WAIT_MS)},
        )
        consumer = self.app.broker.consumer(config)
        runtime = self._started(
            ConsumerRuntime(
                consumer,
                self,
                self._tracker,
                timing=LoopTiming(poll_s=0.1, commit_every_s=s.commit_every_s),
                capacity=_CAPACITY,
                cooperative=incremental_assignment(config),
                committer=transaction.commit if transaction is not None else commit,
            )
        )
        runtime.subscribe(self.topics)
        try:
            runtime.run(grace=s.delivery_timeout_ms / 1000)
        finally:
            self._scan.close()
            if transaction is not None:
                transaction.close()  # what is not committed moves on at the next owner
            producer.close(s.delivery_timeout_ms / 1000)

    # -- the runtime's handler --------------------------------------------------------------

    def room(self) -> int:
        return _CAPACITY - self._pending

    def busy(self) -> bool:
        return self._pending > 0

    def serve(self, timeout: float) -> None:
        self._producer.poll(timeout)
        if self._transaction is not None:
            self._transaction.send()
        self._resume_ripe()
        fresh = self.revocations.take_fresh()
        if fresh:
            self._revoke_waiting(fresh)

    def records(self, batch: list[Message]) -> None:
        for message in batch:
            self._route(message)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        pass

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        if not lost:
            self._producer.flush(_REVOKE_FLUSH_S)  # serves reports: forwarded records are done
        for tp in partitions:
            self._waiting.pop((tp.topic, tp.partition), None)

    def drain(self, grace: float) -> None:
        self._producer.flush(grace)

    # -- routing ----------------------------------------------------------------------------

    def _route(self, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        key = (topic, partition)
        waiting = self._waiting.get(key)
        if waiting is not None and offset != waiting[0]:
            return  # behind an unripe head; read again after the resume
        tier = tier_of(self.prefix, topic) or DELAY_TIERS_S[0]
        ripe_at = message.timestamp()[1] / 1000 + tier
        if clock.now() < ripe_at:
            assert self._runtime is not None
            position = TopicPartition(topic, partition, offset)
            consumer = self._runtime.consumer
            consumer.pause([position])
            consumer.seek(position)
            self._waiting[key] = (offset, ripe_at)
            return
        self._waiting.pop(key, None)
        offsets = self._tracker.get(topic, partition)
        offsets.add(offset)
        self._pending += 1
        try:
            event = self.app.envelopes.decode_task(message.value() or b"")
        except Exception as exc:
            self._outcomes.dead_letter(offsets, message, Reason.UNDECODABLE, str(exc))
            return
        reason = self.revocations.why_not_run(event)
        if reason is not None:
            outcome = revoked(event, topic, partition, offset, self.worker, reason)
            self._outcomes.publish(offsets, message, outcome)
            return
        self._outcomes.forward(offsets, message, self._outcomes.destination(event))

    def _resume_ripe(self) -> None:
        if not self._waiting:
            return
        now = clock.now()
        ripe = [key for key, (_offset, at) in self._waiting.items() if at <= now]
        if ripe:
            assert self._runtime is not None
            self._runtime.consumer.resume([TopicPartition(t, p) for t, p in ripe])
            for key in ripe:
                del self._waiting[key]

    def _revoke_waiting(self, ids: set[str]) -> None:
        """Publish REVOKED for the tasks in ``ids`` that wait in this scheduler's tiers."""
        assert self._runtime is not None
        consumer = self._runtime.consumer
        try:
            assignment = consumer.assignment()
            if not assignment:
                return
            starts = consumer.committed(assignment, timeout=_COMMITTED_TIMEOUT_S)
            found = self._scan.find(ids, starts)
        except KafkaException as exc:
            log.warning("revoked tasks in the delay tiers show REVOKED at their hop: %s", exc)
            return
        for message, event in found:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            outcome = revoked(event, topic, partition, offset, self.worker, REVOKED)
            self._outcomes.note(outcome.result)
        if found:
            log.info("%d revoked tasks waiting in the delay tiers are REVOKED", len(found))

    def _done(self, acks: Acks) -> None:
        acks.offsets.finish(acks.offset)
        self._pending -= 1
