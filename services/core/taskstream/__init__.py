"""taskstream: Celery's job, done on Kafka.

from taskstream import App, TaskFailed
app = App("demo")

@app.task
def add(a: int, b: int) -> int:
    return a + b

add.delay(2, 3).get(timeout=10)  # -> 5
"""

from taskstream.app import App
from taskstream.avro.hints import DecimalSpec
from taskstream.canvas import Signature, chain, chord, group
from taskstream.config import Settings
from taskstream.eager import EagerResult
from taskstream.errors import (
    AuthenticationFailed,
    BrokerError,
    BrokerUnreachable,
    CanvasError,
    ConfigError,
    DeliveryFailed,
    DeliveryTimeout,
    InvalidArguments,
    InvalidOption,
    MaxRetriesExceededError,
    MessageTooLarge,
    NotAuthorized,
    ResultTimeout,
    ResultTooLarge,
    Retry,
    SoftTimeLimitExceeded,
    TaskFailed,
    TaskRevoked,
    TaskstreamError,
    Terminated,
    TimeLimitExceeded,
    TlsFailed,
    UnknownTask,
    UnsupportedAnnotation,
    WorkerLost,
)
from taskstream.group_result import GroupResult, ResultSet
from taskstream.result import AsyncResult
from taskstream.schedules import crontab
from taskstream.status import Status
from taskstream.task import Task, TaskOptions, TaskRequest, current_request

__all__ = [  # noqa: RUF022 - grouped, not sorted
    # the API
    "App",
    "AsyncResult",
    "DecimalSpec",
    "Settings",
    "Status",
    "Task",
    "TaskOptions",
    "TaskRequest",
    "current_request",
    # workflows
    "Signature",
    "chain",
    "chord",
    "group",
    "GroupResult",
    "ResultSet",
    "EagerResult",
    # periodic tasks
    "crontab",
    # control flow raised by tasks
    "Retry",
    "MaxRetriesExceededError",
    "SoftTimeLimitExceeded",
    # errors (the README and docs/ name each)
    "BrokerError",
    "BrokerUnreachable",
    "AuthenticationFailed",
    "TlsFailed",
    "NotAuthorized",
    "CanvasError",
    "ConfigError",
    "DeliveryFailed",
    "DeliveryTimeout",
    "InvalidArguments",
    "InvalidOption",
    "MessageTooLarge",
    "ResultTooLarge",
    "ResultTimeout",
    "TaskFailed",
    "TaskstreamError",
    "TimeLimitExceeded",
    "UnknownTask",
    "UnsupportedAnnotation",
    "WorkerLost",
    # revoke and expires
    "TaskRevoked",
    "Terminated",
]
