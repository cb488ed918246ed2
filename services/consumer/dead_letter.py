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

from enum import StrEnum

from confluent_kafka import Message


class Reason(StrEnum):
    UNDECODABLE = "undecodable"  # not single-object Avro, or a corrupt body
    UNKNOWN_SCHEMA = "unknown-schema"  # a fingerprint no one registered
    UNKNOWN_TASK = "unknown-task"  # a task this worker does not define
    INVALID_ARGUMENTS = "invalid-arguments"  # arguments that break the task's schema
    RETRIES_EXHAUSTED = "retries-exhausted"  # the task failed max_retries + 1 times
    WORKER_LOST = "worker-lost"  # its worker died during the run, worker_lost_max_deliveries times


HEADER_PREFIX = "taskstream."


def dead_letter_headers(
    message: Message, reason: Reason, error: str, task: str | None = None
) -> list[tuple[str, bytes]]:
    _kind, timestamp = message.timestamp()
    headers = [
        (HEADER_PREFIX + "reason", reason.value.encode()),
        (HEADER_PREFIX + "error", error.encode("utf-8", "replace")),
        (HEADER_PREFIX + "topic", (message.topic() or "").encode()),
        (HEADER_PREFIX + "partition", str(message.partition()).encode()),
        (HEADER_PREFIX + "offset", str(message.offset()).encode()),
        (HEADER_PREFIX + "timestamp", str(timestamp).encode()),
    ]
    if task is not None:
        headers.append((HEADER_PREFIX + "task", task.encode()))
    return headers
