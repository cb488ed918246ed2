"""The worker's spans: one per run of a task event, continuing the trace its headers carry.

:class:`TracingHooks` wraps the worker's hooks when OpenTelemetry is installed
(``taskstream.tracing.ENABLED``); otherwise the worker never builds it and never reads a
record's headers, so tracing costs nothing. The worker puts the record's trace context on
the run (``Run.trace``) when it dispatches it; ``run_started`` starts the run's span and
makes it current where the task runs; ``outcome`` ends it with the outcome and puts its
context on a retry's next attempt (``Outcome.retry_headers``), so the attempts stay one trace.
"""

from __future__ import annotations

from collections.abc import Mapping

from taskstream import tracing
from taskstream.consumer.instrumentation import Partition, WorkerHooks
from taskstream.consumer.run import Outcome, Run
from taskstream.status import Status


class TracingHooks(WorkerHooks):
    """The worker's hooks (``inner``), plus a span per run."""

    def __init__(self, inner: WorkerHooks) -> None:
        self.inner = inner

    @staticmethod
    def _span(run: Run) -> tracing.RunSpan:
        event = run.event
        return tracing.RunSpan(
            f"{event.task} process",
            run.trace,  # the parent context, from the record's headers
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": run.topic,
                "messaging.destination.partition.id": str(run.partition),
                "messaging.kafka.offset": run.offset,
                "taskstream.task": event.task,
                "taskstream.task_id": event.id,
                "taskstream.attempt": event.attempt,
                "taskstream.partition": run.partition,
                "taskstream.offset": run.offset,
            },
        )

    def run_started(self, run: Run) -> None:
        self.inner.run_started(run)
        span = self._span(run)
        span.enter()
        run.trace = span

    def outcome(self, run: Run, outcome: Outcome) -> None:
        self.inner.outcome(run, outcome)
        span = run.trace
        if not isinstance(span, tracing.RunSpan):  # never started: a worker-lost verdict
            span = self._span(run)
        result = outcome.result
        error = result.error
        failed = error is not None and result.status is Status.FAILURE
        described = f"{error.type}: {error.message}" if error is not None and failed else None
        headers = span.finish(result.status.value, described)
        run.trace = None
        if outcome.retry is not None:
            outcome.retry_headers = headers

    def revoked(self, task: str, reason: str) -> None:
        self.inner.revoked(task, reason)

    def dead_lettered(self, reason: str) -> None:
        self.inner.dead_lettered(reason)

    def partitions_changed(self, event: str, assigned: int, gone: list[Partition]) -> None:
        self.inner.partitions_changed(event, assigned, gone)

    def committed(self, ok: bool, lag: Mapping[Partition, int], in_flight: int) -> None:
        self.inner.committed(ok, lag, in_flight)

    def lagged(self, seconds: Mapping[Partition, float]) -> None:
        self.inner.lagged(seconds)

    def commit_result(self, ok: bool) -> None:
        self.inner.commit_result(ok)

    def shared(self, event: str, records: int = 1) -> None:
        self.inner.shared(event, records)

    def delivered_times(self, count: int) -> None:
        self.inner.delivered_times(count)
