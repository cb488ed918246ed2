"""Any Avro library and any Kafka client can speak taskstream's wire format.

A bare confluent-kafka producer sends a task event that plain fastavro encoded from the
exported schema files, a taskstream worker runs it, and a bare consumer reads the result
event back for plain fastavro to decode: no taskstream code on the outside of the wire.
(Debian's kcat, built on librdkafka 2.0, cannot negotiate API versions with the embedded
broker, so the outside client here is confluent-kafka without taskstream.) Apache's Python
avro writes a task event the worker runs, and a Node.js client (kafkajs + avsc, in
tests/interop/node) sends a task and reads its result.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
from confluent_kafka import Consumer, Producer
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from taskstream import App
from taskstream.cli.schema_files import export
from taskstream.kafka.topics import results_topic, task_topic
from tests.conftest import REPO, Scope
from tests.integration.running import read_topic, worker_and_materializer
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


@pytest.mark.parametrize("version", ["current", "v1"])
def test_a_task_event_written_with_apache_avro_runs_instead_of_being_dead_lettered(
    scope: Scope, app: App, tmp_path: Path, version: str
) -> None:
    """Apache's Python avro fingerprints the envelope differently (it keeps {"type":"long"}
    for timestamp-micros in its canonical form); the worker accepts its events all the same,
    written with the current envelope or with version 1 (schemas/history: an older client,
    which knows no workflow fields)."""
    avro_io = pytest.importorskip("avro.io")
    avro_schema = pytest.importorskip("avro.schema")
    schemas = tmp_path / "schemas"
    export(app, schemas)

    def single_object(path: Path, datum: Any) -> bytes:
        schema = avro_schema.parse(path.read_text())
        out = io.BytesIO()
        out.write(b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO"))
        avro_io.DatumWriter(schema).write(datum, avro_io.BinaryEncoder(out))
        return out.getvalue()

    task_id = str(uuid.uuid4())
    datum = {
        "id": task_id, "task": "itest.add", "queue": "default", "key": None, "attempt": 1,
        "enqueued_at": datetime.now(UTC), "not_before": None,
        "args": single_object(schemas / "tasks" / "itest.add.args.avsc", {"a": 40, "b": 2}),
    }  # fmt: skip
    envelope = REPO / "schemas" / "history" / "task_event.v1.avsc"
    if version == "current":
        envelope = schemas / "task_event.avsc"
        fields = json.loads(envelope.read_text())["fields"]
        datum.update({f["name"]: f["default"] for f in fields if f["name"] not in datum})
    event = single_object(envelope, datum)
    assert event[2:10] != app.envelopes.task_schema.fingerprint  # not the spec's fingerprint
    producer = Producer({"bootstrap.servers": scope.bootstrap_servers})
    producer.produce(task_topic(scope.topic_prefix, "default"), event, task_id)
    assert producer.flush(30) == 0
    with worker_and_materializer(app):
        assert app.result(task_id).get(timeout=60) == 42


# --- A client nobody here wrote: Node.js, kafkajs + avsc (tests/interop/node) -------------

NODE_CLIENT = REPO / "tests" / "interop" / "node"


def unavailable(reason: str) -> NoReturn:
    """Skip locally; in CI (CI=true) a missing Node toolchain or registry is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"the Node.js interop client cannot run: {reason}")
    pytest.skip(f"the Node.js interop client cannot run: {reason}")


def installed_node_client() -> Path:
    """``npm ci`` in tests/interop/node, once: a stamp in node_modules records the lock file
    it installed, so later runs reuse it until package-lock.json changes."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are not on PATH")
    lock = hashlib.sha256((NODE_CLIENT / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_CLIENT / "node_modules" / ".taskstream-installed"
    if stamp.exists() and stamp.read_text() == lock:
        return Path(node)
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        unavailable("npm ci took more than 300 s (is the npm registry reachable?)")
    if done.returncode != 0:
        unavailable(f"npm ci failed (is the npm registry reachable?):\n{done.stderr[-2000:]}")
    stamp.write_text(lock)
    return Path(node)


def test_a_node_client_with_kafkajs_and_avsc_sends_a_task_and_reads_its_result(
    scope: Scope, app: App, tmp_path: Path
) -> None:
    """From schemas/ and docs/wire-format.md alone, with no compression plugin: it reads the results
    topic only because taskstream writes gzip, and its keyed event shares a partition with
    taskstream's own event of that key."""
    node = installed_node_client()
    schemas = tmp_path / "schemas"
    export(app, schemas)
    key = f"customer-{uuid.uuid4().hex[:8]}"
    with worker_and_materializer(app):
        assert app.tasks["itest.add"].apply_async((1, 2), key=key).get(timeout=60) == 3
        done = subprocess.run(
            [str(node), "client.js", "--bootstrap", scope.bootstrap_servers,
             "--prefix", scope.topic_prefix, "--schemas", str(schemas), "--task", "itest.add",
             "--args", '{"a": 40, "b": 2}', "--key", key, "--timeout", "90"],
            cwd=NODE_CLIENT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["status"], outcome["result"], outcome["error"]) == ("SUCCESS", 42, None)
    assert (outcome["task"], outcome["attempt"]) == ("itest.add", 1)
    # avsc's canonical form gives the envelopes the fingerprints taskstream uses.
    assert outcome["fingerprints"] == {
        "task_event": app.envelopes.task_schema.fingerprint.hex(),
        "result_event": app.envelopes.result_schema.fingerprint.hex(),
    }
    # One key, one partition, whichever client sent the event.
    events = read_topic(scope, task_topic(scope.topic_prefix, "default"), 2)
    assert [m.key() for m in events] == [key.encode()] * 2
    assert {m.partition() for m in events} == {outcome["source"]["partition"]}
