"""An in-memory publisher and a service built on it, for HTTP tests without a broker."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from taskstream import App
from taskstream.control import Control
from taskstream.envelope import TaskEvent
from taskstream.errors import DeliveryFailed, MessageTooLarge
from taskstream.kafka.topics import control_topic
from taskstream.producer.http import HttpService, HttpSettings
from taskstream.producer.http.catalog import Catalog
from taskstream.store import MemoryStore, ResultStore
from taskstream.testing.stub_broker import StubBroker


class FakePublisher:
    """Acknowledges every event at once (mode "ack"), fails it ("fail") or never answers
    ("hang"), like a broker that is up, refusing, or stopped; or refuses to produce it as
    too large ("too_large"), like a publisher with a lower message.max.bytes; or fails in a
    way nobody planned for ("crash")."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.mode = "ack"
        self.closed = False

    def publish(self, event: TaskEvent) -> Future[None]:
        if self.mode == "too_large":
            raise MessageTooLarge(event.task, 2_000_000, 1_000_000)
        if self.mode == "crash":
            raise RuntimeError("publisher bug")
        future: Future[None] = Future()
        if self.mode == "ack":
            self.events.append(event)
            future.set_result(None)
        elif self.mode == "fail":
            future.set_exception(DeliveryFailed("topic", "broker down"))
        return future

    def close(self, timeout: float = 30.0) -> int:
        self.closed = True
        return 0


def fake_service(
    app: App,
    store: ResultStore | None = None,
    http: Mapping[str, Any] | None = None,
    **settings: Any,
) -> tuple[HttpService, FakePublisher]:
    """A service of `app`'s tasks on a FakePublisher and `store` (default: a new
    MemoryStore), with `settings` changed and the HTTP settings `http` (HttpSettings' names)."""
    publisher = FakePublisher()
    s = app.settings.replace(**settings)
    limits = HttpSettings.load(settings=s, **{"publish_timeout_s": 0.2, **(http or {})})
    store = MemoryStore() if store is None else store
    # Revocations go to a stub broker's control topic.
    broker = StubBroker()
    broker.create_topic(control_topic(s.topic_prefix), 1)
    control = Control(s.replace(bootstrap_servers=s.bootstrap_servers or "stub:9092"), broker)
    service = HttpService(Catalog.from_app(app), s, publisher, store, http=limits, control=control)
    return service, publisher
