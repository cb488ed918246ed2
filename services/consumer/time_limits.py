"""Time limits of tasks running on threads.

Python cannot stop a thread, so the watchdog raises an exception in it instead
(``PyThreadState_SetAsyncExc``): SoftTimeLimitExceeded at the soft limit, TimeLimitExceeded
at the hard one. The exception arrives when the thread next runs Python code; a thread stuck
in C (a blocking call) is abandoned a moment after its hard limit: its task is recorded as a
FAILURE TimeLimitExceeded, the executor gets a replacement thread, and whatever the stuck
thread returns later is dropped. Async tasks are limited on their event loop instead
(run.py).

The watchdog also stops a run revoked with ``terminate=True`` (:meth:`Watchdog.terminate`)
the same way: ``Terminated`` is raised in its thread at once, and a thread that does not
come back within ``TERMINATE_ABANDON_S`` is abandoned like one past its hard limit.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from taskstream.errors import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded

ABANDON_AFTER_S = 1.0  # past the hard limit, how long a thread gets to act on the exception
TERMINATE_ABANDON_S = 5.0  # after Terminated is raised, how long before the run is abandoned


def raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Schedule ``exc_type`` in the thread (None cancels a scheduled one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


def _ended(terminated: bool) -> None:
    """The on_abandon of a watch whose run ended (never called: it is inactive)."""


class _Watch:
    __slots__ = ("active", "on_abandon", "terminated", "thread_id")

    def __init__(
        self, thread_id: int, on_abandon: Callable[[bool], None], *, terminated: bool = False
    ) -> None:
        self.thread_id = thread_id
        self.on_abandon = on_abandon  # called with whether the run was terminated
        self.active = True
        self.terminated = terminated


class Watchdog:
    """One thread that enforces every watched run's deadlines."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deadlines: list[tuple[float, int, str, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._registry = threading.Lock()  # terminate() and the slow path of untrack()
        # task id -> (thread id, on_abandon) of each run in progress, to terminate it
        self._running: dict[str, tuple[int, Callable[[bool], None]]] = {}
        self._terminated: dict[str, _Watch] = {}  # terminated, not yet untracked
        # Async runs: task id -> (its event loop, its asyncio task), and those cancelled
        self._running_async: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._cancelled: set[str] = set()

    def watch(
        self, soft: float | None, hard: float | None, on_abandon: Callable[[bool], None]
    ) -> _Watch:
        """Watch the calling thread's time limits from now on."""
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
        with self._lock:
            if watch.active:
                watch.active = False
                raise_in_thread(watch.thread_id, None)  # one scheduled but not yet raised
                # Its deadlines stay in the heap until due: they must not keep the run (and
                # its job, arguments and result) alive until then.
                watch.on_abandon = _ended

    # -- terminate: every run is registered, at the cost of a dict store and a pop ---------

    def track(self, task_id: str, on_abandon: Callable[[bool], None]) -> None:
        """The calling thread runs ``task_id`` from now on: terminable by it."""
        self._running[task_id] = (threading.get_ident(), on_abandon)

    def untrack(self, task_id: str) -> bool:
        """The run of ``task_id`` ended; True when it was terminated. No Terminated is
        raised in the thread after this returns."""
        # dict.pop is atomic: either this takes the entry (no terminate can follow) or
        # terminate() took it, under the registry lock, and raised.
        if self._running.pop(task_id, None) is not None:
            return False
        with self._registry:  # terminate() has raised and recorded it by now
            watch = self._terminated.pop(task_id, None)
            if watch is None:
                return False  # never tracked (or tracked twice): nothing was raised
            raise_in_thread(watch.thread_id, None)  # raised, not yet delivered
        with self._lock:
            watch.active = False  # its abandon deadline passes
        return True

    def track_async(self, task_id: str, task: asyncio.Future[Any]) -> None:
        """An async run of ``task_id`` (on the running loop) from now on: terminable by it."""
        self._running_async[task_id] = (asyncio.get_running_loop(), task)

    def untrack_async(self, task_id: str) -> bool:
        """The async run of ``task_id`` ended; True when it was terminated (cancelled)."""
        if self._running_async.pop(task_id, None) is not None:
            return False
        with self._registry:
            if task_id in self._cancelled:
                self._cancelled.discard(task_id)
                return True
            return False

    def terminate(self, task_id: str, abandon_after: float = TERMINATE_ABANDON_S) -> bool:
        """Stop the run of ``task_id``: raise Terminated in its thread now, abandon it after
        ``abandon_after`` seconds; an async run is cancelled (the task sees CancelledError,
        as at a soft time limit). False when no such run is in progress here."""
        with self._registry:
            running_async = self._running_async.pop(task_id, None)
            if running_async is not None:
                loop, task = running_async
                self._cancelled.add(task_id)
                loop.call_soon_threadsafe(task.cancel, "terminated")
                return True
            tracked = self._running.pop(task_id, None)
            if tracked is None:
                return False
            thread_id, on_abandon = tracked
            watch = _Watch(thread_id, on_abandon, terminated=True)
            self._terminated[task_id] = watch
            raise_in_thread(thread_id, Terminated)
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
            watch.on_abandon(watch.terminated)  # outside the lock: it publishes an outcome
