"""Record sizes as librdkafka counts them, and runs whose result event would not fit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from taskstream import App, tracing
from taskstream.avro.codec import Codec
from taskstream.config import Settings
from taskstream.consumer.run import Outcome, Run
from taskstream.envelope import (
    Chord,
    Envelopes,
    Flow,
    FlowKind,
    Join,
    ResultEvent,
    Step,
    TaskError,
)
from taskstream.errors import (
    BrokerError,
    ConfigError,
    MessageTooLarge,
    TaskstreamError,
)
from taskstream.kafka.broker import KafkaBroker
from taskstream.kafka.clients import producer_config
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.sizes import (
    DEFAULT_MESSAGE_MAX_BYTES,
    Headers,
    format_size,
    message_max_bytes,
    record_size,
    result_event_size,
    result_fits,
    result_record_size,
)
from taskstream.kafka.topics import TopicSpec
from taskstream.producer.publisher import TaskPublisher
from taskstream.status import Status

NOWHERE = "127.0.0.1:9"  # nothing listens on the discard port
LIMIT = 1000  # the smallest message.max.bytes librdkafka accepts


@pytest.fixture
def producer() -> Iterator[Producer]:
    """A producer configured as taskstream's, with a small message.max.bytes and no broker:
    produce() checks the size synchronously, before any connection matters."""
    settings = Settings(bootstrap_servers=NOWHERE, kafka={"message.max.bytes": str(LIMIT)})
    config = producer_config(settings, log_level=0)
    assert message_max_bytes(config) == LIMIT
    p = Producer(config)
    yield p
    p.purge()
    p.flush(0)


def refused_as_too_large(producer: Producer, value: bytes, key: Any, headers: Headers) -> bool:
    try:
        if headers is None:
            producer.produce("sizes", value, key)
        else:
            producer.produce("sizes", value, key, headers=list(headers))
    except KafkaException as exc:
        assert exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
        return True
    return False


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        (None, None),
        ("3f0c6a1e-6b4e-4d3c-9a43-2f4f0f7c1d2e", None),
        ("kunde-é-ü-€-🙂", None),  # a str key counts in UTF-8 bytes
        (b"\x00\x01\x02", None),
        (None, [("taskstream.reason", b"retries-exhausted")]),
        ("k", [("a", b"x" * 63), ("b", b"x" * 64), ("c", None), ("d", "é" * 40)]),
        ("k", [("taskstream.error", b"e" * 300)]),  # a length varint of two bytes
    ],
)
def test_record_size_agrees_with_librdkafka_at_the_limit(
    producer: Producer, key: Any, headers: Headers
) -> None:
    largest = LIMIT - record_size(b"", key, headers)  # the largest value that fits
    assert record_size(b"v" * largest, key, headers) == LIMIT
    assert not refused_as_too_large(producer, b"v" * largest, key, headers)
    assert refused_as_too_large(producer, b"v" * (largest + 1), key, headers)


def test_message_max_bytes_is_librdkafkas_default_unless_set() -> None:
    assert message_max_bytes({}) == DEFAULT_MESSAGE_MAX_BYTES == 1_000_000
    settings = Settings(bootstrap_servers=NOWHERE, kafka={"message.max.bytes": "5242880"})
    assert message_max_bytes(producer_config(settings)) == 5_242_880
    with pytest.raises(ConfigError):
        message_max_bytes({"message.max.bytes": "5MB"})


_STEP = Step("s" * 36, "app.add", "default", None, b"\xc3\x01" + bytes(9), False)
_NESTED = Join(
    "g", 1, 2,
    then=[
        Flow(FlowKind.CHORD, nodes=[Flow(FlowKind.TASK, _STEP, link=[_STEP])],
             body=Flow(FlowKind.CHAIN, nodes=[Flow(FlowKind.TASK, _STEP)] * 2),
             group_id="h" * 36, errbacks=[_STEP]),
        Flow(FlowKind.GROUP, nodes=[Flow(FlowKind.TASK, _STEP, link_error=[_STEP])] * 3,
             group_id="i"),
    ],
    errbacks=[_STEP],
    outer=Join("o" * 36, 70_000, 100_000, outer=Join("p", 0, 1, then=[Flow(FlowKind.TASK, _STEP)])),
)  # fmt: skip


def result_event(**changes: Any) -> ResultEvent:
    event = ResultEvent(
        "3f0c6a1e-6b4e-4d3c-9a43-2f4f0f7c1d2e", "examples.app.add", Status.SUCCESS, 1, None,
        b"\xc3\x01" + bytes(8) + b"\x0a", None, "host:1234", "taskstream.tasks.default", 3, 41,
        1_795_000_000_000_000, 1_795_000_000_100_000, 1_795_000_000_200_000,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(event, name, value)
    return event


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"key": "customer-42", "attempt": 70, "source_partition": 0, "source_offset": 0},
        {"result": None, "status": Status.FAILURE,
         "error": TaskError("ValueError", "näh " * 50, "Traceback ...\n" * 700)},
        {"result": b"r" * 70_000, "source_offset": 2**62, "started_at": 0},
        {"task": "ünïcödé.task", "worker": "h🙂st:1", "key": ""},
        {"parent_id": "p" * 36, "root_id": "r", "group_id": "g" * 36, "group_index": 9999,
         "group_size": 10_000, "state": "PROGRESS", "meta": '{"done": 5}',
         "chord": Chord(Step("c" * 36, "app.tsum", "default", None, b"\xc3\x01" + bytes(9)),
                        [Step("e", "app.report", "q", "k", b"x" * 300, True)] * 3)},
        {"group_id": "g", "group_index": 0, "chord": Chord(Step("c", "t", "q", "k", b""))},
        {"group_id": "g", "group_index": 1, "group_size": 2, "join": _NESTED},
    ],
)  # fmt: skip
def test_result_event_size_is_the_length_of_the_encoded_event(changes: dict[str, Any]) -> None:
    event = result_event(**changes)
    encoded = Envelopes(Codec()).encode_result(event)
    assert result_event_size(event) == len(encoded)
    assert result_record_size(event) == record_size(encoded, event.id)


def test_result_fits_is_exact_at_the_limit() -> None:
    event = result_event(result=b"r" * 5000, error=None)
    size = result_record_size(event)
    assert result_fits(event, size)
    assert not result_fits(event, size - 1)
    assert result_fits(result_event(), 1000)  # decided by the bound alone


def test_sizes_read_in_decimal_units() -> None:
    assert [format_size(n) for n in (0, 999, 1000, 1_949_999, 2_000_000, 3_500_000_000)] == [
        "0 B", "999 B", "1.0 kB", "1.9 MB", "2.0 MB", "3.5 GB",
    ]  # fmt: skip


# --- runs whose result event would be too large ---------------------------------------------

app = App("sizes", bootstrap_servers=NOWHERE, store="memory://")
envelopes = Envelopes(app.codec)


@app.task(name="sizes.blob")
def blob(size: int) -> bytes:
    return b"x" * size


@app.task(name="sizes.shout")
def shout(text: str) -> int:
    raise ValueError(text)


@app.task(name="sizes.chained")
def chained(context: int) -> int:
    raise ValueError("boom") from LookupError("context " * context)


@app.task(name="sizes.flaky", autoretry_for=(ValueError,), max_retries=1)
def flaky(text: str) -> int:
    raise ValueError(text)


def run_of(task: Any, limit: int, attempt: int = 1, **kwargs: Any) -> Run:
    event = task.event(task.encode_args((), kwargs), key="k-1")
    event.attempt = attempt
    decoded = task.decode_args(event.args)
    return Run(task, event, decoded, "sizes.tasks.default", 2, 7, "host:1", message_max_bytes=limit)


def execute(run: Run) -> Outcome:
    run.enter()
    try:
        value = run.task.invoke(run.kwargs)
    except Exception as exc:
        return run.failed(exc)
    return run.succeeded(value)


def published_size(result: ResultEvent) -> int:
    """The record size of the result event as the worker would produce it."""
    return record_size(envelopes.encode_result(result), result.id)


def test_a_return_value_too_large_for_its_result_event_is_a_result_too_large_failure() -> None:
    outcome = execute(run_of(blob, DEFAULT_MESSAGE_MAX_BYTES, size=2_000_000))
    result = outcome.result
    assert result.status is Status.FAILURE and result.result is None
    assert result.error is not None and result.error.type == "ResultTooLarge"
    assert "sizes.blob" in result.error.message and "1000000 bytes" in result.error.message
    assert "result of 2000" in result.error.message  # the size it would have had
    assert outcome.retry is None and outcome.dead_letter is None
    assert published_size(result) <= DEFAULT_MESSAGE_MAX_BYTES


def test_a_return_value_that_just_fits_succeeds() -> None:
    fitting = execute(run_of(blob, DEFAULT_MESSAGE_MAX_BYTES, size=999_000)).result
    assert fitting.status is Status.SUCCESS
    size = published_size(fitting)
    exact = execute(run_of(blob, size, size=999_000)).result
    assert exact.status is Status.SUCCESS and published_size(exact) == size
    over = execute(run_of(blob, size - 1, size=999_000)).result
    assert over.status is Status.FAILURE
    assert over.error is not None and over.error.type == "ResultTooLarge"


def test_a_huge_exception_is_cut_to_fit_and_says_so() -> None:
    text = "é" * 1_500_000  # 3 MB of UTF-8, in the message and again in the traceback
    result = execute(run_of(shout, DEFAULT_MESSAGE_MAX_BYTES, text=text)).result
    assert result.status is Status.FAILURE
    error = result.error
    assert error is not None and error.type == "ValueError"
    assert published_size(result) <= DEFAULT_MESSAGE_MAX_BYTES
    assert error.message.startswith("éééé") and error.message.endswith(" MB]")
    assert "... [truncated 2." in error.message
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert "in shout" in error.traceback and "[truncated " in error.traceback
    assert error.traceback.endswith("éééé\n")
    # The two share the room: each keeps a good part of it.
    assert len(error.message.encode()) > 400_000 and len(error.traceback.encode()) > 400_000


def test_a_short_message_is_kept_whole_when_only_the_traceback_is_too_long() -> None:
    result = execute(run_of(chained, 2000, context=500)).result  # a 4 kB cause
    error = result.error
    assert error is not None and error.message == "boom"
    # Its head (the cause) and its end (what was raised last) are kept, the middle cut.
    assert error.traceback.startswith("LookupError: context context")
    raised = 'raise ValueError("boom") from LookupError("context " * context)\nValueError: boom\n'
    assert error.traceback.endswith(raised)
    assert "... [truncated 2." in error.traceback
    assert published_size(result) <= 2000


def test_an_error_that_fits_is_left_alone() -> None:
    result = execute(run_of(shout, DEFAULT_MESSAGE_MAX_BYTES, text="é" * 1000)).result
    assert result.error is not None and result.error.message == "é" * 1000
    assert "[truncated" not in result.error.traceback


def test_a_retry_of_a_huge_exception_fits_and_so_does_its_dead_letter_reason() -> None:
    text = "!" * 3_000_000
    retry = execute(run_of(flaky, DEFAULT_MESSAGE_MAX_BYTES, text=text))
    assert retry.result.status is Status.RETRY and retry.retry is not None
    assert published_size(retry.result) <= DEFAULT_MESSAGE_MAX_BYTES
    exhausted = execute(run_of(flaky, DEFAULT_MESSAGE_MAX_BYTES, attempt=2, text=text))
    assert exhausted.result.status is Status.FAILURE
    assert published_size(exhausted.result) <= DEFAULT_MESSAGE_MAX_BYTES
    assert exhausted.dead_letter is not None and len(exhausted.dead_letter) <= 4096
    assert exhausted.dead_letter.startswith("retries exhausted after 2 attempts: ValueError('!!!")
    assert "[truncated 3.0 MB]" in exhausted.dead_letter


# --- the publisher (task.delay) -------------------------------------------------------------


class _TopicsExist(KafkaBroker):
    """librdkafka's own clients, in a cluster whose topics exist (nothing is asked)."""

    def ensure_topics(
        self, settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
    ) -> list[str]:
        return []


