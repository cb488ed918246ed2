"""A worker's heartbeat: what it runs, has done and lags, published from a timer.

:class:`Heartbeat` publishes a beat to the heartbeat topic every ``worker_heartbeat_s``
seconds from its own thread (the beat's format and its reader are in
:mod:`taskstream.worker_directory`), and a last ``offline`` beat on a clean stop. It reads what the
worker keeps anyway: its assigned partitions, the set of jobs in progress (a set add and
discard per task, the only per-task cost), the lag the loop computed at its last commit, and
the counts of its Prometheus counters (this process's values); nothing else runs per task.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import Counter

from taskstream import clock, metrics
from taskstream.config import AT_LEAST_ONCE
from taskstream.consumer.instrumentation import Partition
from taskstream.consumer.run import Run
from taskstream.kafka.producer import EventProducer
from taskstream.worker_directory import OFFLINE, ONLINE, encode_beat

log = logging.getLogger(__name__)

# What a beat counts, from the worker's Prometheus counters (taskstream.metrics).
COUNTERS: dict[str, Counter] = {
    "started": metrics.TASKS_STARTED,
    "succeeded": metrics.TASKS_SUCCEEDED,
    "failed": metrics.TASKS_FAILED,
    "retried": metrics.TASKS_RETRIED,
    "dead_lettered": metrics.TASKS_DEAD_LETTERED,
}


@dataclass(frozen=True)
class Lag:
    """Per assigned partition, as of a commit: records not committed, age in seconds of
    the oldest record not done."""

    records: Mapping[Partition, int]
    seconds: Mapping[Partition, float]


def taskstream_version() -> str:
    try:
        return version("taskstream")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


def counts() -> dict[str, int]:
    """This process's task counts, summed over tasks (or reasons), from its counters."""
    out = {}
    for name, counter in COUNTERS.items():
        total = 0.0
        for family in counter.collect():
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        out[name] = int(total)
    return out


class Heartbeat:
    """Publishes a worker's beats to ``topic`` every ``interval`` seconds from a daemon
    thread, until ``stop()``, which publishes the last one (``offline``)."""

    def __init__(
        self,
        producer: EventProducer,
        topic: str,
        identity: Mapping[str, Any],
        *,
        partitions: Callable[[], list[Partition]],
        runs: Callable[[], list[Run]],
        lag: Callable[[], Lag],
        interval: float,
        throttled: Callable[[], int] = lambda: 0,
        now: Callable[[], float] = clock.now,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._identity = dict(identity)
        self._partitions = partitions
        self._runs = runs
        self._lag = lag
        self._throttled = throttled  # runs waiting for their task's rate limit
        self.interval = interval
        self._now = now
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def identity(
        worker_id: str,
        queues: list[str],
        concurrency: int,
        warnings: list[str] | None = None,
        processing_guarantee: str = AT_LEAST_ONCE,
    ) -> dict[str, object]:
        """What a beat says about the process, which never changes (``warnings``: what is
        wrong with its set-up, such as a queue topic short of partitions)."""
        return {
            "warnings": list(warnings or ()),
            "worker_id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "version": taskstream_version(),
            "queues": list(queues),
            "concurrency": concurrency,
            "processing_guarantee": processing_guarantee,
        }

    def beat(self, state: str = ONLINE) -> dict[str, object]:
        """The beat as of now."""
        now = self._now()
        lag = self._lag()
        records, seconds = lag.records, lag.seconds
        partitions = sorted(self._partitions())
        return {
            **self._identity,
            "partitions": [{"topic": t, "partition": p} for t, p in partitions],
            "running": self._running(now) if state == ONLINE else [],
            "throttled": self._throttled() if state == ONLINE else 0,
            "counts": counts(),
            "lag": [
                {
                    "topic": t,
                    "partition": p,
                    "records": records.get((t, p), 0),
                    "seconds": round(seconds.get((t, p), 0.0), 3),
                }
                for t, p in partitions
            ],
            "state": state,
            "sent_at": now,
            "interval": self.interval,
        }

    def _running(self, now: float) -> list[dict[str, object]]:
        return [
            {
                "task_id": run.event.id,
                "task": run.task.name,
                # 0 until the run has entered the task (a moment after it began)
                "started_at": run.started / 1e6 if run.started else now,
            }
            for run in sorted(self._runs(), key=lambda run: run.started)
        ]

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
