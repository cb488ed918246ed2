"""Transaction markers: a transactional producer (beat, another team's Kafka Streams app)
leaves a commit or abort marker after its records. The marker takes an offset and is never
delivered, so a queue fed that way must still read lag 0 records and 0 s once its tasks are
done (issue 20, major 1), on the stub as on a cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import TopicPartition

import taskstream.testing
from taskstream import App, clock
from taskstream.envelope import TaskEvent
from taskstream.kafka.clients import producer_config
from taskstream.kafka.topics import task_topic, worker_group
from taskstream.testing.stub_broker import StubBroker, StubConsumer


@pytest.fixture
def app() -> Iterator[App]:
    app = App("txn", bootstrap_servers="stub:9092", topic_prefix="txn", partitions=3)

    @app.task(name="txn.add")
    def add(a: int, b: int) -> int:
        return a + b

    yield app
    clock.reset()


def send_in_a_transaction(app: App, pairs: list[tuple[int, int]], *, abort: bool) -> list[str]:
    """Task events of txn.add written by a transactional producer; their task ids."""
    task = app.tasks["txn.add"]
    producer: Any = app.broker.producer(
        producer_config(app.settings, **{"transactional.id": "txn.test"})
    )
    producer.init_transactions(10)
    producer.begin_transaction()
    events: list[TaskEvent] = [task.event(task.encode_args(p, {})) for p in pairs]
    for event in events:
        topic = task_topic(app.settings.topic_prefix, event.queue)
        producer.produce(topic, app.envelopes.encode_task(event), event.id)
    if abort:
        producer.abort_transaction(10)
    else:
        producer.commit_transaction(10)
    producer.flush(10)
    return [e.id for e in events]


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_stub_keeps_an_offset_for_each_marker_and_never_delivers_it() -> None:
    broker = StubBroker()
    broker.create_topic("t", 1)
    txn: Any = broker.producer({"transactional.id": "x"})
    txn.init_transactions()
    txn.begin_transaction()
    txn.produce("t", b"a", partition=0)
    txn.produce("t", b"b", partition=0)
    txn.commit_transaction()  # a, b, commit marker
    txn.begin_transaction()
    txn.produce("t", b"gone", partition=0)
    txn.abort_transaction()  # an aborted record, abort marker
    assert broker.end_offset("t", 0) == 5  # the high watermark counts them all
    assert [m.value() for m in broker.records("t")] == [b"a", b"b"]
    consumer = broker.consumer(
        {"group.id": "g", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    assert isinstance(consumer, StubConsumer)
    consumer.assign([TopicPartition("t", 0, 0)])
    read = consumer.consume(10, 0)
    assert [(m.offset(), m.value()) for m in read] == [(0, b"a"), (1, b"b")]
    assert consumer.position([TopicPartition("t", 0)])[0].offset == 5  # read past them
    consumer.commit(offsets=[TopicPartition("t", 0, 2)], asynchronous=False)
    assert broker.caught_up("g", ["t"])  # nothing but markers past the commit: no record waits


def test_a_queue_fed_by_transactions_reads_lag_0_once_its_tasks_are_done(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        ids = send_in_a_transaction(app, [(1, 2), (3, 4), (5, 6)], abort=False)
        send_in_a_transaction(app, [(7, 8)], abort=True)  # never runs
        assert [app.AsyncResult(i).get(timeout=10) for i in ids] == [3, 7, 11]
        topic = task_topic("txn", "default")
        group = worker_group("txn")
        worker = stub.worker

        def idle_at_the_end() -> bool:
            return all(
                stub.broker.committed(group, topic, p) == stub.broker.end_offset(topic, p)
                for p in range(3)
                if stub.broker.end_offset(topic, p) > 0
            ) and set(worker.lag.records.values()) == {0}

        wait_for(idle_at_the_end)
        stub.advance(60)  # the phantom's age grew with time: it must stay 0 s
        wait_for(lambda: worker.lag.seconds and set(worker.lag.seconds.values()) == {0.0})
        assert set(worker.lag.records.values()) == {0}
        assert any(
            stub.broker.end_offset(topic, p) > len(stub.broker.records(topic, p)) for p in range(3)
        )  # markers were there to skip
