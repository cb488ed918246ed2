"""How big a Kafka record is, and how big it may be: the one place that knows.

librdkafka refuses a record in ``produce()`` (MSG_SIZE_TOO_LARGE, before anything is sent)
when ``RECORD_OVERHEAD + len(key) + len(value) + headers`` is over the producer's
``message.max.bytes`` (``rd_kafka_msg_new0``). ``RECORD_OVERHEAD`` is its worst case for one
record of the v2 format, ``RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD``: varints of at most 5 bytes for
the length, key length, value length, offset delta and header count, 10 for the timestamp
delta, 1 for the attributes. A header costs its name and value plus both lengths as zig-zag
varints (``rd_kafka_header_add``). Checking first lets taskstream say which task and how big,
instead of a bare KafkaException (``delay()``) or an event that can never be published (a
worker's result).

The broker checks again, after compression, against the topic's ``max.message.bytes``: a
limit raised here must be raised there too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskstream.avro.codec import HEADER_SIZE
from taskstream.config import Settings
from taskstream.envelope import Flow, Join, ResultEvent, Step
from taskstream.errors import ConfigError

DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes, in bytes
RECORD_OVERHEAD = 36  # bytes librdkafka adds to key + value + headers for its check

Headers = Sequence[tuple[str, bytes | str | None]] | None


def message_max_bytes(config: Mapping[str, Any]) -> int:
    """The ``message.max.bytes`` of a librdkafka config (the default when it is unset)."""
    raw = config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"message.max.bytes={raw!r} is not a number of bytes") from exc


def producer_limit(settings: Settings) -> int:
    """The largest record taskstream's producers accept with these settings, in bytes.

    taskstream's producer defaults leave ``message.max.bytes`` alone, so it is the user's
    librdkafka setting or librdkafka's default (no bootstrap servers needed to know it)."""
    return message_max_bytes(settings.kafka)


def record_size(value: bytes | int, key: str | bytes | None = None, headers: Headers = None) -> int:
    """The size librdkafka compares with ``message.max.bytes`` for one record, in bytes.

    ``value`` is the value or its length; a str key counts as its UTF-8 bytes.
    """
    size = RECORD_OVERHEAD + (value if isinstance(value, int) else len(value))
    if key is not None:
        size += utf8_len(key) if isinstance(key, str) else len(key)
    for name, data in headers or ():
        if data is None:
            length = 0
        else:
            length = utf8_len(data) if isinstance(data, str) else len(data)
        size += _with_length(utf8_len(name)) + _with_length(length)
    return size


def result_event_size(event: ResultEvent) -> int:
    """The length of ``Envelopes.encode_result(event)`` without encoding it: single-object
    Avro of schemas/result_event.avsc, field by field (tests check it against the codec)."""
    size = HEADER_SIZE + _string(event.id) + _string(event.task) + 1  # 1: the status enum
    size += _varint(event.attempt)
    size += 1 + (0 if event.key is None else _string(event.key))  # 1: a union's branch
    size += 1 + (0 if event.result is None else _with_length(len(event.result)))
    error = event.error
    if error is None:
        size += 1
    else:
        size += 1 + _string(error.type) + _string(error.message) + _string(error.traceback)
    size += _string(event.worker) + _string(event.source_topic)
    size += _varint(event.source_partition) + _varint(event.source_offset)
    size += _varint(event.enqueued_at) + _varint(event.started_at) + _varint(event.finished_at)
    return size + _workflow_size(event)


# The appended workflow fields when all are null: one union branch byte each.
_NO_WORKFLOW = 9


