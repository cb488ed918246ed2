"""eta, expires and revoke, through the real worker and delay scheduler on the stub broker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

import taskstream.testing
from taskstream import App, clock
from taskstream.consumer.time_limits import Watchdog
from taskstream.control import Revocation
from taskstream.errors import CorruptMessage, InvalidOption, TaskRevoked, Terminated
from taskstream.status import Status

# Set by the looping task when it starts and when it sees Terminated.
started = threading.Event()
stopped = threading.Event()


@pytest.fixture
def app() -> Iterator[App]:
    app = App("unit", bootstrap_servers=None, topic_prefix="unit", partitions=3)

    @app.task(name="unit.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="unit.short_lived", expires=30)
    def short_lived(a: int) -> int:
        return a

    @app.task(name="unit.loop")
    def loop(seconds: float) -> int:
        started.set()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(0.005)
        except Terminated:
            stopped.set()
            raise
        return 1

    @app.task(name="unit.async_loop")
    async def async_loop(seconds: float) -> int:
        started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return 1

    started.clear()
    stopped.clear()
    yield app
    app.close()


def revoked_reason(app: App, task_id: str) -> str:
    record = app.store.get(task_id)
    assert record is not None and record.status is Status.REVOKED
    assert record.error_type == "TaskRevoked"
    return record.error_message or ""


def test_eta_runs_a_task_no_sooner_than_its_time(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        eta = datetime.fromtimestamp(clock.now(), UTC) + timedelta(seconds=90)
        r = app.tasks["unit.add"].apply_async((2, 3), eta=eta)
        stub.join()
        assert r.status == Status.PENDING.value
        stub.advance(60)
        stub.join()
        assert r.status == Status.PENDING.value  # 30 s to go
        stub.advance(31)
        assert r.get(timeout=10) == 5


def test_eta_must_be_aware_and_not_given_with_countdown(app: App) -> None:
    add = app.tasks["unit.add"]
    with pytest.raises(InvalidOption, match="timezone-aware"):
        add.apply_async((1, 2), eta=datetime(2030, 1, 1))
    with pytest.raises(InvalidOption, match="not both"):
        add.apply_async((1, 2), countdown=5, eta=datetime.now(UTC))
    with pytest.raises(InvalidOption, match="expires"):
        app.task(name="unit.bad", expires=0)(lambda: None)


def test_a_task_picked_up_after_it_expired_is_revoked_not_run(app: App) -> None:
    with taskstream.testing.run(app):
        past = datetime.fromtimestamp(clock.now(), UTC) - timedelta(seconds=1)
        r = app.tasks["unit.add"].apply_async((2, 3), expires=past)
        with pytest.raises(TaskRevoked) as revoked:
            r.get(timeout=10)
        assert revoked.value.reason == "expired" and r.ready() and r.status == "REVOKED"
        assert revoked_reason(app, r.id) == "expired"


def test_an_expiry_reached_while_waiting_in_a_delay_tier_revokes_it(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        r = app.tasks["unit.add"].apply_async((2, 3), countdown=120, expires=60)
        fine = app.tasks["unit.add"].apply_async((1, 1), countdown=120, expires=600)
        stub.join()
        stub.advance(121)
        with pytest.raises(TaskRevoked, match="expired"):
            r.get(timeout=10)
        assert fine.get(timeout=10) == 2


def test_the_task_option_expires_applies_to_every_send(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        late = app.tasks["unit.short_lived"].apply_async((7,), countdown=60)
        stub.join()
        stub.advance(61)
        with pytest.raises(TaskRevoked, match="expired"):
            late.get(timeout=10)
        assert app.tasks["unit.short_lived"].delay(8).get(timeout=10) == 8


def test_a_revoked_delayed_task_never_runs(app: App) -> None:
    with taskstream.testing.run(app) as stub:
        r = app.tasks["unit.add"].apply_async((2, 3), countdown=30)
        kept = app.tasks["unit.add"].apply_async((4, 4), countdown=30)
        stub.join()
        r.revoke()
        stub.advance(31)
        with pytest.raises(TaskRevoked, match="revoked"):
            r.get(timeout=10)
        assert kept.get(timeout=10) == 8


def test_a_task_revoked_while_it_waits_an_hour_in_a_delay_tier_is_revoked_at_once(
    app: App,
) -> None:
    ran: list[int] = []

    @app.task(name="unit.record")
    def record(a: int) -> int:
        ran.append(a)
        return a

    with taskstream.testing.run(app) as stub:
        r = record.apply_async((1,), countdown=3600)
        kept = record.apply_async((2,), countdown=3600)
        stub.join()
        r.revoke()
        # The clock does not move: the record waits behind its tier's unripe head.
        with pytest.raises(TaskRevoked, match="revoked"):
            r.get(timeout=10)
        assert kept.status == Status.PENDING
        stub.advance(3601)
        assert kept.get(timeout=10) == 2
        stub.join()
        assert revoked_reason(app, r.id) == "revoked"
    assert ran == [2]


def test_a_revoked_task_waiting_behind_its_key_never_runs(app: App) -> None:
    with taskstream.testing.run(app, concurrency=2):
        first = app.tasks["unit.loop"].apply_async((1.0,), key="k")
        assert started.wait(10)
        second = app.tasks["unit.add"].apply_async((2, 3), key="k")
        time.sleep(0.1)  # fetched by now: it waits in the worker behind the loop
        app.control.revoke(second.id)
        assert first.get(timeout=10) == 1
        with pytest.raises(TaskRevoked, match="revoked"):
            second.get(timeout=10)


def revoked_count(task: str, reason: str) -> float:
    labels = {"task": task, "reason": reason}
    return REGISTRY.get_sample_value("taskstream_tasks_revoked_total", labels) or 0.0


def test_revoke_with_terminate_stops_a_running_task(app: App) -> None:
    before = revoked_count("unit.loop", "terminated")
    failed = REGISTRY.get_sample_value("taskstream_tasks_failed_total", {"task": "unit.loop"})
    with taskstream.testing.run(app, concurrency=2):
        r = app.tasks["unit.loop"].apply_async((60.0,))
        assert started.wait(10)
        app.control.revoke(r.id, terminate=True)
        with pytest.raises(TaskRevoked, match="terminated"):
            r.get(timeout=10)
        assert stopped.is_set()
        assert app.tasks["unit.add"].delay(1, 2).get(timeout=10) == 3  # the worker goes on
    assert revoked_count("unit.loop", "terminated") == before + 1
    after = REGISTRY.get_sample_value("taskstream_tasks_failed_total", {"task": "unit.loop"})
    assert after == failed, "a terminated run is not a failure"


def test_revoke_with_terminate_cancels_a_running_async_task(app: App) -> None:
    with taskstream.testing.run(app, concurrency=2):
        r = app.tasks["unit.async_loop"].apply_async((60.0,))
        assert started.wait(10)
        app.control.revoke(r.id, terminate=True)
        with pytest.raises(TaskRevoked, match="terminated"):
            r.get(timeout=10)
        assert stopped.is_set(), "the task saw CancelledError"
        assert app.tasks["unit.async_loop"].delay(0.0).get(timeout=10) == 1  # it goes on


def test_revoke_with_terminate_of_a_finished_task_touches_nothing_that_runs_now(
    app: App,
) -> None:
    # A finished run leaves the watchdog's registry: terminating its id later must not
    # raise Terminated in the thread that ran it (here the worker's own loop thread, which
    # runs tasks inline at concurrency 1), nor keep the run alive in memory.
    with taskstream.testing.run(app, concurrency=1):
        done = app.tasks["unit.add"].delay(1, 1)
        assert done.get(timeout=10) == 2
        app.control.revoke(done.id, terminate=True)
        r = app.tasks["unit.loop"].apply_async((0.3,))
        assert r.get(timeout=10) == 1
        assert not stopped.is_set()
        assert app.tasks["unit.add"].delay(2, 2).get(timeout=10) == 4


def test_revoke_without_terminate_lets_a_running_task_finish(app: App) -> None:
    with taskstream.testing.run(app, concurrency=2):
        r = app.tasks["unit.loop"].apply_async((0.5,))
        assert started.wait(10)
        r.revoke()
        assert r.get(timeout=10) == 1


def test_control_records_round_trip_and_garbage_is_refused() -> None:
    r = Revocation("t-1", True, 5)
    assert Revocation.decode(r.encode()) == r
    with pytest.raises(CorruptMessage):
        Revocation.decode(b"{}")


def test_the_watchdog_abandons_a_terminated_run_that_does_not_stop() -> None:
    dog = Watchdog()
    abandoned: list[bool] = []
    done = threading.Event()

    def stuck() -> None:
        dog.track("t-1", abandoned.append)
        try:
            done.wait(10)  # a blocking call: Terminated waits for it
        except Terminated:
            pass
        finally:
            dog.untrack("t-1")

    thread = threading.Thread(target=stuck)
    thread.start()
    time.sleep(0.05)
    assert dog.terminate("t-1", abandon_after=0.1)
    assert not dog.terminate("t-2")
    deadline = time.monotonic() + 10
    while not abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    thread.join(10)
    assert abandoned == [True]


def test_a_worker_keeps_at_most_revokes_max_revoked_ids_forgetting_the_oldest() -> None:
    from taskstream.consumer.revocation import Revocations

    revocations = Revocations(max_ids=3)
    for i in range(200):  # invented ids, as anyone who can reach revoke may send
        revocations.add(f"invented-{i}", at=i)
    revocations.add("invented-198", at=500)  # known again: now the newest
    revocations.add("real", at=501)
    assert len(revocations) == 3 and revocations.forgotten == 198
    assert "real" in revocations and "invented-198" in revocations
    assert "invented-199" in revocations and "invented-0" not in revocations
