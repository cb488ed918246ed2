"""Results that expire (result_expires) and forget(): the stores, the materializer, topics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import taskstream.testing
from taskstream import App, clock
from taskstream.config import Settings
from taskstream.errors import ConfigError
from taskstream.kafka.topics import results_topic, topic_specs
from taskstream.status import Status
from taskstream.store import MemoryStore, ResultStore
from tests.unit.store_records import record

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_expire_deletes_the_oldest_outcomes_first_a_batch_at_a_time(store: ResultStore) -> None:
    old = [record(f"old-{i}", finished_at=T0 + timedelta(seconds=i)) for i in range(5)]
    young = record("young", finished_at=T0 + timedelta(days=2))
    store.apply([*old, young, record("revoked", Status.REVOKED, finished_at=T0)], {})
    cutoff = T0 + timedelta(days=1)
    assert store.expire(cutoff, limit=2) == 2
    assert store.get("revoked") is None and store.get("old-0") is None  # the oldest went
    assert store.expire(cutoff, limit=2) == 2
    assert store.expire(cutoff, limit=2) == 2
    assert store.expire(cutoff, limit=2) == 0
    assert store.count() == 1 and store.get("young") == young


def test_forget_deletes_outcomes_by_id(store: ResultStore) -> None:
    store.apply([record("a", finished_at=T0), record("b", finished_at=T0)], {})
    assert store.forget(["a", "a", "missing"]) == 1
    assert store.get("a") is None and store.get("b") is not None
    assert store.forget([]) == 0


def test_result_expires_sets_the_results_topic_to_compact_and_delete() -> None:
    specs = {s.name: s for s in topic_specs("ts", ["default"], 12, 1, result_expires_s=3600)}
    assert specs["ts.results"].config == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(3_600_000 + 86_400_000),  # above the expiry: the store goes first
    }
    kept = {s.name: s for s in topic_specs("ts", ["default"], 12, 1, result_expires_s=None)}
    assert kept["ts.results"].config == {"cleanup.policy": "compact"}
    control = specs["ts.control"]
    assert control.partitions == 1
    assert control.config == {"cleanup.policy": "compact,delete", "retention.ms": "10800000"}


def test_result_expires_defaults_to_a_day_and_zero_keeps_results_forever() -> None:
    assert Settings.load({}).result_expires == 86_400
    assert Settings.load({"TASKSTREAM_RESULT_EXPIRES": "0"}).result_expires == 0
    with pytest.raises(ConfigError, match="result_expires"):
        Settings.load({}, result_expires=-1)
    with pytest.raises(ConfigError, match="revoke_expires_s"):
        Settings.load({}, revoke_expires_s=60)


@pytest.fixture
def app() -> Iterator[App]:
    app = App(
        "unit", bootstrap_servers=None, topic_prefix="unit", partitions=3, result_expires=3600
    )

    @app.task(name="unit.add")
    def add(a: int, b: int) -> int:
        return a + b

    yield app
    app.close()


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_materializer_deletes_outcomes_older_than_result_expires(app: App) -> None:
    app.settings = app.settings.replace(result_expires=20)  # swept every 5 s
    with taskstream.testing.run(app) as stub:
        old = app.tasks["unit.add"].delay(1, 2)
        assert old.get(timeout=10) == 3
        stub.advance(15)
        young = app.tasks["unit.add"].delay(2, 2)
        assert young.get(timeout=10) == 4
        stub.advance(10)  # old is 25 s old, young 10 s (plus the real seconds this takes)
        wait_for(lambda: app.store.get(old.id) is None, timeout=30)
        assert app.store.get(young.id) is not None
        assert old.status == Status.PENDING.value  # as Celery: an unknown id reads PENDING
        assert stub.materializer.expired == 1


def test_forget_removes_a_result_from_the_store_and_tombstones_it(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        r = app.tasks["unit.add"].delay(1, 2)
        kept = app.tasks["unit.add"].delay(3, 4)
        assert r.get(timeout=10) == 3 and kept.get(timeout=10) == 7
        r.forget()
        assert r.info is None
        stub.join()  # the materializer applied the tombstone too
        assert app.store.get(r.id) is None and app.store.get(kept.id) is not None
        last = [m for m in stub.broker.records(results_topic("unit")) if m.key() == r.id.encode()]
        assert last[-1].value() is None


def test_a_tombstone_drops_the_rows_before_it_in_its_batch_only(app: App) -> None:
    from taskstream.consumer.materializer import Materializer

    envelopes = app.envelopes
    store = MemoryStore()
    materializer = Materializer(app, store)

    class FakeMessage:
        def __init__(self, offset: int, key: str, value: bytes | None) -> None:
            self._offset, self._key, self._value = offset, key, value

        def topic(self) -> str:
            return "unit.results"

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return self._offset

        def key(self) -> bytes:
            return self._key.encode()

        def value(self) -> bytes | None:
            return self._value

    from taskstream.envelope import ResultEvent

    def result(task_id: str) -> bytes:
        now = clock.now_micros()
        event = ResultEvent(
            task_id, "unit.add", Status.SUCCESS, 1, None, None, None, "w", "t", 0, 0, now, now, now
        )
        return envelopes.encode_result(event)

    class Runtime:
        def high_watermark(self, topic: str, partition: int) -> int | None:
            return None

    materializer._runtime = Runtime()  # type: ignore[assignment]
    batch = [
        FakeMessage(0, "a", result("a")),
        FakeMessage(1, "b", result("b")),
        FakeMessage(2, "a", None),
        FakeMessage(3, "b", None),
        FakeMessage(4, "b", result("b")),
    ]
    materializer.records(batch)  # type: ignore[arg-type]
    assert store.get("a") is None and store.get("b") is not None
    assert store.offsets("unit.results") == {0: 5}


def test_the_cli_answers_an_unknown_or_expired_id_as_http_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from taskstream.cli import main

    monkeypatch.setenv("TASKSTREAM_STORE", "memory://")
    assert main(["result", "no-such-id"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["task_id"] == "no-such-id"
    assert out["error"]["code"] == "unknown_task_id"  # the code of HTTP's 404
    assert "expired" in out["error"]["message"]


def test_the_cli_shows_a_result_without_the_app_by_its_schema_file_or_as_stored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """`taskstream result ID` without --app (issue 20, minor 9): the envelope's fields, the
    value decoded by tasks/<name>.result.avsc in the schemas directory, else as stored."""
    import json

    from taskstream.cli import main
    from taskstream.cli.schema_files import export
    from taskstream.store import open_store

    app = App("unit", schemas_dir=str(tmp_path / "schemas"))

    @app.task(name="unit.pair")
    def pair(a: int) -> dict[str, int]:
        return {"a": a}

    url = f"sqlite:///{tmp_path / 'outcomes.db'}"
    with open_store(url) as store:
        data = app.tasks["unit.pair"].encode_result({"a": 7})
        store.apply([record("t-9", task="unit.pair", result=data)], {})
    monkeypatch.setenv("TASKSTREAM_STORE", url)
    assert main(["result", "t-9"]) == 0  # no schema anywhere: the value as stored
    out = json.loads(capsys.readouterr().out)
    assert out["task_id"] == "t-9" and out["status"] == "SUCCESS"
    assert out["result"]["avro_base64"] and "unit.pair.result.avsc" in out["result"]["note"]
    export(app, tmp_path / "schemas")
    monkeypatch.setenv("TASKSTREAM_SCHEMAS_DIR", str(tmp_path / "schemas"))
    assert main(["result", "t-9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == {"a": 7}
