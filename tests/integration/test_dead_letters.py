"""`taskstream dlq list|replay`: dead letters you can act on once the cause is fixed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from taskstream import TaskFailed
from taskstream.kafka.topics import dead_letter_topic
from tests.conftest import REPO, Scope
from tests.integration.running import read_topic, wait_until, worker_and_materializer
from tests.integration.tasks_app import build_app

pytestmark = pytest.mark.integration


def dlq(scope: Scope, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskstream.cli", "dlq", *args],
        env=scope.env(), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_dead_letter_is_listed_and_replayed_once_the_worker_knows_its_task(
    scope: Scope,
) -> None:
    old = build_app(**scope.settings())  # a worker deployed before the task existed
    new = build_app(**scope.settings())

    @new.task(name="itest.later")
    def later(x: int) -> int:
        return x * 10

    try:
        result = new.tasks["itest.later"].delay(4)
        with worker_and_materializer(old):
            # A worker's start (group join, the control topic read to its end) is slow on a
            # loaded machine: a liveness bound, not a speed target.
            read_topic(scope, dead_letter_topic(scope.topic_prefix), 1, timeout=90)
            # The caller learns why at once instead of waiting (issue 20, minor 8).
            with pytest.raises(TaskFailed, match=r"'itest\.later' is not defined"):
                result.get(timeout=60)

        listed = dlq(scope, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert len(rows) == 1
        assert rows[0]["reason"] == "unknown-task" and rows[0]["task"] == "itest.later"
        assert rows[0]["from"].startswith(f"{scope.topic_prefix}.tasks.default[")

        with worker_and_materializer(new):
            replayed = dlq(scope, "replay", "--task", "itest.later")
            assert replayed.returncode == 0, replayed.stderr
            assert "replayed 1" in replayed.stdout
            wait_until(lambda: result.status == "SUCCESS", 60, "the replayed run's outcome")
            assert result.get(timeout=60) == 40
        assert dlq(scope, "list", "--task", "nothing-like-it").stdout == ""
    finally:
        old.close()
        new.close()
