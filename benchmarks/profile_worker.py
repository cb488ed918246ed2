"""Profile one worker process draining a no-op backlog with py-spy (the `bench` extra).

    python -m benchmarks.profile_worker [--tasks 60000] [--out benchmarks/reports/profile]
        [--broker tansu|kafka] [--exactly-once]

Writes <out>.txt: the hottest functions by own time and by total time (from py-spy's raw
collapsed stacks, <out>.folded, which speedscope or flamegraph.pl also read).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import APP_SPEC, REPO, Scope, encode_backlog, produce_all, wait_committed
from benchmarks.workloads import EXACTLY_ONCE


def summarize(folded: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if not any("taskstream" in f or "worker" in f for f in frames):
            continue
        samples += n
        own[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            total[f] += n
    lines = [f"{samples} samples of the worker's threads", "", "own time:"]
    lines += [f"  {c / samples:6.1%}  {f}" for f, c in own.most_common(top)]
    lines += ["", "total time (function and what it calls):"]
    lines += [f"  {c / samples:6.1%}  {f}" for f, c in total.most_common(top)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=60_000)
    p.add_argument("--out", default=str(REPO / "benchmarks/reports/profile"))
    p.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    p.add_argument("--exactly-once", action="store_true", help="processing_guarantee")
    args = p.parse_args()
    from benchmarks.run import local_broker

    with tempfile.TemporaryDirectory() as d, local_broker(args.broker, Path(d)) as broker:
        replication = 3 if args.broker == "kafka" else 1
        scope = Scope(broker.bootstrap_servers, Path(d), replication=replication)
        app = scope.app()
        app.ensure_topics(["default"])
        produce_all(scope.bootstrap, scope.topic, encode_backlog(app, args.tasks))
        folded = Path(args.out + ".folded")
        spy = subprocess.Popen(
            ["py-spy", "record", "-r", "250", "-f", "raw", "-o", str(folded), "--",
             sys.executable, "-m", "taskstream.cli", "worker", APP_SPEC],
            env={**scope.env(), **(EXACTLY_ONCE if args.exactly_once else {})}, cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = time.perf_counter()
        wait_committed(scope, args.tasks, timeout=600)
        print(f"drained {args.tasks} in {time.perf_counter() - started:.1f}s (incl. join)")
        child = subprocess.run(["pgrep", "-P", str(spy.pid)], capture_output=True, text=True)
        for pid in child.stdout.split():
            subprocess.run(["kill", "-TERM", pid])
        spy.wait(60)
        app.close()
    text = summarize(folded)
    Path(args.out + ".txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
