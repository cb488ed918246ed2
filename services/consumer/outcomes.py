"""Publishing what became of a record, and knowing when all of it is acknowledged.

An outcome can be several events (a RETRY result and the next attempt; a FAILURE result and
the record in the dead-letter topic). The record's offset is done only when every one of
them is acknowledged (acks=all); an event that fails delivery is produced again, never
dropped. ``produce`` is thread-safe, so task threads publish directly; delivery reports run
on the thread that polls the producer, which owns the offset bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message

from taskstream.consumer.dead_letter import DeadLetters, Reason, carried_headers
from taskstream.consumer.offsets import PartitionOffsets
from taskstream.consumer.run import Outcome
from taskstream.consumer.transaction import Part, Transaction
from taskstream.envelope import Envelopes, ResultEvent, TaskEvent, now_micros
from taskstream.errors import TaskstreamError
from taskstream.kafka.clients import Headers
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.sizes import format_size, record_size
from taskstream.kafka.topics import (
    delay_tier,
    delay_topic,
    event_topic,
    results_topic,
)

log = logging.getLogger(__name__)


class Acks:
    """One record's outcome: how many of its events are not yet acknowledged. Handed to
    ``on_done`` once there are none left (itself, so no tuple is made per record)."""

    __slots__ = ("offset", "offsets", "pending")

    def __init__(self, offsets: PartitionOffsets, offset: int, pending: int) -> None:
        self.offsets = offsets
        self.offset = offset
        self.pending = pending


class _Event:
    """One event of an outcome, kept until the broker acknowledges it (or produced again)."""

    __slots__ = ("headers", "key", "outcomes", "record", "topic", "value")

    def __init__(
        self, outcomes: Outcomes, record: Acks, topic: str, value: bytes, key: Any,
        headers: Headers | None,
    ) -> None:  # fmt: skip
        self.outcomes = outcomes
        self.record = record
        self.topic = topic
        self.value = value
        self.key = key
        self.headers = headers

    def produce(self) -> None:
        self.outcomes._producer.produce(
            self.topic, self.value, self.key, self.delivered, headers=self.headers
        )

    def delivered(self, err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            log.error("event for offset %s not delivered (%s): producing it again",
                      self.record.offset, err)  # fmt: skip
            self.produce()
            return
        record = self.record
        record.pending -= 1
        if record.pending == 0:
            self.outcomes._on_done(record)


class Outcomes:
    def __init__(
        self,
        producer: EventProducer,
        prefix: str,
        envelopes: Envelopes,
        on_done: Callable[[Acks], None],
        dead_letters: DeadLetters,
        on_dead_letter: Callable[[str], None] = lambda reason: None,
        transaction: Transaction | None = None,
    ) -> None:
        self._producer = producer  # what no offset waits for (STARTED) goes here, always
        # Exactly-once: a record's events wait there for the commit of its offset.
        self._transaction = transaction
        self._prefix = prefix
        self._envelopes = envelopes
        self._on_done = on_done
        self._results = results_topic(prefix)
        self._dead_letters = dead_letters
        self._on_dead_letter = on_dead_letter  # a record goes to the dead letters, why

    def destination(self, event: TaskEvent) -> str:
        """Where an event goes next: its task topic when due, else its delay tier."""
        remaining = ((event.not_before or 0) - now_micros()) / 1_000_000
        if remaining <= 0:
            return event_topic(self._prefix, event.queue, event.priority)
        return delay_topic(self._prefix, delay_tier(remaining))

    def publish(self, offsets: PartitionOffsets, message: Message, outcome: Outcome) -> None:
        result = outcome.result
        value = self._envelopes.encode_result(result)
        # The common case, one result event, at least once (exactly once holds it: _send).
        if (
            outcome.retry is None and outcome.dead_letter is None and not outcome.follow
            and outcome.publish_result and not outcome.more_results
            and self._transaction is None
        ):  # fmt: skip
            record = Acks(offsets, message.offset(), 1)  # type: ignore[arg-type]
            _Event(self, record, self._results, value, result.id, None).produce()
            return
        parts: list[Part] = []
        if outcome.publish_result:
            parts.append((self._results, value, result.id, None))
        for more in outcome.more_results:
            parts.append((self._results, self._envelopes.encode_result(more), more.id, None))
        for event in outcome.follow:
            encoded = self._envelopes.encode_task(event)
            parts.append((self.destination(event), encoded, event.key or event.id, None))
        if outcome.retry is not None:
            retry = outcome.retry
            value = self._envelopes.encode_task(retry)
            headers = outcome.retry_headers or carried_headers(message) or None
            parts.append((self.destination(retry), value, retry.key or retry.id, headers))
        if outcome.dead_letter is not None:
            letter = self._dead_letters.letter(
                message, outcome.reason, outcome.dead_letter, result.task
            )
            parts.append(letter)
        self._send(offsets, message, parts)

    def started(self, result: ResultEvent) -> None:
        """A STARTED status: informative only, so no offset waits for it."""
        self.note(result)

    def note(self, result: ResultEvent) -> None:
        """A result no offset waits for (a STARTED status; the REVOKED of a task that waits
        in a delay tier, published again when its record is dropped at its hop)."""
        self._producer.produce(self._results, self._envelopes.encode_result(result), result.id)

    def dead_letter(
        self,
        offsets: PartitionOffsets,
        message: Message,
        reason: Reason,
        error: str,
        task: str | None = None,
    ) -> None:
        self._on_dead_letter(reason.value)
        self._send(offsets, message, [self._dead_letters.letter(message, reason, error, task)])

    def forward(self, offsets: PartitionOffsets, message: Message, topic: str) -> None:
        """The record, unchanged, to another topic (a delay tier, or back to its task topic)."""
        headers = carried_headers(message) or None  # a trace context goes along
        self._send(offsets, message, [(topic, message.value() or b"", message.key(), headers)])

    def _send(self, offsets: PartitionOffsets, message: Message, parts: list[Part]) -> None:
        offset = message.offset()
        assert offset is not None
        if not parts:  # nothing to publish (ignore_result): the record is done
            self._on_done(Acks(offsets, offset, 0))
            return
        if self._transaction is not None:
            self._hold(self._transaction, offsets, message, parts)
            return
        record = Acks(offsets, offset, len(parts))
        for i, (topic, value, key, headers) in enumerate(parts):
            try:
                _Event(self, record, topic, value, key, headers).produce()
            except TaskstreamError as exc:
                # Refused by the client (over message.max.bytes: a retry's next attempt a few
                # bytes over its original): the record goes to the dead letters instead, so
                # that its offset can still commit.
                record.pending -= len(parts) - i
                if topic == self._dead_letters.topic:
                    raise
                error = f"its outcome could not be published to {topic!r}: {exc}"
                letter = self._dead_letters.letter(message, Reason.UNPUBLISHABLE, error)
                record.pending += 1
                _Event(self, record, *letter).produce()
                return

    def _hold(
        self, transaction: Transaction, offsets: PartitionOffsets, message: Message,
        parts: list[Part],
    ) -> None:  # fmt: skip
        """Exactly-once: the events wait for the transaction that commits the record's
        offset, and the record is done. An event over the producer's limit (produced at the
        commit, where a refusal would fail the whole transaction) is replaced here by the
        record in the dead-letter topic, as a refused produce is at least once."""
        limit = self._dead_letters.limit
        for topic, value, key, headers in parts:
            if record_size(value, key, headers) > limit and topic != self._dead_letters.topic:
                error = (f"its outcome could not be published to {topic!r}: "
                         f"{format_size(record_size(value, key, headers))} is over the "
                         f"producer's message.max.bytes ({format_size(limit)})")  # fmt: skip
                parts = [self._dead_letters.letter(message, Reason.UNPUBLISHABLE, error)]
                break
        offset = message.offset()
        assert offset is not None
        transaction.hold(offsets, offset, parts)
        self._on_done(Acks(offsets, offset, 0))
