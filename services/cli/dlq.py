"""``taskstream dlq list|replay``: the dead-letter topic, filtered."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from taskstream.app import App
from taskstream.errors import ConfigError
from taskstream.loading import load_app


def dlq(args: argparse.Namespace) -> int:
    from taskstream.consumer.dead_letter_replay import read_dead_letters, replay

    app = load_app(args.app) if args.app else App("taskstream")
    since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    letters = [
        letter
        for letter in read_dead_letters(app)
        if (args.task is None or letter.task == args.task)
        and (args.reason is None or letter.reason == args.reason)
        and (since is None or letter.time >= since)
    ]
    letters.sort(key=lambda letter: letter.time)  # by time, not partition by partition
    if args.action == "replay":
        print(f"replayed {replay(app, letters)} dead letters")
        return 0
    rows = [
        {
            "dlq_offset": f"{letter.partition}:{letter.offset}",
            "reason": letter.reason,
            "task": letter.task,
            "from": f"{letter.topic}[{letter.original_partition}]@{letter.original_offset}",
            "time": letter.time.isoformat(),
            "error": letter.error,
        }
        for letter in letters
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        for line in table(rows):
            print(line)
        print(f"{len(letters)} dead letters", file=sys.stderr)
    return 0


_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an ISO time with its timezone, or an age such as ``90s``, ``30m``,
    ``2h``, ``1d`` (that long before ``now``). ConfigError otherwise."""
    ago = _AGO.match(text.strip())
    if ago is not None:
        return now - timedelta(**{_UNITS[ago[2]]: float(ago[1])})
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        since = None
    if since is None or since.tzinfo is None:
        raise ConfigError(
            f"--since {text!r}: give an ISO time with its timezone "
            "(2026-11-25T10:00:00+00:00) or an age (90s, 30m, 2h, 1d)"
        )
    return since


_HEADER = {"dlq_offset": "DLQ", "reason": "REASON", "task": "TASK", "from": "FROM",
           "time": "TIME", "error": "ERROR"}  # fmt: skip


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The text listing: a header, then one aligned line per letter (``-`` for a letter
    whose task is unknown, such as undecodable bytes); the error last, as it is. Nothing
    for no rows (the count goes to stderr)."""
    if not rows:
        return []
    cells = [list(_HEADER.values())]
    cells += [["-" if v is None else str(v) for v in row.values()] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_HEADER) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]).rstrip()
        for line in cells
    ]
