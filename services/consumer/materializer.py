"""The materializer: the results topic, applied to the lookup store.

Each batch of result events is written to the store in one transaction together with the
next offset of every partition it read, and on assignment the consumer starts from the
offsets the store holds, not from the group's: a crash between the two never loses a result
nor applies one twice. Offsets are also committed to Kafka, afterwards, only so that
operators see the group's lag.

The hot path decodes each envelope to the codec's plain dict and builds the store's row tuple
from it (:func:`result_row`): at tens of thousands of events a second, a ResultEvent, three
datetimes and a ResultRecord per event cost more than the SQLite write itself.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from taskstream import metrics
from taskstream.app import App
from taskstream.consumer.dead_letter import Reason, dead_letter_headers
from taskstream.errors import CorruptMessage
from taskstream.kafka import EventProducer, consumer_config, producer_config, record_position
from taskstream.status import Status
from taskstream.store import ResultRow, ResultStore
from taskstream.topics import dead_letter_topic, results_topic

log = logging.getLogger(__name__)

_BATCH = 2000  # result events applied per store transaction, at most
_POLL_S = 0.1
_STATUSES = frozenset(s.value for s in Status)


def materializer_group(prefix: str) -> str:
    return f"{prefix}.materializer"


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


class Materializer:
    """Consumes the results topic into ``store`` until stopped."""

    def __init__(
        self,
        app: App,
        store: ResultStore | None = None,
        group_id: str | None = None,
        *,
        rebuild: bool = False,
    ) -> None:
        s = app.settings
        self.app = app
        self.store = store or app.store
        self.topic = results_topic(s.topic_prefix)
        self.group_id = group_id or materializer_group(s.topic_prefix)
        self._dead_letter_topic = dead_letter_topic(s.topic_prefix)
        self._stopping = threading.Event()
        self._producer: EventProducer | None = None
        self.applied = 0  # result events written to the store by this process
        self._lag_positions: dict[tuple[str, int], int] = {}  # applied, not yet committed
        self._lag_committed_at = 0.0
        self._commit_every_s = s.commit_interval_ms / 1000
        # Drop the store's rows and offsets first: with no stored offsets, every partition is
        # read from the beginning (the compacted topic holds each task's latest outcome).
        self.rebuild = rebuild

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        s = self.app.settings
        self.app.ensure_topics()
        if self.rebuild:
            log.warning("rebuilding %s: dropping its rows and offsets", s.store)
            self.store.reset(self.topic)
            self.rebuild = False  # once: a second run() resumes from the rebuilt offsets
        # Eager assignment, so on_assign can place every partition at the store's offset.
        consumer = self.app.broker.consumer(
            consumer_config(s, self.group_id, **{"partition.assignment.strategy": "range"})
        )
        consumer.subscribe([self.topic], on_assign=self._on_assign)
        log.info("materializing %s into %s", self.topic, s.store)
        try:
            while not self._stopping.is_set():
                first = consumer.poll(_POLL_S)
                if first is not None:
                    self._apply(consumer, [first, *consumer.consume(_BATCH - 1, 0)])
                self._commit_for_lag(consumer)
            self._commit_for_lag(consumer, now=True)
        finally:
            consumer.close()
            if self._producer is not None:
                self._producer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.store.offsets(self.topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)

    def _apply(self, consumer: Consumer, batch: list[Message]) -> None:
        decode = self.app.envelopes.codec.decode_as
        schema = self.app.envelopes.result_schema
        rows: list[ResultRow] = []
        positions: dict[tuple[str, int], int] = {}
        for message in batch:
            position = record_position(message)
            if position is None:
                continue
            topic, partition, offset = position
            positions[(topic, partition)] = offset + 1
            try:
                rows.append(result_row(decode(schema, message.value() or b"")))
            except Exception as exc:
                self._dead_letter(message, str(exc))
        if not positions:
            return
        if self._producer is not None and self._producer.flush(30.0):
            raise KafkaException("dead letters not delivered; not advancing the store's offsets")
        started = time.perf_counter()
        self.store.apply_rows(rows, positions)
        metrics.STORE_WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.RESULTS_APPLIED.inc(len(rows))
        self.applied += len(rows)
        for (topic, partition), position in positions.items():
            # The high watermark of the last fetch: what the consumer knows without asking.
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high is not None and high >= 0:
                metrics.RESULTS_LAG.labels(str(partition)).set(max(0, high - position))
        self._lag_positions.update(positions)

    def _commit_for_lag(self, consumer: Consumer, *, now: bool = False) -> None:
        """Commit the store's positions to Kafka too, every commit interval: only so that
        the group's lag shows (each commit is a request the broker serves)."""
        if not self._lag_positions:
            return
        moment = time.monotonic()
        if not now and moment - self._lag_committed_at < self._commit_every_s:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._lag_positions.items()]
        self._lag_positions.clear()
        self._lag_committed_at = moment
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # only lag reporting depends on it
            log.debug("lag commit failed: %s", exc)

    def _dead_letter(self, message: Message, error: str) -> None:
        log.warning("undecodable result event at offset %s: %s", message.offset(), error)
        if self._producer is None:
            self._producer = EventProducer(
                producer_config(self.app.settings), broker=self.app.broker
            )
        self._producer.produce(
            self._dead_letter_topic,
            message.value() or b"",
            message.key(),
            headers=dead_letter_headers(message, Reason.UNDECODABLE, error),
        )
