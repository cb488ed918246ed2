"""Every error taskstream raises, in one tree.

TaskstreamError
├── ConfigError              a setting is missing or malformed
├── SchemaError              a task's types cannot be expressed in Avro
│   ├── UnsupportedAnnotation    (task, parameter, annotation) at decoration time
│   └── SchemaDrift              checked-in schemas no longer match the code
├── InvalidArguments         a call does not fit the task's schema (task, path)
├── CodecError               bytes that are not what the codec expects
│   ├── CorruptMessage           not single-object Avro, or a body that does not parse
│   └── UnknownSchema            a fingerprint nobody registered
├── UnknownTask              a task name this app does not define
├── DeliveryFailed           the broker did not acknowledge an event
├── MessageTooLarge          an event over the producer's message.max.bytes (task, size, limit)
├── ResultTooLarge           a result over message.max.bytes: the FAILURE type it becomes
├── WorkerLost               a task's worker died in its run too often: its FAILURE type
├── TaskFailed               the remote task raised (type, message, traceback)
└── StoreError               the lookup store cannot be opened or written
"""

from __future__ import annotations

from typing import Any


class TaskstreamError(Exception):
    """Root of every error taskstream raises."""


class ConfigError(TaskstreamError):
    """A setting is missing, unknown or malformed."""


class SchemaError(TaskstreamError):
    """A task's signature cannot be expressed as an Avro schema."""


class UnsupportedAnnotation(SchemaError, TypeError):
    """A parameter or return annotation has no Avro mapping."""

    def __init__(self, task: str, parameter: str, annotation: Any, reason: str) -> None:
        self.task = task
        self.parameter = parameter
        self.annotation = annotation
        self.reason = reason
        super().__init__(
            f"task {task!r}: parameter {parameter!r} has annotation {annotation!r} "
            f"that cannot be mapped to Avro: {reason}"
        )


class SchemaDrift(SchemaError):
    """Schemas checked in under schemas/ differ from what the code derives."""

    def __init__(self, differences: list[str]) -> None:
        self.differences = differences
        super().__init__("schemas differ from the code:\n  " + "\n  ".join(differences))


class InvalidArguments(TaskstreamError, ValueError):
    """Arguments (or a return value) do not fit the task's schema.

    `path` names the offending field, e.g. ``args.user.age`` or ``args.items[3]``.
    """

    def __init__(self, task: str, path: str, message: str) -> None:
        self.task = task
        self.path = path
        self.message = message
        super().__init__(f"task {task!r}: {path}: {message}")


class CodecError(TaskstreamError):
    """Bytes that the codec cannot turn into a datum."""


class CorruptMessage(CodecError):
    """Not Avro single-object encoding, or a body that does not match its schema."""


class UnknownSchema(CodecError):
    """A single-object message whose schema fingerprint is not registered."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        super().__init__(f"no schema registered with fingerprint {fingerprint.hex()}")


class UnknownTask(TaskstreamError, LookupError):
    """A task name that the app does not define."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown task {name!r}")


class DeliveryFailed(TaskstreamError):
    """The broker did not acknowledge an event (acks=all) within the delivery timeout."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"delivery to {topic!r} failed: {reason}")


class MessageTooLarge(TaskstreamError, ValueError):
    """An event would exceed the producer's ``message.max.bytes``: it is never sent.

    ``task`` names the task whose event it is, ``size`` and ``limit`` are in bytes.
    """

    def __init__(self, task: str, size: int, limit: int, what: str = "event") -> None:
        self.task = task
        self.size = size
        self.limit = limit
        super().__init__(
            f"task {task!r}: {what} of {size} bytes is over the producer's "
            f"message.max.bytes of {limit} bytes"
        )


class ResultTooLarge(MessageTooLarge):
    """A task's return value made a result event too large to publish; the task's outcome
    is a FAILURE of this type instead (so its record commits and ``get()`` raises)."""

    def __init__(self, task: str, size: int, limit: int) -> None:
        super().__init__(task, size, limit, what="result")


class WorkerLost(TaskstreamError):
    """The worker running a task died during the run (killed, out of memory, a crash in a C
    extension) as many times as ``worker_lost_max_deliveries`` allows: the task's outcome is
    a FAILURE of this type and its record goes to the dead-letter topic as ``worker-lost``."""


class TaskFailed(TaskstreamError):
    """The task raised in the worker; carries the remote exception's description."""

    def __init__(self, task_id: str, exc_type: str, message: str, traceback: str) -> None:
        self.task_id = task_id
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"task {task_id} failed: {exc_type}: {message}")


class StoreError(TaskstreamError):
    """The lookup store cannot be opened, read or written."""


class Retry(TaskstreamError):
    """Raise from a task to have it run again later, as a new event (attempt + 1).

    ``raise Retry(countdown=30)`` waits 30 s; without a countdown the task's backoff policy
    decides. ``exc`` is the error recorded with the RETRY status (and with the FAILURE once
    the task's ``max_retries`` are used up).
    """

    def __init__(
        self, countdown: float | None = None, exc: BaseException | None = None, message: str = ""
    ) -> None:
        self.countdown = countdown
        self.exc = exc
        super().__init__(message or (f"{type(exc).__name__}: {exc}" if exc else "retry requested"))


class SoftTimeLimitExceeded(TaskstreamError):
    """Raised inside a running task when it passes its ``soft_time_limit``; it may catch it
    to clean up before the hard ``time_limit``. (An async task is cancelled instead.)"""


class TimeLimitExceeded(TaskstreamError):
    """A task ran past its hard ``time_limit``; its outcome is a FAILURE of this type."""
