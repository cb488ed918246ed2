"""A queue's topic on the real broker: created by its first producer with the configured
partitions, never by the broker's auto-creation (issue 20, major 6); a group that joins
right after the creation gets every partition."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from taskstream import App
from taskstream.config import Settings
from taskstream.kafka.admin import ensure_topics
from taskstream.kafka.broker import KafkaBroker
from taskstream.kafka.clients import consumer_config
from taskstream.kafka.topics import DELAY_TIERS_S, TopicSpec, delay_topic, task_topic
from tests.conftest import Scope
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_app(scope: Scope) -> Iterator[App]:
    app = build_app(**scope.settings(partitions=7))  # not the broker's default, whatever it is
    yield app  # no ensure_topics(): the first send is the first to touch the cluster
    app.close()


def test_the_first_send_creates_its_queues_topics_with_the_configured_partitions(
    fresh_app: App, scope: Scope
) -> None:
    prefix = scope.topic_prefix
    topics = [task_topic(prefix, "default"), *(delay_topic(prefix, t) for t in DELAY_TIERS_S)]
    broker = KafkaBroker()
    assert broker.partition_counts(fresh_app.settings, topics) == {}
    fresh_app.tasks["itest.add"].delay(1, 2).wait_delivered(30)
    assert broker.partition_counts(fresh_app.settings, topics) == dict.fromkeys(topics, 7)


def test_a_group_that_joins_right_after_the_creation_gets_every_partition(scope: Scope) -> None:
    """On a cluster each broker learns a new topic at its own pace; a group leader whose
    metadata came from one that had not yet assigned nothing, for good (one join in about
    fifteen on three nodes). ensure_topics returns once every broker knows the topic."""
    empty = []
    for i in range(12):
        app = build_app(**scope.settings(topic_prefix=f"{scope.topic_prefix}.r{i}"))
        topics = [f"{app.settings.topic_prefix}.t{n}" for n in range(4)]
        ensure_topics(app.settings, [TopicSpec(t, 12, scope.replication_factor) for t in topics])
        assigned = first_assignment(app.settings, topics)
        app.close()
        if assigned != [48]:
            empty.append((i, assigned))
    assert empty == [], f"joins that did not get every partition (round, assignments): {empty}"


def first_assignment(settings: Settings, topics: list[str], timeout: float = 20) -> list[int]:
    """How many partitions a new group's one member got at its first assignment."""
    assigned: list[int] = []

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned.append(len(partitions))
        consumer.assign(partitions)

    consumer = Consumer(consumer_config(settings, f"{topics[0]}.group", strategy="range"))
    try:
        consumer.subscribe(topics, on_assign=on_assign)
        deadline = time.monotonic() + timeout
        while not assigned and time.monotonic() < deadline:
            consumer.poll(0.1)
    finally:
        consumer.close()
    return assigned
