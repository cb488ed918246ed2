"""The materializer's hot path: result envelopes straight to store rows, and one batch of it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from taskstream.app import App
from taskstream.avro.codec import Codec
from taskstream.consumer.dead_letter import HEADER_PREFIX
from taskstream.consumer.materializer import Materializer, result_row
from taskstream.envelope import Envelopes, ResultEvent, TaskError
from taskstream.errors import CorruptMessage
from taskstream.kafka.topics import dead_letter_topic
from taskstream.status import Status
from taskstream.store import MemoryStore
from taskstream.store.base import ResultRecord, from_micros, to_row

T = 1_715_949_045_123_457  # µs since the epoch


def event(**fields: object) -> ResultEvent:
    values: dict[str, object] = {
        "id": "t1", "task": "billing.charge", "status": Status.SUCCESS, "attempt": 2,
        "key": None, "result": b"\xc3\x01ok", "error": None, "worker": "host:1",
        "source_topic": "app.tasks.default", "source_partition": 3, "source_offset": 99,
        "enqueued_at": T, "started_at": T + 1, "finished_at": T + 2,
    }  # fmt: skip
    values.update(fields)
    return ResultEvent(**values)  # type: ignore[arg-type]


def as_record(e: ResultEvent) -> ResultRecord:
    """What the envelope's own decoder says the event means, as a store record."""
    error = e.error
    return ResultRecord(
        e.id, e.task, e.status, e.attempt, e.result,
        error.type if error else None, error.message if error else None,
        error.traceback if error else None, e.worker, e.key,
        from_micros(e.enqueued_at), from_micros(e.started_at), from_micros(e.finished_at),
        e.source_topic, e.source_partition, e.source_offset,
    )  # fmt: skip


@pytest.mark.parametrize(
    "e",
    [
        event(),
        event(key="customer-7", status=Status.STARTED, result=None),
        event(status=Status.FAILURE, result=None, error=TaskError("ValueError", "bad", "tb")),
    ],
    ids=["success", "started with key", "failure"],
)
def test_a_result_envelope_becomes_the_row_of_what_it_decodes_to(e: ResultEvent) -> None:
    envelopes = Envelopes(Codec())
    data = envelopes.encode_result(e)
    row = result_row(envelopes.codec.decode_as(envelopes.result_schema, data))
    assert row == to_row(as_record(envelopes.decode_result(data)))
    store = MemoryStore()
    store.apply_rows([row], {})
    assert store.get(e.id) == as_record(e)


def test_an_unknown_status_is_a_corrupt_message() -> None:
    envelopes = Envelopes(Codec())
    d = envelopes.codec.decode_as(envelopes.result_schema, envelopes.encode_result(event()))
    d["status"] = "LOST"
    with pytest.raises(CorruptMessage, match="LOST"):
        result_row(d)


class FakeMessage:
    """The part of confluent_kafka.Message that the materializer reads."""

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "app.results"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)

    def headers(self) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

    def produce(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append((topic, value, dict(headers)))

    def flush(self, timeout: float) -> int:
        return 0


def test_a_batch_writes_its_rows_and_offsets_and_dead_letters_what_does_not_decode() -> None:
    app = App("app", topic_prefix="app", store="memory://")
    m = Materializer(app)
    producer = FakeProducer()
    m._producer = producer  # type: ignore[assignment]
    good = app.envelopes.encode_result(event(id="a"))
    later_started = app.envelopes.encode_result(event(id="a", status=Status.STARTED, attempt=3))
    batch = [
        FakeMessage(0, 7, good),
        FakeMessage(1, 4, b"not avro"),
        FakeMessage(0, 8, later_started),
        FakeMessage(1, 5, app.envelopes.encode_result(event(id="b", status=Status.RETRY))),
    ]
    m._runtime = SimpleNamespace(high_watermark=lambda topic, partition: 100)  # type: ignore[assignment]
    m.records(batch)  # type: ignore[arg-type]
    assert m.applied == 3
    assert app.store.get("a") == as_record(event(id="a"))
    assert app.store.count() == 2 and app.store.offsets(m.topic) == {0: 9, 1: 6}
    assert [(topic, value) for topic, value, _ in producer.sent] == [
        (dead_letter_topic("app"), b"not avro")
    ]
    assert producer.sent[0][2][HEADER_PREFIX + "offset"] == b"4"
