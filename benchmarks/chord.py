"""Chord join latency: a chord of N no-op members, taskstream beside Celery + Redis.

    flock /tmp/bench.lock python -m benchmarks.chord [--members 10000] [--runs 3]
        [--broker tansu|noida|kafka]

For each run: the time from the last member's result (its finish time as the worker recorded
it: taskstream's ``finished_at``, Celery's ``date_done``) to the start of the chord's body
(``time.time()`` as the body's first statement), and the whole chord from submission to the
body's result. taskstream: one ``taskstream worker`` process (concurrency 1) and one
``taskstream materialize`` process (SQLite store) on the embedded broker (or ``--bootstrap``);
the join is the materializer's. Celery 5: one prefork worker (``-c 2``) with Redis as broker
and result backend (databases 12 and 13; Celery's Redis backend counts chord members in Redis
itself). Every run checks that the body got N results with the right sum. Writes
``benchmarks/reports/chord.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Scope, spawn_materializer, spawn_worker, stop, wait_group
from benchmarks.run import BROKERS, local_broker
from taskstream import chord, group
from taskstream.canvas import member_id

REPORTS = REPO / "benchmarks" / "reports"


def taskstream_runs(
    bootstrap: str, workdir: Path, members: int, runs: int, replication: int = 1
) -> list[dict[str, Any]]:
    from benchmarks.bench_app import chord_body

    scope = Scope(bootstrap, workdir, replication=replication)
    app = scope.app()
    body = app.task(name="bench.chord_body")(chord_body.func)
    noop = app.tasks["bench.noop"]
    app.ensure_topics()
    processes = [spawn_materializer(scope), spawn_worker(scope)]
    try:
        wait_group(scope, 1)
        chord(group(noop.s(i) for i in range(10)), body.s()).apply_async().get(timeout=120)
        out = []
        for _ in range(runs):
            submitted = time.time()
            result = chord(group(noop.s(i) for i in range(members)), body.s()).apply_async()
            started, count, total = result.get(timeout=600)
            done = time.time()
            gid = result.parent.id  # type: ignore[union-attr]
            found = app.store.get_many([member_id(gid, i) for i in range(members)])
            assert len(found) == members and count == members
            assert total == sum(range(members)), "the body got wrong results"
            last = max(r.finished_at.timestamp() for r in found.values() if r.finished_at)
            out.append({"join_s": started - last, "chord_s": done - submitted})
            print(f"taskstream: {out[-1]}", flush=True)
        return out
    finally:
        stop(processes)
        app.close()


def celery_runs(members: int, runs: int) -> list[dict[str, Any]]:
    import redis
    from celery import chord as celery_chord
    from celery import group as celery_group

    from benchmarks import celery_chord_app as capp

    url = os.environ.get("TASKSTREAM_BENCH_REDIS", "redis://127.0.0.1:6379")
    broker, backend = redis.Redis.from_url(f"{url}/12"), redis.Redis.from_url(f"{url}/13")
    broker.flushdb()
    backend.flushdb()
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchmarks.celery_chord_app", "worker", "-P",
         "prefork", "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-Q", "taskstream-bench-chord", "--loglevel", "WARNING"],
        env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        capp.noop.delay(0).get(timeout=120)
        out = []
        for _ in range(runs):
            submitted = time.time()
            header = celery_group(capp.noop.s(i) for i in range(members))
            result = celery_chord(header, capp.chord_body.s()).apply_async()
            # Read the body's result from Redis rather than with result.get(): Celery's get()
            # on a chord re-checks all of the header's members at each event it drains (10,000
            # members: most of a core), which would slow the workers it measures.
            started, count, total = _celery_body(backend, result.id, 900)
            done = time.time()
            assert count == members and total == sum(range(members))
            ids = [child.id for child in result.parent.results]
            metas = backend.mget([f"celery-task-meta-{i}" for i in ids])
            finished = [datetime.fromisoformat(json.loads(m)["date_done"]) for m in metas if m]
            assert len(finished) == members, f"{len(finished)} member results in Redis"
            last = max(
                (
                    f if f.tzinfo else f.replace(tzinfo=datetime.now().astimezone().tzinfo)
                ).timestamp()
                for f in finished
            )
            out.append({"join_s": started - last, "chord_s": done - submitted})
            print(f"celery: {out[-1]}", flush=True)
            backend.flushdb()
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def _celery_body(backend: Any, task_id: str, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while (raw := backend.get(f"celery-task-meta-{task_id}")) is None:
        assert time.monotonic() < deadline, "the Celery chord's body never ran"
        time.sleep(0.02)
    meta = json.loads(raw)
    assert meta["status"] == "SUCCESS", meta
    values: list[float] = meta["result"]
    return values


def summary(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def report(result: dict[str, Any], out: str) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    t, c = result["taskstream"], result["celery"]
    lines = [
        f"# Chord of {result['members']:,} no-op members ({result['runs']} runs each)",
        "",
        f"`{result['command']}` on {result['when']}; {result['broker']}.",
        "",
        "| | last member result -> body start | whole chord (submit -> body result) |",
        "|---|---|---|",
    ]
    for name, runs in (("taskstream", t), ("Celery 5 + Redis", c)):
        j, w = summary(runs, "join_s"), summary(runs, "chord_s")
        lines.append(
            f"| {name} | {j['median'] * 1000:.0f} ms ({j['min'] * 1000:.0f}-{j['max'] * 1000:.0f}) "
            f"| {w['median']:.2f} s ({w['min']:.2f}-{w['max']:.2f}) |"
        )
    (REPORTS / f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--bootstrap", default=os.environ.get("TASKSTREAM_BENCH_BOOTSTRAP"))
    p.add_argument("--broker", choices=sorted(BROKERS), default="tansu",
                   help="the local broker to start when no --bootstrap is given")  # fmt: skip
    p.add_argument("--out", default="chord")
    p.add_argument("--no-celery", action="store_true", help="taskstream only (no report)")
    args = p.parse_args()
    command = f"python -m benchmarks.chord --members {args.members} --runs {args.runs}"
    command += f" --broker {args.broker}" if args.broker != "tansu" else ""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result: dict[str, Any] = {
        "members": args.members, "runs": args.runs, "command": command, "when": when,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        if args.bootstrap:
            result["broker"] = f"the cluster at {args.bootstrap}"
            result["taskstream"] = taskstream_runs(args.bootstrap, Path(workdir), args.members,
                                                   args.runs)  # fmt: skip
        else:
            replication = 3 if args.broker == "kafka" else 1
            with local_broker(args.broker, Path(workdir)) as broker:
                result["broker"] = f"{BROKERS[args.broker]}, 2 shared cores"
                result["taskstream"] = taskstream_runs(
                    broker.bootstrap_servers, Path(workdir), args.members, args.runs, replication
                )
    if args.no_celery:
        print(json.dumps(result["taskstream"]))
        return 0
    result["celery"] = celery_runs(args.members, args.runs)
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
