"""Any Avro library and any Kafka client can speak taskstream's wire format.

A bare confluent-kafka producer sends a task event that plain fastavro encoded from the
exported schema files, a taskstream worker runs it, and a bare consumer reads the result
event back for plain fastavro to decode: no taskstream code on the outside of the wire.
(Debian's kcat, built on librdkafka 2.0, cannot negotiate API versions with the embedded
broker, so the outside client here is confluent-kafka without taskstream.)
"""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from taskstream.schema_files import export
from taskstream.topics import results_topic, task_topic
from tests.conftest import Scope
from tests.integration.running import worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


def load(path: Path) -> tuple[Any, bytes]:
    schema = parse_schema(json.loads(path.read_text()))
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    return schema, b"\xc3\x01" + fp


def encode(path: Path, datum: Any) -> bytes:
    schema, header = load(path)
    out = io.BytesIO(header)
    out.seek(len(header))
    schemaless_writer(out, schema, datum)
    return out.getvalue()


def decode(path: Path, data: bytes) -> Any:
    schema, header = load(path)
    assert data[:10] == header, "marker and fingerprint"
    return schemaless_reader(io.BytesIO(data[10:]), schema, None)


def test_a_bare_kafka_client_and_plain_fastavro_talk_to_a_worker(
    scope: Scope, tmp_path: Path
) -> None:
    app = build_app(**scope.settings())
    schemas = tmp_path / "schemas"
    export(app, schemas)
    task_id = str(uuid.uuid4())
    event = encode(
        schemas / "task_event.avsc",
        {
            "id": task_id, "task": "itest.add", "queue": "default", "key": None, "attempt": 1,
            "enqueued_at": time.time_ns() // 1000, "not_before": None,
            "args": encode(schemas / "tasks" / "itest.add.args.avsc", {"a": 40, "b": 2}),
        },
    )  # fmt: skip
    app.ensure_topics()
    producer = Producer({"bootstrap.servers": scope.bootstrap_servers})
    producer.produce(task_topic(scope.topic_prefix, "default"), event, task_id)
    assert producer.flush(30) == 0
    try:
        with worker_and_materializer(app):
            assert app.result(task_id).get(timeout=60) == 42
    finally:
        app.close()
    consumer = Consumer(
        {"bootstrap.servers": scope.bootstrap_servers, "group.id": f"{scope.topic_prefix}.outside",
         "auto.offset.reset": "earliest", "session.timeout.ms": 6000}
    )  # fmt: skip
    consumer.subscribe([results_topic(scope.topic_prefix)])
    try:
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None and message.error() is None
    finally:
        consumer.close()
    assert message.key() == task_id.encode()
    result = decode(schemas / "result_event.avsc", message.value() or b"")
    assert result["id"] == task_id and result["status"] == "SUCCESS"
    assert decode(schemas / "tasks" / "itest.add.result.avsc", result["result"]) == 42
