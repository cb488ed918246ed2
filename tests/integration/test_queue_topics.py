"""A queue's topic on the real broker: created by its first producer with the configured
partitions, never by the broker's auto-creation (issue 20, major 6)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskstream import App
from taskstream.kafka import KafkaBroker
from taskstream.topics import DELAY_TIERS_S, delay_topic, task_topic
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
