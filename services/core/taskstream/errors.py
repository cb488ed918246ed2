"""Every error taskstream raises, in one tree.

TaskstreamError
├── ConfigError              a setting is missing or malformed
│   ├── InvalidOption            a task option unknown or out of range (option, value)  +V
│   ├── InvalidTopicName         a topic name Kafka refuses (name)                      +V
│   └── InvalidSchedule          a periodic task's schedule or entry is malformed       +V
├── SchemaError              a task's types cannot be expressed in Avro
│   ├── UnsupportedAnnotation    (task, parameter, annotation) at decoration time       +T
│   ├── SchemaDrift              checked-in schemas no longer match the code
│   └── InvalidSchema            an Avro schema that does not parse (reason)            +V
├── InvalidArguments         a call does not fit the task's schema (task, path)         +V
├── InvalidCall              args not a list or tuple, kwargs not a mapping (Celery's)   +T
├── CodecError               bytes that are not what the codec expects
│   ├── CorruptMessage           not single-object Avro, or a body that does not parse
│   └── UnknownSchema            a fingerprint nobody registered
├── UnknownTask              a task name this app does not define (name)         +LookupError
├── NoCurrentTask            current_request() outside a running task           +RuntimeError
├── BrokerError              the Kafka client reported an error (code, name)  +KafkaException
│   ├── BrokerUnreachable        no broker answered the start-up check (servers, timeout)
│   ├── AuthenticationFailed     the cluster refused the SASL credentials (username, mechanism)
│   ├── TlsFailed                the TLS handshake failed: e.g. an untrusted certificate
│   └── NotAuthorized            an ACL is missing (operation, resource, name, username)
├── BrokerNotStarted         the embedded broker (dev, tests) did not come up   +RuntimeError
├── DeliveryFailed           the broker did not acknowledge an event (topic, reason)
├── DeliveryTimeout          no delivery report within the wait (topic, timeout)         +TO
├── MessageTooLarge          an event over message.max.bytes (task, size, limit)         +V
│   └── ResultTooLarge           a result over message.max.bytes: its FAILURE type
├── WorkerLost               a task's worker died in its run too often: its FAILURE type
├── TaskFailed               the remote task raised (type, message, traceback)
├── ResultTimeout            no final outcome within get()'s timeout (task_id, status)   +TO
├── JoinTimeout              taskstream.testing's join(): work still pending (timeout)   +TO
├── ClockError               taskstream.clock asked to go backwards                       +V
├── StoreError               the lookup store cannot be opened or written
│   ├── InvalidRecord            a result record with a naive datetime (field, value)   +V
│   └── StoreRejected            content the store cannot hold (an over-long key)       +V
├── Retry                    raised by a task: run it again later (countdown, exc)
├── MaxRetriesExceededError  self.retry() with the retries used up (task, task_id, max_retries)
├── SoftTimeLimitExceeded    raised inside a task past its soft_time_limit
├── TimeLimitExceeded        a task ran past its hard time_limit: its FAILURE type
├── TaskRevoked              get() of a REVOKED task (task_id, reason: revoked|expired|terminated)
├── Terminated               raised inside a running task revoked with terminate=True
└── CanvasError              a workflow that cannot run as built (tasks, parameter)     +T

A "+" marks a second base, kept where callers may catch the builtin (or confluent-kafka's
KafkaException) rather than ours: +V ValueError, +T TypeError, +TO TimeoutError.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException


class TaskstreamError(Exception):
    """Root of every error taskstream raises."""


class ConfigError(TaskstreamError):
    """A setting is missing, unknown or malformed."""


class InvalidOption(ConfigError, ValueError):
    """A task option out of range, or one TaskOptions does not have."""

    def __init__(self, option: str, value: Any, reason: str) -> None:
        self.option = option
        self.value = value
        self.reason = reason
        super().__init__(f"task option {option}={value!r}: {reason}")


class InvalidTopicName(ConfigError, ValueError):
    """A topic name (from the prefix or a queue) with characters Kafka does not allow."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"illegal Kafka topic name {name!r} (use letters, digits, '.', '_', '-')")


class InvalidSchedule(ConfigError, ValueError):
    """A periodic task's schedule (crontab field, interval) or entry is malformed."""


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


