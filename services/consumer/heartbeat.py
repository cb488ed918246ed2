"""A worker's heartbeat: what it runs, has done and lags, published from a timer.

:class:`WorkerActivity` wraps the worker's hooks (it is a WorkerHooks itself, passing every
call on): it keeps the runs in progress, counts outcomes, and keeps the last lag the loop
reported at its commit. :class:`Heartbeat` publishes that to the heartbeat topic every
``worker_heartbeat_s`` seconds from its own thread (the beat's format and its reader are in
:mod:`taskstream.heartbeats`), and a last ``offline`` beat on a clean stop. Per task this
costs a dict insert and pop and a counter under an uncontended lock; the beat itself
(a JSON document and one record) is built and produced on the timer thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from taskstream import clock
from taskstream.consumer.execution import Outcome, Run
from taskstream.consumer.instrumentation import Partition, WorkerHooks
from taskstream.heartbeats import OFFLINE, ONLINE, encode_beat
from taskstream.kafka import EventProducer
from taskstream.status import Status

log = logging.getLogger(__name__)

_COUNTED = {
    Status.SUCCESS: "succeeded",
    Status.FAILURE: "failed",
    Status.RETRY: "retried",
}
COUNTS = ("started", "succeeded", "failed", "retried", "dead_lettered")


def taskstream_version() -> str:
    try:
        return version("taskstream")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


class WorkerActivity(WorkerHooks):
    """The worker's hooks (``inner``), plus what its heartbeat tells."""

    def __init__(self, inner: WorkerHooks) -> None:
        self.inner = inner
        self._lock = threading.Lock()  # task threads update, the heartbeat thread reads
        self._running: dict[int, Run] = {}
        self._counts = dict.fromkeys(COUNTS, 0)
        self.lag: Mapping[Partition, int] = {}  # records, as of the last commit
        self.lag_seconds: Mapping[Partition, float] = {}  # oldest record not done, age

    # -- hooks ------------------------------------------------------------------------------

    def run_started(self, run: Run) -> None:
        self.inner.run_started(run)
        with self._lock:
            self._running[id(run)] = run
            self._counts["started"] += 1

    def outcome(self, run: Run, outcome: Outcome) -> None:
        self.inner.outcome(run, outcome)
        counted = _COUNTED.get(outcome.result.status)
        with self._lock:
            self._running.pop(id(run), None)
            if counted is not None:
                self._counts[counted] += 1
            if outcome.dead_letter is not None:
                self._counts["dead_lettered"] += 1

    def dead_lettered(self, reason: str) -> None:
        self.inner.dead_lettered(reason)
        with self._lock:
            self._counts["dead_lettered"] += 1

    def partitions_changed(self, event: str, assigned: int, gone: list[Partition]) -> None:
        self.inner.partitions_changed(event, assigned, gone)

    def committed(self, ok: bool, lag: Mapping[Partition, int], in_flight: int) -> None:
        self.inner.committed(ok, lag, in_flight)
        self.lag = lag  # a new mapping each commit: the heartbeat thread reads it whole

    def lagged(self, seconds: Mapping[Partition, float]) -> None:
        self.inner.lagged(seconds)
        self.lag_seconds = seconds

    def commit_result(self, ok: bool) -> None:
        self.inner.commit_result(ok)

    # -- for the heartbeat ------------------------------------------------------------------

    def running(self, now: float) -> list[dict[str, object]]:
        with self._lock:
            runs = list(self._running.values())
        return [
            {
                "task_id": run.event.id,
                "task": run.task.name,
                # 0 until the run has entered the task (a moment after run_started)
                "started_at": run.started / 1e6 if run.started else now,
            }
            for run in runs
        ]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Heartbeat:
    """Publishes a worker's beats to ``topic`` every ``interval`` seconds from a daemon
    thread, until ``stop()``, which publishes the last one (``offline``)."""

    def __init__(
        self,
        producer: EventProducer,
        topic: str,
        identity: Mapping[str, Any],
        activity: WorkerActivity,
        partitions: Callable[[], list[Partition]],
        interval: float,
        now: Callable[[], float] = clock.now,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._identity = dict(identity)
        self._activity = activity
        self._partitions = partitions
        self.interval = interval
        self._now = now
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def identity(worker_id: str, queues: list[str], concurrency: int) -> dict[str, object]:
        """What a beat says about the process, which never changes."""
        return {
            "worker_id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "version": taskstream_version(),
            "queues": list(queues),
            "concurrency": concurrency,
        }

    def beat(self, state: str = ONLINE) -> dict[str, object]:
        """The beat as of now."""
        now = self._now()
        activity = self._activity
        lag, seconds = activity.lag, activity.lag_seconds
        partitions = sorted(self._partitions())
        return {
            **self._identity,
            "partitions": [{"topic": t, "partition": p} for t, p in partitions],
            "running": activity.running(now) if state == ONLINE else [],
            "counts": activity.counts(),
            "lag": [
                {
                    "topic": t,
                    "partition": p,
                    "records": lag.get((t, p), 0),
                    "seconds": round(seconds.get((t, p), 0.0), 3),
                }
                for t, p in partitions
            ],
            "state": state,
            "sent_at": now,
            "interval": self.interval,
        }

    def publish(self, state: str = ONLINE) -> None:
        try:
            beat = self.beat(state)
            self._producer.produce(self._topic, encode_beat(beat), self._identity["worker_id"])
        except Exception:  # a missed beat shows as a late one; the worker goes on
            log.exception("publishing a heartbeat failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskstream-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.publish()
        while not self._stopped.wait(self.interval):
            self.publish()

    def stop(self) -> None:
        """Stop beating and say so: the last beat is ``offline`` (the producer's close
        flushes it)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.publish(OFFLINE)
