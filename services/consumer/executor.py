"""Runs task jobs: sync tasks on a pool of threads, async tasks on one event loop.

Jobs with the same ordering key run one after another, in the order submitted; jobs with
different keys (or none) run side by side up to the concurrency.

With concurrency 1, a sync job without time limits runs on the submitting thread (the
consumer loop's) through ``inline``, when no pool job is pending: handing each job to another
thread costs more than a short task, and two busy Python threads make every delivery report
wait for the GIL. ``inline`` (the runtime's ``run_unlocked``) lets the runtime's keeper poll
the consumer meanwhile, so a long task never keeps the worker from its group. A job with a
time limit gets a pool thread, since only a pool thread can be abandoned.

Urgent jobs (a high band's: priorities) jump the pool's queue: :meth:`Executor.submit_urgent`
puts them on a lane every pool thread looks at before it takes its next job, so a job of a
higher band does not wait behind the lower band's jobs fetched before it. (Async jobs and a
key's jobs keep their order: an urgent job waits for the earlier jobs of its key.)
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
    task_name: str
    is_async: bool
    limited: bool  # has a time limit: runs on a pool thread, which can be abandoned
    released: bool  # set by the executor once the job no longer holds its key

    def run(self) -> None: ...

    async def run_async(self) -> None: ...


class Gate(Protocol):
    """What may hold a job back after its key's turn came (the rate limits)."""

    def submit(self, job: Job) -> None: ...


class Executor:
    """A fixed pool of daemon threads plus an asyncio loop thread.

    Daemon threads, so that a worker past its shutdown grace can exit while a task still
    runs; the task's event was not committed and will be redelivered.
    """

    def __init__(
        self, concurrency: int, inline: Callable[[Callable[[], None]], None] | None = None
    ) -> None:
        self._inline = inline if concurrency == 1 else None
        self.owner = threading.get_ident()  # the submitting thread, which may run jobs inline
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._urgent: deque[Job] = deque()  # taken before _jobs; each woken by a _WAKE
        # Submitted urgent, not started yet, by id (the job kept: its id cannot be reused).
        self._urgent_ids: dict[int, Job] = {}
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

    def submit_urgent(self, job: Job) -> None:
        """Submit a job of a higher band: it runs before the jobs queued before it. (Only
        the pool has a queue to jump: with concurrency 1 jobs run as they come, and async
        jobs in the order taken.)"""
        if not job.is_async and self._inline is None:
            with self._lock:
                self._urgent_ids[id(job)] = job
        self._keys.submit(job)

    def gate(self, gate: Gate) -> None:
        """Before the first submit: a job whose key's turn came goes through ``gate``, which
        calls :meth:`start` when it may run (the job holds its key meanwhile)."""
        self._keys = _KeyedSerializer(gate.submit)

    def start(self, job: Job) -> None:
        """Run ``job`` now (its key's turn came, and its gate let it through)."""
        self._start(job)

    def _start(self, job: Job) -> None:
        if job.is_async:
            loop = self._event_loop()
            asyncio.run_coroutine_threadsafe(self._run_async(job), loop)
        elif (
            self._inline is not None
            and not job.limited
            and not self._pooled
            and threading.get_ident() == self.owner
        ):
            # Nothing else runs (concurrency 1, pool idle): run it here. Nothing of its key
            # can be queued behind it, as the same thread submits the next job only after.
            try:
                self._inline(job.run)
            finally:
                job.released = True  # no lock: a job without time limits is never abandoned
                self._keys.finished(job)
        else:
            with self._lock:
                self._pooled += 1
                urgent = bool(self._urgent_ids) and self._urgent_ids.pop(id(job), None) is not None
            if urgent:
                self._urgent.append(job)
                job = _WAKE  # an idle thread wakes up and takes it (a busy one may first)
            self._jobs.put(job)

    def describe(self) -> str:
        """Its counters, for a diagnosis."""
        return f"pooled={self._pooled} threads={len(self._threads)} {self._keys.describe()}"

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
        urgent = self._urgent
        while True:
            job: Job | None = None
            if urgent:
                try:
                    job = urgent.popleft()
                except IndexError:  # another thread took it
                    job = None
            if job is None:
                job = self._jobs.get()
                if job is None:
                    return
                if job is _WAKE:
                    continue  # its urgent job is taken at the loop's top, if still there
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


class _Wake:
    """Stands in the pool's queue for an urgent job (taken from the urgent lane)."""

    key: str | None = None
    task_name: str = "(wake)"
    is_async: bool = False
    limited: bool = False
    released: bool = True

    def run(self) -> None:
        pass

    async def run_async(self) -> None:
        pass


_WAKE: Job = _Wake()


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

    def describe(self) -> str:
        waiting = {k: len(v) for k, v in list(self._waiting.items())}
        return f"keys_running={len(waiting)} queued_behind={sum(waiting.values())}"

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