class InvalidSchema(SchemaError, ValueError):
    """An Avro schema (a task's, or a file under schemas/) that does not parse."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid Avro schema: {reason}")


class InvalidArguments(TaskstreamError, ValueError):
    """Arguments (or a return value) do not fit the task's schema.

    `path` names the offending field, e.g. ``args.user.age`` or ``args.items[3]``.
    """

    def __init__(self, task: str, path: str, message: str) -> None:
        self.task = task
        self.path = path
        self.message = message
        super().__init__(f"task {task!r}: {path}: {message}")


class InvalidCall(TaskstreamError, TypeError):
    """``apply_async``'s ``args`` is not a list or tuple, or its ``kwargs`` not a mapping
    (a TypeError, as in Celery)."""


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

    def __init__(self, name: str, why: str = "") -> None:
        self.name = name
        super().__init__(f"unknown task {name!r}" + (f": {why}" if why else ""))


class NoCurrentTask(TaskstreamError, RuntimeError):
    """``current_request()`` was called where no task is running."""

    def __init__(self) -> None:
        super().__init__("current_request() is only available inside a running task")


class BrokerError(TaskstreamError, KafkaException):
    """The Kafka client reported an error while taskstream was `action` (e.g. "listing
    topics"). Also a confluent_kafka.KafkaException whose ``args[0]`` is the KafkaError, for
    callers that catch those."""

    def __init__(self, error: KafkaError, action: str) -> None:
        super().__init__(error)
        self.error = error
        self.action = action
        self.code: int = error.code()
        self.name: str = error.name()
        self.fatal: bool = error.fatal()
        self.retriable: bool = error.retriable()

    @classmethod
    def wrap(cls, exc: KafkaException, action: str) -> BrokerError:
        """The BrokerError of a KafkaException the client raised (``raise ... from exc``)."""
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError):  # raised with a message rather than an error
            error = KafkaError(KafkaError._FAIL, str(error))
        return cls(error, action)

    def __str__(self) -> str:
        return f"{self.action}: {self.error.str()} ({self.name})"


class BrokerUnreachable(BrokerError):
    """No broker of ``servers`` answered within the start-up check's ``timeout`` (seconds)."""

    def __init__(self, servers: str, timeout: float, reason: str) -> None:
        super().__init__(KafkaError(KafkaError._TRANSPORT, reason), "connecting")
        self.servers = servers
        self.timeout = timeout
        self.reason = reason

    def __str__(self) -> str:
        return f"no Kafka broker of {self.servers} answered within {self.timeout}s: {self.reason}"


class AuthenticationFailed(BrokerError):
    """The cluster refused this client's SASL credentials (``sasl.username`` and
    ``sasl.password`` for ``mechanism``). Never retried: a process stops at start with it."""

    def __init__(self, servers: str, username: str, mechanism: str, reason: str) -> None:
        super().__init__(KafkaError(KafkaError._AUTHENTICATION, reason), "authenticating")
        self.servers = servers
        self.username = username
        self.mechanism = mechanism
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"the Kafka cluster at {self.servers} refused the {self.mechanism} credentials of "
            f"user {self.username!r} (check sasl.username, sasl.password, sasl.mechanism): "
            f"{self.reason}"
        )


class TlsFailed(BrokerError):
    """The TLS handshake with the cluster failed: most often the broker's certificate is
    not signed by a CA this client trusts (``ssl.ca.location``), or names another host."""

    def __init__(self, servers: str, ca_location: str | None, reason: str) -> None:
        super().__init__(KafkaError(KafkaError._SSL, reason), "connecting over TLS")
        self.servers = servers
        self.ca_location = ca_location
        self.reason = reason

    def __str__(self) -> str:
        trusted = self.ca_location or "the system's CA certificates"
        return (
            f"TLS handshake with the Kafka cluster at {self.servers} failed (trusting "
            f"{trusted}; ssl.ca.location): {self.reason}"
        )


class NotAuthorized(BrokerError):
    """The cluster's ACLs do not let this client's principal (``username``; "" without
    SASL) do ``operation`` (e.g. ``WRITE``) on ``resource`` (``topic``, ``group``,
    ``transactional-id``) ``name``."""

    def __init__(self, operation: str, resource: str, name: str, username: str) -> None:
        code = KafkaError.GROUP_AUTHORIZATION_FAILED
        if resource == "topic":
            code = KafkaError.TOPIC_AUTHORIZATION_FAILED
        elif resource == "transactional-id":
            code = KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        super().__init__(KafkaError(code, f"not authorized to {operation} {name}"), "checking ACLs")
        self.operation = operation
        self.resource = resource
        self.username = username
        self.resource_name = name

    def __str__(self) -> str:
        who = f"user {self.username!r}" if self.username else "this client"
        return (
            f"{who} is not authorized to {self.operation} the {self.resource} "
            f"{self.resource_name!r}: add an ACL allowing it (kafka-acls --add "
            f"--allow-principal User:{self.username or '...'} --operation {self.operation} "
            f"--{self.resource} {self.resource_name})"
        )


class BrokerNotStarted(TaskstreamError, RuntimeError):
    """The embedded broker of ``taskstream dev`` and the tests did not start or listen."""


