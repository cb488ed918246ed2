"""dev's watch on its embedded broker: it warns, once, when round trips slow or stall.

Driven by a fake broker on a fake clock: a probe record comes back after the broker's
current delay (None: never, a stalled broker), and waiting for it advances the clock.
"""

from __future__ import annotations

import pytest

from taskstream.cli.broker_watch import BrokerWatch, WorkerWait, Worst


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeBroker:
    """A probe whose records come back ``delay`` seconds after they are sent (None: never)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delay: float | None = 0.005
        self.in_flight: list[tuple[float, str]] = []  # (due, token)
        self.sent = 0

    def send(self, token: str) -> None:
        self.sent += 1
        if self.delay is not None:
            self.in_flight.append((self.clock.now + self.delay, token))

    def received(self, timeout: float) -> list[str]:
        """Waits (on the fake clock) up to `timeout` for the first record due."""
        due = min((d for d, _ in self.in_flight), default=None)
        if due is None or due > self.clock.now + timeout:
            self.clock.now += timeout
            return []
        self.clock.now = max(self.clock.now, due)
        back = [t for d, t in self.in_flight if d <= self.clock.now]
        self.in_flight = [(d, t) for d, t in self.in_flight if d > self.clock.now]
        return back


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> FakeBroker:
    return FakeBroker(clock)


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def watch(broker: FakeBroker, clock: FakeClock, said: list[str]) -> BrokerWatch:
    return BrokerWatch(broker, said.append, clock)


def run_for(watch: BrokerWatch, clock: FakeClock, seconds: float, poll_s: float = 0.2) -> None:
    """Step as dev's watcher thread does, for `seconds` of the fake clock."""
    end = clock.now + seconds
    while clock.now < end:
        watch.step(poll_s)
        if not watch.waiting:
            clock.now += poll_s


def warnings(said: list[str]) -> list[str]:
    return [s for s in said if s.startswith("WARNING")]


def test_a_healthy_broker_is_probed_every_interval_and_never_warned_about(
    watch: BrokerWatch, broker: FakeBroker, clock: FakeClock, said: list[str]
) -> None:
    run_for(watch, clock, 600)
    assert said == []
    assert 600 / watch.interval_s - 1 <= broker.sent <= 600 / watch.interval_s + 1


def test_round_trips_that_slow_down_warn_once_naming_the_limit_and_both_ways_out(
    watch: BrokerWatch, broker: FakeBroker, clock: FakeClock, said: list[str]
) -> None:
    run_for(watch, clock, 60)
    broker.delay = 0.5  # slower, still under slow_s: no warning
    run_for(watch, clock, 60)
    assert said == []
    broker.delay = 2.5
    run_for(watch, clock, watch.interval_s + 3)  # one slow round trip: not yet
    assert said == []
    run_for(watch, clock, 120)  # the second warns; the ones after it do not again
    assert len(warnings(said)) == 1, said
    text = said[0]
    assert "degrading: a produce -> consume round trip took 2.5s" in text
    assert "~75,000 tasks at 100 tasks/s" in text
    assert "restart taskstream dev" in text and "taskstream dev --broker kafka" in text


def test_a_stalled_broker_warns_after_stalled_s_and_is_probed_again(
    watch: BrokerWatch, broker: FakeBroker, clock: FakeClock, said: list[str]
) -> None:
    run_for(watch, clock, 30)
    broker.delay = None  # SIGSTOPped: nothing comes back
    sent = broker.sent
    run_for(watch, clock, watch.stalled_s - 1)
    assert said == []
    run_for(watch, clock, 2)
    assert warnings(said) == [said[0]]
    assert f"a probe record is not back after {watch.stalled_s:g}s" in said[0]
    run_for(watch, clock, 60)
    assert len(said) == 1  # still stalled: said once
    assert broker.sent > sent + 1  # given up on, the stalled probe makes way for new ones


