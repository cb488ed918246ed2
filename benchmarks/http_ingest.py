"""Sustained HTTP ingestion: POST /v1/tasks/{task} and :batch under wrk, beside task.delay.

    python benchmarks/http_ingest.py [--duration 10] [--connections 32] [--batch-size 1000]
                                     [--bootstrap HOST:PORT]

Needs wrk (Debian: apt-get install wrk). Starts the embedded broker unless --bootstrap (or
TASKSTREAM_BENCH_BOOTSTRAP) is given, and one service process, `taskstream serve --schemas`
(uvicorn, one worker), on a loopback port; wrk runs as a second process. Every 202 means
the broker acknowledged the event (acks=all). Writes benchmarks/reports/http_ingest.{md,json}
with requests/s, accepted events/s and wrk's p50/p99 latency, plus the in-process rate of
task.delay() (until every event is acknowledged) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskstream import App
from taskstream.cli import schema_files
from taskstream.cli.embedded_broker import EmbeddedBroker, free_port

REPORTS = Path(__file__).resolve().parent / "reports"
TASK = "bench.noop"
TARGETS = {"single_events_per_s": 5000, "single_p99_ms": 50, "batch_events_per_s": 50000}


def make_app(bootstrap: str, prefix: str) -> App:
    app = App("bench", bootstrap_servers=bootstrap, topic_prefix=prefix, store="memory://")

    @app.task(name=TASK)
    def noop(n: int) -> int:
        return n

    return app


def delay_rate(app: App, events: int) -> float:
    noop = app.tasks[TASK]
    noop.delay(0).wait_delivered(30)  # connect first
    started = time.perf_counter()
    results = [noop.delay(i) for i in range(events)]
    for r in results:
        r.wait_delivered(60)
    return events / (time.perf_counter() - started)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, body: str, duration: int, connections: int, threads: int = 1) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
         "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "requests": total,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(dist["50"]),
        "p90_ms": _ms(dist["90"]),
        "p99_ms": _ms(dist["99"]),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
        "raw": out,
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (single POSTs)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--batch-connections", type=int, default=4)
    p.add_argument("--delay-events", type=int, default=50_000)
    p.add_argument("--bootstrap", default=os.environ.get("TASKSTREAM_BENCH_BOOTSTRAP"))
    args = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    broker = None if args.bootstrap else EmbeddedBroker().start()
    bootstrap = args.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
    prefix = f"bench-http-{uuid.uuid4().hex[:8]}"
    app = make_app(bootstrap, prefix)
    app.ensure_topics()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="taskstream-bench-"))
    schema_files.export(app, work / "schemas")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSTREAM_")}
    env.update(TASKSTREAM_BOOTSTRAP_SERVERS=bootstrap, TASKSTREAM_TOPIC_PREFIX=prefix,
               TASKSTREAM_STORE="memory://")  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "serve", "--schemas", str(work / "schemas"),
         "--port", str(port)],
        env=env, cwd=work,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the service did not become ready")
            time.sleep(0.2)
        httpx.post(
            f"{url}/v1/tasks/{TASK}", json={"n": 0}, timeout=30
        ).raise_for_status()  # warm up

        single = wrk(f"{url}/v1/tasks/{TASK}", '{"n": 1}', args.duration, args.connections)
        single["events_per_s"] = (
            single["requests_per_s"]
            if single["non_2xx"] == 0
            else ((single["requests"] - single["non_2xx"]) / args.duration)
        )
        batch_body = json.dumps({"items": [{"args": {"n": i}} for i in range(args.batch_size)]})
        batch = wrk(
            f"{url}/v1/tasks/{TASK}:batch", batch_body, args.duration, args.batch_connections
        )
        batch["events_per_s"] = (
            (batch["requests"] - batch["non_2xx"]) * args.batch_size / args.duration
        )
        delay = delay_rate(app, args.delay_events)
    finally:
        server.terminate()
        server.wait(30)
        app.close()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": vars(args),
        "single": {k: v for k, v in single.items() if k != "raw"},
        "batch": {k: v for k, v in batch.items() if k != "raw"},
        "delay_in_process_events_per_s": delay,
        "targets": TARGETS,
        "wrk_output": {"single": single["raw"], "batch": batch["raw"]},
    }
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "http_ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    ok = {
        "single": single["events_per_s"] >= TARGETS["single_events_per_s"],
        "p99": single["p99_ms"] < TARGETS["single_p99_ms"],
        "batch": batch["events_per_s"] >= TARGETS["batch_events_per_s"],
    }
    mark = {True: "met", False: "**not met**"}
    md = f"""# HTTP ingestion benchmark

`python benchmarks/http_ingest.py --duration {args.duration} --connections {args.connections} --batch-size {args.batch_size}`

One `taskstream serve --schemas` process (uvicorn, one worker) on loopback; wrk (1 thread) as
the load generator in a second process; embedded broker; {os.cpu_count()} CPUs shared by all three.
A 202 is sent only after the broker acknowledged the event (acks=all).

| what | result | target |
|---|---|---|
| POST /v1/tasks/{{task}}: accepted events/s | {single["events_per_s"]:,.0f} ({args.connections} connections) | 5,000 ({mark[ok["single"]]}) |
| POST /v1/tasks/{{task}}: latency p50 / p90 / p99 | {single["p50_ms"]:.1f} / {single["p90_ms"]:.1f} / {single["p99_ms"]:.1f} ms | p99 < 50 ms ({mark[ok["p99"]]}) |
| POST /v1/tasks/{{task}}: non-2xx | {single["non_2xx"]} of {single["requests"]:,} | 0 |
| POST :batch ({args.batch_size} items): accepted events/s | {batch["events_per_s"]:,.0f} ({batch["requests_per_s"]:.1f} requests/s, p50 {batch["p50_ms"]:.0f} ms, p99 {batch["p99_ms"]:.0f} ms) | 50,000 ({mark[ok["batch"]]}) |
| `task.delay()` in-process, same broker | {delay:,.0f} events/s (until all acknowledged) | for comparison |
"""  # noqa: E501
    (REPORTS / "http_ingest.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
