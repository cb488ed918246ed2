"""The worker's per-task Python cost, in process and without a broker.

    python -m benchmarks.hot_path                 # µs per task, best of several passes
    python -m benchmarks.hot_path --instructions  # instructions per task too (valgrind)

Feeds pre-encoded task records (confluent_kafka.Message objects) through the worker's own
dispatch -> run -> publish path, with a producer stand-in that acknowledges every event on
poll(); the same records through the ceiling loop's Python work (fastavro decode of the
task envelope, encode of a result envelope); and ``task.delay()`` through the app's own
publisher, on a client stand-in that acknowledges every event on poll(). Wall times on a
shared machine are noisy; the instruction counts (callgrind, the difference between two sizes
so that start-up cancels out) come out the same on every run, so they show what a change did
to the hot path.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from benchmarks.common import REPO, Scope, encode_backlog
from benchmarks.workloads import CeilingCodec
from taskstream.consumer.executor import Executor
from taskstream.consumer.handler import TaskHandler
from taskstream.consumer.instrumentation import PrometheusHooks
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.time_limits import Watchdog
from taskstream.testing.stub_broker import StubBroker


class _AckingClient:
    """confluent-kafka's Producer as EventProducer calls it; poll() acknowledges all."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def produce(self, topic: str, value: bytes, key: Any = None, partition: int = -1,
                on_delivery: Any = None, headers: Any = None) -> None:  # fmt: skip
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float = 0.0) -> int:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(None, None)
        return len(callbacks)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self.callbacks)


class AckingProducer(_AckingClient):
    """Takes events like EventProducer.produce (its own argument order); poll() acknowledges
    them all."""

    def produce(self, topic: str, value: bytes, key: Any = None, on_delivery: Any = None,  # type: ignore[override]
                headers: Any = None, partition: int = -1) -> None:  # fmt: skip
        self.callbacks.append(on_delivery)


def records(count: int) -> tuple[Any, list[Message]]:
    app = Scope("127.0.0.1:9", Path("/tmp")).app()  # nothing connects: no broker needed
    topic = "bench.tasks.default"
    backlog = encode_backlog(app, count)
    return app, [
        Message(topic=topic, partition=i % 12, offset=i // 12, value=v, key=k.encode())
        for i, (v, k) in enumerate(backlog)
    ]


class _NoJournal:
    """The ownership journal in the steady state: every record runs as usual."""

    def admit(self, message: Message) -> bool:
        return True

    def finished(self, topic: str, partition: int, offset: int) -> None:
        pass

    def serve(self, in_flight: int) -> None:
        pass


def worker_pass(app: Any) -> Callable[[list[Message]], None]:
    producer = AckingProducer()
    consumer = StubBroker().consumer({"group.id": "bench", "enable.auto.commit": False})
    handler = TaskHandler(
        app, app.settings, consumer, producer,  # type: ignore[arg-type]
        hooks=PrometheusHooks(), revocations=Revocations(app.settings.revokes_max),
        watchdog=Watchdog(), worker_id="bench:1", concurrency=1,
        max_in_flight=app.settings.max_tasks_in_flight,
        message_max_bytes=1_000_000, ownership=lambda *_: _NoJournal(),  # type: ignore[arg-type]
    )  # fmt: skip
    # As the worker's loop runs them, without the runtime's lock (no loop runs here).
    handler.executor = handler.context.executor = Executor(1, inline=lambda run: run())

    def run(messages: list[Message]) -> None:
        handler.records(messages)  # concurrency 1: on this thread, as in a worker
        while handler.in_flight:
            handler.serve(0)  # delivery reports: the outcomes are acknowledged

    return run


class _AckingBroker:
    """A broker whose producer acknowledges everything and whose topics all exist."""

    def producer(self, config: dict[str, Any]) -> Any:
        return _AckingClient()

    def ensure_topics(self, *_args: Any, **_kwargs: Any) -> list[str]:
        return []


def delay_pass(app: Any) -> Callable[[list[Message]], None]:
    """``task.delay(i)`` per record, through the app's TaskPublisher (envelope, size check,
    produce, delivery report), its background poller stopped so that the count is the same
    on every run."""
    from taskstream.producer.publisher import TaskPublisher

    publisher = TaskPublisher(app.settings, app.envelopes, _AckingBroker())  # type: ignore[arg-type]
    poller = publisher._producer
    poller._closed.set()
    poller._wakeup.set()
    if poller._poller is not None:
        poller._poller.join()
    app._publisher = publisher
    task = app.tasks["bench.noop"]

    def run(messages: list[Message]) -> None:
        for i in range(len(messages)):
            task.delay(i)

    return run


def ceiling_pass(app: Any) -> Callable[[list[Message]], None]:
    """The Python work of workloads.ceiling_loop per record."""
    codec = CeilingCodec(app)

    def run(messages: list[Message]) -> None:
        for m in messages:
            codec.result_for(m)

    return run


def best_us(run: Callable[[list[Message]], None], messages: list[Message], passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        run(messages)
        best = min(best, time.perf_counter() - started)
    return best / len(messages) * 1e6


_PASSES: dict[str, Callable[[Any], Callable[[list[Message]], None]]] = {
    "worker": worker_pass,
    "ceiling": ceiling_pass,
    "delay": delay_pass,
}
_SMALL, _LARGE = 1000, 5000


def instructions(which: str, small: int = _SMALL, large: int = _LARGE) -> float:
    """Instructions per record of one pass (callgrind), start-up cancelled out."""

    def total(n: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             "-m", "benchmarks.hot_path", "--one-pass", which, "--tasks", str(n)],
            cwd=REPO, capture_output=True, text=True, check=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", out.stderr)
        assert found, out.stderr[-2000:]
        return int(found.group(1))

    return (total(large) - total(small)) / (large - small)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--instructions", action="store_true", help="count them with valgrind")
    p.add_argument("--one-pass", choices=tuple(_PASSES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_pass:  # under valgrind: one pass over --tasks records, nothing printed
        # The same set-up whatever --tasks is, so that it cancels out between two sizes.
        app, messages = records(_LARGE)
        _PASSES[args.one_pass](app)(messages[: args.tasks])
        return 0
    app, messages = records(args.tasks)
    worker = best_us(worker_pass(app), messages, args.passes)
    ceiling = best_us(ceiling_pass(app), messages, args.passes)
    delay = best_us(delay_pass(app), messages, args.passes)
    print(f"worker hot path:  {worker:6.2f} µs/task (best of {args.passes} passes)")
    print(f"ceiling's Python: {ceiling:6.2f} µs/task   ratio {ceiling / worker:.0%}")
    print(f"delay():          {delay:6.2f} µs/task")
    if args.instructions:
        w, c, d = instructions("worker"), instructions("ceiling"), instructions("delay")
        print(f"instructions:     worker {w:,.0f}/task, ceiling {c:,.0f}/task   ratio {c / w:.0%}")
        print(f"                  delay() {d:,.0f}/task")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
