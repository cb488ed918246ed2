"""The one clock taskstream reads: wall time, which ``taskstream.testing`` can move forward.

Due times (countdowns, retries, delay tiers) compare against it, so a test can make a
countdown come due without sleeping. Only tests move it.
"""

from __future__ import annotations

import time

_offset = 0.0  # seconds added to the wall clock (taskstream.testing's advance())


def now() -> float:
    """Seconds since the epoch."""
    return time.time() + _offset


def now_micros() -> int:
    """Microseconds since the epoch."""
    return int((time.time() + _offset) * 1_000_000)


def advance(seconds: float) -> None:
    """Move the clock forward (tests only)."""
    global _offset
    _offset += seconds


def reset() -> None:
    global _offset
    _offset = 0.0
