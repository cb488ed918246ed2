"""Task states, as Celery users know them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "PENDING"  # no outcome recorded yet (the store has no row)
    STARTED = "STARTED"  # a worker began it (only for tasks with track_started)
    RETRY = "RETRY"  # an attempt failed and another is scheduled
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"  # revoked, or expired, before it ran (or terminated while it ran)

    @property
    def is_final(self) -> bool:
        return self in (Status.SUCCESS, Status.FAILURE, Status.REVOKED)
