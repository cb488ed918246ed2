"""Reading and replaying the dead-letter topic (``taskstream dlq list|replay``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, TopicPartition

from taskstream.app import App
from taskstream.consumer.dead_letter import HEADER_PREFIX, carried_headers
from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming
from taskstream.envelope import Envelopes, now_micros
from taskstream.errors import BrokerError, DeliveryFailed
from taskstream.kafka.clients import (
    consumer_config,
    header_pairs,
    producer_config,
    topic_partitions,
)
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.topics import dead_letter_topic


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # in the dead-letter topic
    offset: int
    reason: str
    error: str
    task: str | None
    topic: str  # where the record was read from
    original_partition: int
    original_offset: int
    time: datetime  # the original record's timestamp
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()  # the record's own (a trace context), kept


def _letter(message: Message) -> DeadLetter:
    headers = {k: v for k, v in header_pairs(message) if k.startswith(HEADER_PREFIX)}

    def text(name: str, default: str = "") -> str:
        raw = headers.get(HEADER_PREFIX + name)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else default

    task = text("task") or None
    return DeadLetter(
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        reason=text("reason", "?"),
        error=text("error"),
        task=task,
        topic=text("topic"),
        original_partition=int(text("partition", "-1")),
        original_offset=int(text("offset", "-1")),
        time=datetime.fromtimestamp(int(text("timestamp", "0")) / 1000, tz=UTC),
        key=message.key(),
        value=message.value() or b"",
        headers=tuple((k, v) for k, v in carried_headers(message) if isinstance(v, bytes)),
    )


class _LetterCollector:
    """A consumer runtime handler that keeps every dead letter it reads."""

    def __init__(self, deadline: float) -> None:
        self.letters: list[DeadLetter] = []
        self.deadline = deadline
        self.runtime: ConsumerRuntime | None = None

    def records(self, batch: list[Message]) -> None:
        self.letters += [_letter(m) for m in batch]

    def serve(self, timeout: float) -> None:
        if time.monotonic() >= self.deadline and self.runtime is not None:
            self.runtime.stop()

    def room(self) -> int:
        return 500

    def busy(self) -> bool:
        return False

    def assigned(self, partitions: list[TopicPartition]) -> None: ...
    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None: ...
    def drain(self, grace: float) -> None: ...


def read_dead_letters(
    app: App, idle_s: float = 1.5, timeout_s: float = 120.0
) -> Iterator[DeadLetter]:
    """Every record in the dead-letter topic, oldest first per partition; stops when nothing
    more arrives for ``idle_s`` (queried watermarks are not trusted: some brokers get them
    wrong)."""
    s = app.settings
    topic = dead_letter_topic(s.topic_prefix)
    consumer = app.broker.consumer(
        consumer_config(s, f"{s.topic_prefix}.dlq-reader-{uuid.uuid4().hex[:8]}")
    )
    try:
        partitions = topic_partitions(consumer, topic)
    except KafkaException as exc:
        consumer.close()
        raise BrokerError.wrap(exc, f"reading {topic!r}") from exc
    if not partitions:
        consumer.close()
        return
    collector = _LetterCollector(time.monotonic() + timeout_s)
    runtime = collector.runtime = ConsumerRuntime(
        consumer, collector, OffsetTracker(), timing=LoopTiming(poll_s=0.2)
    )
    runtime.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    runtime.run(idle_stop_s=idle_s)  # a reader: nothing to commit
    yield from collector.letters


def replay(app: App, letters: list[DeadLetter]) -> int:
    """Send ``letters`` back to the topics they came from. A task event starts over at
    attempt 1 with no delay, enqueued now (its wait in a queue, on a task page and in the
    latency metric, is measured from the replay, not from its first send: the dead letter keeps
    that); other records go back unchanged. Returns how many were sent."""
    envelopes = Envelopes(app.codec)
    producer = EventProducer(producer_config(app.settings), broker=app.broker)
    try:
        for letter in letters:
            value = letter.value
            try:
                event = envelopes.decode_task(value)
            except Exception:
                pass
            else:
                event.attempt, event.not_before, event.enqueued_at = 1, None, now_micros()
                value = envelopes.encode_task(event)
            producer.produce(letter.topic, value, letter.key, headers=list(letter.headers) or None)
        undelivered = producer.flush(app.settings.delivery_timeout_ms / 1000)
    finally:
        producer.close()
    if undelivered:
        topics = ", ".join(sorted({letter.topic for letter in letters}))
        reason = f"{undelivered} of {len(letters)} replayed records were not acknowledged"
        raise DeliveryFailed(topics, reason)
    return len(letters)
