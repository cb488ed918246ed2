"""Helpers shared by the workloads: apps, worker processes, preloading, checks."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from taskstream import App
from taskstream.envelope import TaskEvent, now_micros
from taskstream.kafka.topics import results_topic, task_topic, worker_group

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 12
APP_SPEC = "benchmarks.bench_app:app"


class Scope:
    """One workload run: a unique topic prefix on the shared broker."""

    def __init__(self, bootstrap: str, workdir: Path, partitions: int = PARTITIONS,
                 store: str | None = None, replication: int = 1,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        """``replication``: of the topics the run creates (3 on the Apache Kafka cluster);
        ``env``: extra TASKSTREAM_* settings of its worker processes."""
        self.bootstrap = bootstrap
        self.replication = replication
        self.extra_env = env or {}
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.partitions = partitions
        self.store = store or f"sqlite:///{workdir}/{self.prefix}.db"
        self.workdir = workdir
        self.logs: list[Path] = []  # worker logs, one per process

    def settings(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "topic_prefix": self.prefix,
            "store": self.store,
            "partitions": self.partitions,
            "replication_factor": self.replication,
            "session_timeout_ms": 6000,
        }

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({f"TASKSTREAM_{k.upper()}": str(v) for k, v in self.settings().items()})
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        env.update(self.extra_env)
        env.update(extra)
        return env

    def app(self) -> App:
        from benchmarks.bench_app import noop, noop_limited, sleep_10ms, sleep_limited

        app = App("bench", **self.settings())
        app.task(name="bench.noop")(noop.func)
        app.task(name="bench.sleep")(sleep_10ms.func)
        app.task(name="bench.noop_limited", queue="limited", time_limit=30)(noop_limited.func)
        app.task(name="bench.sleep_limited", queue="limited", time_limit=30)(sleep_limited.func)
        return app

    @property
    def topic(self) -> str:
        return task_topic(self.prefix, "default")

    @property
    def results(self) -> str:
        return results_topic(self.prefix)

    @property
    def group(self) -> str:
        return worker_group(self.prefix)


def spawn_worker(
    scope: Scope, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A worker process; its log goes to a file that wait_group() reads assignments from."""
    log = scope.workdir / f"{scope.prefix}-worker-{uuid.uuid4().hex[:6]}.log"
    scope.logs.append(log)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskstream.cli", "worker", APP_SPEC, *args],
            env={**scope.env(), **(env or {})}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def spawn_materializer(scope: Scope) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "materialize", "--app", APP_SPEC],
        env=scope.env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def encode_backlog(app: App, count: int, task: str = "bench.noop",
                   keys: int | None = None) -> list[tuple[bytes, str]]:  # fmt: skip
    """``count`` task events as the worker reads them, (value, key) each, encoded up front so
    that loading the topic costs the broker's time, not Python's."""
    t = app.tasks[task]
    out = []
    now = now_micros()
    for i in range(count):
        key = None if keys is None else f"k{i % keys}"
        event = TaskEvent(str(uuid.uuid4()), task, t.queue, key, 1, now, None,
                          t.encode_args((i,), {}))  # fmt: skip
        out.append((app.envelopes.encode_task(event), key or event.id))
    return out


def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, str]],
                batch_records: int | None = None) -> float:  # fmt: skip
    """Produce pre-encoded records with a bare idempotent producer; returns seconds taken.
    ``batch_records``: at most this many records per producer batch (None: librdkafka's,
    thousands), as tasks sent one by one from web requests are."""
    batching = {} if batch_records is None else {"batch.num.messages": batch_records}
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000, **batching})  # fmt: skip
    started = time.perf_counter()
    for value, key in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
    left = producer.flush(120)
    assert left == 0, f"{left} backlog records not delivered"
    return time.perf_counter() - started


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        consumer.close()


def wait_committed(scope: Scope, total: int, timeout: float, interval: float = 0.02) -> float:
    """Block until the workers' committed offsets cover ``total`` records; returns the time."""
    consumer = Consumer({"bootstrap.servers": scope.bootstrap, "group.id": scope.group})
    tps = [TopicPartition(scope.topic, p) for p in range(scope.partitions)]
    deadline = time.monotonic() + timeout
    try:
        while True:
            done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
            if done >= total:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise AssertionError(f"committed offsets cover {done} of {total} after {timeout}s")
            time.sleep(interval)
    finally:
        consumer.close()


_ASSIGNMENT = re.compile(r" (assigned|revoked|lost) (.+)$")
_TOPIC_PARTITIONS = re.compile(r"(\S+)\[([0-9,]+)\]")  # one of partition_names()' topics


