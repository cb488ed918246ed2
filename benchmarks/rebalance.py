"""Workload 11: how long a worker group takes to rebalance, per group protocol.

For each of ``group_protocol`` ``classic`` (eager join/sync rounds, with taskstream's
cooperative-sticky assignor) and ``consumer`` (KIP-848, the broker assigns), a group of two
worker processes serves a trickle of tasks (100/s) on 12 partitions, and three moves are
timed from outside, from the workers' own ``assigned``/``revoked`` log lines:

- **join**: a third worker logs that it consumes -> all 12 partitions owned by 3 members;
- **leave**: one worker is stopped (SIGTERM, it leaves the group) -> 12 owned by 2;
- **crash**: one worker is killed (SIGKILL) -> its partitions owned by the others, which is
  bounded below by the session timeout (6 s here) on either protocol.

KIP-848 needs a broker that runs the new group coordinator (Apache Kafka 4.x); on a broker
without it the ``consumer`` rows carry the error.
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from benchmarks.common import Scope, group_assignment, spawn_worker, stop, wait_group

PROTOCOLS = ("classic", "consumer")
TRICKLE_PER_S = 100


def _settled(scope: Scope, members: int, gone: Collection[Path] = ()) -> bool:
    owners = group_assignment(scope, gone)
    owned = sorted(p for ps in owners.values() for p in ps)
    return len([ps for ps in owners.values() if ps]) == members and owned == list(
        range(scope.partitions)
    )


def _until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls every 10 ms; the monotonic time at which ``condition`` first held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


def _trickle(scope: Scope, stopped: threading.Event, failures: list[BaseException]) -> None:
    """Tasks at TRICKLE_PER_S, so the group rebalances while it works, as in production."""
    app = scope.app()
    noop = app.tasks["bench.noop"]
    try:
        while not stopped.wait(1 / TRICKLE_PER_S):
            noop.delay(0)
    except BaseException as exc:  # re-raised by the run: figures without load are not these
        failures.append(exc)
    finally:
        app.close()


def _logs_consuming(log: Path) -> bool:
    return " consuming " in log.read_text(errors="replace")


def one_run(new_scope: Callable[..., Scope], protocol: str) -> dict[str, float]:
    """The three moves once, on a fresh group: seconds each."""
    scope = new_scope(env={"TASKSTREAM_GROUP_PROTOCOL": protocol})
    app = scope.app()
    app.ensure_topics(["default"])
    app.close()
    stopped = threading.Event()
    failures: list[BaseException] = []
    feeder = threading.Thread(target=_trickle, args=(scope, stopped, failures), daemon=True)
    procs = [spawn_worker(scope) for _ in range(2)]
    try:
        wait_group(scope, 2)
        feeder.start()
        procs.append(spawn_worker(scope))
        joined = _until(lambda: _logs_consuming(scope.logs[-1]), 60, "the third worker")
        join_s = _until(lambda: _settled(scope, 3), 60, "3 members") - joined
        wait_group(scope, 3)
        procs[0].send_signal(signal.SIGTERM)
        left = time.monotonic()
        leave_s = _until(lambda: _settled(scope, 2, scope.logs[:1]), 60, "2 members") - left
        procs[0].wait(40)
        wait_group(scope, 2)  # (the stopped worker's log ends with its revocations)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        gone = scope.logs[:2]
        crash_s = _until(lambda: _settled(scope, 1, gone), 90, "1 member") - killed
    finally:
        stopped.set()
        stop(procs)
        if feeder.is_alive():
            feeder.join(10)
    if failures:
        raise failures[0]
    return {"join_s": join_s, "leave_s": leave_s, "crash_s": crash_s}


def rebalance(new_scope: Callable[..., Scope], runs: int) -> dict[str, Any]:
    """Per protocol: median (min, max) seconds of each move over ``runs`` fresh groups."""
    out: dict[str, Any] = {"trickle_per_s": TRICKLE_PER_S, "session_timeout_s": 6}
    for protocol in PROTOCOLS:
        try:
            rows = [one_run(new_scope, protocol) for _ in range(runs)]
        except Exception as exc:  # a broker without KIP-848: reported, not fatal
            out[protocol] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[protocol] = {
            move: {
                "median": statistics.median(r[move] for r in rows),
                "min": min(r[move] for r in rows),
                "max": max(r[move] for r in rows),
            }
            for move in ("join_s", "leave_s", "crash_s")
        }
        print(f"  {protocol}: " + ", ".join(
            f"{m} {v['median']:.2f}" for m, v in out[protocol].items()
        ), flush=True)  # fmt: skip
    return out
