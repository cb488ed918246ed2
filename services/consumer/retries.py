"""When and how soon a failed run is tried again (the policy in TaskOptions)."""

from __future__ import annotations

import random

from taskstream.errors import Retry
from taskstream.task import TaskOptions


def wants_retry(options: TaskOptions, exc: BaseException) -> bool:
    """True for ``Retry`` and for the task's ``autoretry_for`` exceptions."""
    return isinstance(exc, Retry) or (
        bool(options.autoretry_for) and isinstance(exc, options.autoretry_for)
    )


def max_retries(options: TaskOptions, exc: BaseException) -> int:
    """How many retries this failure allows: ``self.retry(max_retries=)``'s, else for an
    ``autoretry_for`` exception ``retry_kwargs["max_retries"]``, else the task's."""
    if isinstance(exc, Retry):
        return options.max_retries if exc.max_retries is None else exc.max_retries
    return int(options.retry_kwargs.get("max_retries", options.max_retries))


def requested_countdown(options: TaskOptions, exc: BaseException) -> float | None:
    """The wait this failure asks for: Retry's countdown, or ``retry_kwargs["countdown"]``
    for an ``autoretry_for`` exception; None leaves it to the backoff policy."""
    if isinstance(exc, Retry):
        return exc.countdown
    value = options.retry_kwargs.get("countdown")
    return None if value is None else float(value)


def countdown(options: TaskOptions, retries_done: int, requested: float | None = None) -> float:
    """Seconds to wait before the next attempt, Celery's way: the requested countdown, else
    exponential backoff (``retry_backoff * 2 ** retries_done``, capped, with full jitter),
    else the fixed ``default_retry_delay``."""
    if requested is not None:
        return max(0.0, requested)
    if options.retry_backoff > 0:
        wait = min(options.retry_backoff_max, options.retry_backoff * 2**retries_done)
        return random.uniform(0, wait) if options.retry_jitter else wait
    return options.default_retry_delay
