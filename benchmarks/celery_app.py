"""The Celery side of workload 9: the same no-op task on Redis (benchmark-only dependency)."""

from __future__ import annotations

import os

from celery import Celery

_REDIS = os.environ.get("TASKSTREAM_BENCH_REDIS", "redis://127.0.0.1:6379")

app = Celery("bench", broker=f"{_REDIS}/14", backend=f"{_REDIS}/15")
app.conf.update(
    task_default_queue="taskstream-bench",
    worker_prefetch_multiplier=4,
    task_acks_late=True,  # like taskstream: acknowledge after the run
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(n: int) -> int:
    return n
