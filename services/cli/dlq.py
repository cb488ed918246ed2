"""``taskstream dlq list|replay``: the dead-letter topic, filtered."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from taskstream.app import App
from taskstream.errors import ConfigError
from taskstream.loading import load_app


def dlq(args: argparse.Namespace) -> int:
    from taskstream.consumer.dlq import read_dead_letters, replay

    app = load_app(args.app) if args.app else App("taskstream")
    since = datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        raise ConfigError("--since needs a timezone, e.g. 2026-11-25T10:00:00+00:00")
    letters = [
        letter
        for letter in read_dead_letters(app)
        if (args.task is None or letter.task == args.task)
        and (args.reason is None or letter.reason == args.reason)
        and (since is None or letter.time >= since)
    ]
    if args.action == "replay":
        print(f"replayed {replay(app, letters)} dead letters")
        return 0
    for letter in letters:
        row = {
            "dlq_offset": f"{letter.partition}:{letter.offset}",
            "reason": letter.reason,
            "task": letter.task,
            "from": f"{letter.topic}[{letter.original_partition}]@{letter.original_offset}",
            "time": letter.time.isoformat(),
            "error": letter.error,
        }
        if args.json:
            print(json.dumps(row))
        else:
            print("  ".join(f"{v}" for v in row.values()))
    if not args.json:
        print(f"{len(letters)} dead letters", file=sys.stderr)
    return 0
