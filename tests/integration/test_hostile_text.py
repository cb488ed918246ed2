"""Hostile text through the real pipeline: a NUL or a lone surrogate in a task's exception,
NUL in a result's id and key, a key over PostgreSQL's index limit, on SQLite and PostgreSQL.
The materializer applies what it can, dead-letters what the store refuses, and never stops:
later tasks still get their results (issue 26: one NUL stopped every later result)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from taskstream import App
from taskstream.envelope import ResultEvent, TaskError, now_micros
from taskstream.errors import TaskFailed
from taskstream.kafka.topics import dead_letter_topic, results_topic
from taskstream.status import Status
from tests.conftest import Scope
from tests.integration.running import headers_of, read_topic, wait_until, worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, scope: Scope) -> Iterator[App]:
    store = scope.store if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    app = build_app(**scope.settings(store=store))
    yield app
    app.close()


def result(task_id: str, key: str | None, message: str) -> ResultEvent:
    now = now_micros()
    return ResultEvent(
        task_id, "itest.fail", Status.FAILURE, 1, key, None,
        TaskError("ValueError", message, "tb"), "elsewhere:1", "itest.tasks", 0, 0,
        now, now, now,
    )  # fmt: skip


def test_hostile_text_in_results_never_stops_the_materializer(app: App, scope: Scope) -> None:
    too_long = os.urandom(6000).hex()  # over PostgreSQL's btree entry limit, incompressible
    # Result events from another producer, as any client of the topic could write them.
    planted = [
        result("nul\x00id", "nul\x00key", "nul \x00 message"),
        result("long-key", too_long, "a key no PostgreSQL index holds"),
    ]
    with worker_and_materializer(app, concurrency=2):
        producer = Producer({"bootstrap.servers": scope.bootstrap_servers})
        for e in planted:
            producer.produce(results_topic(scope.topic_prefix), app.envelopes.encode_result(e),
                             e.id)  # fmt: skip
        assert producer.flush(30) == 0
        odd = app.tasks["itest.fail_oddly"].delay("boom")
        plain = app.tasks["itest.fail"].delay("nul \x00 in an argument")
        later = app.tasks["itest.add"].delay(2, 3)
        assert later.get(timeout=60) == 5
        with pytest.raises(TaskFailed) as failed:
            odd.get(timeout=30)
        assert failed.value.message in ("boom \x00 \ufffd", "boom \ufffd \ufffd")
        with pytest.raises(TaskFailed) as failed:
            plain.get(timeout=30)
        assert "in an argument" in failed.value.message
        wait_until(lambda: app.store.get("nul\x00id") is not None, 30, "the planted NUL id")
        stored = app.store.get("nul\x00id")
        assert stored is not None and stored.key in ("nul\x00key", "nul\ufffdkey")
    if app.store.get("long-key") is None:  # PostgreSQL refused it: it is a dead letter
        (letter,) = read_topic(scope, dead_letter_topic(scope.topic_prefix), 1)
        headers = headers_of(letter)
        assert headers["taskstream.reason"] == b"unstorable" and letter.key() == b"long-key"
