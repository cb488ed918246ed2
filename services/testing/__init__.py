"""Run an app's tasks in a unit test, without Kafka: Celery's ``task_always_eager`` and
dramatiq's ``StubBroker`` for taskstream.

    import taskstream.testing

    def test_add() -> None:
        with taskstream.testing.run(app) as stub:
            assert add.delay(2, 3).get(timeout=5) == 5
            flaky.delay()        # retries with a countdown
            stub.advance(60)     # time moves on: countdowns and retries come due
            stub.join()          # every task, retry and result done

Unlike eager mode, nothing is short-circuited: ``run`` swaps the app's broker for an in-memory
:class:`taskstream.testing.stub_broker.StubBroker` and its lookup store for a memory one, then runs
the real worker (with its delay scheduler) and the materializer on background threads. Task
events, retries and results take the same Avro encode/decode path as in production, so a
schema break fails the test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from confluent_kafka import Message

from taskstream import clock
from taskstream.app import App
from taskstream.consumer.materializer import Materializer
from taskstream.consumer.worker import Worker
from taskstream.errors import JoinTimeout
from taskstream.kafka.topics import (
    DELAY_TIERS_S,
    delay_topic,
    delays_group,
    results_topic,
    tier_of,
)
from taskstream.store import MemoryStore
from taskstream.testing.stub_broker import StubBroker

__all__ = ["Stub", "run"]

_COMMIT_INTERVAL_MS = 10  # commit (and so join) soon after work is done
_SHUTDOWN_GRACE_S = 5.0  # at most, for tasks still running when the test ends


class Stub:
    """What ``run(app)`` yields: the stub broker, and the test's control of time and work."""

    def __init__(
        self, app: App, broker: StubBroker, worker: Worker, materializer: Materializer
    ) -> None:
        self.app = app
        self.broker = broker
        self.worker = worker
        self.materializer = materializer
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def advance(self, seconds: float) -> None:
        """Move taskstream's clock forward: countdowns and retry delays that fall within
        ``seconds`` come due (the worker and delay scheduler see it at once)."""
        clock.advance(seconds)
        with self.broker.condition:
            self.broker.condition.notify_all()

    def join(self, timeout: float = 10.0) -> None:
        """Block until there is no pending work: every task event consumed and committed by
        the worker, every due delayed event moved on by the delay scheduler, every result in
        the store. Tasks whose countdown or retry delay is still in the future are *not*
        pending work: join returns while they wait (``advance()`` brings them due).

        Raises TimeoutError when work is still pending after ``timeout`` seconds, and the
        exception of a background thread that crashed.
        """
        s = self.app.settings
        prefix = s.topic_prefix
        tasks = list(self.worker.topics)  # every band of its queues
        delays = [delay_topic(prefix, t) for t in DELAY_TIERS_S]
        results = [results_topic(prefix)]
        broker = self.broker

        def not_due(record: Message) -> bool:
            tier = tier_of(prefix, record.topic() or "") or DELAY_TIERS_S[0]
            now: float = clock.now()
            return bool(record.timestamp()[1] / 1000 + tier > now)

        shared = list(zip(self.worker.share_groups, self.worker.shared_bands, strict=True))

        def idle() -> bool:
            self.raise_errors()
            return bool(
                broker.caught_up(self.worker.group_id, tasks)
                and all(broker.share_caught_up(g, topics) for g, topics in shared)
                and broker.caught_up(delays_group(prefix), delays, not_due=not_due)
                and broker.caught_up(self.materializer.group_id, results)
            )

        try:
            broker.wait_until(idle, timeout)
        except TimeoutError:
            raise JoinTimeout(timeout) from None

    def raise_errors(self) -> None:
        """Re-raise the first exception that ended a background thread."""
        if self._errors:
            raise self._errors[0]

    def _start(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced by join() and at the end of run()
                self._errors.append(exc)

        thread = threading.Thread(target=guarded, name=f"taskstream-testing-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _stop(self) -> None:
        self.worker.stop()
        self.materializer.stop()
        for thread in self._threads:
            thread.join(_SHUTDOWN_GRACE_S + 5)


@contextmanager
def run(app: App, *, concurrency: int | None = None) -> Iterator[Stub]:
    """Run ``app``'s tasks on an in-memory broker for the duration of the block.

    Inside it, ``app.broker`` is a StubBroker (with taskstream's clock), the app's lookup
    store is a fresh ``MemoryStore``, and a worker (with its delay scheduler) and a
    materializer run on background threads, committing every 10 ms. On exit they stop and
    the app's broker, store, publisher and settings are restored; the clock is moved back
    if the block advanced it.
    """
    clock_offset = clock.offset()
    broker = StubBroker(clock=clock.now)
    s = app.settings
    settings = s.replace(
        bootstrap_servers=s.bootstrap_servers or "stub:9092",  # the clients' configs need one
        commit_interval_ms=_COMMIT_INTERVAL_MS,
        shutdown_grace_s=min(s.shutdown_grace_s, _SHUTDOWN_GRACE_S),
    )
    # app.control revokes through the stub broker too: rebound() opens it anew there.
    try:
        with app.rebound(broker=broker, store=MemoryStore(), settings=settings):
            app.ensure_topics()  # before the first delay(): the worker makes them on its thread
            worker = Worker(app, concurrency=concurrency)
            materializer = Materializer(app)
            stub = Stub(app, broker, worker, materializer)
            stub._start("worker", worker.run)
            stub._start("materializer", materializer.run)
            try:
                yield stub
            finally:
                stub._stop()
            stub.raise_errors()
    finally:
        if clock.offset() != clock_offset:
            clock.reset()
            clock.advance(clock_offset)
