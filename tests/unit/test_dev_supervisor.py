"""taskstream dev's supervisor: a child that dies is restarted, the stop goes in order, and a
second stop signal stops at once (issue 20, majors 3 and 4). Real child processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from taskstream.cli.supervisor import Supervisor

# A child that notes its start, then on SIGINT/SIGTERM notes it and exits after `linger` s
# (at once on a second signal, as the worker does).
CHILD = """
import os, signal, sys, time
name, log, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
stopping = []
def note(text):
    with open(log, "a") as f:
        f.write(f"{name} {text}\\n")
def stop(signum, _frame):
    note(f"got {signal.Signals(signum).name}")
    if stopping:
        os._exit(1)
    stopping.append(signum)
    time.sleep(linger)
    note("exited")
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
note("started")
if sys.argv[4:] == ["die"]:
    note("died")
    sys.exit(3)
while True:
    time.sleep(0.01)
"""


def command(name: str, log: Path, linger: float = 0.0, *extra: str) -> list[str]:
    return [sys.executable, "-c", CHILD, name, str(log), str(linger), *extra]


def spawn(cmd: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd)


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_child_that_dies_is_restarted_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    supervisor = Supervisor(
        {"worker": command("worker", log, 0.0, "die")}, spawn, backoff=(0.01, 0.02)
    )
    try:
        while lines(log).count("worker started") < 3:
            supervisor.watch()
            time.sleep(0.01)
        assert supervisor.restarts >= 2
    finally:
        supervisor.kill()
    err = capsys.readouterr().err
    assert "the worker exited with 3; restarting it in 0.01s" in err
    assert "the worker exited with 3; restarting it in 0.02s" in err  # backing off
    assert "the worker restarted" in err


def test_the_materializer_stops_after_the_worker_has_finished(tmp_path: Path) -> None:
    log = tmp_path / "log"
    supervisor = Supervisor(
        {
            "worker": command("worker", log, 0.5),  # still finishing its tasks for a while
            "materializer": command("materializer", log),
        },
        spawn,
    )
    wait_for(lambda: {"worker started", "materializer started"} <= set(lines(log)))
    supervisor.stop(grace=30)
    assert lines(log)[2:] == [
        "worker got SIGINT",
        "worker exited",
        "materializer got SIGTERM",
        "materializer exited",
    ]


class _SecondCtrlC(BaseException):
    pass


def test_a_second_stop_while_waiting_stops_everything_at_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    supervisor = Supervisor(
        {
            "worker": command("worker", log, 600.0),  # would take ten minutes
            "materializer": command("materializer", log),
        },
        spawn,
    )
    wait_for(lambda: {"worker started", "materializer started"} <= set(lines(log)))
    worker = supervisor.children["worker"].process
    original = worker.wait

    def interrupted(timeout: float | None = None) -> int:
        worker.wait = original  # type: ignore[method-assign]
        wait_for(lambda: "worker got SIGINT" in lines(log))
        raise _SecondCtrlC  # as dev's handler raises at the second Ctrl-C

    worker.wait = interrupted  # type: ignore[method-assign]
    with pytest.raises(_SecondCtrlC):
        supervisor.stop(grace=600)
    assert all(c.process.poll() is not None for c in supervisor.children.values())
    assert "materializer got SIGTERM" not in lines(log)  # killed, never asked to drain
