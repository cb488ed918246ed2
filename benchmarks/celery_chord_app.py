"""The Celery side of the chord benchmark (benchmarks/chord.py): Redis as broker and result
backend (databases 12 and 13), the same no-op members and body as taskstream's."""

from __future__ import annotations

import os
import time

from celery import Celery

_REDIS = os.environ.get("TASKSTREAM_BENCH_REDIS", "redis://127.0.0.1:6379")

app = Celery("bench_chord", broker=f"{_REDIS}/12", backend=f"{_REDIS}/13")
app.conf.update(
    task_default_queue="taskstream-bench-chord",
    worker_prefetch_multiplier=4,
    task_acks_late=True,  # like taskstream: acknowledge after the run
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(n: int) -> int:
    return n


@app.task(name="bench.chord_body")
def chord_body(values: list[int]) -> list[float]:
    return [time.time(), float(len(values)), float(sum(values))]
