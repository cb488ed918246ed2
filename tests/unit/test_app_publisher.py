"""How an app gets its publisher: injected, or the Kafka one found by entry point."""

from __future__ import annotations

from concurrent.futures import Future

from taskstream import App, AsyncResult
from taskstream.envelope import TaskEvent
from taskstream.publishing import default_publisher_factory


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
