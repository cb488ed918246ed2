"""Worker throughput and end-to-end latency, each beside its bare confluent-kafka ceiling.

    python benchmarks/worker_throughput.py [--tasks 20000] [--runs 3] [--bootstrap HOST:PORT]

Starts the embedded broker unless --bootstrap (or TASKSTREAM_BENCH_BOOTSTRAP) is given, and
writes benchmarks/reports/worker_throughput.{md,json}. Every figure is the median of --runs
runs with min and max, and each throughput also as a ratio to the ceiling measured in the
same run, since these machines are shared and noisy. Correctness is checked, not assumed:
each worker run must deliver one result per task and commit offsets covering all input.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import parse_schema, schemaless_reader, schemaless_writer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskstream import App
from taskstream.codec import HEADER_SIZE, strip_logical_types
from taskstream.consumer.materializer import Materializer
from taskstream.consumer.worker import Worker
from taskstream.embedded_broker import EmbeddedBroker
from taskstream.envelope import load_envelope_schema, now_micros
from taskstream.topics import task_topic

PARTITIONS = 12
REPORTS = Path(__file__).resolve().parent / "reports"


def make_app(bootstrap: str, prefix: str, store: str) -> App:
    app = App("bench", bootstrap_servers=bootstrap, topic_prefix=prefix, store=store,
              partitions=PARTITIONS, session_timeout_ms=6000)  # fmt: skip

    @app.task(name="bench.noop")
    def noop(n: int) -> int:
        return n

    return app


def preload(app: App, tasks: int) -> float:
    """Send ``tasks`` no-op tasks with delay(); returns events/s including the final flush."""
    noop = app.tasks["bench.noop"]
    # Warm up: connect and get a producer id before timing (to a topic the worker ignores).
    app.publisher.publish(noop.event(noop.encode_args((0,), {}), queue="ceiling")).result(30)
    started = time.perf_counter()
    for i in range(tasks):
        noop.delay(i)
    app.publisher.flush(60)
    return tasks / (time.perf_counter() - started)


def raw_produce_rate(app: App, tasks: int, topic: str) -> float:
    """The ceiling for delay(): a bare producer, same config, encoding the same envelope
    with plain fastavro."""
    from taskstream.kafka import producer_config

    schema = parse_schema(strip_logical_types(load_envelope_schema("task_event.avsc")))
    header = app.envelopes.task_schema.header
    args = app.tasks["bench.noop"].encode_args((1,), {})
    producer = Producer(producer_config(app.settings))
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    started = time.perf_counter()
    for _ in range(tasks):
        out = io.BytesIO()
        out.write(header)
        task_id = str(uuid.uuid4())
        schemaless_writer(out, schema, {
            "id": task_id, "task": "bench.noop", "queue": "default", "key": None,
            "attempt": 1, "enqueued_at": now_micros(), "not_before": None, "args": args,
        })  # fmt: skip
        while True:
            try:
                producer.produce(topic, out.getvalue(), task_id)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return tasks / (time.perf_counter() - started)


def ceiling_consume(app: App, tasks: int, topic: str, results: str) -> float:
    """The ceiling for a worker: bare confluent-kafka + fastavro. Consume a batch, decode
    each task envelope, encode a result envelope, produce it, commit once per batch."""
    from taskstream.kafka import consumer_config, producer_config

    task_schema = parse_schema(strip_logical_types(load_envelope_schema("task_event.avsc")))
    result_schema = parse_schema(strip_logical_types(load_envelope_schema("result_event.avsc")))
    result_header = app.envelopes.result_schema.header
    consumer = Consumer(consumer_config(app.settings, f"ceiling-{uuid.uuid4().hex[:6]}"))
    producer = Producer(producer_config(app.settings))
    consumer.subscribe([topic])
    done = 0
    started = None
    while done < tasks:
        first = consumer.poll(1.0)
        if first is None:
            continue
        if started is None:
            started = time.perf_counter()
        positions = {}
        for m in [first, *consumer.consume(499, 0)]:
            if m.error():
                continue
            positions[(m.topic(), m.partition())] = m.offset() + 1
            body = io.BytesIO(m.value())
            body.seek(HEADER_SIZE)
            event = schemaless_reader(body, task_schema, None)
            out = io.BytesIO()
            out.write(result_header)
            now = now_micros()
            schemaless_writer(out, result_schema, {
                "id": event["id"], "task": event["task"], "status": "SUCCESS",
                "attempt": 1, "key": None, "result": event["args"], "error": None,
                "worker": "ceiling", "source": {"topic": m.topic(), "partition": m.partition(),
                "offset": m.offset()}, "enqueued_at": event["enqueued_at"],
                "started_at": now, "finished_at": now,
            })  # fmt: skip
            while True:
                try:
                    producer.produce(results, out.getvalue(), event["id"])
                    break
                except BufferError:
                    producer.poll(0.05)
            done += 1
        producer.poll(0)
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
                        asynchronous=True)  # fmt: skip
    producer.flush(60)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return tasks / elapsed


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        consumer.close()


def worker_rate(app: App, tasks: int, topic: str, concurrency: int) -> float:
    """A taskstream worker on the preloaded topic, until every offset is committed."""
    worker = Worker(app, concurrency=concurrency)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    # Time from the first fetched record to the last result delivered and committed.
    while not worker._tracker.partitions or worker._in_flight == 0:
        time.sleep(0.001)
    started = time.perf_counter()
    while (
        sum(p.next_offset or 0 for p in worker._tracker.partitions.values()) < tasks
        or worker._in_flight
    ):
        time.sleep(0.002)
    finished = time.perf_counter()
    worker.stop()
    thread.join(60)
    committed = committed_total(app.settings.bootstrap_servers or "", worker.group_id, topic)
    assert committed == tasks, f"committed offsets cover {committed} of {tasks} records"
    return tasks / (finished - started)


def latency(app: App, rate: float, seconds: float) -> list[float]:
    """delay() -> AsyncResult.get() latencies, in ms, at a fixed offered rate."""
    noop = app.tasks["bench.noop"]
    samples: list[float] = []
    count = int(rate * seconds)
    interval = 1.0 / rate
    next_send = time.perf_counter()
    for i in range(count):
        while time.perf_counter() < next_send:
            time.sleep(max(0.0, next_send - time.perf_counter() - 0.0005))
        sent = time.perf_counter()
        r = noop.delay(i)
        assert r.get(timeout=30) == i
        samples.append((time.perf_counter() - sent) * 1000)
        next_send += interval
    return samples


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(bootstrap: str, tasks: int, runs: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    figures: dict[str, list[float]] = {
        k: [] for k in ("ceiling", "worker", "ratio", "raw_produce", "delay", "delay_ratio")
    }
    for n in range(runs):
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        app = make_app(bootstrap, prefix, f"sqlite:///{workdir}/{prefix}.db")
        app.ensure_topics(["default", "ceiling"])
        app.ensure_topics(["ceiling-results"])
        topic = task_topic(prefix, "default")
        figures["raw_produce"].append(raw_produce_rate(app, tasks, task_topic(prefix, "ceiling")))
        figures["delay"].append(preload(app, tasks))
        figures["delay_ratio"].append(figures["delay"][-1] / figures["raw_produce"][-1])
        figures["ceiling"].append(
            ceiling_consume(app, tasks, topic, task_topic(prefix, "ceiling-results"))
        )
        figures["worker"].append(worker_rate(app, tasks, topic, concurrency))
        figures["ratio"].append(figures["worker"][-1] / figures["ceiling"][-1])
        print(
            f"run {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in figures.items()), flush=True
        )
        app.close()
    # End to end, one run: a worker and a materializer running, one task at a time in flight.
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    app = make_app(bootstrap, prefix, f"sqlite:///{workdir}/{prefix}.db")
    app.ensure_topics()
    worker, materializer = Worker(app, concurrency=concurrency), Materializer(app)
    threads = [threading.Thread(target=c.run, daemon=True) for c in (worker, materializer)]
    for t in threads:
        t.start()
    app.tasks["bench.noop"].delay(0).get(timeout=60)  # the group has formed
    samples = latency(app, rate=100, seconds=10)
    worker.stop()
    materializer.stop()
    for t in threads:
        t.join(60)
    app.close()
    return {
        "tasks_per_run": tasks,
        "runs": runs,
        "concurrency": concurrency,
        **{k: summary(v) for k, v in figures.items()},
        "latency_ms_at_100_per_s": {
            "p50": percentile(samples, 0.5),
            "p99": percentile(samples, 0.99),
            "max": max(samples),
            "samples": len(samples),
        },
    }


def write_report(result: dict[str, Any]) -> Path:
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "worker_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result

    def row(name: str, key: str, unit: str) -> str:
        s = r[key]
        return f"| {name} | {s['median']:,.0f} {unit} | {s['min']:,.0f} | {s['max']:,.0f} |"

    def ratio(name: str, key: str) -> str:
        s = r[key]
        return f"| {name} | {s['median']:.0%} | {s['min']:.0%} | {s['max']:.0%} |"

    lat = r["latency_ms_at_100_per_s"]
    text = f"""# Worker throughput and latency

