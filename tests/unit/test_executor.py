"""The executor runs one key's jobs in order and different keys side by side."""

from __future__ import annotations

import asyncio
import threading
import time

from taskstream.consumer.executor import Executor


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, int]] = []
        self.done = threading.Semaphore(0)


class SyncJob:
    task_name = "test.job"
    is_async = False
    limited = False
    released = False

    def __init__(self, rec: Recorder, key: str | None, n: int, seconds: float = 0.005) -> None:
        self.rec, self.key, self.n, self.seconds = rec, key, n, seconds

    def run(self) -> None:
        with self.rec.lock:
            self.rec.events.append(("start", str(self.key), self.n))
        time.sleep(self.seconds)
        with self.rec.lock:
            self.rec.events.append(("end", str(self.key), self.n))
        self.rec.done.release()

    async def run_async(self) -> None:  # pragma: no cover - not async
        raise NotImplementedError


class AsyncJob(SyncJob):
    is_async = True

    async def run_async(self) -> None:
        with self.rec.lock:
            self.rec.events.append(("start", str(self.key), self.n))
        await asyncio.sleep(self.seconds)
        with self.rec.lock:
            self.rec.events.append(("end", str(self.key), self.n))
        self.rec.done.release()


def run_all(jobs: list[SyncJob], concurrency: int) -> list[tuple[str, str, int]]:
    executor = Executor(concurrency)
    try:
        for job in jobs:
            executor.submit(job)
        for _ in jobs:
            assert jobs[0].rec.done.acquire(timeout=10)
    finally:
        executor.shutdown()
    return jobs[0].rec.events


def assert_keys_serial(events: list[tuple[str, str, int]]) -> None:
    running: dict[str, int] = {}
    last: dict[str, int] = {}
    for kind, key, n in events:
        if key == "None":
            continue
        if kind == "start":
            assert key not in running, f"key {key} overlapped"
            assert n > last.get(key, -1), f"key {key} out of order"
            running[key] = n
        else:
            del running[key]
            last[key] = n


def test_jobs_of_one_key_never_overlap_and_keep_their_order() -> None:
    rec = Recorder()
    events = run_all([SyncJob(rec, f"k{i % 3}", i) for i in range(30)], concurrency=8)
    assert_keys_serial(events)


def test_async_jobs_of_one_key_keep_their_order() -> None:
    rec = Recorder()
    events = run_all([AsyncJob(rec, f"k{i % 2}", i) for i in range(20)], concurrency=8)
    assert_keys_serial(events)


def test_different_keys_run_side_by_side() -> None:
    rec = Recorder()
    started = time.monotonic()
    run_all([SyncJob(rec, f"k{i}", i, seconds=0.2) for i in range(4)], concurrency=4)
    assert time.monotonic() - started < 0.6  # four 0.2 s jobs at once, not one after another


def test_unkeyed_jobs_are_not_serialized() -> None:
    rec = Recorder()
    events = run_all([AsyncJob(rec, None, i, seconds=0.05) for i in range(10)], concurrency=10)
    starts = [i for i, e in enumerate(events) if e[0] == "start"]
    first_end = next(i for i, e in enumerate(events) if e[0] == "end")
    assert sum(1 for s in starts if s < first_end) > 1
