"""A value recomputed at most once per `max_age_s`, shared by every request that asks.

The console's pages poll every couple of seconds, from any number of browsers; what they
show from Kafka (backlogs, dead letters) costs a consumer each time, so it is read once per
period and shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Cached(Generic[T]):
    def __init__(self, compute: Callable[[], T], max_age_s: float) -> None:
        self._compute = compute
        self._max_age_s = max_age_s
        self._lock = threading.Lock()  # one computation at a time; the others wait for it
        self._value: tuple[float, T] | None = None

    def get(self) -> T:
        with self._lock:
            if self._value is None or time.monotonic() - self._value[0] >= self._max_age_s:
                self._value = (time.monotonic(), self._compute())
            return self._value[1]

    def invalidate(self) -> None:
        with self._lock:
            self._value = None
