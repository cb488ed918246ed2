"""``taskstream dev``'s children: each restarted when it dies, all stopped in order.

A child that exits while dev runs is started again after a short backoff (1, 2, 5, 10, then
every 30 s; back to 1 s once a run lasted a minute), as a process supervisor would, and dev
says so: a task that kills its worker shows the worker-lost protection instead of ending dev.

Stopping (the first Ctrl-C, SIGTERM or SIGHUP): every child but the materializer gets
SIGINT (the worker then says how long it waits and for how many tasks), then the
materializer gets SIGTERM once they are gone, so the results of the tasks the worker
finished are stored. A second stop signal meanwhile stops at once: the worker gets SIGINT
again (it exits at once), the others SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_STABLE_S = 60.0  # a run this long starts the backoff over
_LAST = "materializer"  # stopped after the others: it stores what they finished
_MATERIALIZER_GRACE_S = 15.0

Spawn = Callable[[Sequence[str]], "subprocess.Popen[bytes]"]


def say(text: str) -> None:
    print(f"taskstream dev: {text}", file=sys.stderr, flush=True)


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    failures: int = 0  # exits in a row, each within _STABLE_S of its start
    restart_at: float | None = None  # when it is started again, after an exit


class Supervisor:
    """Starts ``commands`` (name -> command line) with ``spawn`` and keeps them running."""

    def __init__(
        self, commands: dict[str, list[str]], spawn: Spawn, backoff: Sequence[float] = BACKOFF_S
    ) -> None:
        self._spawn = spawn
        self._backoff = tuple(backoff)
        self.children = {
            name: Child(name, command, spawn(command)) for name, command in commands.items()
        }
        self.restarts = 0

    def run(self, poll_s: float = 0.2) -> None:
        """Watch until a stop signal interrupts (an exception raised by its handler)."""
        while True:
            self.watch()
            time.sleep(poll_s)

    def watch(self) -> None:
        """One look: schedule a restart for each child that exited, start those due."""
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is None:
                code = child.process.poll()
                if code is None:
                    continue
                stable = now - child.started >= _STABLE_S
                child.failures = 1 if stable else child.failures + 1
                wait = self._backoff[min(child.failures, len(self._backoff)) - 1]
                child.restart_at = now + wait
                say(f"the {child.name} exited with {code}; restarting it in {wait:g}s "
                    f"(Ctrl-C stops dev)")  # fmt: skip
            elif now >= child.restart_at:
                child.process = self._spawn(child.command)
                child.started, child.restart_at = now, None
                self.restarts += 1
                say(f"the {child.name} restarted (pid {child.process.pid})")

    def stop(self, grace: float) -> None:
        """Stop in order (see the module's docstring); ``grace``: the worker's shutdown
        grace. An exception while it waits (a second stop signal's) stops the rest at once
        and is raised again."""
        first = [c for c in self.children.values() if c.name != _LAST]
        last = [c for c in self.children.values() if c.name == _LAST]
        try:
            _signal(first, signal.SIGINT)
            _wait_all(first, grace + 5)
            _signal(last, signal.SIGTERM)
            _wait_all(last, _MATERIALIZER_GRACE_S)
        except BaseException:
            say("stopping at once")
            self.kill()
            raise

    def kill(self) -> None:
        """At once: the worker gets SIGINT again (it exits at once), the others SIGKILL."""
        for child in self.children.values():
            if child.process.poll() is None:
                sig = signal.SIGINT if child.name == "worker" else signal.SIGKILL
                child.process.send_signal(sig)
        for child in self.children.values():
            try:
                child.process.wait(5)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def _signal(children: list[Child], sig: signal.Signals) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(sig)


def _wait_all(children: list[Child], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for child in children:
        if child.restart_at is not None:
            continue  # exited, waiting for its restart
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
