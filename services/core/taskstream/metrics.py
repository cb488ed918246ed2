"""Prometheus metrics: the one module that creates them.

Every metric of the worker, the producer side and the materializer is defined here, once, on
prometheus-client's default registry; the components import the objects and update them.
Names follow Prometheus conventions: a ``taskstream_`` prefix, base units (seconds),
``_total`` on counters (prometheus-client adds it to a Counter's name in the exposition).

``serve_metrics(port)`` exposes them over HTTP. When ``PROMETHEUS_MULTIPROC_DIR`` is set
(prometheus-client's own variable: every process of one service writes its values to files
in that directory), it serves the merged values of all the processes instead of its own, so
a worker or service running several processes reports one coherent set. Each gauge says how
it merges (``multiprocess_mode``); outside multiprocess mode that argument changes nothing.
``live*`` modes only count processes that are alive: a supervisor should call
``prometheus_client.multiprocess.mark_process_dead(pid)`` for each child that exits, and
clear the directory when the service starts.
"""

from __future__ import annotations

import bisect

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

from taskstream.config import prometheus_multiproc_dir

# Task timing: from a millisecond no-op to a ten-minute job.
TASK_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# Broker acknowledgements: sub-millisecond to the 30 s default delivery timeout.
DELIVERY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# One store transaction (a batch of up to 2000 rows and its offsets).
STORE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# -- worker ---------------------------------------------------------------------------------

TASKS_STARTED = Counter("taskstream_tasks_started", "Tasks a worker began to run", ["task"])
TASKS_SUCCEEDED = Counter(
    "taskstream_tasks_succeeded", "Tasks that returned a value (SUCCESS published)", ["task"]
)
TASKS_FAILED = Counter(
    "taskstream_tasks_failed", "Tasks that raised and will not be retried (FAILURE)", ["task"]
)
TASKS_RETRIED = Counter(
    "taskstream_tasks_retried", "Task runs that raised and were scheduled again (RETRY)", ["task"]
)
TASKS_REVOKED = Counter(
    "taskstream_tasks_revoked",
    "Tasks that ended REVOKED on a worker, by reason: revoked or expired before they ran, "
    "terminated while running",
    ["task", "reason"],
)
TASKS_DEAD_LETTERED = Counter(
    "taskstream_tasks_dead_lettered",
    "Records sent to the dead-letter topic, by reason (undecodable, unknown_schema, "
    "unknown_task, invalid_arguments, ...)",
    ["reason"],
)
TASK_RUN_SECONDS = Histogram(
    "taskstream_task_run_seconds",
    "Time a task's code ran on the worker, in seconds",
    ["task"],
    buckets=TASK_BUCKETS,
)
TASK_LATENCY_SECONDS = Histogram(
    "taskstream_task_end_to_end_seconds",
    "From the task event's enqueue time to its final result being published, in seconds",
    ["task"],
    buckets=TASK_BUCKETS,
)
TASKS_IN_FLIGHT = Gauge(
    "taskstream_tasks_in_flight",
    "Fetched task records whose outcome is not yet acknowledged by the broker",
    multiprocess_mode="livesum",
)
CONSUMER_LAG = Gauge(
    "taskstream_consumer_lag",
    "Records of an assigned partition not yet committed: high watermark minus committed offset",
    ["topic", "partition"],
    # One owner per partition at a time; the larger value of an owner that has not yet removed
    # its series after a rebalance errs on the side of showing lag, never hiding it.
    multiprocess_mode="livemax",
)
CONSUMER_LAG_SECONDS = Gauge(
    "taskstream_consumer_lag_seconds",
    "Age of the oldest record of an assigned partition not yet done, in seconds (0 when "
    "caught up): how far behind in time the partition is",
    ["topic", "partition"],
    multiprocess_mode="livemax",  # as taskstream_consumer_lag: a stale owner shows, never hides
)
REBALANCES = Counter(
    "taskstream_rebalances",
    "Consumer group rebalance callbacks, by event (assign, revoke, lost)",
    ["event"],
)
QUEUE_PARTITIONS_MISSING = Gauge(
    "taskstream_queue_partitions_missing",
    "Partitions a queue's topic lacks against the configured count (0 when it has them all): "
    "fewer partitions cap how many workers share the queue",
    ["queue"],
    multiprocess_mode="livemax",
)
ASSIGNED_PARTITIONS = Gauge(
    "taskstream_assigned_partitions",
    "Task topic partitions currently assigned to this worker",
    multiprocess_mode="livesum",
)
COMMIT_FAILURES = Counter(
    "taskstream_commit_failures", "Offset commits the broker refused or that failed"
)
# Shared queues (share groups, KIP-932): records by what became of them here.
SHARE_RECORDS = Counter(
    "taskstream_share_records",
    "Shared queues' records this worker acquired, then acknowledged by type (accepted: an "
    "outcome is durable; rejected: delivered at the group's limit, a WorkerLost failure)",
    ["event"],  # acquired, accepted, released, rejected
)
SHARE_DELIVERIES = Counter(
    "taskstream_share_deliveries",
    "Shared queues' records this worker acquired, by their delivery count (1: the first; "
    "more: delivered before and not accepted, a worker died or a lock expired)",
    ["delivery"],  # 1 to 10 (share.delivery.count.limit is at most 10)
)