class DeliveryFailed(TaskstreamError):
    """The broker did not acknowledge an event (acks=all) within the delivery timeout."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"delivery to {topic!r} failed: {reason}")


class DeliveryTimeout(TaskstreamError, TimeoutError):
    """No delivery report for an event to `topic` within the `timeout` waited (seconds); the
    event may still be delivered later."""

    def __init__(self, topic: str, timeout: float | None) -> None:
        self.topic = topic
        self.timeout = timeout
        super().__init__(f"no delivery report for an event to {topic!r} within {timeout}s")


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


class JoinTimeout(TaskstreamError, TimeoutError):
    """``taskstream.testing``'s ``join(timeout)``: work was still pending after `timeout` s."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"taskstream.testing: work still pending after {timeout}s")


class ClockError(TaskstreamError, ValueError):
    """``taskstream.clock.advance`` was asked to move the clock backwards."""


class ResultTimeout(TaskstreamError, TimeoutError):
    """``AsyncResult.get(timeout)`` saw no final outcome in time; `status` is the last one
    seen (PENDING, STARTED, RETRY). The task may still finish later."""

    def __init__(self, task_id: str, timeout: float | None, status: str) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.status = status
        super().__init__(f"task {task_id}: no result within {timeout}s (status {status})")


class StoreError(TaskstreamError):
    """The lookup store cannot be opened, read or written."""


class InvalidRecord(StoreError, ValueError):
    """A result record whose datetime `field` is naive (the store keeps UTC instants)."""

    def __init__(self, field: str, value: Any) -> None:
        self.field = field
        self.value = value
        super().__init__(f"ResultRecord.{field} must be timezone-aware, got {value!r}")


class StoreRejected(StoreError, ValueError):
    """The store refused a record or a lookup for its content, not for its state: text it
    cannot encode, a key over its index's size limit. Trying again fails again; the
    materializer dead-letters such a record and goes on."""


class Retry(TaskstreamError):
    """Raise from a task to have it run again later, as a new event (attempt + 1).

    ``raise Retry(countdown=30)`` waits 30 s; without a countdown the task's backoff policy
    decides. ``exc`` is the error recorded with the RETRY status (and with the FAILURE once
    the task's ``max_retries`` are used up).
    """

    def __init__(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        message: str = "",
        *,
        max_retries: int | None = None,
        expires: int | None = None,
    ) -> None:
        self.countdown = countdown
        self.exc = exc
        self.max_retries = max_retries  # this retry's limit (self.retry(max_retries=)), if any
        self.expires = expires  # µs since the epoch: the next attempt's expiry, if any
        super().__init__(message or (f"{type(exc).__name__}: {exc}" if exc else "retry requested"))


class MaxRetriesExceededError(TaskstreamError):
    """``self.retry()`` in a task whose retries are used up (Celery's name). Raised inside
    the task, which may catch it and decide; uncaught, it is the task's FAILURE."""

    def __init__(self, task: str, task_id: str, max_retries: int) -> None:
        self.task = task
        self.task_id = task_id
        self.max_retries = max_retries
        super().__init__(f"Can't retry {task}[{task_id}]: max_retries ({max_retries}) exceeded")


class SoftTimeLimitExceeded(TaskstreamError):
    """Raised inside a running task when it passes its ``soft_time_limit``; it may catch it
    to clean up before the hard ``time_limit``. (An async task is cancelled instead.)"""


class TimeLimitExceeded(TaskstreamError):
    """A task ran past its hard ``time_limit``; its outcome is a FAILURE of this type."""


class TaskRevoked(TaskstreamError):
    """``AsyncResult.get()`` of a task whose outcome is REVOKED: revoked before it ran
    (``reason`` ``revoked``), picked up after its ``expires`` (``expired``), or stopped while
    running by a revoke with ``terminate=True`` (``terminated``). Celery's TaskRevokedError."""

    def __init__(self, task_id: str, reason: str) -> None:
        self.task_id = task_id
        self.reason = reason
        super().__init__(f"task {task_id} was revoked ({reason})")


class Terminated(TaskstreamError):
    """Raised inside a running task revoked with ``terminate=True``, as a soft time limit is;
    whatever the task does then, its outcome is REVOKED (reason ``terminated``)."""


class CanvasError(TaskstreamError, TypeError):
    """A chain, group, chord or callback that cannot run as built, raised before anything is
    sent: a step's return type does not fit the parameter its result lands in (``parent``,
    ``child``, ``parameter``; ``path``: where the child sits in an HTTP workflow, e.g.
    ``chain[2].chord.body``), or a shape taskstream does not run."""

    def __init__(
        self,
        message: str,
        parent: str = "",
        child: str = "",
        parameter: str = "",
        *,
        path: str = "",
    ) -> None:
        self.parent = parent
        self.child = child
        self.parameter = parameter
        self.path = path
        super().__init__(message)
