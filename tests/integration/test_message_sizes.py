"""Events over message.max.bytes: refused in the caller, or turned into a FAILURE that commits."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from taskstream import App, MessageTooLarge, TaskFailed
from taskstream.kafka.topics import worker_group
from tests.conftest import Scope
from tests.integration.running import worker_and_materializer

pytestmark = pytest.mark.integration


def committed_offset(scope: Scope, topic: str, partition: int) -> int:
    """The worker group's committed offset of one partition (negative: none)."""
    consumer = Consumer(
        {
            "bootstrap.servers": scope.bootstrap_servers,
            "group.id": worker_group(scope.topic_prefix),
            "enable.auto.commit": False,
        }
    )
    try:
        [position] = consumer.committed([TopicPartition(topic, partition)], timeout=30)
    finally:
        consumer.close()
    assert position.error is None
    return int(position.offset)


def test_a_result_too_large_to_publish_is_a_failure_and_its_record_commits(
    app: App, scope: Scope
) -> None:
    with worker_and_materializer(app):
        big = app.tasks["itest.blob"].apply_async((2_000_000,), key="customer-9")
        with pytest.raises(TaskFailed) as failed:
            big.get(timeout=60)
        # The partition moves on: a later task with the same key runs after it.
        behind = app.tasks["itest.add"].apply_async((1, 2), key="customer-9")
        assert behind.get(timeout=30) == 3
    assert failed.value.exc_type == "ResultTooLarge"
    assert "'itest.blob'" in failed.value.message
    assert "message.max.bytes of 1000000 bytes" in failed.value.message
    record, later = app.store.get(big.id), app.store.get(behind.id)
    assert record is not None and later is not None
    assert record.source_topic is not None and record.source_partition is not None
    assert record.source_offset is not None and later.source_offset is not None
    assert later.source_partition == record.source_partition
    # Committed past both (the worker has stopped): a restarted worker runs neither again.
    committed = committed_offset(scope, record.source_topic, record.source_partition)
    assert committed > later.source_offset > record.source_offset


def test_an_exception_too_large_to_publish_is_cut_to_fit(app: App) -> None:
    with worker_and_materializer(app):
        with pytest.raises(TaskFailed) as failed:
            app.tasks["itest.shout"].delay(3_000_000).get(timeout=60)
    error = failed.value
    assert error.exc_type == "ValueError"
    assert error.message.startswith("!!!!") and "... [truncated " in error.message
    assert error.traceback.startswith("Traceback") and "in shout" in error.traceback
    assert len(error.message) + len(error.traceback) < 1_000_000


def test_delay_with_an_argument_too_large_to_send_raises_message_too_large(app: App) -> None:
    with pytest.raises(MessageTooLarge) as too_large:
        app.tasks["itest.measure"].delay(b"x" * 2_000_000)
    error = too_large.value
    assert error.task == "itest.measure" and error.limit == 1_000_000
    assert 2_000_000 < error.size < 2_000_200
    assert f"task 'itest.measure': event of {error.size} bytes" in str(error)
    # The publisher goes on: an argument that fits is sent and runs.
    with worker_and_materializer(app):
        assert app.tasks["itest.measure"].delay(b"x" * 900_000).get(timeout=60) == 900_000
