"""The metrics module: names by convention, the exposition, multiprocess merging."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from taskstream import metrics
from taskstream.config import Settings
from tests.conftest import REPO

# name in the exposition (without _total), type, labels: the contract docs/operations.md documents.
EXPECTED = {
    "TASKS_STARTED": ("taskstream_tasks_started", Counter, ("task",)),
    "TASKS_SUCCEEDED": ("taskstream_tasks_succeeded", Counter, ("task",)),
    "TASKS_FAILED": ("taskstream_tasks_failed", Counter, ("task",)),
    "TASKS_RETRIED": ("taskstream_tasks_retried", Counter, ("task",)),
    "TASKS_REVOKED": ("taskstream_tasks_revoked", Counter, ("task", "reason")),
    "TASKS_DEAD_LETTERED": ("taskstream_tasks_dead_lettered", Counter, ("reason",)),
    "TASK_RUN_SECONDS": ("taskstream_task_run_seconds", Histogram, ("task",)),
    "TASK_LATENCY_SECONDS": ("taskstream_task_end_to_end_seconds", Histogram, ("task",)),
    "TASKS_IN_FLIGHT": ("taskstream_tasks_in_flight", Gauge, ()),
    "CONSUMER_LAG": ("taskstream_consumer_lag", Gauge, ("topic", "partition")),
    "CONSUMER_LAG_SECONDS": ("taskstream_consumer_lag_seconds", Gauge, ("topic", "partition")),
    "REBALANCES": ("taskstream_rebalances", Counter, ("event",)),
    "ASSIGNED_PARTITIONS": ("taskstream_assigned_partitions", Gauge, ()),
    "QUEUE_PARTITIONS_MISSING": ("taskstream_queue_partitions_missing", Gauge, ("queue",)),
    "COMMIT_FAILURES": ("taskstream_commit_failures", Counter, ()),
    "SHARE_RECORDS": ("taskstream_share_records", Counter, ("event",)),
    "SHARE_DELIVERIES": ("taskstream_share_deliveries", Counter, ("delivery",)),
    "EVENTS_PRODUCED": ("taskstream_events_produced", Counter, ("task", "queue")),
    "EVENTS_FAILED": ("taskstream_events_failed", Counter, ("task", "queue")),
    "DELIVERY_SECONDS": ("taskstream_delivery_seconds", Histogram, ("queue",)),
    "RESULTS_APPLIED": ("taskstream_results_applied", Counter, ()),
    "STORE_WRITE_SECONDS": ("taskstream_store_write_seconds", Histogram, ()),
    "RESULTS_LAG": ("taskstream_results_lag", Gauge, ("partition",)),
    "HTTP_REQUESTS": ("taskstream_http_requests", Counter, ("route", "method", "status")),
    "HTTP_REQUEST_SECONDS": ("taskstream_http_request_seconds", Histogram, ("route",)),
    "HTTP_TASKS_ACCEPTED": ("taskstream_http_tasks_accepted", Counter, ("task",)),
    "HTTP_TASKS_REJECTED": ("taskstream_http_tasks_rejected", Counter, ("reason",)),
    "BEAT_LAST_TICK": ("taskstream_beat_last_tick_timestamp_seconds", Gauge, ("entry",)),
    "BEAT_TICKS": ("taskstream_beat_ticks", Counter, ("entry",)),
    "BEAT_LEADER": ("taskstream_beat_leader", Gauge, ()),
}


def every_metric() -> dict[str, Counter | Gauge | Histogram]:
    return {
        name: value
        for name, value in vars(metrics).items()
        if isinstance(value, Counter | Gauge | Histogram)
    }


def test_the_module_defines_exactly_the_documented_metrics() -> None:
    defined = every_metric()
    assert set(defined) == set(EXPECTED)
    for attr, (name, kind, labels) in EXPECTED.items():
        metric = defined[attr]
        assert isinstance(metric, kind), attr
        assert metric._name == name, attr
        assert tuple(metric._labelnames) == labels, attr
        assert metric._documentation.strip(), f"{attr} has no HELP text"


def test_names_follow_prometheus_conventions() -> None:
    for attr, metric in every_metric().items():
        assert metric._name.startswith("taskstream_"), attr
        if isinstance(metric, Histogram):
            assert metric._name.endswith("_seconds"), f"{attr}: histograms are in seconds"
        if isinstance(metric, Counter):
            assert not metric._name.endswith("_total"), f"{attr}: the client appends _total"


def test_histogram_buckets_span_milliseconds_to_minutes() -> None:
    assert metrics.TASK_BUCKETS[0] <= 0.001 and metrics.TASK_BUCKETS[-1] >= 300
    assert list(metrics.TASK_BUCKETS) == sorted(metrics.TASK_BUCKETS)


def test_the_exposition_carries_every_metric_with_its_values() -> None:
    metrics.TASKS_SUCCEEDED.labels(task="unit.metrics").inc(3)
    metrics.CONSUMER_LAG.labels(topic="unit.tasks.default", partition="7").set(42)
    metrics.TASK_RUN_SECONDS.labels(task="unit.metrics").observe(0.02)
    text = generate_latest(REGISTRY).decode()
    for name, kind, _labels in EXPECTED.values():
        type_name = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}[kind]
        exposed = f"{name}_total" if kind is Counter else name
        assert f"# TYPE {exposed} {type_name}" in text, name
        assert f"# HELP {exposed} " in text, name
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("taskstream_tasks_succeeded_total", (("task", "unit.metrics"),))
    assert samples[key] >= 3
    lag = ("taskstream_consumer_lag", (("partition", "7"), ("topic", "unit.tasks.default")))
    assert samples[lag] == 42
    bucket = ("taskstream_task_run_seconds_bucket", (("le", "0.025"), ("task", "unit.metrics")))
    assert samples[bucket] >= 1


def test_a_histogram_batch_exposes_what_the_same_observe_calls_would() -> None:
    registry = CollectorRegistry()
    direct = Histogram("unit_direct", "d", ["task"], buckets=metrics.TASK_BUCKETS,
                       registry=registry)  # fmt: skip
    batched = Histogram("unit_batched", "b", ["task"], buckets=metrics.TASK_BUCKETS,
                        registry=registry)  # fmt: skip
    batch = metrics.HistogramBatch(batched.labels("t"))
    # Bounds themselves (le is inclusive), between them, below the first, above the last.
    amounts = [0.0, 0.001, 0.0011, 0.025, 0.3, 599.9, 600.0, 1e6, 0.0005, 0.001]
    for i, amount in enumerate(amounts):
        direct.labels("t").observe(amount)
        batch.observe(amount)
        if i == 4:
            batch.flush()  # twice: flushing adds, and starts again from zero
    batch.flush()
    batch.flush()  # nothing pending: no change

    def samples(name: str) -> dict[tuple[str, str], float]:
        return {
            (s.name.removeprefix(name), s.labels.get("le", "")): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            if family.name == name
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert samples("unit_batched") == samples("unit_direct")
    assert samples("unit_batched")[("_count", "")] == len(amounts)


def test_metrics_port_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().metrics_port is None
    monkeypatch.setenv("TASKSTREAM_METRICS_PORT", "9464")
    assert Settings.load().metrics_port == 9464


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


_CHILD = textwrap.dedent(
    """
    import sys
    from taskstream import metrics
    metrics.TASKS_SUCCEEDED.labels(task="mp").inc(int(sys.argv[1]))
    metrics.TASKS_IN_FLIGHT.set(int(sys.argv[1]))
    metrics.CONSUMER_LAG.labels(topic="t", partition="0").set(int(sys.argv[1]) * 10)
    """
)

_SERVER = textwrap.dedent(
    """
    import sys
    from taskstream import metrics
    metrics.serve_metrics(int(sys.argv[1]), "127.0.0.1")
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes stdin
    """
)


def test_several_processes_report_one_merged_set_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO), "PATH": ""}
    for n in (2, 5):
        subprocess.run([sys.executable, "-c", _CHILD, str(n)], env=env, check=True, timeout=60)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)
        assert server.stdout is not None
        server.stdout.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("taskstream_tasks_succeeded_total", (("task", "mp"),))] == 7
    # Nobody marked the exited children dead (a supervisor's job), so their gauges still count.
    lag = ("taskstream_consumer_lag", (("partition", "0"), ("topic", "t")))
    assert samples[lag] == 50
    assert samples[("taskstream_tasks_in_flight", ())] == 7
