"""The app of the shared-queue tests: its tasks on the queue ``jobs``, served by a share
group (``shared_queues``), each with the time limit a shared queue needs.

Its own app, so that the other tests' workers neither create nor read its topics. Worker
processes get their settings from TASKSTREAM_* variables (see Scope.env)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from taskstream import App

SHARED_QUEUE = "jobs"


def build_app(**settings: Any) -> App:
    settings.setdefault("shared_queues", SHARED_QUEUE)
    app = App("shared-itest", **settings)

    @app.task(name="shared.pid", queue=SHARED_QUEUE, time_limit=10)
    def pid(nap: float) -> int:
        """The process that ran it, after ``nap`` seconds."""
        time.sleep(nap)
        return os.getpid()

    @app.task(name="shared.kill_worker", queue=SHARED_QUEUE, time_limit=10)
    def kill_worker() -> None:
        """SIGKILLs the worker running it."""
        os.kill(os.getpid(), signal.SIGKILL)

    @app.task(name="shared.note", queue=SHARED_QUEUE, time_limit=10)
    def note(path: str, text: str) -> str:
        """Appends a line to ``path`` (one write: lines of concurrent runs never mix)."""
        with open(path, "a") as f:
            f.write(text + "\n")
        return text

    @app.task(name="shared.add", queue=SHARED_QUEUE, time_limit=10)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="shared.tsum", queue=SHARED_QUEUE, time_limit=10)
    def tsum(numbers: list[int], path: str) -> int:
        """The sum, and a line in ``path`` per run (a chord body runs once)."""
        with open(path, "a") as f:
            f.write("ran\n")
        return sum(numbers)

    return app


app = build_app()
APP_SPEC = "tests.integration.shared_app:app"
