"""Rate limits per task (Celery's ``rate_limit``), shared across the cluster by partitions."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

import taskstream.testing
from taskstream import App, clock
from taskstream.consumer.executor import Executor
from taskstream.consumer.rate_limits import RateLimited, RateLimits, TokenBucket
from taskstream.errors import InvalidOption
from taskstream.task import rate_per_s

TOPIC = "p.tasks.default"


class Job:
    is_async = False
    limited = False
    released = False

    def __init__(self, task: str, n: int, key: str | None = None) -> None:
        self.task_name, self.n, self.key = task, n, key

    def run(self) -> None: ...

    async def run_async(self) -> None: ...


@pytest.fixture(autouse=True)
def moved_clock() -> Iterator[None]:
    yield
    clock.reset()


@pytest.mark.parametrize(
    ("value", "per_s"),
    [("10/s", 10.0), ("10", 10.0), ("120/m", 2.0), ("3600/h", 1.0), (5, 5.0), (0.5, 0.5),
     (" 30 / m ", 0.5), (None, None), (0, None), ("", None), ("0/s", None)],
)  # fmt: skip
def test_a_rate_in_celerys_forms(value: object, per_s: float | None) -> None:
    assert rate_per_s(value) == per_s


@pytest.mark.parametrize("value", ["ten/s", "10/d", -1, "-5/m", True, [10], "nan", "inf"])
def test_anything_else_is_an_invalid_option(value: object) -> None:
    with pytest.raises(InvalidOption, match="rate_limit"):
        rate_per_s(value)


def test_a_task_declares_its_rate_limit_and_a_bad_one_fails_at_declaration() -> None:
    app = App("rl")

    @app.task(rate_limit="30/m")
    def slow(x: int) -> int:
        return x

    assert app.tasks[slow.name].options.rate_per_s == 0.5
    with pytest.raises(InvalidOption, match="rate_limit"):
        app.task(rate_limit="fast")(lambda: None)


def test_a_bucket_holds_one_token_so_there_is_no_burst() -> None:
    bucket = TokenBucket(rate=4.0)  # one start every 0.25 s
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == 0.25
    assert bucket.take(10.0) == 0.5
    assert bucket.take(20.0) == 0.0, "idle for long: still only one token, not forty"
    assert bucket.take(20.0) == 0.25


def limits(started: list[Job], rate: float = 2.0, partitions: int = 12) -> RateLimits:
    return RateLimits(
        started.append,  # type: ignore[arg-type]  # (our Job is the only kind here)
        {"t.slow": (rate, TOPIC)},
        {TOPIC: partitions},
        timer=False,
    )


def test_a_worker_with_every_partition_runs_the_task_at_the_rate() -> None:
    started: list[Job] = []
    gate = limits(started)
    gate.owned(TOPIC, 12)
    for n in range(4):
        gate.submit(Job("t.slow", n))
    assert [j.n for j in started] == [0]
    assert gate.waiting() == 3
    for due, expected in ((0.5, [0, 1]), (0.5, [0, 1, 2]), (0.4, [0, 1, 2]), (0.1, [0, 1, 2, 3])):
        clock.advance(due)
        gate.release_due()
        assert [j.n for j in started] == expected


def test_a_worker_runs_its_share_of_the_clusters_rate() -> None:
    started: list[Job] = []
    gate = limits(started)  # 2/s across the cluster
    gate.owned(TOPIC, 3)  # a quarter of the queue's partitions: 0.5/s here
    assert gate.rate_here("t.slow") == 0.5
    gate.submit(Job("t.slow", 0))
    gate.submit(Job("t.slow", 1))
    clock.advance(1.9)
    gate.release_due()
    assert [j.n for j in started] == [0]
    clock.advance(0.1)
    gate.release_due()
    assert [j.n for j in started] == [0, 1]
    gate.owned(TOPIC, 12)  # a rebalance gave it every partition: the full rate
    assert gate.rate_here("t.slow") == 2.0


def test_tasks_without_a_limit_are_never_held() -> None:
    started: list[Job] = []
    gate = limits(started, rate=0.1)
    gate.owned(TOPIC, 12)
    gate.submit(Job("t.slow", 0))
    gate.submit(Job("t.slow", 1))
    for n in range(2, 5):
        gate.submit(Job("t.fast", n))
    assert [j.n for j in started] == [0, 2, 3, 4]


def test_a_stopped_gate_starts_nothing_more() -> None:
    started: list[Job] = []
    gate = limits(started)
    gate.owned(TOPIC, 12)
    gate.submit(Job("t.slow", 0))
    gate.submit(Job("t.slow", 1))
    gate.stop()
    clock.advance(5)
    assert gate.release_due() is None
    assert [j.n for j in started] == [0]


def test_the_executor_keeps_a_keys_order_behind_a_held_run() -> None:
    """A run waiting for its token holds its key: a later run of that key (of any task)
    waits behind it, runs of other keys do not."""
    order: list[str] = []

    class Recorded(Job):
        def run(self) -> None:
            order.append(f"{self.task_name}:{self.n}")

    executor = Executor(2)
    gate = RateLimits(executor.start, {"t.slow": (5.0, TOPIC)}, {TOPIC: 1})
    gate.owned(TOPIC, 1)
    executor.gate(gate)
    try:
        executor.submit(Recorded("t.slow", 0, key="k"))
        executor.submit(Recorded("t.slow", 1, key="k"))
        executor.submit(Recorded("t.fast", 2, key="k"))
        executor.submit(Recorded("t.fast", 3, key="other"))
        deadline = time.monotonic() + 10
        while len(order) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        gate.stop()
        executor.shutdown()
    assert order.index("t.slow:0") < order.index("t.slow:1") < order.index("t.fast:2")
    assert order.index("t.fast:3") < order.index("t.slow:1"), "another key is not held"


def test_a_worker_knows_the_rate_limited_tasks_of_the_queues_it_serves() -> None:
    app = App("rl", topic_prefix="p", partitions=12)

    @app.task(rate_limit="10/s")
    def slow(x: int) -> int:
        return x

    @app.task(rate_limit="1/s", queue="other")
    def elsewhere(x: int) -> int:
        return x

    @app.task
    def fast(x: int) -> int:
        return x

    limited = RateLimited.of(app, ["default"], {TOPIC: 4})
    assert limited.tasks == {slow.name: (10.0, TOPIC)}
    assert limited.partitions == {TOPIC: 4}, "the broker's count, not the configured one"
    assert RateLimited.of(app, ["default"], {}).partitions == {TOPIC: 12}


def test_a_rate_limited_task_starts_at_its_rate_through_the_worker() -> None:
    """The whole path on the in-memory broker: the worker's gate spaces the task's starts."""
    app = App("rlw", bootstrap_servers=None, topic_prefix="rlw", partitions=3)

    @app.task(name="rlw.stamp", rate_limit="10/s")
    def stamp(n: int) -> float:
        return time.monotonic()

    @app.task(name="rlw.now")
    def now() -> float:
        return time.monotonic()

    with taskstream.testing.run(app, concurrency=4):
        stamps = [stamp.delay(n) for n in range(6)]
        unlimited = now.delay().get(timeout=30)
        starts = sorted(r.get(timeout=30) for r in stamps)
    # Tokens 0.1 s apart: 0.5 s from the first run to the sixth (a run starts a little after
    # its token, by however busy the machine is; without the limit all six take milliseconds).
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert starts[-1] - starts[0] >= 0.4, gaps
    assert unlimited < starts[-1], "a task without a limit is not held behind them"
