"""Rate limits per task across the cluster: Celery's ``rate_limit``, shared by partitions.

``@app.task(rate_limit="10/s")`` (or ``"100/m"``, ``"1000/h"``, a number per second) caps how
often the task starts. Celery caps each worker at the rate, so ten workers run it ten times
as often. Here the cap is the cluster's: a worker runs the task at most at the rate times its
share of the task's queue, the part of the queue topic's partitions it owns, and re-shares at
every rebalance. Tasks spread over partitions by key, so the shares add up to the rate; with
skewed keys the busy worker's share runs out while another's goes unused: the cluster then
runs below the rate, never above it.

A run waits for its token in the worker, after its key's earlier runs (per-key order holds)
and without holding a thread: the job is started by a timer when its token is due. Like
Celery's, a rate-limited task still counts against ``max_tasks_in_flight`` while it waits,
so a backlog of it can hold up other tasks of the same worker: give such a task a queue of
its own.

The buckets hold one token (Celery's capacity): no bursts.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import count

from taskstream import clock
from taskstream.app import App
from taskstream.consumer.executor import Job
from taskstream.kafka.topics import task_topic


@dataclass(frozen=True)
class RateLimited:
    """The rate-limited tasks a worker runs: name -> (cluster-wide starts per second, its
    queue's topic), and those topics' partition counts."""

    tasks: dict[str, tuple[float, str]]
    partitions: dict[str, int]

    @classmethod
    def of(cls, app: App, queues: Iterable[str], partitions: dict[str, int]) -> RateLimited:
        """From the app's tasks on ``queues`` (``partitions``: the topics' counts as the
        broker has them; the configured count where it does not say)."""
        served = set(queues)
        prefix, default = app.settings.topic_prefix, app.settings.partitions
        tasks = {
            t.name: (rate, task_topic(prefix, t.queue))
            for t in app.tasks.values()
            if t.queue in served and (rate := t.options.rate_per_s) is not None
        }
        topics = {topic for _rate, topic in tasks.values()}
        return cls(tasks, {topic: partitions.get(topic) or default for topic in topics})


class TokenBucket:
    """``rate`` tokens a second, at most one held: ``take`` says how long until the next."""

    __slots__ = ("_next_at", "interval")

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next_at = float("-inf")

    def take(self, now: float) -> float:
        """Take the next token: the seconds to wait for it (0: now)."""
        start = max(now, self._next_at)
        self._next_at = start + self.interval
        return start - now


class RateLimits:
    """Starts rate-limited jobs when their task's token is due, the others at once.

    ``limits`` maps a task name to its cluster-wide rate (per second) and its queue's topic;
    ``partitions`` the topics' partition counts. ``owned(topic, n)`` re-shares a topic's
    tasks after a rebalance."""

    def __init__(
        self,
        start: Callable[[Job], None],
        limits: dict[str, tuple[float, str]],
        partitions: dict[str, int],
        *,
        timer: bool = True,
    ) -> None:
        self._start = start
        self._limits = limits
        self._partitions = partitions
        self._owned: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._due: list[tuple[float, int, Job]] = []  # (when, order, job): a heap
        self._order = count()
        self._lock = threading.Condition()
        self._stopped = False
        self._timer = timer  # False: tests call release_due() on a moved clock instead
        self._thread: threading.Thread | None = None

    @property
    def topics(self) -> set[str]:
        """The queue topics of the rate-limited tasks."""
        return {topic for _rate, topic in self._limits.values()}

    def rate_here(self, task: str) -> float | None:
        """The task's rate on this worker: its cluster-wide rate times this worker's share."""
        limit = self._limits.get(task)
        if limit is None:
            return None
        rate, topic = limit
        total = self._partitions.get(topic) or 1
        return rate * max(1, min(self._owned.get(topic, 0), total)) / total

    def owned(self, topic: str, partitions: int) -> None:
        """This worker now owns ``partitions`` of ``topic``: its tasks' buckets re-rated (the
        next token stays where it was: runs already waiting keep their turn)."""
        with self._lock:
            self._owned[topic] = partitions
            for task, (_rate, queue_topic) in self._limits.items():
                bucket = self._buckets.get(task)
                if queue_topic == topic and bucket is not None:
                    bucket.interval = 1.0 / (self.rate_here(task) or 1.0)

    def submit(self, job: Job) -> None:
        """Start ``job`` now, or once its task's token is due."""
        task = job.task_name
        if task not in self._limits:
            self._start(job)
            return
        with self._lock:
            bucket = self._buckets.get(task)
            if bucket is None:
                bucket = self._buckets[task] = TokenBucket(self.rate_here(task) or 1.0)
            now = clock.monotonic()
            wait = bucket.take(now)
            if wait > 0:
                heapq.heappush(self._due, (now + wait, next(self._order), job))
                self._ensure_timer()
                self._lock.notify()
                return
        self._start(job)

    def waiting(self) -> int:
        """Jobs waiting for a token."""
        return len(self._due)

    def stop(self) -> None:
        """Start nothing more (the waiting jobs' records were not committed: they run again)."""
        with self._lock:
            self._stopped = True
            self._lock.notify()

    def release_due(self) -> float | None:
        """Start every job whose token is due; the seconds until the next one (None: none)."""
        while True:
            with self._lock:
                if self._stopped or not self._due:
                    return None
                when = self._due[0][0]
                wait = when - clock.monotonic()
                if wait > 0:
                    return wait
                job = heapq.heappop(self._due)[2]
            self._start(job)

    def _ensure_timer(self) -> None:
        if self._timer and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="taskstream-rate-limits", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.release_due()
            with self._lock:
                if self._stopped:
                    return
                if not self._due:
                    self._lock.wait()
                    continue
                wait = self._due[0][0] - clock.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