def test_fast_round_trips_again_end_the_warning_and_a_new_slowdown_warns_again(
    watch: BrokerWatch, broker: FakeBroker, clock: FakeClock, said: list[str]
) -> None:
    broker.delay = 3.0
    run_for(watch, clock, 30)
    assert len(warnings(said)) == 1
    broker.delay = 0.004
    run_for(watch, clock, watch.interval_s * (watch.recover_after + 1))
    assert said[-1] == "the embedded broker answers in 4 ms again"
    broker.delay = 3.0
    run_for(watch, clock, 30)
    assert len(warnings(said)) == 2


class FakeLateness:
    """How late the tasks reach a reader, as the test sets it (None: no task sent)."""

    def __init__(self) -> None:
        self.late: float | None = 0.02
        self.sampled = 0

    def sample(self) -> tuple[float, str] | None:
        self.sampled += 1
        return None if self.late is None else (self.late, f"tasks wait {self.late:.1f}s")


def test_tasks_that_arrive_late_warn_although_the_probe_round_trips_fast(
    broker: FakeBroker, clock: FakeClock, said: list[str]
) -> None:
    """Tansu slows down per partition as its data grows: the probe's own topic stays fast
    while the tasks wait (seen in benchmarks.soak), so the tasks' lateness warns too."""
    lateness = FakeLateness()
    watch = BrokerWatch(broker, said.append, clock, lateness=lateness)
    run_for(watch, clock, 60)
    assert said == [] and lateness.sampled >= 60 / watch.interval_s - 1
    lateness.late = None  # nothing sent meanwhile: nothing to judge by
    run_for(watch, clock, 60)
    lateness.late = 3.0
    run_for(watch, clock, watch.interval_s * 2)  # two late intervals (a producer starting): not yet
    assert said == []
    run_for(watch, clock, 60)
    assert len(warnings(said)) == 1, said
    assert "degrading: tasks wait 3.0s (normally well under 1 s)" in said[0]
    assert "restart taskstream dev" in said[0]


def test_a_fast_probe_does_not_end_the_warning_while_tasks_are_still_late(
    broker: FakeBroker, clock: FakeClock, said: list[str]
) -> None:
    lateness = FakeLateness()
    watch = BrokerWatch(broker, said.append, clock, lateness=lateness)
    lateness.late = 5.0
    run_for(watch, clock, 30)
    run_for(watch, clock, watch.interval_s * (watch.recover_after + 2))
    assert len(said) == 1, "still late: no recovery said"
    lateness.late = 1.5  # under late_s, but not healthy: no recovery said (no flapping)
    run_for(watch, clock, watch.interval_s * (watch.recover_after + 2))
    assert len(said) == 1
    lateness.late = 0.01
    run_for(watch, clock, watch.interval_s * (watch.recover_after + 2))
    assert said[-1].startswith("the embedded broker answers in")


def beat(lag_s: float, running: int, state: str = "online") -> dict[str, object]:
    runs = [{"task_id": str(i)} for i in range(running)]
    return {"state": state, "concurrency": 4, "running": runs,
            "lag": [{"topic": "t", "partition": 0, "records": 3, "seconds": lag_s},
                    {"topic": "t", "partition": 1, "records": 0, "seconds": 0.0}]}  # fmt: skip


def test_the_tasks_wait_counts_only_for_workers_with_free_slots() -> None:
    """A worker busy with every slot makes its tasks wait by itself: not the broker's doing."""
    workers: list[dict[str, object]] = []
    wait = WorkerWait(lambda: workers)
    assert wait.sample() is None  # no worker yet
    workers[:] = [beat(9.0, running=4), beat(0.2, running=1), beat(30.0, 0, state="lost")]
    assert wait.sample() == (0.2, "tasks wait 0.2s in their queue while a worker has free slots")
    workers.append(beat(3.5, running=0))
    late, what = wait.sample() or (0.0, "")
    assert late == 3.5 and "3.5s" in what
    workers[-1]["throttled"] = 2  # held back by a rate limit: waiting on purpose
    assert wait.sample() == (0.2, "tasks wait 0.2s in their queue while a worker has free slots")


def test_the_worst_source_speaks() -> None:
    quiet, late = FakeLateness(), FakeLateness()
    quiet.late, late.late = None, 4.0
    assert Worst(quiet, late).sample() == (4.0, "tasks wait 4.0s")
    late.late = None
    assert Worst(quiet, late).sample() is None