`python benchmarks/worker_throughput.py --tasks {r["tasks_per_run"]} --runs {r["runs"]}`,
{r["tasks_per_run"]:,} no-op tasks per run, {PARTITIONS} partitions, worker concurrency
{r["concurrency"]}, embedded broker on loopback, {os.cpu_count()} cores.

| figure | median | min | max |
|---|---|---|---|
{row("bare confluent-kafka + fastavro loop (ceiling)", "ceiling", "tasks/s")}
{row("taskstream worker, one process", "worker", "tasks/s")}
{ratio("worker / ceiling", "ratio")}
{row("bare producer + fastavro (ceiling)", "raw_produce", "events/s")}
{row("task.delay()", "delay", "events/s")}
{ratio("delay() / ceiling", "delay_ratio")}

End to end, `delay()` -> `AsyncResult.get()` through worker, results topic, materializer
and SQLite, one task at a time at 100 tasks/s ({lat["samples"]} samples):
p50 {lat["p50"]:.1f} ms, p99 {lat["p99"]:.1f} ms, max {lat["max"]:.1f} ms.
"""
    path = REPORTS / "worker_throughput.md"
    path.write_text(text)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--bootstrap", default=os.environ.get("TASKSTREAM_BENCH_BOOTSTRAP"))
    args = p.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        if args.bootstrap:
            result = run(args.bootstrap, args.tasks, args.runs, args.concurrency, Path(workdir))
        else:
            with EmbeddedBroker() as broker:
                result = run(
                    broker.bootstrap_servers, args.tasks, args.runs, args.concurrency, Path(workdir)
                )
    print(write_report(result).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
