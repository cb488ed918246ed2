"""Dead letters: events that cannot run go to the dead-letter topic, never dropped.

The original bytes and key are kept as they were; headers say why and where from:

    taskstream.reason       short machine-readable reason (undecodable, unknown-task, ...)
    taskstream.error        the human-readable detail
    taskstream.topic        original topic
    taskstream.partition    original partition (decimal text)
    taskstream.offset       original offset (decimal text)
    taskstream.timestamp    original record timestamp, ms since the epoch (decimal text)
    taskstream.task         the task name, when the envelope could be read
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from confluent_kafka import Message

from taskstream.kafka.clients import Headers, header_pairs
from taskstream.kafka.sizes import record_size
from taskstream.kafka.topics import dead_letter_topic

log = logging.getLogger(__name__)

_MAX_ERROR_BYTES = 4096  # of the error header; a letter must fit message.max.bytes


class Reason(StrEnum):
    UNDECODABLE = "undecodable"  # not single-object Avro, or a corrupt body
    UNKNOWN_SCHEMA = "unknown-schema"  # a fingerprint no one registered
    UNKNOWN_TASK = "unknown-task"  # a task this worker does not define
    INVALID_ARGUMENTS = "invalid-arguments"  # arguments that break the task's schema
    RETRIES_EXHAUSTED = "retries-exhausted"  # the task failed max_retries + 1 times
    WORKER_LOST = "worker-lost"  # its worker died during the run, worker_lost_max_deliveries times
    UNPUBLISHABLE = "unpublishable"  # its outcome could not be produced (over the size limit)
    UNSTORABLE = "unstorable"  # a result the lookup store refused for its content (a huge key)


HEADER_PREFIX = "taskstream."


def carried_headers(message: Message) -> Headers:
    """The record's own headers (a trace context, a producer's), without taskstream's dead
    letter ones: what a record keeps when forwarded, retried, dead-lettered or replayed."""
    return [(k, v) for k, v in header_pairs(message) if not k.startswith(HEADER_PREFIX)]


def dead_letter_headers(
    message: Message, reason: Reason, error: str, task: str | None = None
) -> Headers:
    _kind, timestamp = message.timestamp()
    headers: Headers = [
        (HEADER_PREFIX + "reason", reason.value.encode()),
        (HEADER_PREFIX + "error", error.encode("utf-8", "replace")),
        (HEADER_PREFIX + "topic", (message.topic() or "").encode()),
        (HEADER_PREFIX + "partition", str(message.partition()).encode()),
        (HEADER_PREFIX + "offset", str(message.offset()).encode()),
        (HEADER_PREFIX + "timestamp", str(timestamp).encode()),
    ]
    if task is not None:
        headers.append((HEADER_PREFIX + "task", task.encode()))
    return headers + carried_headers(message)


Letter = tuple[str, bytes, Any, Headers]  # topic, value, key, headers


class DeadLetters:
    """The one place that makes a dead letter: the record as it was, its headers, a log line.

    Whoever sends it (the worker's and the delay scheduler's outcomes, the materializer)
    produces what :meth:`letter` returns; its error text is cut so that the letter fits the
    producer's ``message.max.bytes`` (the record itself fitted when it was written).
    """

    def __init__(self, prefix: str, limit: int) -> None:
        self.topic = dead_letter_topic(prefix)
        self.limit = limit

    def letter(
        self, message: Message, reason: Reason, error: str, task: str | None = None
    ) -> Letter:
        log.warning(
            "dead letter %s[%s]@%s: %s: %s",
            message.topic(), message.partition(), message.offset(), reason.value, error[:500],
        )  # fmt: skip
        value, key = message.value() or b"", message.key()
        bare = record_size(value, key, dead_letter_headers(message, reason, "", task))
        room = max(0, min(_MAX_ERROR_BYTES, self.limit - bare))
        encoded = error.encode("utf-8", "replace")
        if len(encoded) > room:
            error = encoded[: max(0, room - 20)].decode("utf-8", "ignore") + " ... [cut]"
        return self.topic, value, key, dead_letter_headers(message, reason, error, task)
