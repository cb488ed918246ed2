"""Rate limits are the cluster's: two workers share a task's rate by their partitions."""

from __future__ import annotations

import itertools
import subprocess
from collections import defaultdict

import pytest

from taskstream import App
from taskstream.consumer.materializer import Materializer
from tests.conftest import Scope
from tests.integration.running import (
    assigned_partitions,
    free_port,
    running,
    spawn_worker,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_two_workers_share_a_tasks_rate_limit_instead_of_each_taking_it_whole(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    ports = [free_port(), free_port()]
    processes += [
        spawn_worker(scope, "--concurrency", "4", "--metrics-port", str(port)) for port in ports
    ]
    wait_until(
        # (of the queue's 12 partitions and its high band's 12)
        lambda: sorted(assigned_partitions(port) for port in ports) == [12, 12],
        90,
        "a 12/12 split",
    )
    throttled = app.tasks["itest.throttled"]  # rate_limit="4/s": 2/s on each half
    results = [throttled.delay(i) for i in range(16)]
    ids = [r.id for r in results]
    with running(Materializer(app)):
        wait_until(lambda: len(app.store.get_many(ids)) == 16, 120, "16 results")
        starts = {r.id: r.get(timeout=10) for r in results}
    by_worker: dict[str, list[float]] = defaultdict(list)
    for task_id, record in app.store.get_many(ids).items():
        assert record.worker is not None
        by_worker[record.worker].append(starts[task_id])
    assert len(by_worker) == 2, "both workers ran some"
    for worker, times in by_worker.items():
        times.sort()
        if len(times) < 2:
            continue
        # Each worker's share is 2/s: its tokens come 0.5 s apart (taken whole, 4/s would be
        # 0.25 s). A run starts a little after its token, by however busy the machine is, so
        # the test takes the mean spacing, not the smallest gap.
        spacing = (times[-1] - times[0]) / (len(times) - 1)
        assert spacing >= 0.4, (worker, [round(b - a, 3) for a, b in itertools.pairwise(times)])
