"""The HTTP service's Prometheus metrics: the one place that creates them.

Each service instance has its own registry (so tests can run several); with
``--workers N`` every process reports its own figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "taskstream_http_requests", "HTTP requests answered",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "taskstream_http_request_seconds", "Time to answer an HTTP request",
            ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
        )  # fmt: skip
        self.accepted = Counter(
            "taskstream_http_tasks_accepted", "Task events acknowledged by the broker",
            ["task"], registry=self.registry,
        )  # fmt: skip
        self.rejected = Counter(
            "taskstream_http_tasks_rejected", "Task submissions answered with an error",
            ["reason"], registry=self.registry,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
