"""The delay scheduler: delayed task events wait in delay-tier topics until due.

A retry (or a task sent with a countdown) goes to ``<prefix>.delay.<N>s``, the largest tier
not longer than its remaining wait. Every record of a tier ripens N seconds after it was
written, so in each partition they ripen in order: the scheduler pauses a partition at its
first unripe record (seeking back to it) and resumes it when that record is ripe. A ripe
record moves on, unchanged, to its task topic when due, else to the tier for what remains.
Nothing waits in memory but one timestamp per paused partition; offsets are committed only
for records whose next hop is acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, Message, TopicPartition

from taskstream import clock
from taskstream.app import App
from taskstream.consumer.dead_letter import Reason
from taskstream.consumer.offsets import OffsetTracker, PartitionOffsets, commit
from taskstream.consumer.outcomes import Outcomes
from taskstream.kafka import EventProducer, consumer_config, producer_config, record_position
from taskstream.topics import DELAY_TIERS_S, delay_topic, tier_of

log = logging.getLogger(__name__)

_POLL_S = 0.1
_BATCH = 500
_TIER_FETCH_WAIT_MS = 250  # a retry is due a second or more after it was sent


def delays_group(prefix: str) -> str:
    return f"{prefix}.delays"


class DelayScheduler:
    def __init__(self, app: App) -> None:
        s = app.settings
        self.app = app
        self.prefix = s.topic_prefix
        self.topics = [delay_topic(self.prefix, t) for t in DELAY_TIERS_S]
        self.group_id = delays_group(self.prefix)
        self._stopping = threading.Event()
        self._tracker = OffsetTracker()
        self._waiting: dict[tuple[str, int], float] = {}  # paused partition -> ripe at (epoch s)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        s = self.app.settings
        producer = self._producer = EventProducer(producer_config(s), broker=self.app.broker)
        self._outcomes = Outcomes(producer, self.prefix, self.app.envelopes, self._done)
        # Eager assignment: a new assignment starts unpaused at the committed offsets. A
        # delay tier is a second or more, so its fetches may wait long: with the tasks'
        # short wait, the idle fetches of every tier's partitions cost the broker more than
        # the tasks themselves (on brokers that answer a fetch only when its wait is over).
        consumer = self.app.broker.consumer(
            consumer_config(
                s,
                self.group_id,
                **{
                    "partition.assignment.strategy": "range",
                    "fetch.wait.max.ms": max(s.fetch_wait_max_ms, _TIER_FETCH_WAIT_MS),
                },
            )
        )
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        commit_every = s.commit_interval_ms / 1000
        next_commit = time.monotonic() + commit_every
        try:
            while not self._stopping.is_set():
                first = consumer.poll(_POLL_S)
                if first is not None:
                    for message in [first, *consumer.consume(_BATCH - 1, 0)]:
                        self._route(consumer, message)
                producer.poll(0)
                self._resume_ripe(consumer)
                if time.monotonic() >= next_commit:
                    commit(consumer, self._tracker, asynchronous=True)
                    next_commit = time.monotonic() + commit_every
            producer.flush(s.delivery_timeout_ms / 1000)
            producer.poll(0)
            commit(consumer, self._tracker, asynchronous=False)
        finally:
            consumer.close()
            producer.close(s.delivery_timeout_ms / 1000)

    def _route(self, consumer: Consumer, message: Message) -> None:
        position = record_position(message)
        if position is None:
            return
        topic, partition, offset = position
        if (topic, partition) in self._waiting:
            return  # behind an unripe head; read again after the resume
        tier = tier_of(self.prefix, topic) or DELAY_TIERS_S[0]
        ripe_at = message.timestamp()[1] / 1000 + tier
        if clock.now() < ripe_at:
            position = TopicPartition(topic, partition, offset)
            consumer.pause([position])
            consumer.seek(position)
            self._waiting[(topic, partition)] = ripe_at
            return
        offsets = self._tracker.get(topic, partition)
        offsets.add(offset)
        try:
            event = self.app.envelopes.decode_task(message.value() or b"")
        except Exception as exc:
            self._outcomes.dead_letter(offsets, message, Reason.UNDECODABLE, str(exc))
            return
        self._outcomes.forward(offsets, message, self._outcomes.destination(event))

    def _resume_ripe(self, consumer: Consumer) -> None:
        now = clock.now()
        ripe = [key for key, at in self._waiting.items() if at <= now]
        if ripe:
            consumer.resume([TopicPartition(t, p) for t, p in ripe])
            for key in ripe:
                del self._waiting[key]

    def _done(self, offsets: PartitionOffsets, offset: int) -> None:
        offsets.finish(offset)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._tracker.assign(tp.topic, tp.partition)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._producer.flush(5.0)  # serves delivery reports: forwarded records become done
        commit(consumer, self._tracker, asynchronous=False, only=revoked)
        for key in revoked:
            self._tracker.revoke(*key)
            self._waiting.pop(key, None)
