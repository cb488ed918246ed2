"""What each producer compression costs for taskstream's own events.

    python -m benchmarks.compression [--events 200000] [--runs 3] [--bootstrap HOST:PORT]
                                     [--codecs 'none,gzip level 1,lz4']

For each ``compression.type`` (none, gzip, snappy, lz4, zstd) it produces ``--events`` task
events and as many result events, built as a worker builds them, with taskstream's producer
settings (idempotent, acks=all, ``linger.ms`` 2, one key per task id over 12 partitions), then
reads them back with taskstream's consumer settings. It reports, as medians of ``--runs``:
events/s and client CPU (µs per event, all librdkafka threads included) to produce and to
consume, and the bytes the producer sent to the broker per event (librdkafka's ``txbytes``:
record batches plus protocol overhead). Starts the embedded broker unless ``--bootstrap``.
``--zlib-levels`` compares gzip's levels 1 and 6 on batches of these events, offline.

Batch sizes follow the producer's pace (``linger.ms``), so on a busy machine the bytes per
event move between runs too; compare codecs within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # stub: no __all__

from taskstream.avro.codec import Codec
from taskstream.cli.embedded_broker import EmbeddedBroker
from taskstream.config import Settings
from taskstream.envelope import Envelopes, ResultEvent, TaskEvent, now_micros
from taskstream.kafka.clients import consumer_config, producer_config
from taskstream.status import Status

# (label, librdkafka settings): gzip at zlib's default level (6) and at level 1, its fastest
# (taskstream's default). Levels are explicit: producer_config defaults gzip to level 1.
CODECS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("none", {"compression.type": "none"}),
    ("gzip level 6", {"compression.type": "gzip", "compression.level": 6}),
    ("gzip level 1", {"compression.type": "gzip", "compression.level": 1}),
    ("snappy", {"compression.type": "snappy"}),
    ("lz4", {"compression.type": "lz4"}),
    ("zstd", {"compression.type": "zstd"}),
)
PARTITIONS = 12


def task_events(count: int) -> list[tuple[bytes, str]]:
    """(value, key) of ``count`` task events of a two-argument task, keyed by task id."""
    codec = Codec()
    envelopes = Envelopes(codec)
    args = codec.register(
        {"type": "record", "name": "add_args", "namespace": "examples.app",
         "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "long"}]}
    )  # fmt: skip
    now = now_micros()
    out = []
    for i in range(count):
        task_id = str(uuid.uuid4())
        event = TaskEvent(task_id, "examples.app.add", "default", None, 1, now + i, None,
                          codec.encode(args, {"a": i, "b": 2 * i}))  # fmt: skip
        out.append((envelopes.encode_task(event), task_id))
    return out


def result_events(count: int) -> list[tuple[bytes, str]]:
    """(value, key) of ``count`` SUCCESS result events with a small return value."""
    codec = Codec()
    envelopes = Envelopes(codec)
    result = codec.register("long")
    now = now_micros()
    out = []
    for i in range(count):
        task_id = str(uuid.uuid4())
        event = ResultEvent(
            id=task_id, task="examples.app.add", status=Status.SUCCESS, attempt=1, key=None,
            result=codec.encode(result, 3 * i), error=None, worker="worker-7f9c4d-x2x8q:12345",
            source_topic="taskstream.tasks.default", source_partition=i % PARTITIONS,
            source_offset=i // PARTITIONS, enqueued_at=now + i, started_at=now + i + 900,
            finished_at=now + i + 950,
        )  # fmt: skip
        out.append((envelopes.encode_result(event), task_id))
    return out


@dataclass
class Run:
    produce_s: float
    produce_cpu_s: float
    tx_bytes: int
    consume_s: float
    consume_cpu_s: float


def _last_stats(into: dict[str, Any]) -> Callable[[str], None]:
    def on_stats(raw: str) -> None:
        into.clear()
        into.update(json.loads(raw))

    return on_stats


def _tx_bytes(stats: dict[str, Any]) -> int:
    return sum(int(b.get("txbytes", 0)) for b in stats.get("brokers", {}).values())


def one_run(bootstrap: str, compression: dict[str, Any], records: list[tuple[bytes, str]]) -> Run:
    settings = Settings(bootstrap_servers=bootstrap)
    topic = f"bench-compression-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)
    stats: dict[str, Any] = {}
    producer = Producer(
        producer_config(
            settings,
            **compression, **{"statistics.interval.ms": 100,
               "stats_cb": _last_stats(stats), "queue.buffering.max.messages": 1_000_000},
        )
    )  # fmt: skip
    wall, cpu = time.perf_counter(), time.process_time()
    for value, key in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(120) == 0, "undelivered events"
    produce_s, produce_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    # The statistics that follow the flush count every byte sent.
    stats.clear()
    deadline = time.monotonic() + 5
    while not stats and time.monotonic() < deadline:
        producer.poll(0.05)
    tx_bytes = _tx_bytes(stats)

    fetch: dict[str, Any] = {"fetch.wait.max.ms": 10}
    consumer = Consumer(consumer_config(settings, f"{topic}.reader", **fetch))
    consumer.subscribe([topic])
    first = consumer.poll(30)  # the group join is not part of the consume time
    assert first is not None and first.error() is None, "nothing to consume"
    seen = 1
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = time.monotonic() + 120
    while seen < len(records) and time.monotonic() < deadline:
        seen += sum(1 for m in consumer.consume(1000, 0.2) if m.error() is None)
    consume_s, consume_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    consumer.close()
    assert seen == len(records), f"read {seen} of {len(records)}"
    admin.delete_topics([topic])
    return Run(produce_s, produce_cpu_s, tx_bytes, consume_s, consume_cpu_s)


def measure(
    bootstrap: str, events: int, runs: int, codecs: list[str] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for kind, records in (("task", task_events(events)), ("result", result_events(events))):
        raw = sum(len(v) + len(k) for v, k in records) / len(records)
        for label, compression in CODECS:
            if codecs and label not in codecs:
                continue
            done = [one_run(bootstrap, compression, records) for _ in range(runs)]
            n = len(records)

            def per_event(seconds: list[float], n: int = n) -> float:
                return statistics.median(seconds) / n

            rows.append({
                "events": kind,
                "compression": label,
                "value_and_key_bytes": round(raw, 1),
                "wire_bytes_per_event": round(per_event([r.tx_bytes for r in done]), 1),
                "produce_per_s": round(1 / per_event([r.produce_s for r in done])),
                "produce_cpu_us": round(per_event([r.produce_cpu_s for r in done]) * 1e6, 2),
                "consume_per_s": round(1 / per_event([r.consume_s for r in done])),
                "consume_cpu_us": round(per_event([r.consume_cpu_s for r in done]) * 1e6, 2),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| events | compression | bytes sent / event | produce events/s | produce CPU µs/event "
        "| consume events/s | consume CPU µs/event |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['events']} ({r['value_and_key_bytes']:.0f} B) | {r['compression']} "
            f"| {r['wire_bytes_per_event']:.1f} | {r['produce_per_s']:,} | {r['produce_cpu_us']} "
            f"| {r['consume_per_s']:,} | {r['consume_cpu_us']} |"
        )
    return "\n".join(lines)


def zlib_levels(events: int) -> str:
    """gzip's level 1 against its default 6, without a broker: zlib (which librdkafka's gzip
    uses) on batches of 1 to 1,000 events, the range a producer's linger.ms makes between
    light and heavy load. Best of 3, process CPU."""
    lines = ["| events | events per batch | level | bytes / event | CPU µs / event |",
             "|---|---|---|---|---|"]  # fmt: skip
    for kind, records in (("task", task_events(events)), ("result", result_events(events))):
        for size in (1, 17, 100, 1000):
            batches = [
                b"".join(v + k.encode() for v, k in records[i : i + size])
                for i in range(0, len(records), size)
            ]
            for level in (1, 6):
                best, out = float("inf"), 0
                for _ in range(3):
                    started = time.process_time()
                    out = sum(len(zlib.compress(b, level)) for b in batches)
                    best = min(best, time.process_time() - started)
                lines.append(
                    f"| {kind} | {size:,} | {level} | {out / len(records):.1f} "
                    f"| {best / len(records) * 1e6:.2f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="of each kind, per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", help="a running cluster (default: start the embedded one)")
    parser.add_argument(
        "--codecs", help="comma-separated labels, e.g. 'none,gzip level 1,lz4' (default: all)"
    )
    parser.add_argument(
        "--zlib-levels", action="store_true", help="only compare gzip levels 1 and 6 offline"
    )
    args = parser.parse_args(argv)
    if args.zlib_levels:
        print(zlib_levels(min(args.events, 20_000)))
        return
    codecs = args.codecs.split(",") if args.codecs else None
    if args.bootstrap:
        rows = measure(args.bootstrap, args.events, args.runs, codecs)
    else:
        with EmbeddedBroker() as broker:
            rows = measure(broker.bootstrap_servers, args.events, args.runs, codecs)
    print(markdown(rows))


if __name__ == "__main__":
    main()
