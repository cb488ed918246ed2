"""The console's lag on a real broker: the worker group's committed offsets against the
high watermarks fetched (queried watermarks are wrong on the test broker, see BROKER.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskstream import App
from taskstream.console.kafka_view import backlog
from taskstream.kafka.clients import producer_config
from taskstream.kafka.topics import task_topic, worker_group
from tests.conftest import Scope
from tests.integration.running import wait_until, worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


@pytest.fixture
def app(scope: Scope) -> Iterator[App]:
    app = build_app(**scope.settings())
    app.ensure_topics()
    try:
        yield app
    finally:
        app.close()


def _lag(app: App) -> tuple[int, int]:
    """Records not yet done and the partitions whose end is known, over the task topic."""
    prefix = app.settings.topic_prefix
    parts = backlog(app, worker_group(prefix), [task_topic(prefix, "default")], timeout_s=10)
    assert len(parts) == 12
    return sum(p.records or 0 for p in parts), sum(p.end is not None for p in parts)


def test_lag_counts_the_waiting_tasks_then_falls_to_zero_once_a_worker_ran_them(
    app: App,
) -> None:
    results = [app.tasks["itest.add"].apply_async((i, 1), key=f"k{i}") for i in range(30)]
    for r in results:
        r.wait_delivered(30)
    assert _lag(app) == (30, 12)  # no worker yet: every task waits, every end is known
    prefix = app.settings.topic_prefix
    parts = backlog(app, worker_group(prefix), [task_topic(prefix, "default")], timeout_s=10)
    heads = [p for p in parts if p.head is not None]
    assert sum(p.records or 0 for p in heads) == 30 and all(p.head_time for p in heads)
    with worker_and_materializer(app):
        assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(30)]
        wait_until(lambda: _lag(app)[0] == 0, 30, "the lag to fall to zero")


def test_a_queue_fed_by_a_transactional_producer_reads_lag_zero_once_its_tasks_ran(
    app: App,
) -> None:
    """Each transaction leaves a marker after its records (beat's ticks, another team's
    Kafka Streams app): it takes an offset that no consumer gets, so high watermark minus
    committed offset stayed 1 and the age of "the oldest waiting" grew (issue 20, major 1).
    The worker commits past the markers: lag 0 records and 0 s in its heartbeats and
    metrics (worker.lag), and 0 in the console's backlog (committed offset = end)."""
    prefix = app.settings.topic_prefix
    topic = task_topic(prefix, "default")
    task = app.tasks["itest.add"]
    producer = app.broker.producer(producer_config(app.settings, **{"transactional.id": prefix}))
    producer.init_transactions(30)
    ids = []
    for n, abort in ((0, False), (1, True), (2, False)):
        producer.begin_transaction()
        events = [task.event(task.encode_args((n, i), {})) for i in range(6)]
        for event in events:
            producer.produce(topic, app.envelopes.encode_task(event), event.id)
        if abort:
            assert producer.flush(30) == 0  # in the log (abort purges what is still queued)
            producer.abort_transaction(30)  # its records are never read, its marker stays
        else:
            producer.commit_transaction(30)
            ids += [(e.id, n + i) for i, e in enumerate(events)]
    assert producer.flush(30) == 0
    with worker_and_materializer(app) as worker:
        assert [app.AsyncResult(i).get(timeout=60) for i, _ in ids] == [s for _, s in ids]

        def caught_up() -> bool:
            lag = worker.lag
            return (
                len(lag.records) == 24  # the queue's 12 partitions and its high band's
                and set(lag.records.values()) == {0}
                and set(lag.seconds.values()) == {0.0}
                and _lag(app) == (0, 12)
            )

        wait_until(caught_up, 30, "lag 0 records and 0 s past the transaction markers")
        parts = backlog(app, worker_group(prefix), [topic], timeout_s=10)
        assert all(p.committed == p.end for p in parts if p.end)  # past every marker
        assert sum(p.end or 0 for p in parts) > len(ids)  # markers and aborted records
        assert set(worker.lag.seconds.values()) == {0.0}  # still 0 s, idle
