"""The send side's hot path: task ids, delivery handles, the background-polling producer."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Message

from taskstream import App, DeliveryFailed
from taskstream.kafka.producer import EventProducer
from taskstream.producer.publisher import Delivery, PrometheusPublisherHooks
from taskstream.result import AsyncResult
from taskstream.task import new_task_id

NOWHERE = "127.0.0.1:9"  # nothing listens on the discard port


def make_delivery(wake: threading.Event | None = None) -> Delivery:
    woken = wake or threading.Event()
    return Delivery(
        threading.Lock(),
        woken.set,
        "t.tasks.default",
        PrometheusPublisherHooks().for_task("t.noop", "default"),
        time.perf_counter(),
    )


def failed(delivery: Delivery) -> None:
    delivery.report(KafkaError(KafkaError._MSG_TIMED_OUT), None)  # type: ignore[arg-type]


def acknowledged(delivery: Delivery) -> None:
    delivery.report(None, None)  # type: ignore[arg-type]


def test_task_ids_are_distinct_random_uuid4_text() -> None:
    ids = [new_task_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_threads_drawing_task_ids_at_once_never_get_the_same_one() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(out: list[str]) -> None:
        out.extend(new_task_id() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(out,)) for out in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in drawn for i in out]
    assert len(set(everything)) == len(everything) == 12000


def test_a_delivery_resolves_to_none_once_acknowledged() -> None:
    delivery = make_delivery()
    assert not delivery.done()
    with pytest.raises(TimeoutError):
        delivery.result(0)
    acknowledged(delivery)
    assert delivery.done()
    result: Callable[[float], object] = delivery.result  # the value, whatever its annotation
    assert result(0) is None
    assert delivery.exception() is None


def test_a_failed_delivery_raises_delivery_failed_naming_the_topic() -> None:
    delivery = make_delivery()
    failed(delivery)
    with pytest.raises(DeliveryFailed) as raised:
        delivery.result()
    assert "t.tasks.default" in str(raised.value)
    assert isinstance(delivery.exception(), DeliveryFailed)


def test_a_thread_waiting_for_a_delivery_wakes_the_poller_and_wakes_when_it_resolves() -> None:
    wake = threading.Event()
    delivery = make_delivery(wake)
    threading.Timer(0.05, acknowledged, (delivery,)).start()
    result: Callable[[float], object] = delivery.result  # the value, whatever its annotation
    assert result(5) is None
    assert wake.is_set()


def test_done_callbacks_run_once_whether_added_before_or_after_the_report() -> None:
    delivery = make_delivery()
    calls: list[str] = []
    delivery.add_done_callback(lambda d: calls.append("before"))
    acknowledged(delivery)
    delivery.add_done_callback(lambda d: calls.append("after"))
    assert calls == ["before", "after"]


def test_a_failing_done_callback_is_logged_and_never_reaches_the_producer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivery = make_delivery()

    def boom(_d: Delivery) -> None:
        raise RuntimeError("boom")

    delivery.add_done_callback(boom)
    with caplog.at_level(logging.ERROR):
        acknowledged(delivery)
    assert delivery.done()
    assert "raised" in caplog.text


def test_get_raises_delivery_failed_and_status_is_failure_when_the_event_never_arrived() -> None:
    app = App("t", store="memory://", bootstrap_servers=NOWHERE)
    delivery = make_delivery()
    result: AsyncResult[int] = AsyncResult("some-id", app, delivery)
    assert result.status == "PENDING"
    failed(delivery)
    with pytest.raises(DeliveryFailed):
        result.get(timeout=5)
    with pytest.raises(DeliveryFailed):
        result.wait_delivered(0)
    assert result.status == "FAILURE"
    app.close()


def test_a_delivery_callback_that_produces_again_does_not_poll_inside_the_poll() -> None:
    # confluent-kafka keeps one call state per thread: a produce() that polled from inside a
    # delivery callback would crash the interpreter at the outer poll's next callback.
    producer = EventProducer(
        {"bootstrap.servers": NOWHERE, "message.timeout.ms": 200, "log_level": 0},
        background_poll=True,
    )
    reports: list[bool] = []

    def again(err: KafkaError | None, msg: Message) -> None:
        reports.append(err is None)
        if len(reports) <= 20:  # each of the first reports sends one more event
            producer.produce("t", b"again", b"k", on_delivery=again)

    try:
        for _ in range(20):
            producer.produce("t", b"first", b"k", on_delivery=again)
        deadline = time.monotonic() + 20
        while len(reports) < 40 and time.monotonic() < deadline:
            producer.flush(0.5)
    finally:
        producer.close(1)
    assert reports == [False] * 40
