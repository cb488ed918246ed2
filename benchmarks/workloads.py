"""The nine workloads of the suite (issue 6). Each returns a JSON-able dict and checks its
own correctness: one result per task, committed offsets covering all input."""

from __future__ import annotations

import importlib.metadata
import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from benchmarks.common import (
    PARTITIONS,
    REPO,
    ResultWatcher,
    Scope,
    check_results,
    committed_total,
    cpu_seconds,
    encode_backlog,
    encode_json_backlog,
    peak_rss_mb,
    percentile,
    produce_all,
    read_results,
    spawn_materializer,
    spawn_worker,
    stop,
    summary,
    wait_committed,
    wait_group,
)
from taskstream.avro.codec import HEADER_SIZE, strip_logical_types
from taskstream.envelope import ResultEvent, load_envelope_schema, now_micros
from taskstream.kafka.clients import consumer_config, producer_config
from taskstream.kafka.topics import task_topic
from taskstream.status import Status

# -- 1. the ceiling --------------------------------------------------------------------------


class CeilingCodec:
    """The ceiling's Avro work per record: plain fastavro with the envelopes' schemas (parsed
    once), the task envelope decoded, a result envelope encoded."""

    def __init__(self, app: Any) -> None:
        self.task_schema = parse_schema(
            strip_logical_types(load_envelope_schema("task_event.avsc"))
        )
        self.result_schema = parse_schema(
            strip_logical_types(load_envelope_schema("result_event.avsc"))
        )
        self.header = app.envelopes.result_schema.header

    def result_for(self, m: Any) -> tuple[bytes, str]:
        """The result envelope for task record ``m``, and its key (the task id)."""
        body = io.BytesIO(m.value())
        body.seek(HEADER_SIZE)
        event: Any = schemaless_reader(body, self.task_schema, None)  # a task event's dict
        out = io.BytesIO()
        out.write(self.header)
        now = now_micros()
        schemaless_writer(out, self.result_schema, {
            "id": event["id"], "task": event["task"], "status": "SUCCESS",
            "attempt": 1, "key": None, "result": event["args"], "error": None,
            "worker": "ceiling", "source": {"topic": m.topic(), "partition": m.partition(),
            "offset": m.offset()}, "enqueued_at": event["enqueued_at"],
            "started_at": now, "finished_at": now,
        })  # fmt: skip
        return out.getvalue(), event["id"]


def ceiling_loop(scope: Scope, tasks: int) -> float:
    """Bare confluent-kafka + fastavro: consume a batch, decode each task envelope, encode a
    result envelope, produce it, commit once per batch. Same envelopes as taskstream. Timed
    as the worker is: from the first record of a preloaded topic until every result is
    acknowledged and the last offsets are committed."""
    app = scope.app()
    app.ensure_topics(["default"])
    topic = scope.topic
    produce_all(scope.bootstrap, topic, encode_backlog(app, tasks))
    codec = CeilingCodec(app)
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
        batch: list[Any] = [first, *consumer.consume(499, 0)]  # Messages, unchecked as m above
        for m in batch:
            if m.error():
                continue
            positions[(m.topic(), m.partition())] = m.offset() + 1
            value, task_id = codec.result_for(m)
            while True:
                try:
                    producer.produce(scope.results, value, task_id)
                    break
                except BufferError:
                    producer.poll(0.05)
            done += 1
        producer.poll(0)
        last = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        consumer.commit(offsets=last, asynchronous=True)
    # Done as the worker is done: every result acknowledged, every offset committed.
    assert producer.flush(60) == 0, "results not delivered"
    consumer.commit(offsets=last, asynchronous=False)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    app.close()
    return tasks / elapsed


# -- 2. delay() ------------------------------------------------------------------------------


