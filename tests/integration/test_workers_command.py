"""`taskstream workers`: two real worker processes beat; one SIGKILLed is shown as lost, one
stopped with SIGTERM as offline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from taskstream import App
from taskstream.worker_directory import MISSED_BEATS
from tests.conftest import REPO, Scope
from tests.integration.running import spawn_worker, wait_until

pytestmark = pytest.mark.integration

BEAT_S = 0.5  # the workers' heartbeat interval in this test


def workers(scope: Scope, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskstream.cli", "workers", *args],
        cwd=REPO, env=scope.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def listed(scope: Scope) -> dict[int, dict[str, Any]]:
    """`taskstream workers --json`, by pid."""
    done = workers(scope, "--json")
    assert done.returncode == 0, done.stderr
    return {w["pid"]: w for w in json.loads(done.stdout)}


def test_workers_lists_two_workers_then_shows_a_killed_one_as_lost(
    app: App, scope: Scope, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = {"TASKSTREAM_WORKER_HEARTBEAT_S": str(BEAT_S)}
    first = spawn_worker(scope, "--concurrency", "2", **env)
    second = spawn_worker(scope, **env)
    processes += [first, second]
    pids = {first.pid, second.pid}

    def both_own_partitions() -> bool:
        found = listed(scope)
        return set(found) == pids and all(
            w["state"] == "online" and w["partitions"] for w in found.values()
        )

    wait_until(both_own_partitions, 90, "two online workers sharing the partitions")
    found = listed(scope)
    assert sum(len(w["partitions"]) for w in found.values()) == 24  # both bands
    assert found[first.pid]["concurrency"] == 2 and found[second.pid]["concurrency"] == 1
    assert found[first.pid]["queues"] == ["default"]
    results = [app.tasks["itest.add"].delay(i, 1) for i in range(20)]
    for r in results:
        r.wait_delivered(30)

    def counted() -> bool:
        found = listed(scope)
        return sum(int(w["counts"]["succeeded"]) for w in found.values()) == 20

    wait_until(counted, 60, "20 successes counted in the heartbeats")
    table = workers(scope)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["WORKER", "STATE"]
    assert sum(" online " in line for line in lines[1:]) == 2

    first.send_signal(signal.SIGKILL)
    first.wait(30)
    killed_at = time.monotonic()
    wait_until(lambda: listed(scope)[first.pid]["state"] == "lost", 60, "the killed one lost")
    # Not before a few beats went missing.
    assert time.monotonic() - killed_at >= MISSED_BEATS * BEAT_S
    assert listed(scope)[second.pid]["state"] == "online"

    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0
    last = listed(scope)
    assert last[second.pid]["state"] == "offline"
    assert last[first.pid]["state"] == "lost"
