"""A real Prometheus scrapes a real worker: the counters and the lag gauge it stores.

Prometheus (Debian's package) runs on loopback with deploy/prometheus/prometheus.yml, changed
only where the targets come from (a static loopback address instead of Docker's DNS) and how
often it scrapes (every second, so the test is short); its alert rules load too.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskstream import App
from taskstream.consumer.materializer import Materializer
from taskstream.kafka.topics import task_topic
from tests.conftest import REPO, Scope
from tests.integration.running import running, wait_until

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy" / "prometheus"
ADDS, FAILS, NAPS = 30, 6, 24

# A worker process that also serves the metrics module's registry.
_WORKER = textwrap.dedent(
    """
    import sys
    from taskstream import metrics
    from taskstream.consumer.worker import Worker
    from tests.integration.tasks_app import app
    metrics.serve_metrics(int(sys.argv[1]), "127.0.0.1")
    worker = Worker(app, concurrency=2)
    worker.install_signal_handlers()
    worker.run()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("prometheus is missing (apt-get install prometheus)")
    return path


def scrape_config(target: str) -> dict[str, Any]:
    """deploy/'s config, with the worker job pointed at `target` and 1 s intervals."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["taskstream-worker"]
    assert worker["dns_sd_configs"][0]["names"] == ["worker"]
    port = worker["dns_sd_configs"][0]["port"]
    del worker["dns_sd_configs"]
    worker["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [worker]
    return config | {"_metrics_port": port}


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def worker_metrics(scope: Scope, tmp_path: Path) -> Iterator[str]:
    """A worker process serving /metrics; its address (host:port)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(port)], env=scope.env(), cwd=REPO
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        assert process.wait(60) == 0


@pytest.fixture
def prometheus_path() -> str:
    return prometheus_binary()


# prometheus_path comes first: a missing binary skips the test before a worker is started
# (a worker stopped while it starts exits by the signal, not 0).
@pytest.fixture
def prometheus(prometheus_path: str, worker_metrics: str, tmp_path: Path) -> Iterator[Prometheus]:
    binary = prometheus_path
    config = scrape_config(worker_metrics)
    config.pop("_metrics_port")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    shutil.copy(DEPLOY / "alerts.yml", directory / "alerts.yml")
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), 30, "Prometheus to be ready")
        yield Prometheus(url)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
            status: int = r.status
            return status == 200
    except OSError:
        return False


def test_the_deploy_scrape_config_targets_the_worker_metrics_port() -> None:
    from taskstream.config import Settings

    assert scrape_config("x:1")["_metrics_port"] == 9464
    assert Settings.load().metrics_port is None  # off unless configured


def test_prometheus_scrapes_the_task_counters_and_the_lag_of_a_real_worker(
    app: App, prometheus: Prometheus, scope: Scope
) -> None:
    topic = task_topic(scope.topic_prefix, "default")
    wait_until(lambda: prometheus.value('up{job="taskstream-worker"}') == 1, 30, "the first scrape")
    # A backlog first: naps that hold their partitions' commits back for a while, so the lag
    # gauge has something to show before it drains.
    naps = [app.tasks["itest.nap"].apply_async((0.25, i), key=f"k{i}") for i in range(NAPS)]
    adds = [app.tasks["itest.add"].delay(i, i) for i in range(ADDS)]
    fails = [app.tasks["itest.fail"].delay(f"boom {i}") for i in range(FAILS)]
    with running(Materializer(app)):
        for result in [*naps, *adds]:
            result.get(timeout=90)
        wait_until(lambda: all(app.store.get(r.id) for r in fails), 60, "the failures")
    partitions = {
        str(record.source_partition)
        for r in [*naps, *adds, *fails]
        if (record := app.store.get(r.id)) is not None
    }

    def counted(metric: str, task: str) -> float | None:
        return prometheus.value(f'sum({metric}{{job="taskstream-worker",task="{task}"}})')

    wait_until(
        lambda: (
            counted("taskstream_tasks_succeeded_total", "itest.add") == ADDS
            and counted("taskstream_tasks_succeeded_total", "itest.nap") == NAPS
            and counted("taskstream_tasks_failed_total", "itest.fail") == FAILS
        ),
        30,
        "Prometheus to have scraped every outcome",
    )
    assert counted("taskstream_tasks_started_total", "itest.add") == ADDS
    assert counted("taskstream_task_run_seconds_count", "itest.nap") == NAPS
    slow = prometheus.value('sum(taskstream_task_run_seconds_bucket{task="itest.nap",le="0.1"})')
    assert slow == 0  # every nap took 0.25 s: none in the 0.1 s bucket

    lag = f'taskstream_consumer_lag{{job="taskstream-worker",topic="{topic}"}}'
    # The backlog was seen, then drained to zero on every partition that had tasks.
    peak = prometheus.value(f"max_over_time(sum({lag})[2m:1s])")
    assert peak is not None and peak > 0
    wait_until(lambda: prometheus.value(f"sum({lag})") == 0, 30, "the lag to drain to 0")
    series = {s["metric"]["partition"] for s in prometheus.query(lag)}
    assert partitions <= series
    firing = {s["metric"]["alertname"] for s in prometheus.query('ALERTS{alertstate="firing"}')}
    assert "TaskstreamNoWorkers" not in firing


def test_the_lag_in_seconds_rises_during_a_backlog_and_returns_to_zero(
    app: App, prometheus: Prometheus, scope: Scope
) -> None:
    topic = task_topic(scope.topic_prefix, "default")
    wait_until(lambda: prometheus.value('up{job="taskstream-worker"}') == 1, 30, "the first scrape")
    seconds = f'max(taskstream_consumer_lag_seconds{{job="taskstream-worker",topic="{topic}"}})'
    wait_until(lambda: prometheus.value(seconds) == 0, 30, "the gauge at 0 while idle")
    # 40 naps of 0.2 s on two keys, at concurrency 2: each key's tasks wait their turn for
    # about 4 s, so the oldest one not yet done keeps getting older while the backlog lasts.
    naps = [app.tasks["itest.nap"].apply_async((0.2, i), key=f"k{i % 2}") for i in range(40)]
    for result in naps:
        result.wait_delivered(30)

    def rising() -> bool:
        samples = prometheus.query(f"({seconds})[1m:1s]")
        values = [float(v) for _t, v in samples[0]["values"]] if samples else []
        return any(b > a > 0 for a, b in itertools.pairwise(values))

    wait_until(rising, 60, "two scrapes of a growing lag in seconds")
    peak = prometheus.value(f"max_over_time(({seconds})[2m:1s])")
    assert peak is not None and peak >= 1.0
    print(f"taskstream_consumer_lag_seconds: peak {peak:.2f} s during the backlog")
    wait_until(lambda: prometheus.value(seconds) == 0, 60, "the lag in seconds back to 0")
    with running(Materializer(app)):
        assert [r.get(timeout=60) for r in naps] == list(range(40))