def delay_rate(scope: Scope, tasks: int) -> dict[str, float]:
    """task.delay() in one process, and a bare producer encoding the same envelope."""
    app = scope.app()
    app.ensure_topics(["default", "ceiling"])
    noop = app.tasks["bench.noop"]
    schema = parse_schema(strip_logical_types(load_envelope_schema("task_event.avsc")))
    header = app.envelopes.task_schema.header
    args = noop.encode_args((1,), {})
    producer = Producer(producer_config(app.settings))
    producer.produce(task_topic(scope.prefix, "ceiling"), b"warm-up")
    producer.flush(30)
    topic = task_topic(scope.prefix, "ceiling")
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
    raw = tasks / (time.perf_counter() - started)
    # Warm up: connect and get a producer id before timing.
    app.publisher.publish(noop.event(noop.encode_args((0,), {}), queue="ceiling")).result(30)
    started = time.perf_counter()
    results = [noop.delay(i) for i in range(tasks)]
    app.publisher.flush(60)
    delay = tasks / (time.perf_counter() - started)
    for r in results[:: max(1, tasks // 100)]:
        r.wait_delivered(0)  # raises if the broker did not acknowledge
    app.close()
    return {"raw_produce": raw, "delay": delay, "ratio": delay / raw}


# -- 3 and 7. worker processes on a backlog --------------------------------------------------


def worker_processes(scope: Scope, tasks: int, processes: int, concurrency: int = 1,
                     task: str = "bench.noop", keys: int | None = None,
                     extra: tuple[str, ...] = (),
                     env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """``processes`` worker processes join the group on empty topics; once it has settled they
    are stopped (SIGSTOP) while the backlog is loaded (pre-encoded, a bare producer), so they
    drain a preloaded topic without a group join inside the timing; time from SIGCONT to
    every offset committed. Then every result is read back and checked."""
    app = scope.app()
    app.ensure_topics(["default"])
    backlog = encode_backlog(app, tasks, task, keys)
    ids = {k for _, k in backlog} if keys is None else None
    procs = [spawn_worker(scope, "--concurrency", str(concurrency), *extra, env=env)
             for _ in range(processes)]  # fmt: skip
    try:
        assignment = wait_group(scope, processes)
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        try:
            load_s = produce_all(scope.bootstrap, scope.topic, backlog)
        finally:
            for p in procs:
                p.send_signal(signal.SIGCONT)
        started = time.perf_counter()
        finished = wait_committed(scope, tasks, timeout=max(120, tasks / 50), interval=0.01)
        rate = tasks / (finished - started)
        peaks = [peak_rss_mb(p.pid) for p in procs]
    finally:
        stop(procs)
    committed = committed_total(scope.bootstrap, scope.group, scope.topic, scope.partitions)
    messages = read_results(scope.bootstrap, scope.results, tasks)
    if ids is None:
        ids = {m.key().decode() for m in messages}
    check = check_results(app, messages, ids, tasks)
    per_worker: dict[str, set[int]] = {}
    decoded = [app.envelopes.decode_result(m.value()) for m in messages]
    for r in decoded:
        per_worker.setdefault(r.worker, set()).add(r.source_partition)
    app.close()
    assert committed == tasks, f"committed offsets cover {committed} of {tasks}"
    assert check["missing"] == 0, check
    return {
        "rate": rate, "load_s": load_s, "committed": committed, **check,
        "partitions_per_member": sorted(len(p) for p in assignment.values()),
        "partitions_per_worker_from_results": sorted(len(p) for p in per_worker.values()),
        "peak_rss_mb": peaks, "decoded": decoded,
    }  # fmt: skip


# -- 4. end to end ---------------------------------------------------------------------------


def end_to_end(
    scope: Scope, rates: list[int], seconds: float, saturation_tasks: int | None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """delay() -> result readable in the store (the lookup AsyncResult.get() makes), with a
    worker process (its environment plus ``env``) and a materializer process, at fixed
    offered rates; then the saturation throughput (delay() as fast as one thread can,
    completions per second), unless ``saturation_tasks`` is None."""
    app = scope.app()
    app.ensure_topics()
    procs = [spawn_worker(scope, env=env), spawn_materializer(scope)]
    noop = app.tasks["bench.noop"]
    out: dict[str, Any] = {}
    try:
        wait_group(scope, 1)
        noop.delay(-1).get(timeout=60)  # materializer has joined too
        for rate in [*rates, None] if saturation_tasks is not None else rates:
            count = int(rate * seconds) if rate is not None else saturation_tasks or 0
            sent: dict[str, float] = {}
            order: list[str] = []
            seen: dict[str, float] = {}
            records: dict[str, Any] = {}
            done = threading.Event()

            def watch(count: int = count, order: list[str] = order, seen: dict[str, float] = seen,
                      records: dict[str, Any] = records,
                      done: threading.Event = done) -> None:  # fmt: skip
                store = app.store
                i = 0
                while i < count:
                    pending = [x for x in order[i : i + 500] if x not in seen]
                    if pending:
                        found = store.get_many(pending)
                        now = time.perf_counter()
                        for tid, rec in found.items():
                            if rec.status.is_final:
                                seen[tid] = now
                                records[tid] = rec
                    while i < len(order) and order[i] in seen:
                        i += 1
                    time.sleep(0.001)
                done.set()

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            started = time.perf_counter()
            for n in range(count):
                if rate is not None:
                    due = started + n / rate
                    delay = due - time.perf_counter()
                    if delay > 0.0005:
                        time.sleep(delay)
                t0 = time.perf_counter()
                r = noop.delay(n)
                sent[r.id] = t0
                order.append(r.id)
            sent_s = time.perf_counter() - started
            assert done.wait(max(120, count / 100)), "results did not all arrive"
            latencies = [(seen[i] - sent[i]) * 1000 for i in order]
            # Where the time went, from the timestamps each result carries (wall clock, µs):
            # enqueued -> a worker starts it -> it finishes -> readable in the store.
            to_wall = time.time() - time.perf_counter()
            pickup = [(r.started_at - r.enqueued_at).total_seconds() * 1000
                      for r in records.values()]  # fmt: skip
            to_store = [((seen[i] + to_wall) - r.finished_at.timestamp()) * 1000
                        for i, r in records.items()]  # fmt: skip
            key = "saturation" if rate is None else str(rate)
            out[key] = {
                "offered_per_s": None if rate is None else rate,
                "sent_per_s": count / sent_s,
                "completed_per_s": count / (max(seen.values()) - started),
                "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
                "max_ms": max(latencies), "tasks": count,
                "pickup_p50_ms": percentile(pickup, 0.5), "pickup_p99_ms": percentile(pickup, 0.99),
                "store_p50_ms": percentile(to_store, 0.5),
                "store_p99_ms": percentile(to_store, 0.99),
            }  # fmt: skip
            print(f"  e2e {key}: {out[key]}", flush=True)
    finally:
        stop(procs)
        app.close()
    return out


EXACTLY_ONCE = {"TASKSTREAM_PROCESSING_GUARANTEE": "exactly-once"}


def exactly_once(new_scope: Callable[[], Scope], tasks: int, runs: int, seconds: float,
                 intervals: tuple[int, ...] = (50, 100, 500)) -> dict[str, Any]:  # fmt: skip
    """Issue 23's cost: one worker process draining ``tasks`` preloaded no-op tasks at least
    once and exactly once (alternating, same run), exactly once at other commit intervals,
    and end-to-end latency at 1,000 tasks/s in both modes."""
    alo, eos, ratio = [], [], []
    for i in range(runs):
        alo.append(worker_processes(new_scope(), tasks, 1)["rate"])
        eos.append(worker_processes(new_scope(), tasks, 1, env=EXACTLY_ONCE)["rate"])
        ratio.append(eos[-1] / alo[-1])
        print(f"  run {i + 1}: at least once {alo[-1]:,.0f}/s, exactly once {eos[-1]:,.0f}/s "
              f"({ratio[-1]:.0%})", flush=True)  # fmt: skip
    by_interval = {}
    for ms in intervals:
        env = {**EXACTLY_ONCE, "TASKSTREAM_COMMIT_INTERVAL_MS": str(ms)}
        by_interval[str(ms)] = worker_processes(new_scope(), tasks, 1, env=env)["rate"]
        print(f"  exactly once, commit every {ms} ms: {by_interval[str(ms)]:,.0f}/s", flush=True)
    latency = {
        "at-least-once": end_to_end(new_scope(), [1000], seconds, None)["1000"],
        "exactly-once": end_to_end(new_scope(), [1000], seconds, None, env=EXACTLY_ONCE)["1000"],
    }
    return {"at_least_once": summary(alo), "exactly_once": summary(eos),
            "ratio": summary(ratio), "by_commit_interval_ms": by_interval,
            "latency_1000": latency, "tasks": tasks}  # fmt: skip


# -- 13. ordered and shared queues ---------------------------------------------------------

SHARED = {"TASKSTREAM_SHARED_QUEUES": "limited"}  # bench_app's queue of tasks with a time limit


def queue_drain(
    scope: Scope, tasks: int, processes: int, task: str, shared: bool,
    concurrency: int = 1, batch_records: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``processes`` workers on the queue ``limited`` (``scope.partitions`` partitions),
    ordered (a consumer group) or shared (a share group), stopped (SIGSTOP) once they are
    in their group while ``tasks`` preloaded records are loaded; time from SIGCONT to the
    last result readable, the workers' CPU meanwhile, which workers ran tasks."""
    app = scope.app()
    app.ensure_topics(["limited"])
    topic = task_topic(scope.prefix, "limited")
    backlog = encode_backlog(app, tasks, task)
    ids = {k for _, k in backlog}
    env = SHARED if shared else None
    procs = [spawn_worker(scope, "--concurrency", str(concurrency), "--queues", "limited",
                          env=env) for _ in range(processes)]  # fmt: skip
    try:
        if shared:
            wait_logs(scope, "as share groups", processes)
            time.sleep(3.0)  # (no share-group admin API here to see the members assigned)
        else:
            wait_group(scope, min(processes, scope.partitions), 120, queue_topic=topic)
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        try:
            produce_all(scope.bootstrap, topic, backlog, batch_records)
            watcher = ResultWatcher(scope.bootstrap, scope.results, tasks, scope.partitions)
            cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        finally:
            for p in procs:
                p.send_signal(signal.SIGCONT)
        started = time.perf_counter()
        last = watcher.wait(max(120, tasks / 20))
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
    finally:
        stop(procs)
    messages = watcher.close()
    check = check_results(app, messages, ids, tasks)
    workers = {app.envelopes.decode_result(m.value()).worker for m in messages}
    app.close()
    assert check["missing"] == 0, check
    return {"rate": tasks / (last - started), "cpu_us_per_task": cpu / tasks * 1e6,
            "workers_with_tasks": len(workers), **check}  # fmt: skip


def wait_logs(scope: Scope, text: str, count: int, timeout: float = 120) -> None:
    """Until ``count`` worker logs of ``scope`` have a line with ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sum(
            1 for log in scope.logs if log.exists() and text in log.read_text(errors="replace")
        )
        if found >= count:
            return
        time.sleep(0.2)
    tails = [log.read_text(errors="replace")[-1500:] for log in scope.logs if log.exists()]
    raise AssertionError(
        f"{count} worker logs with {text!r}: not within {timeout:.0f} s; logs end: {tails}"
    )


def shared_queues(new_scope: Callable[..., Scope], tasks: int, slow_tasks: int,
                  runs: int) -> dict[str, Any]:  # fmt: skip
    """Issue 24: a queue of 3 partitions, 12 worker processes running 10 ms tasks, shared
    against ordered (where 3 get partitions), the backlog loaded one record per producer
    batch (tasks sent one by one) and in bulk batches (a share consumer's poll takes whole
    batches); one process draining no-op tasks, shared against ordered, and the CPU per task
    of a share group's acknowledgements."""
    modes = ("ordered", "shared")
    loads = {"single": 1, "bulk": None}  # records per producer batch
    twelve = {f"{m}_{load}": [] for m in modes for load in loads}  # type: dict[str, list[float]]
    served: dict[str, int] = {}
    one: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(runs):
        for load, batch in loads.items():
            for mode in modes:
                r = queue_drain(new_scope(partitions=3), slow_tasks, 12, "bench.sleep_limited",
                                shared=mode == "shared", batch_records=batch)  # fmt: skip
                twelve[f"{mode}_{load}"].append(r["rate"])
                served[f"{mode}_{load}"] = r["workers_with_tasks"]
        for mode in modes:
            r = queue_drain(new_scope(partitions=3), tasks, 1, "bench.noop_limited",
                            shared=mode == "shared")  # fmt: skip
            one[mode].append(r["rate"])
            cpu[mode].append(r["cpu_us_per_task"])
        last = {k: f"{v[-1]:,.0f}/s ({served[k]} ran tasks)" for k, v in twelve.items()}
        print(
            f"  run {i + 1}: 12 workers, 10 ms tasks: {last}; one worker, no-op: ordered "
            f"{one['ordered'][-1]:,.0f}/s ({cpu['ordered'][-1]:.0f} us/task), shared "
            f"{one['shared'][-1]:,.0f}/s ({cpu['shared'][-1]:.0f} us/task)",
            flush=True,
        )

    def ratio(a: list[float], b: list[float]) -> dict[str, float]:
        return summary([x / y for x, y in zip(a, b, strict=True)])

    return {
        "tasks": tasks, "slow_tasks": slow_tasks,
        "twelve": {k: summary(v) for k, v in twelve.items()}, "workers_with_tasks": served,
        "twelve_ratio": ratio(twelve["shared_single"], twelve["ordered_single"]),
        "twelve_ratio_bulk": ratio(twelve["shared_bulk"], twelve["ordered_bulk"]),
        "one": {m: summary(v) for m, v in one.items()},
        "one_ratio": ratio(one["shared"], one["ordered"]),
        "cpu_us_per_task": {m: summary(v) for m, v in cpu.items()},
        "ack_cost_us": summary([s - o for s, o in zip(cpu["shared"], cpu["ordered"], strict=True)]),
    }  # fmt: skip


def bare_hop(scope: Scope, rate: int, seconds: float) -> dict[str, float]:
    """The latency floor of one Kafka hop on this broker: a bare producer (taskstream's
    producer settings) to a bare consumer (its consumer settings), at ``rate`` records/s.
    delay() -> result readable takes two such hops (task topic, results topic)."""
    app = scope.app()
    app.ensure_topics(["default"])
    s = app.settings
    consumer = Consumer(consumer_config(s, f"hop-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([scope.topic])
    producer = Producer(producer_config(s))
    count = int(rate * seconds)
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 60
        producer.produce(scope.topic, b"warm-up")
        while True:  # joined and fetching: records sent from now on are timed
            assert time.monotonic() < deadline, "the hop consumer did not join"
            m = consumer.poll(0.1)
            if m is not None and m.error() is None and m.value() == b"warm-up":
                break

        def send() -> None:
            started = time.perf_counter()
            for n in range(count):
                delay = started + n / rate - time.perf_counter()
                if delay > 0.0005:
                    time.sleep(delay)
                producer.produce(scope.topic, str(time.perf_counter()).encode(), str(n))
                producer.poll(0)
            producer.flush(30)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        while len(latencies) < count:
            assert time.monotonic() < deadline + seconds, f"{len(latencies)} of {count} hops"
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                latencies.append((time.perf_counter() - float(cast(bytes, m.value()))) * 1000)
        sender.join(30)
    finally:
        consumer.close()
        app.close()
    return {"p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "rate": rate, "records": count}  # fmt: skip


# -- 5. IO-bound keyed concurrency -----------------------------------------------------------


def keyed_io(scope: Scope, keys: int, tasks: int, concurrency: int = 100) -> dict[str, Any]:
    """Tasks that sleep 10 ms on ONE partition (``scope`` has one) with ``keys`` distinct keys;
    per-key order is checked from the results (each run starts after the key's previous one
    finished)."""
    r = worker_processes(scope, tasks, 1, concurrency, "bench.sleep", keys)
    by_key: dict[str | None, list[ResultEvent]] = {}
    for e in r.pop("decoded"):
        by_key.setdefault(e.key, []).append(e)
    in_order = True
    for events in by_key.values():
        events.sort(key=lambda e: e.source_offset)
        for a, b in itertools.pairwise(events):
            if b.started_at < a.finished_at:
                in_order = False
    assert in_order, "a key's tasks overlapped or ran out of order"
    return {"keys": keys, "tasks": tasks, "rate": r["rate"], "key_order_kept": in_order,
            "exactly_one_result_each": r["exactly_one_result_each"],
            "committed": r["committed"]}  # fmt: skip


# -- 6. materializer -------------------------------------------------------------------------


def materializer_rate(scope: Scope, results: int) -> dict[str, Any]:
    """Result events preloaded on the results topic, applied to the store: results/s from the
    first applied batch to the last, and one row per task checked in the store."""
    from taskstream.consumer.materializer import Materializer

    app = scope.app()
    app.ensure_topics()
    records = []
    now = now_micros()
    for i in range(results):
        tid = str(uuid.uuid4())
        ev = ResultEvent(tid, "bench.noop", Status.SUCCESS, 1, None,
                         app.tasks["bench.noop"].encode_result(i), None, "bench:1",
                         scope.topic, i % PARTITIONS, i // PARTITIONS, now, now, now)  # fmt: skip
        records.append((app.envelopes.encode_result(ev), tid))
    produce_all(scope.bootstrap, scope.results, records)
    m = Materializer(app)
    thread = threading.Thread(target=m.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + max(120, results / 500)
    while m.applied == 0:
        assert time.monotonic() < deadline, "materializer applied nothing"
        time.sleep(0.001)
    t0, a0 = time.perf_counter(), m.applied
    while m.applied < results:
        assert time.monotonic() < deadline, f"applied {m.applied} of {results}"
        time.sleep(0.002)
    rate = (results - a0) / (time.perf_counter() - t0)
    m.stop()
    thread.join(60)
    rows = app.store.count()
    app.close()
    assert rows == results, f"{rows} rows for {results} results"
    return {"rate": rate, "rows": rows, "results": results}


# -- 8. memory -------------------------------------------------------------------------------


def memory(scope: Scope, tasks: int) -> dict[str, Any]:
    """A worker process drains a ``tasks`` backlog loaded before it starts: peak RSS sampled
    every 100 ms and the kernel's high-water mark at the end."""
    app = scope.app()
    app.ensure_topics(["default"])
    chunk = 100_000
    for start in range(0, tasks, chunk):  # encode and load in chunks: the harness stays small
        produce_all(scope.bootstrap, scope.topic, encode_backlog(app, min(chunk, tasks - start)))
    proc = spawn_worker(scope)
    samples = []
    try:
        import psutil

        ps = psutil.Process(proc.pid)
        consumer = Consumer({"bootstrap.servers": scope.bootstrap, "group.id": scope.group})
        tps = [TopicPartition(scope.topic, p) for p in range(PARTITIONS)]
        started = time.perf_counter()
        deadline = time.monotonic() + max(300, tasks / 500)
        while True:
            samples.append(ps.memory_info().rss / 2**20)
            done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
            if done >= tasks:
                break
            assert time.monotonic() < deadline, f"drained {done} of {tasks}"
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        consumer.close()
        peak = peak_rss_mb(proc.pid)
    finally:
        stop([proc])
    app.close()
    return {"tasks": tasks, "peak_rss_mb": peak, "max_sampled_rss_mb": max(samples),
            "median_sampled_rss_mb": sorted(samples)[len(samples) // 2],
            "drain_per_s_incl_join": tasks / elapsed}  # fmt: skip


# -- 9. Celery + Redis -----------------------------------------------------------------------


def celery(tasks: int, concurrency: int = 2) -> dict[str, Any]:
    """The same no-op backlog on Celery (prefork, ``concurrency`` processes) with the Redis
    server on this machine: from the first result stored to the last."""
    import redis

    from benchmarks import celery_app

    url = os.environ.get("TASKSTREAM_BENCH_REDIS", "redis://127.0.0.1:6379")
    broker, backend = redis.Redis.from_url(f"{url}/14"), redis.Redis.from_url(f"{url}/15")
    broker.flushdb()
    backend.flushdb()
    ids = [celery_app.noop.delay(i).id for i in range(tasks)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchmarks.celery_app", "worker", "-P", "prefork",
         "-c", str(concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-Q", "taskstream-bench", "--loglevel", "WARNING"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + max(120, tasks / 50)
        while backend.dbsize() == 0:
            assert time.monotonic() < deadline and proc.poll() is None, "celery ran nothing"
            time.sleep(0.005)
        t0, n0 = time.perf_counter(), backend.dbsize()
        while (n := backend.dbsize()) < tasks:
            assert time.monotonic() < deadline, f"celery stored {n} of {tasks}"
            time.sleep(0.01)
        rate = (tasks - n0) / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(30)
    stored = sum(backend.exists(f"celery-task-meta-{i}") for i in ids)
    left = broker.llen("taskstream-bench")
    assert stored == tasks, f"celery stored {stored} of {tasks} results"
    return {"rate": rate, "tasks": tasks, "results_stored": stored, "queue_left": left,
            "concurrency": concurrency}  # fmt: skip


# -- 10. the Kafka-native peer: Quix Streams -------------------------------------------------


def quix_python() -> str:
    """The interpreter with quixstreams: TASKSTREAM_BENCH_QUIX_PYTHON, else .venv-quix. Not
    taskstream's own: quixstreams pins confluent-kafka<2.13, and taskstream is measured on
    the client it ships with."""
    path = os.environ.get("TASKSTREAM_BENCH_QUIX_PYTHON", str(REPO / ".venv-quix/bin/python"))
    if not Path(path).exists():
        raise RuntimeError(
            f"no Quix Streams interpreter at {path}: python3 -m venv .venv-quix && "
            ".venv-quix/bin/pip install -e '.[quix]' (or set TASKSTREAM_BENCH_QUIX_PYTHON)"
        )
    return path


def quix_versions() -> dict[str, str]:
    out = subprocess.run(
        [quix_python(), "-c", "import confluent_kafka as c, importlib.metadata as m; "
         "print(m.version('quixstreams'), m.version('confluent-kafka'), c.libversion()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return {"quixstreams": out[0], "confluent_kafka": out[1], "librdkafka": out[2]}


def _timed_drain(scope: Scope, proc: subprocess.Popen[bytes],
                 backlog: list[tuple[bytes, str]]) -> dict[str, Any]:  # fmt: skip
    """``proc`` has joined the group on the empty task topic: stop it, load the backlog, let
    it go, and time from then to the last result readable on the results topic and to the
    group's committed offsets covering the backlog; CPU is the process's user+sys between
    the start and the last commit. The records read are checked, one result per task."""
    tasks = len(backlog)
    try:
        watcher = ResultWatcher(scope.bootstrap, scope.results, tasks)
    except BaseException:
        stop([proc])
        raise
    try:
        proc.send_signal(signal.SIGSTOP)
        try:
            load_s = produce_all(scope.bootstrap, scope.topic, backlog)
        finally:
            proc.send_signal(signal.SIGCONT)
        cpu = cpu_seconds(proc.pid)
        started = time.perf_counter()
        committed_at = wait_committed(scope, tasks, timeout=max(120, tasks / 50), interval=0.01)
        cpu = cpu_seconds(proc.pid) - cpu
        last_result = watcher.wait(30)
        peak = peak_rss_mb(proc.pid)
    finally:
        stop([proc])
        messages = watcher.close()
    check = check_results(None, messages, {k for _, k in backlog}, tasks)
    assert check["exactly_one_result_each"], check
    return {"last_result": tasks / (last_result - started),
            "last_commit": tasks / (committed_at - started),
            "cpu_us_per_task": cpu / tasks * 1e6, "peak_rss_mb": peak, "load_s": load_s,
            **check}  # fmt: skip


def taskstream_drain(scope: Scope, tasks: int) -> dict[str, Any]:
    """One worker process, no-op tasks (Avro), timed by :func:`_timed_drain`."""
    app = scope.app()
    app.ensure_topics(["default"])
    backlog = encode_backlog(app, tasks)
    app.close()
    proc = spawn_worker(scope, "--concurrency", "1")  # as workload 1 runs it
    try:
        wait_group(scope, 1)
    except BaseException:
        stop([proc])
        raise
    return _timed_drain(scope, proc, backlog)


def quix_drain(scope: Scope, tasks: int, commit_interval: float) -> dict[str, Any]:
    """One Quix Streams process (benchmarks/quix_app.py: Application, StreamingDataFrame,
    JSON) on the same no-op tasks as JSON, timed by :func:`_timed_drain`."""
    app = scope.app()
    app.ensure_topics(["default"])  # the task topic and the results topic, 12 partitions
    app.close()
    backlog = encode_json_backlog(tasks)
    log = scope.workdir / f"{scope.prefix}-quix.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [quix_python(), "-m", "benchmarks.quix_app", scope.bootstrap, scope.topic,
             scope.results, scope.group, "--commit-interval", str(commit_interval),
             "--state-dir", str(scope.workdir / f"{scope.prefix}-quix-state")],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while b"assigned" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Quix did not join: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # settled, as wait_group waits for the worker's group
    except BaseException:
        stop([proc])
        raise
    return _timed_drain(scope, proc, backlog)


def kafka_peer(new_scope: Any, tasks: int, runs: int) -> dict[str, Any]:
    """Workload 10: the bare Avro loop, taskstream's worker and Quix Streams (commit every
    5 s, its default, and every 0.2 s), one process each, on fresh preloaded topics, in
    turn in every run (the three in rotated order); ratios are taken within a run."""
    variants: dict[str, Callable[[], dict[str, Any]]] = {
        "taskstream": lambda: taskstream_drain(new_scope(), tasks),
        "quix_5s": lambda: quix_drain(new_scope(), tasks, 5.0),
        "quix_0.2s": lambda: quix_drain(new_scope(), tasks, 0.2),
    }
    versions = quix_versions()  # fails early without the Quix interpreter
    versions["taskstream_confluent_kafka"] = importlib.metadata.version("confluent-kafka")
    raw: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    ceiling = []
    for i in range(runs):
        ceiling.append(ceiling_loop(new_scope(), tasks))
        names = list(variants)
        for name in names[i % 3 :] + names[: i % 3]:  # each goes first in some run
            raw[name].append(variants[name]())
        print(f"  run {i + 1}: ceiling {ceiling[-1]:,.0f}/s " + ", ".join(
            f"{k} {v[-1]['last_result']:,.0f}/s to last result, {v[-1]['last_commit']:,.0f}/s "
            f"to last commit, {v[-1]['cpu_us_per_task']:.0f} us/task" for k, v in raw.items()
        ), flush=True)  # fmt: skip
    out: dict[str, Any] = {"tasks": tasks, "ceiling": summary(ceiling), "versions": versions}
    measures = ("last_result", "last_commit", "cpu_us_per_task")
    for name, rs in raw.items():
        out[name] = {m: summary([r[m] for r in rs]) for m in measures}
        out[name]["all_checks_passed"] = all(r["exactly_one_result_each"] for r in rs)
        if name != "taskstream":
            ts = raw["taskstream"]
            out[name]["taskstream_ratio"] = {
                m: summary([a[m] / b[m] for a, b in zip(ts, rs, strict=True)]) for m in measures
            }
    out["taskstream"]["ratio_to_ceiling"] = summary(
        [r["last_commit"] / c for r, c in zip(raw["taskstream"], ceiling, strict=True)]
    )
    return out
