"""How an app gets its publisher and store: injected, or the Kafka one found by entry point;
and how ``App.rebound`` lends an app another broker and store for a block."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from taskstream import App, AsyncResult
from taskstream.envelope import TaskEvent
from taskstream.errors import StoreError
from taskstream.publishing import default_publisher_factory
from taskstream.store import MemoryStore
from taskstream.testing.stub_broker import StubBroker


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.closed = False

    def publish(self, event: TaskEvent) -> Future[None]:
        self.events.append(event)
        delivered: Future[None] = Future()
        delivered.set_result(None)
        return delivered

    def flush(self, timeout: float = 30.0) -> int:
        return 0

    def close(self, timeout: float = 30.0) -> int:
        self.closed = True
        return 0


def test_an_injected_publisher_factory_gets_the_app_and_sends_its_tasks() -> None:
    publisher = RecordingPublisher()
    seen: list[App] = []

    def factory(app: App) -> RecordingPublisher:
        seen.append(app)
        return publisher

    app = App("t", store="memory://", publisher_factory=factory)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    result = add.delay(2, 3)
    assert isinstance(result, AsyncResult)
    result.wait_delivered(1)
    add.delay(4, 5)
    assert seen == [app]  # opened once, on the first send
    assert [e.task for e in publisher.events] == [add.name, add.name]
    assert add.decode_args(publisher.events[0].args) == {"a": 2, "b": 3}
    app.close()
    assert publisher.closed


def test_the_default_publisher_is_the_kafka_one_declared_as_an_entry_point() -> None:
    from taskstream.producer.publisher import for_app

    assert default_publisher_factory() is for_app


def test_an_app_built_with_a_store_uses_it_and_closes_it() -> None:
    store = MemoryStore()
    app = App("t", store=store)
    assert app.store is store
    app.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("any")


def test_rebound_lends_the_app_a_broker_and_store_then_gives_back_its_own() -> None:
    publishers: list[RecordingPublisher] = []

    def factory(app: App) -> RecordingPublisher:
        publishers.append(RecordingPublisher())
        return publishers[-1]

    own_store = MemoryStore()
    app = App("t", store=own_store, publisher_factory=factory)
    own_broker, own_settings, own_publisher = app.broker, app.settings, app.publisher
    broker, store = StubBroker(), MemoryStore()
    settings = app.settings.replace(topic_prefix="lent")
    with app.rebound(broker=broker, store=store, settings=settings) as bound:
        assert bound is app
        assert (app.broker, app.store, app.settings) == (broker, store, settings)
        assert app.publisher is not own_publisher  # opened anew inside the block
    assert (app.broker, app.store, app.settings) == (own_broker, own_store, own_settings)
    assert app.publisher is own_publisher
    assert [p.closed for p in publishers] == [False, True]  # the block's own one is closed
    assert own_store.get("any") is None  # still open
    with pytest.raises(StoreError, match="closed"):
        store.get("any")
