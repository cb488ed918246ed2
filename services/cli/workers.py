"""``taskstream workers``: the workers as their heartbeats tell (Celery's ``inspect active``
and ``inspect stats``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from taskstream.app import App
from taskstream.loading import load_app
from taskstream.worker_directory import WorkerDirectory

_COLUMNS = ("WORKER", "STATE", "QUEUES", "PARTITIONS", "RUNNING", "DONE", "FAILED", "RETRIED",
            "LAG", "LAG_S", "LAST_BEAT")  # fmt: skip


def workers(args: argparse.Namespace) -> int:
    app = load_app(args.app) if args.app else App("taskstream")
    directory = WorkerDirectory(app.settings, app.broker)
    try:
        if not directory.read_to_end(args.timeout):
            print("taskstream workers: heartbeats not read to their end", file=sys.stderr)
        found = directory.workers_json()
    finally:
        directory.close()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print_table(found, time.time())
    return 0


def print_table(found: list[dict[str, Any]], now: float) -> None:
    """One line per worker, then one per task running now."""
    rows = [_COLUMNS]
    details: list[str] = []
    for w in found:
        counts, lag, running = w["counts"], w["lag"], w["running"]
        rows.append(
            (
                w["worker_id"],
                w["state"],
                ",".join(w["queues"]),
                str(len(w["partitions"])),
                str(len(running)),
                str(counts.get("succeeded", 0)),
                str(counts.get("failed", 0)),
                str(counts.get("retried", 0)),
                str(sum(entry["records"] for entry in lag)),
                f"{max((entry['seconds'] for entry in lag), default=0.0):.1f}",
                f"{now - w['last_beat']:.0f}s ago",
            )
        )
        for r in running:
            started = datetime.fromtimestamp(r["started_at"], tz=UTC).isoformat()
            details.append(f"{w['worker_id']}  running {r['task_id']} {r['task']} since {started}")
        details.extend(f"{w['worker_id']}  WARNING {text}" for text in w.get("warnings", []))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    for line in details:
        print(line)
    print(f"{len(found)} workers", file=sys.stderr)
