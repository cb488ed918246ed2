"""The app the integration tests run, in-process and in worker processes.

Worker processes get their settings from TASKSTREAM_* variables (see Scope.env)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from taskstream import App, Retry, SoftTimeLimitExceeded, current_request
from taskstream.task import Task
from tests.integration.celery_tasks import celery_tasks


def build_app(**settings: Any) -> App:
    app = App("itest", **settings)
    # Registered in groups (one function each), in the order the tests have always seen.
    _plain_tasks(app)
    _retrying_tasks(app)
    _timed_tasks(app)
    _sized_tasks(app)
    _process_tasks(app)
    _control_tasks(app)
    _workflow_tasks(app)
    celery_tasks(app)  # Celery's own test tasks, typed (tests/integration/celery_tasks.py)
    _celery_canvas_tasks(app)  # and _celery_canvas_side_tasks
    _priority_tasks(app)
    return app


def _priority_tasks(app: App) -> None:
    """Tasks that say which band they ran from."""

    @app.task(name="itest.band_of_retry", bind=True, max_retries=1)
    def band_of_retry(self: Task[..., Any]) -> str:
        """Retried once at once; returns the topic its retry was read from."""
        if not self.request.retries:
            raise self.retry(countdown=0.1)
        info = self.request.delivery_info
        assert info is not None
        return str(info["topic"])


def _plain_tasks(app: App) -> None:
    """Tasks that return or raise at once (or after a nap)."""

    @app.task(name="itest.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="itest.fail")
    def fail(message: str) -> int:
        raise ValueError(message)

    @app.task(name="itest.fail_oddly")
    def fail_oddly(message: str) -> int:
        raise ValueError(f"{message} \x00 \ud800")  # NUL and a lone surrogate (no UTF-8 form)

    @app.task(name="itest.nap")
    def nap(seconds: float, tag: int) -> int:
        time.sleep(seconds)
        return tag

    @app.task(name="itest.async_mul")
    async def async_mul(a: int, b: int) -> int:
        await asyncio.sleep(0.001)
        return a * b

    @app.task(name="itest.throttled", rate_limit="4/s")
    def throttled(tag: int) -> float:
        return time.time()  # when it ran: the rate limit's test spaces these


def _retrying_tasks(app: App) -> None:
    """Tasks that retry: by raising Retry, or by autoretry_for."""

    @app.task(name="itest.retry_until", max_retries=5)
    def retry_until(attempts: int, countdown: float) -> int:
        attempt = current_request().attempt
        if attempt < attempts:
            raise Retry(countdown=countdown, exc=RuntimeError(f"attempt {attempt} not yet"))
        return attempt

    @app.task(
        name="itest.unreachable",
        autoretry_for=(ConnectionError,),
        max_retries=2,
        retry_backoff=0.1,
        retry_jitter=False,
    )
    def unreachable(host: str) -> int:
        raise ConnectionError(f"{host} refused the connection")


def _timed_tasks(app: App) -> None:
    """Tasks with time limits, or tracked as STARTED."""

    @app.task(name="itest.polite", soft_time_limit=0.3, time_limit=5)
    def polite(seconds: float) -> str:
        try:
            for _ in range(int(seconds * 100)):
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "finished"

    @app.task(name="itest.tracked", track_started=True)
    def tracked(seconds: float) -> int:
        time.sleep(seconds)
        return 1

    @app.task(name="itest.stuck", time_limit=0.5)
    def stuck(seconds: float) -> int:
        time.sleep(seconds)  # in C: the exception cannot reach it; the run is abandoned
        return 0

    @app.task(name="itest.async_stuck", time_limit=0.3)
    async def async_stuck(seconds: float) -> int:
        await asyncio.sleep(seconds)
        return 0


def _sized_tasks(app: App) -> None:
    """Tasks whose arguments, results or errors are as large as asked."""

    @app.task(name="itest.blob")
    def blob(size: int) -> bytes:
        return b"x" * size

    @app.task(name="itest.measure")
    def measure(data: bytes) -> int:
        return len(data)

    @app.task(name="itest.shout")
    def shout(size: int) -> int:
        raise ValueError("!" * size)


def _process_tasks(app: App) -> None:
    """Tasks that leave a trace of the process running them, or kill it."""

    @app.task(name="itest.logged_nap")
    def logged_nap(seconds: float, log_path: str) -> int:
        """Sleeps; appends a line per start to ``log_path``, so a test can count the runs."""
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        return os.getpid()

    @app.task(name="itest.ordered")
    def ordered(key: str, seq: int, log_path: str) -> int:
        """Appends ``key seq`` per start to ``log_path``, so a test can check per-key order."""
        with open(log_path, "a") as log:
            log.write(f"{key} {seq}\n")
        return seq

    @app.task(name="itest.kill_worker")
    def kill_worker(log_path: str) -> int:
        """Kills the process that runs it, as an OOM kill or a segfault would."""
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
        return 0


def _control_tasks(app: App) -> None:
    """Tasks for revoke and expires."""

    @app.task(name="itest.spin")
    def spin(seconds: float, log_path: str) -> int:
        """Runs Python code for ``seconds`` (so Terminated reaches it); a line per start."""
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return os.getpid()

    @app.task(name="itest.expiring", expires=1.0)
    def expiring(a: int) -> int:
        return a


def _workflow_tasks(app: App) -> None:
    """Steps of chains, groups and chords; the logged ones let a test count their runs."""

    @app.task(name="itest.mul")
    def mul(a: int, b: int) -> int:
        return a * b

    @app.task(name="itest.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="itest.member")
    def member(i: int, bad: bool, pause: float, log_path: str) -> int:
        """Appends its index to ``log_path`` at each run; fails when ``bad``."""
        with open(log_path, "a") as log:
            log.write(f"{i}\n")
        time.sleep(pause)
        if bad:
            raise ValueError(f"member {i} refuses")
        return i

    @app.task(name="itest.logged_sum")
    def logged_sum(values: list[int], log_path: str) -> int:
        """A chord body that appends a line per run to ``log_path``."""
        with open(log_path, "a") as log:
            log.write(f"{current_request().id} {len(values)}\n")
        return sum(values)

    @app.task(name="itest.logged_nested_sum")
    def logged_nested_sum(values: list[list[int]], log_path: str) -> int:
        """A chord body over lists (a nested workflow's): a line per run in ``log_path``."""
        with open(log_path, "a") as log:
            log.write(f"{current_request().id} {len(values)}\n")
        return sum(sum(v) for v in values)

    @app.task(name="itest.report")
    def report(task_id: str, log_path: str) -> None:
        """An errback: appends the failed task's id to ``log_path``."""
        with open(log_path, "a") as log:
            log.write(f"{task_id}\n")

    @app.task(name="itest.stepper", bind=True)
    def stepper(self: Any, steps: int, gate_dir: str) -> int:
        """Publishes PROGRESS {"step": i} and waits for a file gate_dir/<i> before going on."""
        for i in range(steps):
            self.update_state(state="PROGRESS", meta={"step": i, "of": steps})
            gate = os.path.join(gate_dir, str(i))
            deadline = time.monotonic() + 60
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        return steps

    @app.task(name="itest.text_len")
    def text_len(text: str) -> int:
        return len(text)


class ExpectedException(Exception):
    """Celery's t/integration/tasks.ExpectedException."""


@dataclass
class Ids:
    """What Celery's ``ids`` task returns: ``(root_id, parent_id, i)``."""

    root_id: str | None
    parent_id: str | None
    value: int


def _log(path: str, line: str) -> None:
    with open(path, "a") as log:
        log.write(f"{line}\n")


def _celery_canvas_tasks(app: App) -> None:
    """Typed variants of the tasks of Celery's t/integration/tasks.py, for the port of its
    canvas tests (tests/integration/test_celery_canvas.py). Celery's untyped tasks take
    anything; here one task per type the tests pass (``identity`` of an int, of a list).
    Its Redis list and counter (redis_echo, redis_count) are a file each."""

    @app.task(name="itest.c_add")
    def c_add(x: int, y: int, z: int | None = None) -> int:
        return x + y + z if z else x + y

    @app.task(name="itest.c_concat")  # Celery's add, given lists
    def c_concat(x: list[int], y: list[int]) -> list[int]:
        return x + y

    @app.task(name="itest.c_identity")
    def c_identity(x: int) -> int:
        return x

    @app.task(name="itest.c_identity_list")
    def c_identity_list(x: list[int]) -> list[int]:
        return x

    @app.task(name="itest.c_identity_lists")
    def c_identity_lists(x: list[list[int]]) -> list[list[int]]:
        return x

    @app.task(name="itest.c_tsum")
    def c_tsum(nums: list[int]) -> int:
        return sum(nums)

    @app.task(name="itest.c_add_to_all")
    def c_add_to_all(nums: list[int], val: int = 0) -> list[int]:
        return [n + val for n in nums]

    @app.task(name="itest.c_add_to_all_lists")
    def c_add_to_all_lists(nums: list[list[int]], val: list[int]) -> list[list[int]]:
        return [n + val for n in nums]

    _celery_canvas_side_tasks(app)


def _celery_canvas_side_tasks(app: App) -> None:
    """Celery's failing tasks and the ones that leave a trace (request ids, log lines)."""

    @app.task(name="itest.c_fail")
    def c_fail(x: int = 0) -> int:
        raise ExpectedException("Task expected to fail")

    @app.task(name="itest.c_fail_list")  # Celery's fail, as a chord body
    def c_fail_list(x: list[int]) -> int:
        raise ExpectedException("Task expected to fail")

    @app.task(name="itest.c_ids")
    def c_ids(i: int) -> Ids:
        request = current_request()
        return Ids(request.root_id, request.parent_id, i)

    @app.task(name="itest.c_echo")  # Celery's redis_echo
    def c_echo(message: str, log_path: str) -> str:
        _log(log_path, message)
        return message

    @app.task(name="itest.c_count")  # Celery's redis_count
    def c_count(log_path: str) -> None:
        _log(log_path, "1")

    @app.task(name="itest.c_errback")  # Celery's errback_old_style: counts per failed id
    def c_errback(request_id: str, log_path: str) -> None:
        _log(log_path, request_id)


app = build_app()
