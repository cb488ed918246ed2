"""The worker's and the materializer's hooks, and the metrics behind them.

They call these named hooks at the points that matter (a run starts, an outcome is
published, a record is dead-lettered, partitions move, offsets are committed, results are
applied) with taskstream's own values: a run, an outcome, (topic, partition) pairs, lag in
records. What happens there, updating Prometheus metrics from taskstream.metrics, stays out
of their code, and no hook sees a Kafka client.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from taskstream import metrics
from taskstream.consumer.run import Outcome, Run
from taskstream.status import Status

Partition = tuple[str, int]  # (topic, partition)


class WorkerHooks:
    """No-op hooks: subclass and override what you need."""

    def run_started(self, run: Run) -> None: ...
    def outcome(self, run: Run, outcome: Outcome) -> None: ...
    def revoked(self, task: str, reason: str) -> None:
        """A task ended REVOKED without running (``reason``: revoked or expired)."""

    def dead_lettered(self, reason: str) -> None: ...
    def partitions_changed(self, event: str, assigned: int, gone: list[Partition]) -> None: ...
    def committed(self, ok: bool, lag: Mapping[Partition, int], in_flight: int) -> None:
        """A commit was sent (``ok``: the client took it); ``lag``: records not yet done
        per partition, from what the consumer last fetched."""

    def commit_result(self, ok: bool) -> None:
        """The broker answered an asynchronous commit."""

    def lagged(self, seconds: Mapping[Partition, float]) -> None:
        """Right after ``committed``: per assigned partition, the age in seconds of its
        oldest record not yet done (0 when caught up)."""

    def shared(self, event: str, records: int = 1) -> None:
        """Shared queues' records: ``acquired``, ``accepted``, ``released``, ``rejected``."""

    def delivered_times(self, count: int) -> None:
        """A shared record acquired here had been delivered ``count`` times (1: first)."""


class MaterializerHooks:
    """No-op hooks of the materializer."""

    def applied(self, rows: int, seconds: float, lag: Mapping[int, int]) -> None:
        """A batch of ``rows`` went to the store in ``seconds``; ``lag`` per partition."""

    def dead_lettered(self, reason: str) -> None: ...


class PrometheusMaterializerHooks(MaterializerHooks):
    """The materializer's Prometheus metrics (see taskstream.metrics)."""

    def applied(self, rows: int, seconds: float, lag: Mapping[int, int]) -> None:
        metrics.STORE_WRITE_SECONDS.observe(seconds)
        metrics.RESULTS_APPLIED.inc(rows)
        for partition, behind in lag.items():
            metrics.RESULTS_LAG.labels(str(partition)).set(behind)

    def dead_lettered(self, reason: str) -> None:
        metrics.TASKS_DEAD_LETTERED.labels(reason).inc()


class _TaskMetrics:
    """One task's metrics, counted locally and added to Prometheus by ``flush()``.

    Updating a prometheus-client metric takes a lock per call (and a bucket scan per
    histogram observation): several per task, a noticeable share of a short task's cost. The
    worker flushes with every periodic commit, so a scrape lags by a commit interval at most.
    """

    __slots__ = (
        "failed",
        "latency",
        "n_failed",
        "n_retried",
        "n_started",
        "n_succeeded",
        "retried",
        "run_seconds",
        "started",
        "succeeded",
    )

    def __init__(self, name: str) -> None:
        # labels() costs a lock and a dict lookup with tuple building: once per task name.
        self.started = metrics.TASKS_STARTED.labels(name)
        self.succeeded = metrics.TASKS_SUCCEEDED.labels(name)
        self.failed = metrics.TASKS_FAILED.labels(name)
        self.retried = metrics.TASKS_RETRIED.labels(name)
        self.run_seconds = metrics.HistogramBatch(metrics.TASK_RUN_SECONDS.labels(name))
        self.latency = metrics.HistogramBatch(metrics.TASK_LATENCY_SECONDS.labels(name))
        self.n_started = self.n_succeeded = self.n_failed = self.n_retried = 0

    def flush(self) -> None:
        for counter, count in (
            (self.started, self.n_started),
            (self.succeeded, self.n_succeeded),
            (self.failed, self.n_failed),
            (self.retried, self.n_retried),
        ):
            if count:
                counter.inc(count)
        self.n_started = self.n_succeeded = self.n_failed = self.n_retried = 0
        self.run_seconds.flush()
        self.latency.flush()


class PrometheusHooks(WorkerHooks):
    """The worker's Prometheus metrics (see taskstream.metrics and docs/operations.md)."""

    def __init__(self) -> None:
        self._tasks: dict[str, _TaskMetrics] = {}
        self._lock = threading.Lock()  # task threads count, the consumer thread flushes

    def _for(self, name: str) -> _TaskMetrics:
        m = self._tasks.get(name)
        if m is None:
            m = self._tasks[name] = _TaskMetrics(name)
        return m

    def flush(self) -> None:
        """Add what was counted since the last flush to the Prometheus metrics."""
        with self._lock:
            for m in self._tasks.values():
                m.flush()

    def run_started(self, run: Run) -> None:
        with self._lock:
            self._for(run.task.name).n_started += 1

    def outcome(self, run: Run, outcome: Outcome) -> None:
        result = outcome.result
        status = result.status
        with self._lock:
            m = self._for(run.task.name)
            m.run_seconds.observe((result.finished_at - result.started_at) / 1e6)
            if status is Status.SUCCESS:
                m.n_succeeded += 1
            elif status is Status.RETRY:
                m.n_retried += 1
                return
            elif status is Status.REVOKED:  # terminated while running: not a failure
                error = result.error
                self.revoked(run.task.name, error.message if error is not None else "revoked")
            else:
                m.n_failed += 1
            m.latency.observe((result.finished_at - result.enqueued_at) / 1e6)
        if outcome.dead_letter is not None:
            metrics.TASKS_DEAD_LETTERED.labels(outcome.reason.value).inc()

    def revoked(self, task: str, reason: str) -> None:
        metrics.TASKS_REVOKED.labels(task, reason).inc()

    def dead_lettered(self, reason: str) -> None:
        metrics.TASKS_DEAD_LETTERED.labels(reason).inc()

    def partitions_changed(self, event: str, assigned: int, gone: list[Partition]) -> None:
        metrics.REBALANCES.labels(event).inc()
        metrics.ASSIGNED_PARTITIONS.set(assigned)
        for topic, partition in gone:
            for gauge in (metrics.CONSUMER_LAG, metrics.CONSUMER_LAG_SECONDS):
                metrics.forget(gauge, topic, str(partition))

    def committed(self, ok: bool, lag: Mapping[Partition, int], in_flight: int) -> None:
        self.flush()
        if not ok:
            metrics.COMMIT_FAILURES.inc()
        for (topic, partition), behind in lag.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(behind)
        metrics.TASKS_IN_FLIGHT.set(in_flight)

    def commit_result(self, ok: bool) -> None:
        if not ok:
            metrics.COMMIT_FAILURES.inc()

    def lagged(self, seconds: Mapping[Partition, float]) -> None:
        for (topic, partition), age in seconds.items():
            metrics.CONSUMER_LAG_SECONDS.labels(topic, str(partition)).set(age)

    def shared(self, event: str, records: int = 1) -> None:
        metrics.SHARE_RECORDS.labels(event).inc(records)

    def delivered_times(self, count: int) -> None:
        metrics.SHARE_DELIVERIES.labels(str(count)).inc()
