"""Celery's integration-test tasks (celery/celery t/integration/tasks.py), typed, for
tests/integration/test_celery_tasks.py: the same names and bodies where taskstream can
express them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from taskstream import App, Task


@dataclass
class AddParameterModel:
    """Celery's pydantic model of add's parameters, as a dataclass."""

    x: int
    y: int


@dataclass
class AddResultModel:
    result: int


class ExpectedException(Exception):
    """A failure the tests expect (Celery's name)."""


class UnpickleableException(Exception):
    """Celery's: an exception whose constructor takes more than its args (pickle fails)."""

    def __init__(self, foo: str, bar: str) -> None:
        super().__init__(foo)
        self.bar = bar


def celery_tasks(app: App) -> None:
    _basic_tasks(app)
    _request_tasks(app)
    _retry_tasks(app)


def _basic_tasks(app: App) -> None:
    @app.task(name="ctest.add")
    def add(x: int, y: int, z: int | None = None) -> int:
        """Add two or three numbers."""
        if z:
            return x + y + z
        return x + y

    @app.task(name="ctest.add_ignore_result", ignore_result=True)
    def add_ignore_result(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    @app.task(name="ctest.add_pydantic")
    def add_pydantic(data: AddParameterModel) -> AddResultModel:
        """Add two numbers, typed by dataclasses (Celery's pydantic=True task)."""
        return AddResultModel(result=data.x + data.y)

    @app.task(name="ctest.add_pydantic_string_annotations")
    def add_pydantic_string_annotations(data: "AddParameterModel") -> "AddResultModel":  # noqa: UP037
        """Add two numbers, with string annotations."""
        return AddResultModel(result=data.x + data.y)

    @app.task(name="ctest.sleeping")
    def sleeping(i: float) -> None:
        """Task sleeping for ``i`` seconds, and returning nothing."""
        time.sleep(i)

    @app.task(name="ctest.fail")
    def fail() -> None:
        """Task that simply raises ExpectedException."""
        raise ExpectedException("Task expected to fail")

    @app.task(name="ctest.fail_unpickleable")
    def fail_unpickleable(foo: str, bar: str) -> None:
        raise UnpickleableException(foo, bar)

    @app.task(name="ctest.print_unicode")
    def print_unicode(log_message: str = "håå®ƒ valmuefrø", print_message: str = "hiöäüß") -> None:
        print(log_message, print_message)


def _request_tasks(app: App) -> None:
    """Tasks that return what their request says."""

    @app.task(name="ctest.ids", bind=True)
    def ids(self: Task[..., Any], i: int) -> tuple[str | None, ...]:
        """Returns a tuple of ``root_id``, ``parent_id`` and the argument passed as ``i``
        (as text: a tuple is of one type here)."""
        return self.request.root_id, self.request.parent_id, str(i)

    @app.task(name="ctest.request_fields", bind=True)
    def request_fields(self: Task[..., Any], x: int) -> dict[str, str | None]:
        """What Celery code reads from ``self.request``, as text."""
        r = self.request
        return {
            "args": repr(r.args), "kwargs": repr(r.kwargs), "hostname": r.hostname,
            "topic": None if r.delivery_info is None else r.delivery_info["topic"],
            "is_eager": repr(r.is_eager),
        }  # fmt: skip

    @app.task(name="ctest.return_request_time_limits", bind=True)
    def return_request_time_limits(self: Task[..., Any]) -> dict[str, float | None]:
        """Return time_limit and soft_time_limit from the task request context."""
        return {
            "time_limit": self.request.time_limit,
            "soft_time_limit": self.request.soft_time_limit,
        }

    @app.task(
        name="ctest.task_with_declared_time_limits", bind=True, time_limit=60, soft_time_limit=45
    )
    def task_with_declared_time_limits(self: Task[..., Any]) -> dict[str, float | None]:
        """Task with explicitly declared time limits: verifies request fields are set."""
        return {
            "time_limit": self.request.time_limit,
            "soft_time_limit": self.request.soft_time_limit,
        }


def _retry_tasks(app: App) -> None:
    """Tasks that retry."""

    @app.task(name="ctest.retry_once_headers", bind=True, max_retries=1)
    def retry_once_headers(
        self: Task[..., Any], max_retries: int = 1, countdown: float = 0.1
    ) -> dict[str, str] | None:
        """Task that fails and is retried. Returns headers."""
        if self.request.retries:
            return self.request.headers
        raise self.retry(countdown=countdown, max_retries=max_retries)

    @app.task(name="ctest.retry_once_priority", bind=True, max_retries=1)
    def retry_once_priority(
        self: Task[..., Any], max_retries: int = 1, countdown: float = 0.1
    ) -> int | None:
        """Task that fails and is retried. Returns the priority."""
        if self.request.retries:
            info = self.request.delivery_info
            assert info is not None
            priority: int = info["priority"]
            return priority
        raise self.retry(countdown=countdown, max_retries=max_retries)

    @app.task(name="ctest.retry", bind=True, default_retry_delay=1)
    def retry(self: Task[..., Any], return_value: str | None = None) -> str:
        """Task simulating multiple retries.

        When return_value is provided, the task after retries returns the result.
        Otherwise it fails. (Celery counts attempts on the task object, which works in one
        worker process; here the request's retries. Countdown 1 s, not 5: the same path.)"""
        if return_value and self.request.retries >= 3:
            return return_value
        raise self.retry(exc=ExpectedException(), countdown=1)

    @app.task(name="ctest.retry_unpickleable", bind=True, default_retry_delay=1)
    def retry_unpickleable(
        self: Task[..., Any], foo: str, bar: str, *, retry_kwargs: dict[str, int]
    ) -> None:
        """Task that fails with an unpickleable exception and is retried."""
        raise self.retry(
            exc=UnpickleableException(foo, bar),
            countdown=retry_kwargs.get("countdown"),
            max_retries=retry_kwargs.get("max_retries"),
        )

    @app.task(name="ctest.retry_once", bind=True, expires=120.0, max_retries=1)
    def retry_once(
        self: Task[..., Any],
        expires: float | None = None,
        max_retries: int = 1,
        countdown: float = 0.1,
    ) -> int:
        """Task that fails and is retried. Returns the number of retries."""
        if self.request.retries:
            return self.request.retries
        raise self.retry(countdown=countdown, expires=expires, max_retries=max_retries)

    @app.task(
        name="auto_retry_class_task",
        bind=True,
        autoretry_for=(ValueError,),
        retry_kwargs={"max_retries": 1},
        retry_backoff=True,
    )
    def auto_retry_class_task(self: Task[..., Any]) -> int:
        """Celery's ClassBasedAutoRetryTask, as a function (there are no task classes)."""
        if self.request.retries:
            return self.request.retries
        raise ValueError()
