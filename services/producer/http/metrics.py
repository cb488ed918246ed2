"""The HTTP service's metrics, as defined in taskstream.metrics (the one module that creates
metrics). ``/metrics`` serves the whole registry, so the producer-side metrics of the
service's publisher (events produced, delivery latency) come with the HTTP ones; with
``PROMETHEUS_MULTIPROC_DIR`` set, the merged values of every service process.
"""

from __future__ import annotations

from prometheus_client import generate_latest

from taskstream import metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpMetrics:
    def __init__(self) -> None:
        self.requests = metrics.HTTP_REQUESTS
        self.latency = metrics.HTTP_REQUEST_SECONDS
        self.accepted = metrics.HTTP_TASKS_ACCEPTED
        self.rejected = metrics.HTTP_TASKS_REJECTED

    def render(self) -> bytes:
        return generate_latest(metrics.metrics_registry())
