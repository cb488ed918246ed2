"""A queue's topic gets the configured partitions from its first producer, and a worker
that finds one short of them says so (issue 20, major 6)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from taskstream import App
from taskstream.consumer.worker import Worker
from taskstream.kafka.topics import (
    DELAY_TIERS_S,
    control_topic,
    delay_topic,
    high_topic,
    results_topic,
    task_topic,
)
from taskstream.testing.stub_broker import StubBroker
from taskstream.worker_directory import WorkerDirectory


@pytest.fixture
def app() -> Iterator[App]:
    app = App("qt", bootstrap_servers="stub:9092", topic_prefix="qt", partitions=5)
    app.broker = StubBroker()

    @app.task(name="qt.add", queue="reports")
    def add(a: int, b: int) -> int:
        return a + b

    yield app
    app.close()


def test_the_first_send_to_a_queue_creates_its_topics_with_the_configured_partitions(
    app: App,
) -> None:
    broker = app.broker
    assert isinstance(broker, StubBroker)
    assert broker.topics() == {}
    app.tasks["qt.add"].delay(1, 2).wait_delivered(5)
    app.tasks["qt.add"].apply_async((1, 2), countdown=30).wait_delivered(5)
    topics = broker.topics()
    assert topics[task_topic("qt", "reports")] == 5
    assert topics[high_topic("qt", "reports")] == 5  # its high band (priorities)
    assert topics[results_topic("qt")] == 5
    assert all(topics[delay_topic("qt", t)] == 5 for t in DELAY_TIERS_S)
    assert control_topic("qt") in topics
    assert len(broker.records(task_topic("qt", "reports"))) == 2


def test_a_worker_finding_its_queue_topic_short_of_partitions_says_so(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    broker = app.broker
    assert isinstance(broker, StubBroker)
    broker.create_topic(task_topic("qt", "reports"), 2)  # made by someone else, with 2
    worker = Worker(app, queues=["reports"])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    directory = WorkerDirectory(app.settings, broker)
    try:
        deadline = time.monotonic() + 10
        while not directory.workers_json():
            assert time.monotonic() < deadline, "no heartbeat"
            directory.read_to_end(5)
        (seen,) = directory.workers_json()
        warnings: list[str] = seen["warnings"]  # type: ignore[assignment]
        warning, band = warnings
        assert "qt.tasks.reports has 2 partitions, fewer than the 5 configured" in warning
        # its high band (priorities), created by the worker with 5, does not match it
        assert "high band qt.tasks-high.reports has 5 partitions and its topic 2" in band
        assert warning in caplog.text
        missing = REGISTRY.get_sample_value(
            "taskstream_queue_partitions_missing", {"queue": "reports"}
        )
        assert missing == 3
    finally:
        worker.stop()
        thread.join(30)
        directory.close()
    assert broker.topics()[task_topic("qt", "reports")] == 2  # never altered behind one's back