def group_assignment(
    scope: Scope, gone: Collection[Path] = (), queue_topic: str | None = None
) -> dict[str, list[int]]:
    """worker log -> partitions it owns now, from the workers' own log lines (the local
    broker does not describe a group's members); ``gone``: the logs of killed workers;
    ``queue_topic``: the queue's topic (default: the queue ``default``'s)."""
    out = {}
    for log in scope.logs:
        if log in gone:
            continue
        owned: set[int] = set()
        for line in log.read_text(errors="replace").splitlines():
            m = _ASSIGNMENT.search(line)
            if m is None:
                continue
            for topic, numbers in _TOPIC_PARTITIONS.findall(m.group(2)):
                if topic == (queue_topic or scope.topic):  # not the high band, read with it
                    parts = {int(p) for p in numbers.split(",")}
                    owned = owned | parts if m.group(1) == "assigned" else owned - parts
        out[log.name] = sorted(owned)
    return out


def wait_group(
    scope: Scope, members: int, timeout: float = 60, queue_topic: str | None = None
) -> dict[str, list[int]]:
    """Until ``members`` workers own every partition between them, and the group is stable."""
    deadline = time.monotonic() + timeout
    stable_since = None
    last: dict[str, list[int]] | None = None
    while time.monotonic() < deadline:
        a = group_assignment(scope, queue_topic=queue_topic)
        ok = len([ps for ps in a.values() if ps]) == members and sorted(
            p for ps in a.values() for p in ps
        ) == list(range(scope.partitions))
        if ok and a == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 1.0:
                return a
        else:
            stable_since = None
        last = a
        time.sleep(0.2)
    raise AssertionError(f"group {scope.group} did not settle on {members} members: {last}")


def read_results(bootstrap: str, topic: str, expected: int, timeout: float = 60,
                 idle: float = 1.0) -> list[Any]:  # fmt: skip
    """Every message of the results topic (until ``expected`` were read and ``idle`` s pass
    without another)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.2)
            batch = [m for m in batch if m.error() is None]
            if batch:
                out.extend(batch)
                last = time.monotonic()
            elif len(out) >= expected and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return out


def check_results(
    app: App | None, messages: list[Any], ids: set[str] | None, expected: int
) -> dict[str, Any]:
    """Exactly one result per task: counts of missing and duplicated task ids."""
    counts = Counter(m.key().decode() for m in messages)
    if ids is None:
        ids = set(counts)
    missing = sum(1 for i in ids if i not in counts)
    duplicated = sum(1 for i in ids if counts.get(i, 0) > 1)
    return {
        "results": len(messages),
        "missing": missing,
        "duplicated": duplicated,
        "exactly_one_result_each": missing == 0 and duplicated == 0 and len(ids) == expected,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def encode_json_backlog(count: int) -> list[tuple[bytes, str]]:
    """The tasks of :func:`encode_backlog` as JSON values, (value, key) each: the same fields
    (the task envelope's), the argument as a JSON object, keyed by task id."""
    import json

    now = now_micros()
    out = []
    for i in range(count):
        tid = str(uuid.uuid4())
        event = {"id": tid, "task": "bench.noop", "queue": "default", "key": None, "attempt": 1,
                 "enqueued_at": now, "not_before": None, "args": {"n": i}}  # fmt: skip
        out.append((json.dumps(event, separators=(",", ":")).encode(), tid))
    return out


class ResultWatcher:
    """Reads a results topic from its start on a thread of its own and notes the moment the
    ``expected``-th record was readable; keeps every record for the checks."""

    def __init__(
        self, bootstrap: str, topic: str, expected: int, partitions: int = PARTITIONS
    ) -> None:
        self.expected = expected
        self.messages: list[Any] = []
        self.last_result: float | None = None
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap,
                                   "group.id": f"watch-{uuid.uuid4().hex}",
                                   "enable.auto.commit": False,
                                   "fetch.wait.max.ms": 10})  # fmt: skip
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = [m for m in self._consumer.consume(10_000, 0.05) if m.error() is None]
            self.messages.extend(batch)
            if self.last_result is None and len(self.messages) >= self.expected:
                self.last_result = time.perf_counter()

    def wait(self, timeout: float) -> float:
        """The time the last expected result was readable."""
        deadline = time.monotonic() + timeout
        while self.last_result is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} of {self.expected} results")
            time.sleep(0.01)
        return self.last_result

    def close(self, idle: float = 1.0) -> list[Any]:
        """Stop after ``idle`` s more (duplicates would show up), and return the records."""
        time.sleep(idle)
        self._stop.set()
        self._thread.join(30)
        self._consumer.close()
        return self.messages


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (its own, not its children's)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)
