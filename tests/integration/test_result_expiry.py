"""Results that expire out of the store, and forget(), on the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from taskstream import App
from taskstream.consumer.materializer import Materializer
from taskstream.kafka.topics import results_topic
from tests.conftest import Scope
from tests.integration.running import read_topic, running, wait_until, worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
def test_results_older_than_result_expires_leave_the_store(
    scope: Scope, store_kind: str, request: pytest.FixtureRequest
) -> None:
    store = scope.store if store_kind == "sqlite" else request.getfixturevalue("postgres_url")
    app = build_app(**scope.settings(result_expires=3, store=store))  # swept every second
    app.ensure_topics()
    try:
        with worker_and_materializer(app):
            old = app.tasks["itest.add"].delay(1, 2)
            assert old.get(timeout=60) == 3
            wait_until(lambda: app.store.get(old.id) is None, 60, "the outcome to expire")
            young = app.tasks["itest.add"].delay(2, 2)
            assert young.get(timeout=60) == 4  # a new outcome is stored as usual
        assert old.status == "PENDING"  # unknown again, as in Celery
    finally:
        app.close()


def test_the_results_topic_is_created_compact_and_delete_above_the_expiry(
    scope: Scope,
) -> None:
    app = build_app(**scope.settings(result_expires=3600))
    app.ensure_topics()
    admin = AdminClient({"bootstrap.servers": scope.bootstrap_servers})
    resource = ConfigResource(ConfigResource.Type.TOPIC, results_topic(scope.topic_prefix))
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact,delete"
    assert int(configs["retention.ms"].value) == 3_600_000 + 86_400_000
    app.close()


def test_forget_removes_a_result_from_the_store_and_a_rebuild_keeps_it_gone(
    app: App, scope: Scope
) -> None:
    with worker_and_materializer(app):
        gone = app.tasks["itest.add"].delay(1, 2)
        kept = app.tasks["itest.add"].delay(3, 4)
        assert gone.get(timeout=60) == 3 and kept.get(timeout=60) == 7
        gone.forget()
        assert gone.info is None and gone.status == "PENDING"
    topic = results_topic(scope.topic_prefix)
    records = read_topic(scope, topic, 3, idle=1.0)
    mine = [m for m in records if m.key() == gone.id.encode()]
    assert mine[-1].value() is None  # the tombstone, after the outcome
    tombstone = mine[-1]
    partition, end = tombstone.partition(), (tombstone.offset() or 0) + 1

    def rebuilt_past_the_tombstone() -> bool:
        return app.store.offsets(topic).get(partition, 0) >= end  # type: ignore[arg-type]

    with running(Materializer(app, rebuild=True)):
        wait_until(rebuilt_past_the_tombstone, 60, "the rebuild past the tombstone")
        wait_until(lambda: app.store.get(kept.id) is not None, 60, "the rebuild")
    assert app.store.get(gone.id) is None
