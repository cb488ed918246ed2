"""The one clock taskstream reads time from: ``now()`` and ``now_micros()`` (wall time),
``monotonic()`` (leases).

Normally ``time.time()``. ``taskstream.testing`` moves it forward with :func:`advance` so that
countdowns and retries come due in a unit test without waiting. The shift is a module-level
offset, not a clock object handed around, because the readers (the task producer's
``enqueued_at``, the worker's due check, the delay scheduler) run on several threads that
share no object but the process, just as they share ``time.time()``: one offset keeps every
reader in agreement. Only tests move it; nothing here ever goes backwards on its own.
"""

from __future__ import annotations

import time

from taskstream.errors import ClockError

_offset_s = 0.0  # seconds added to time.time() by advance()
_offset_us = 0  # the same in whole microseconds: now_micros() runs several times per task


def now() -> float:
    """Seconds since the epoch (UTC), shifted by :func:`advance`."""
    return time.time() + _offset_s


def now_micros() -> int:
    """Integer microseconds since the epoch (UTC), shifted by :func:`advance`."""
    return time.time_ns() // 1000 + _offset_us


def monotonic() -> float:
    """``time.monotonic()`` shifted by :func:`advance`: for leases and timeouts that tests
    move forward instead of sleeping."""
    return time.monotonic() + _offset_s


def advance(seconds: float) -> None:
    """Move the clock forward by ``seconds`` (for tests: countdowns and retries come due)."""
    global _offset_s, _offset_us
    if seconds < 0:
        raise ClockError("the clock only moves forward")
    _offset_s += seconds
    _offset_us = round(_offset_s * 1_000_000)


def offset() -> float:
    """How far :func:`advance` moved the clock, in seconds."""
    return _offset_s


def reset() -> None:
    """Back to ``time.time()``: the end of a test that advanced the clock."""
    global _offset_s, _offset_us
    _offset_s = 0.0
    _offset_us = 0
