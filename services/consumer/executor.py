"""Runs task jobs: sync tasks on a pool of threads, async tasks on one event loop.

Jobs with the same ordering key run one after another, in the order submitted; jobs with
different keys (or none) run side by side up to the concurrency.

Task code never runs on the submitting thread (the worker's consumer loop): a task of any
length must not stop that loop from polling, or the worker would leave its group.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Job(Protocol):
    key: str | None
    is_async: bool
    limited: bool  # has a time limit: its thread may be abandoned
    released: bool  # set by the executor once the job no longer holds its key

    def run(self) -> None: ...

    async def run_async(self) -> None: ...


class Executor:
    """A fixed pool of daemon threads plus an asyncio loop thread.

    Daemon threads, so that a worker past its shutdown grace can exit while a task still
    runs; the task's event was not committed and will be redelivered.
    """

    def __init__(self, concurrency: int) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pooled = 0  # jobs handed to the pool and not yet finished
        self._surplus = 0  # threads to retire: replacements of abandoned ones came back
        self._threads = [self._spawn() for _ in range(concurrency)]
        self._concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None
        self._keys = _KeyedSerializer(self._start)

    def submit(self, job: Job) -> None:
        self._keys.submit(job)

    def _start(self, job: Job) -> None:
        if job.is_async:
            loop = self._event_loop()
            asyncio.run_coroutine_threadsafe(self._run_async(job), loop)
        else:
            with self._lock:
                self._pooled += 1
            self._jobs.put(job)

    def _spawn(self) -> threading.Thread:
        thread = threading.Thread(target=self._work, name="taskstream-task", daemon=True)
        thread.start()
        return thread

    def abandon(self, job: Job) -> None:
        """``job``'s thread is stuck past its hard time limit: release its key and add a
        thread in its place (the stuck one retires when it comes back)."""
        self.release(job)
        with self._lock:
            self._surplus += 1
        self._threads.append(self._spawn())

    def release(self, job: Job) -> None:
        """Let the next job of ``job``'s key start; once per job."""
        with self._lock:
            if job.released:
                return
            job.released = True
        self._keys.finished(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.run()
            except BaseException:
                log.exception("task job failed outside its run")
            finally:
                self.release(job)  # may start the next job of its key: still counted pooled
            with self._lock:
                self._pooled -= 1
                if self._surplus:
                    self._surplus -= 1
                    return

    async def _run_async(self, job: Job) -> None:
        assert self._slots is not None
        async with self._slots:
            try:
                await job.run_async()
            except BaseException:
                log.exception("task job failed outside its run")
            finally:
                self.release(job)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                self._slots = asyncio.Semaphore(self._concurrency)
                ready.set()
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            self._loop_thread = threading.Thread(target=serve, name="taskstream-async", daemon=True)
            self._loop_thread.start()
            ready.wait()
            self._loop = loop
        return self._loop

    def shutdown(self) -> None:
        """Let idle threads end; running jobs are not interrupted."""
        for _ in self._threads:
            self._jobs.put(None)
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5.0)


class _KeyedSerializer:
    """Holds back a job while an earlier job of the same key has not finished."""

    def __init__(self, start: Callable[[Job], None]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[Job]] = {}  # key -> jobs behind the running one

    def submit(self, job: Job) -> None:
        key = job.key
        if key is not None:
            with self._lock:
                behind = self._waiting.get(key)
                if behind is not None:
                    behind.append(job)
                    return
                self._waiting[key] = deque()
        self._start(job)

    def finished(self, job: Job) -> None:
        key = job.key
        if key is None:
            return
        with self._lock:
            behind = self._waiting[key]
            if not behind:
                del self._waiting[key]
                return
            following = behind.popleft()
        self._start(following)
