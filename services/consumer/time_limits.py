"""Time limits of tasks running on threads.

Python cannot stop a thread, so the watchdog raises an exception in it instead
(``PyThreadState_SetAsyncExc``): SoftTimeLimitExceeded at the soft limit, TimeLimitExceeded
at the hard one. The exception arrives when the thread next runs Python code; a thread stuck
in C (a blocking call) is abandoned a moment after its hard limit: its task is recorded as a
FAILURE TimeLimitExceeded, the executor gets a replacement thread, and whatever the stuck
thread returns later is dropped. Async tasks are limited on their event loop instead
(execution.py).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Callable

from taskstream.errors import SoftTimeLimitExceeded, TimeLimitExceeded

ABANDON_AFTER_S = 1.0  # past the hard limit, how long a thread gets to act on the exception


def raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Schedule ``exc_type`` in the thread (None cancels a scheduled one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


class _Watch:
    __slots__ = ("active", "on_abandon", "thread_id")

    def __init__(self, thread_id: int, on_abandon: Callable[[], None]) -> None:
        self.thread_id = thread_id
        self.on_abandon = on_abandon
        self.active = True


class Watchdog:
    """One thread that enforces every watched run's deadlines."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deadlines: list[tuple[float, int, str, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(
        self, soft: float | None, hard: float | None, on_abandon: Callable[[], None]
    ) -> _Watch:
        """Watch the calling thread from now on."""
        watch = _Watch(threading.get_ident(), on_abandon)
        now = time.monotonic()
        with self._lock:
            if soft is not None and (hard is None or soft < hard):
                heapq.heappush(self._deadlines, (now + soft, next(self._order), "soft", watch))
            if hard is not None:
                heapq.heappush(self._deadlines, (now + hard, next(self._order), "hard", watch))
                heapq.heappush(
                    self._deadlines,
                    (now + hard + ABANDON_AFTER_S, next(self._order), "abandon", watch),
                )
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskstream-watchdog", daemon=True
                )
                self._thread.start()
            self._lock.notify()
        return watch

    def unwatch(self, watch: _Watch) -> None:
        """The run ended: no exception is raised in the thread after this returns."""
        with self._lock:
            if watch.active:
                watch.active = False
                raise_in_thread(watch.thread_id, None)  # one scheduled but not yet raised

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._deadlines or self._deadlines[0][0] > time.monotonic():
                    timeout = self._deadlines[0][0] - time.monotonic() if self._deadlines else None
                    self._lock.wait(timeout)
                _deadline, _, kind, watch = heapq.heappop(self._deadlines)
                if not watch.active:
                    continue
                if kind == "soft":
                    raise_in_thread(watch.thread_id, SoftTimeLimitExceeded)
                    continue
                if kind == "hard":
                    raise_in_thread(watch.thread_id, TimeLimitExceeded)
                    continue
                watch.active = False
                raise_in_thread(watch.thread_id, None)
            watch.on_abandon()  # outside the lock: it publishes an outcome
