"""The Quix Streams peer of the worker (workload 10): consume a task, run the no-op, produce
its result, in Quix's idiomatic shape (an Application and a StreamingDataFrame, JSON).

    python -m benchmarks.quix_app BOOTSTRAP INPUT OUTPUT GROUP --commit-interval 5

Runs in its own interpreter (TASKSTREAM_BENCH_QUIX_PYTHON, default .venv-quix/bin/python):
quixstreams pins confluent-kafka<2.13, taskstream is measured on the newer client. So this
module imports quixstreams and the standard library only. It prints ``assigned`` once its
consumer owns partitions, which is when the harness stops it to load the backlog.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from quixstreams import Application


def noop(n: int) -> int:
    return n


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """The task's result record: what taskstream's worker writes, as JSON."""
    started = time.time_ns() // 1000
    result = noop(**task["args"])
    return {"id": task["id"], "task": task["task"], "status": "SUCCESS",
            "attempt": task["attempt"], "result": result, "worker": "quix",
            "enqueued_at": task["enqueued_at"], "started_at": started,
            "finished_at": time.time_ns() // 1000}  # fmt: skip


class _Assigned(logging.Handler):
    """Says when the consumer got its partitions (Quix logs it at DEBUG in quixstreams.app;
    that logger has no per-message DEBUG lines, so this costs nothing while it runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Rebalancing: assigning"):
            print("assigned", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bootstrap")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("group")
    p.add_argument("--commit-interval", type=float, default=5.0, help="seconds (Quix: 5)")
    p.add_argument("--state-dir", default="state", help="Quix's state folder (unused here)")
    args = p.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        # The topics exist (made by the harness, 12 partitions, as taskstream's are; Quix
        # would make a missing one with 1). A stateless app has no changelog topics. (A
        # stateful one does not start on the embedded broker: Quix derives the changelog's
        # config from the source topic's retention.ms, which Tansu's describe_configs
        # leaves out unless it was set, and its recovery reads queried watermarks.)
        auto_create_topics=False,
        use_changelog_topics=False,
        # The embedded broker's quirks, set as taskstream sets them: a group join takes half
        # the session timeout, and a waiting fetch is answered only at fetch.wait.max.ms.
        consumer_extra_config={"session.timeout.ms": 6000, "fetch.wait.max.ms": 10},
        loglevel="WARNING",
    )
    app_log = logging.getLogger("quixstreams.app")
    app_log.setLevel(logging.DEBUG)
    app_log.addHandler(_Assigned())
    tasks = app.topic(args.input, value_deserializer="json")
    results = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(tasks)
    sdf = sdf.apply(run_task)
    sdf.to_topic(results)
    app.run()


if __name__ == "__main__":
    main()