# -- producer side --------------------------------------------------------------------------

EVENTS_PRODUCED = Counter(
    "taskstream_events_produced",
    "Task events acknowledged by the broker (acks=all)",
    ["task", "queue"],
)
EVENTS_FAILED = Counter(
    "taskstream_events_failed",
    "Task events the broker did not acknowledge (DeliveryFailed)",
    ["task", "queue"],
)
DELIVERY_SECONDS = Histogram(
    "taskstream_delivery_seconds",
    "From produce() to the broker's acknowledgement of a task event, in seconds",
    ["queue"],
    buckets=DELIVERY_BUCKETS,
)

# -- HTTP service (taskstream serve) --------------------------------------------------------

HTTP_REQUESTS = Counter(
    "taskstream_http_requests", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "taskstream_http_request_seconds",
    "Time to answer an HTTP request, in seconds",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
HTTP_TASKS_ACCEPTED = Counter(
    "taskstream_http_tasks_accepted", "Task events accepted over HTTP (broker ack, 202)", ["task"]
)
HTTP_TASKS_REJECTED = Counter(
    "taskstream_http_tasks_rejected",
    "Task submissions over HTTP answered with an error",
    ["reason"],
)

# -- materializer ---------------------------------------------------------------------------

RESULTS_APPLIED = Counter("taskstream_results_applied", "Result events written to the lookup store")
STORE_WRITE_SECONDS = Histogram(
    "taskstream_store_write_seconds",
    "Time of one store transaction (a batch of rows and its offsets), in seconds",
    buckets=STORE_BUCKETS,
)
RESULTS_LAG = Gauge(
    "taskstream_results_lag",
    "Result events of a results-topic partition not yet in the store",
    ["partition"],
    multiprocess_mode="livemax",
)

# -- beat (periodic tasks) ------------------------------------------------------------------

BEAT_LAST_TICK = Gauge(
    "taskstream_beat_last_tick_timestamp_seconds",
    "Scheduled time (Unix seconds) of the last tick fired per periodic entry",
    ["entry"],
    multiprocess_mode="max",
)
BEAT_TICKS = Counter(
    "taskstream_beat_ticks", "Ticks of periodic entries fired (task events committed)", ["entry"]
)
BEAT_LEADER = Gauge(
    "taskstream_beat_leader",
    "1 while this beat replica leads (fires the ticks), else 0; summed: the leaders",
    multiprocess_mode="livesum",
)


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: the merged files of every process in multiprocess mode,
    otherwise this process's default registry."""
    directory = prometheus_multiproc_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def forget(gauge: Gauge, *labels: str) -> None:
    """Drop a gauge's child (a partition gone from this process). prometheus-client cannot
    remove one in multiprocess mode (it warns on every try): there it reads 0 instead, which
    the ``livemax`` merge hides behind the partition's new owner."""
    if prometheus_multiproc_dir() is not None:
        if labels in gauge._metrics:
            gauge.labels(*labels).set(0)
        return
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on `addr`:`port` from a daemon thread (port 0: any free port).

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) the values of every process that
    writes to that directory are served merged, whichever process serves them.
    """
    start_http_server(port, addr, registry=metrics_registry())


# -- batching on the hot path ---------------------------------------------------------------


class HistogramBatch:
    """Observations for one histogram child, gathered by the caller and added in one go.

    ``Histogram.observe`` takes two locks and scans the buckets on every call, a cost the
    worker pays per task; this keeps plain counts and adds them with ``flush()``, so the
    exposition is what the same ``observe`` calls would give. Not thread-safe: the caller
    serializes ``observe`` and ``flush``.
    """

    __slots__ = ("_child", "_counts", "_pending", "_sum", "_upper_bounds")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        # prometheus-client's own bucket bounds (ending in +Inf) and values: a bucket's
        # count is what observe() would have added to it, one by one.
        self._upper_bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._upper_bounds)
        self._sum = 0.0
        self._pending = False

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._upper_bounds, amount)] += 1
        self._sum += amount
        self._pending = True

    def flush(self) -> None:
        if not self._pending:
            return
        child, counts = self._child, self._counts
        child._sum.inc(self._sum)
        for i, count in enumerate(counts):
            if count:
                child._buckets[i].inc(count)
                counts[i] = 0
        self._sum = 0.0
        self._pending = False
