"""eta, expires and revoke on the real broker, with worker processes restarted."""

from __future__ import annotations

import signal
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskstream import App, Status
from taskstream.consumer.materializer import Materializer
from taskstream.consumer.revocation import ControlReader, Revocations
from taskstream.errors import TaskRevoked
from taskstream.kafka.topics import delay_topic
from tests.conftest import Scope
from tests.integration.running import (
    read_topic,
    running,
    spawn_worker,
    wait_until,
    worker_and_materializer,
)

pytestmark = pytest.mark.integration


def reason_of(app: App, task_id: str) -> str:
    record = app.store.get(task_id)
    assert record is not None and record.status is Status.REVOKED, record
    return record.error_message or ""


def test_eta_runs_a_task_no_sooner_than_its_time(app: App) -> None:
    with worker_and_materializer(app):
        eta = datetime.now(UTC) + timedelta(seconds=2)
        result = app.tasks["itest.add"].apply_async((2, 3), eta=eta)
        assert result.get(timeout=60) == 5
    record = app.store.get(result.id)
    assert record is not None and record.started_at is not None and record.started_at >= eta


def test_an_expiry_reached_in_a_delay_tier_or_the_task_topic_revokes_the_task(
    app: App,
) -> None:
    # In the task topic: sent while no worker runs, picked up after it expired.
    stale = app.tasks["itest.add"].apply_async((1, 1), expires=0.5)
    by_option = app.tasks["itest.expiring"].delay(3)  # @app.task(expires=1.0)
    stale.wait_delivered(30)
    time.sleep(1.5)
    with worker_and_materializer(app):
        for r in (stale, by_option):
            with pytest.raises(TaskRevoked, match="expired"):
                r.get(timeout=60)
        # In a delay tier (the worker runs, so it forwards it there at once): due in 6 s,
        # expired after 2 s, so it meets its expiry at a hop of the 1 s tier.
        delayed = app.tasks["itest.add"].apply_async((2, 2), countdown=6, expires=2)
        fine = app.tasks["itest.add"].apply_async((3, 3), countdown=2, expires=60)
        with pytest.raises(TaskRevoked, match="expired"):
            delayed.get(timeout=60)
        assert fine.get(timeout=60) == 6
    record = app.store.get(delayed.id)
    assert record is not None and ".delay." in (record.source_topic or "")
    assert reason_of(app, stale.id) == "expired"


def test_revoked_queued_delayed_and_running_tasks_with_a_worker_restarted_after_the_revoke(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    runs.touch()
    with running(Materializer(app)):
        first = spawn_worker(scope, "--concurrency", "2")
        processes.append(first)
        # Running, revoked with terminate: stopped like a soft time limit stops a task.
        spinning = app.tasks["itest.spin"].delay(120.0, str(runs))
        wait_until(lambda: runs.read_text() != "", 90, "the spinning task to start")
        app.control.revoke(spinning.id, terminate=True)
        with pytest.raises(TaskRevoked, match="terminated"):
            spinning.get(timeout=60)
        # Delayed (in a delay tier), then queued (in the task topic, no worker running):
        # both revoked before the worker restarts.
        delayed = app.tasks["itest.spin"].apply_async((0.0, str(runs)), countdown=5)
        delayed.wait_delivered(30)
        delayed.revoke()
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
        queued = app.tasks["itest.spin"].delay(0.0, str(runs))
        queued.wait_delivered(30)
        app.control.revoke(queued.id)
        kept = app.tasks["itest.add"].delay(20, 22)
        # A new worker process learns the revocations from the control topic at its start.
        processes.append(spawn_worker(scope))
        assert kept.get(timeout=90) == 42
        for r in (queued, delayed):
            with pytest.raises(TaskRevoked, match="revoked"):
                r.get(timeout=60)
    assert len(runs.read_text().splitlines()) == 1  # only the terminated one ever started
    assert reason_of(app, spinning.id) == "terminated"


def test_a_task_revoked_while_it_waits_an_hour_in_a_delay_tier_shows_revoked_at_once(
    app: App, scope: Scope
) -> None:
    with worker_and_materializer(app):
        r = app.tasks["itest.add"].apply_async((1, 2), countdown=3600)
        kept = app.tasks["itest.add"].apply_async((3, 4), countdown=3600)
        # The worker moves both from the task topic to the 600 s tier (the largest below).
        read_topic(scope, delay_topic(scope.topic_prefix, 600), 2, timeout=60)
        r.revoke()
        # Its hop is an hour away: only the scan of the tiers can make it REVOKED now.
        with pytest.raises(TaskRevoked, match="revoked"):
            r.get(timeout=30)
        assert kept.status == Status.PENDING
    record = app.store.get(r.id)
    assert record is not None and ".delay." in (record.source_topic or "")


def test_revocations_reach_every_worker_within_about_a_second(app: App) -> None:
    """Prints the propagation time (revoke() called -> known by every reader); pytest -s."""
    readers = [Revocations() for _ in range(3)]
    controls = [
        ControlReader(app, r, lambda task_id: None, f"reader-{i}") for i, r in enumerate(readers)
    ]
    threads = [c.start() for c in controls]
    for c in controls:
        c.wait_ready(30)
    delays: list[float] = []
    try:
        for _ in range(20):
            task_id = str(uuid.uuid4())
            started = time.monotonic()
            app.control.revoke(task_id)
            while not all(task_id in r for r in readers):
                assert time.monotonic() - started < 30, "a revocation did not arrive"
                time.sleep(0.001)
            delays.append(time.monotonic() - started)
    finally:
        for c in controls:
            c.stop()
        for t in threads:
            t.join(30)
    print(
        f"\nrevoke propagation to 3 readers, 20 revocations: median "
        f"{statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
    )
    assert statistics.median(delays) < 10  # about a second is the aim; never a speed test


def test_a_worker_started_later_knows_earlier_revocations(app: App) -> None:
    app.control.revoke("revoked-before-any-worker")
    revocations = Revocations()
    control = ControlReader(app, revocations, lambda task_id: None, "late")
    thread = control.start()
    control.wait_ready(30)
    try:
        assert "revoked-before-any-worker" in revocations  # known once start() returns
    finally:
        control.stop()
        thread.join(30)