@pytest.fixture
def publisher() -> Iterator[TaskPublisher]:
    settings = Settings(
        bootstrap_servers=NOWHERE, kafka={"message.max.bytes": "2000", "log_level": "0"}
    )
    publisher = TaskPublisher(settings, envelopes, _TopicsExist())
    yield publisher
    publisher._producer._producer.purge()
    publisher.close(0)


def test_an_event_over_the_limit_is_refused_before_it_is_produced(
    publisher: TaskPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counts produce() calls: len() of librdkafka's producer also counts the events it queues
    # as it fails to connect to NOWHERE, so it was sometimes 2 with nothing produced.
    produced: list[str] = []
    produce = EventProducer.produce

    def counted(self: EventProducer, topic: str, *args: Any, **kwargs: Any) -> None:
        produced.append(topic)
        produce(self, topic, *args, **kwargs)

    monkeypatch.setattr(EventProducer, "produce", counted)
    # No trace headers in this count (a tracing test earlier in the process may have set a
    # tracer provider, and the send would then carry a traceparent header).
    monkeypatch.setattr(tracing, "active", lambda: False)
    assert publisher.message_max_bytes == 2000
    fits = blob.event(blob.encode_args((1,), {}))
    event = blob.event(b"a" * 2000, key="customer-1")
    with pytest.raises(MessageTooLarge) as too_large:
        publisher.publish(event)
    size = record_size(envelopes.encode_task(event), "customer-1")
    assert (too_large.value.task, too_large.value.size, too_large.value.limit) == (
        "sizes.blob", size, 2000,
    )  # fmt: skip
    assert f"task 'sizes.blob': event of {size} bytes" in str(too_large.value)
    assert produced == []
    publisher.publish(fits)
    assert len(produced) == 1 and len(publisher._producer) >= 1


@pytest.mark.parametrize(
    ("code", "raised"),
    [(KafkaError.MSG_SIZE_TOO_LARGE, MessageTooLarge), (KafkaError._UNKNOWN_TOPIC, BrokerError)],
)
def test_a_kafka_exception_from_produce_reaches_the_caller_as_a_taskstream_error(
    publisher: TaskPublisher,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    raised: type[TaskstreamError],
) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        exc = KafkaException(KafkaError(code))
        raise BrokerError.wrap(exc, "producing") from exc

    monkeypatch.setattr(publisher._producer, "produce", refuse)
    with pytest.raises(raised) as caught:
        publisher.publish(blob.event(blob.encode_args((1,), {})))
    assert isinstance(caught.value.__cause__ or caught.value, KafkaException)
