"""The app the benchmarks run, importable by worker processes as ``benchmarks.bench_app:app``.

Settings come from TASKSTREAM_* variables set by the harness (bootstrap, prefix, partitions).
"""

from __future__ import annotations

import time

from taskstream import App

app = App("bench")


@app.task(name="bench.noop")
def noop(n: int) -> int:
    return n


@app.task(name="bench.sleep")
def sleep_10ms(n: int) -> int:
    time.sleep(0.01)
    return n


# The same on a queue of their own with a time limit, as a shared queue's tasks need one
# (workload 13 runs that queue ordered and shared: the watchdog's per-run cost on each side).
@app.task(name="bench.noop_limited", queue="limited", time_limit=30)
def noop_limited(n: int) -> int:
    return n


@app.task(name="bench.sleep_limited", queue="limited", time_limit=30)
def sleep_limited(n: int) -> int:
    time.sleep(0.01)
    return n


@app.task(name="bench.chord_body")
def chord_body(values: list[int]) -> list[float]:
    """A chord's body: when it started (wall clock, s), how many results it got, their sum."""
    return [time.time(), float(len(values)), float(sum(values))]