def _workflow_size(event: ResultEvent) -> int:
    """The bytes of the result event's workflow fields (parent_id ... meta)."""
    if (
        event.parent_id is None
        and event.group_id is None
        and event.state is None
        and event.meta is None
        and event.root_id is None
        and event.join is None
    ):
        return _NO_WORKFLOW
    size = _NO_WORKFLOW
    for text in (event.parent_id, event.root_id, event.group_id, event.state, event.meta):
        size += 0 if text is None else _string(text)
    for number in (event.group_index, event.group_size):
        size += 0 if number is None else _varint(number)
    chord = event.chord
    if chord is not None:
        size += _step_size(chord.body) + _array_size([_step_size(s) for s in chord.errbacks])
    if event.join is not None:
        size += _join_size(event.join)
    return size


def _steps_size(steps: list[Step]) -> int:
    return _array_size([_step_size(s) for s in steps])


def _flow_size(flow: Flow) -> int:
    size = 1 + 1 + (0 if flow.step is None else _step_size(flow.step))  # kind, step's branch
    size += _array_size([_flow_size(n) for n in flow.nodes])
    size += 1 + (0 if flow.body is None else _flow_size(flow.body))
    size += 1 + (0 if flow.group_id is None else _string(flow.group_id))
    return size + _steps_size(flow.link) + _steps_size(flow.link_error) + _steps_size(flow.errbacks)


def _join_size(join: Join) -> int:
    """A Join record (its union branch byte is counted in _NO_WORKFLOW)."""
    size = _string(join.group_id) + _varint(join.index) + _varint(join.size)
    size += _array_size([_flow_size(f) for f in join.then]) + _steps_size(join.errbacks)
    return size + 1 + (0 if join.outer is None else _join_size(join.outer))


def _step_size(step: Step) -> int:
    size = _string(step.id) + _string(step.task) + _string(step.queue)
    size += 1 + (0 if step.key is None else _string(step.key))
    return size + _with_length(len(step.args)) + 1  # 1: immutable


def _array_size(items: list[int]) -> int:
    """An Avro array of items of these sizes: one block with its count, then the 0 end."""
    return 1 if not items else _varint(len(items)) + sum(items) + 1


def result_record_size(event: ResultEvent) -> int:
    """The record size of a result event: its value, keyed by the task id (results topic)."""
    return record_size(result_event_size(event), event.id)


# A bound on what result_record_size adds to the lengths of its strings and bytes: the
# record's overhead, the single-object header, and at most 10 bytes for each of the 16
# lengths, numbers and union branches of a result event.
_RESULT_FIXED_BOUND = RECORD_OVERHEAD + HEADER_SIZE + 16 * 10


def result_fits(event: ResultEvent, limit: int) -> bool:
    """Whether a result event's record is at most ``limit`` bytes.

    Most are far below it, and a bound from plain lengths (a character is at most 4 UTF-8
    bytes) decides those without encoding a string; the rest are sized exactly.
    """
    chars = 2 * len(event.id) + len(event.task) + len(event.worker) + len(event.source_topic)
    if event.key is not None:
        chars += len(event.key)
    error = event.error
    if error is not None:
        chars += len(error.type) + len(error.message) + len(error.traceback)
    bound = _RESULT_FIXED_BOUND + 4 * chars + (0 if event.result is None else len(event.result))
    bound += _workflow_size(event)
    return bound <= limit or result_record_size(event) <= limit


def format_size(size: int) -> str:
    """``size`` bytes for people, in decimal units as Kafka's limits are: ``1.9 MB``."""
    for unit, scale in (("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def utf8_len(text: str) -> int:
    """How many bytes ``text`` takes in UTF-8 (a lone surrogate counted as 3, never raising)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _varint(n: int) -> int:
    """Bytes of ``n`` as a zig-zag varint (Avro's int and long, Kafka's header lengths)."""
    zigzag = n << 1 if n >= 0 else (-n << 1) - 1
    return max(1, (zigzag.bit_length() + 6) // 7)


def _with_length(length: int) -> int:
    """Bytes of a length-prefixed field of ``length`` bytes."""
    return _varint(length) + length


def _string(text: str) -> int:
    return _with_length(utf8_len(text))
