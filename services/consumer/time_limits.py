"""Time limits of tasks running on threads.

Python cannot stop a thread, so the watchdog raises an exception in it instead
(``PyThreadState_SetAsyncExc``): SoftTimeLimitExceeded at the soft limit, TimeLimitExceeded
at the hard one. The exception arrives when the thread next runs Python code; a thread stuck
in C (a blocking call) is abandoned a moment after its hard limit: its task is recorded as a
FAILURE TimeLimitExceeded, the executor gets a replacement thread, and whatever the stuck
thread returns later is dropped. Async tasks are limited on their event loop instead
(execution.py).

The watchdog also stops a run revoked with ``terminate=True`` (:meth:`Watchdog.terminate`)
the same way: ``Terminated`` is raised in its thread at once, and a thread that does not
come back within ``TERMINATE_ABANDON_S`` is abandoned like one past its hard limit.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Callable

from taskstream.errors import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded

ABANDON_AFTER_S = 1.0  # past the hard limit, how long a thread gets to act on the exception
TERMINATE_ABANDON_S = 5.0  # after Terminated is raised, how long before the run is abandoned


def raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Schedule ``exc_type`` in the thread (None cancels a scheduled one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


class _Watch:
    __slots__ = (
        "active", "finished", "limited", "on_abandon", "task_id", "terminated", "thread_id",
    )  # fmt: skip

    def __init__(
        self,
        thread_id: int,
        on_abandon: Callable[[bool], None],
        task_id: str | None,
        limited: bool,
    ) -> None:
        self.thread_id = thread_id
        self.limited = limited  # has deadlines: an exception may be scheduled in its thread
        self.on_abandon = on_abandon  # called with whether the run was terminated
        self.task_id = task_id
        self.active = True  # may still be abandoned (guarded by the deadlines' lock)
        self.finished = False  # unwatched (guarded by the registry lock)
        self.terminated = False


class Watchdog:
    """One thread that enforces every watched run's deadlines."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deadlines: list[tuple[float, int, str, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._registry = threading.Lock()  # guards _running and each watch's finished
        self._running: dict[str, _Watch] = {}  # task id -> its watched run, to terminate it

    def watch(
        self,
        soft: float | None,
        hard: float | None,
        on_abandon: Callable[[bool], None],
        task_id: str | None = None,
    ) -> _Watch:
        """Watch the calling thread from now on (with ``task_id``: terminable by it)."""
        limited = soft is not None or hard is not None
        watch = _Watch(threading.get_ident(), on_abandon, task_id, limited)
        if task_id is not None:
            # A plain lock, not the deadlines' condition: every run takes it, timed or not.
            with self._registry:
                self._running[task_id] = watch
        if not limited:
            return watch
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
            self._wake()
        return watch

    def _wake(self) -> None:
        """Start the thread if needed and have it look at the deadlines (lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="taskstream-watchdog", daemon=True
            )
            self._thread.start()
        self._lock.notify()

    def unwatch(self, watch: _Watch) -> None:
        """The run ended: no exception is raised in the thread after this returns."""
        if watch.task_id is not None:
            with self._registry:
                if self._running.get(watch.task_id) is watch:
                    del self._running[watch.task_id]
                watch.finished = True  # terminate() raises nothing in it any more
                if watch.terminated:
                    raise_in_thread(watch.thread_id, None)  # Terminated not yet raised
        if not watch.limited and not watch.terminated:
            watch.active = False
            return
        with self._lock:
            if watch.active:
                watch.active = False
                raise_in_thread(watch.thread_id, None)  # one scheduled but not yet raised

    def terminate(self, task_id: str, abandon_after: float = TERMINATE_ABANDON_S) -> bool:
        """Stop the watched run of ``task_id``: raise Terminated in its thread now, abandon
        it after ``abandon_after`` seconds. False when no such run is in progress here."""
        with self._registry:
            watch = self._running.get(task_id)
            if watch is None or watch.finished or watch.terminated:
                return False
            watch.terminated = True
            raise_in_thread(watch.thread_id, Terminated)
        with self._lock:
            deadline = (time.monotonic() + abandon_after, next(self._order), "abandon", watch)
            heapq.heappush(self._deadlines, deadline)
            self._wake()
        return True

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
            if watch.task_id is not None:
                with self._registry:
                    if self._running.get(watch.task_id) is watch:
                        del self._running[watch.task_id]
            watch.on_abandon(watch.terminated)  # outside the lock: it publishes an outcome
