"""taskstream's benchmark suite (issue 6): one command, a Markdown + JSON report, a plot.

    python -m benchmarks.run --quick        # about 4 minutes on 2 cores
    python -m benchmarks.run                # the full sizes, about 15 minutes
    python -m benchmarks.run --only 1,3     # some workloads (numbers as in the report)
    python -m benchmarks.run --quick --only 10   # taskstream beside Quix Streams
    python -m benchmarks.run --quick --broker kafka --out kafka  # on a 3-node Apache Kafka

Starts the embedded broker unless --bootstrap (or TASKSTREAM_BENCH_BOOTSTRAP) is given, and
writes benchmarks/reports/latest.{md,json,png}. Throughputs are medians (with min and max) of
--runs runs, each also a ratio to its ceiling measured in the same run, since these machines
are shared and noisy. Every run checks its own correctness: one result per task, committed
offsets covering all input (and per-key order for workload 5, one row per task for 6).
Workload 9 needs the `bench` extra (Celery) and a Redis server (TASKSTREAM_BENCH_REDIS,
default redis://127.0.0.1:6379; databases 14 and 15 are flushed). Workload 10 runs Quix
Streams in its own interpreter, since quixstreams pins an older confluent-kafka than
taskstream's: `python3 -m venv .venv-quix && .venv-quix/bin/pip install -e '.[quix]'`
(or TASKSTREAM_BENCH_QUIX_PYTHON). Workload 6 on PostgreSQL
uses TASKSTREAM_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import workloads as w
from benchmarks.common import Scope, summary
from benchmarks.rebalance import rebalance
from benchmarks.report import write_report

SIZES: dict[str, tuple[Any, Any]] = {
    # name: (quick, full)
    "runs": (3, 5),
    "tasks": (50_000, 100_000),
    "e2e_seconds": (3, 10),
    "saturation_tasks": (10_000, 30_000),
    "scale_tasks": (30_000, 60_000),
    "io_tasks": ((300, 2_000, 5_000), (500, 4_000, 20_000)),
    "materializer_results": (30_000, 100_000),
    "memory_tasks": (200_000, 1_000_000),
    "celery_tasks": (3_000, 10_000),
    "rebalance_runs": (2, 5),
    "shared_slow_tasks": (3_000, 10_000),
    "shared_runs": (2, 3),
}


def run(
    bootstrap: str, quick: bool, only: set[int], workdir: Path, replication: int = 1
) -> dict[str, Any]:
    size = {k: v[0] if quick else v[1] for k, v in SIZES.items()}
    out: dict[str, Any] = {"mode": "quick" if quick else "full", "sizes": size,
                           "cpus": os.cpu_count(), "python": platform.python_version(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip

    def scope(**kw: Any) -> Scope:
        return Scope(bootstrap, workdir, replication=replication, **kw)

    def step(n: int, name: str, fn: Any) -> None:
        if only and n not in only:
            return
        print(f"[{n}] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as exc:  # a failed workload is reported, the others still run
            traceback.print_exc()
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[{n}] {name} done in {time.perf_counter() - t:.0f}s", flush=True)

    def worker_vs_ceiling() -> dict[str, Any]:
        ceiling, worker, ratio, checks = [], [], [], []
        uncounted, counting_cost = [], []  # the same worker with crash counting off
        for i in range(size["runs"]):
            ceiling.append(w.ceiling_loop(scope(), size["tasks"]))
            r = w.worker_processes(scope(), size["tasks"], 1)
            worker.append(r["rate"])
            ratio.append(worker[-1] / ceiling[-1])
            checks.append(r["exactly_one_result_each"] and r["committed"] == size["tasks"])
            off = {"TASKSTREAM_WORKER_LOST_MAX_DELIVERIES": "0"}
            u = w.worker_processes(scope(), size["tasks"], 1, env=off)
            uncounted.append(u["rate"])
            counting_cost.append(1 - worker[-1] / uncounted[-1])
            print(f"  run {i + 1}: ceiling {ceiling[-1]:,.0f}/s worker {worker[-1]:,.0f}/s "
                  f"({ratio[-1]:.0%}) rss {r['peak_rss_mb'][0]:.0f} MB; without crash "
                  f"counting {uncounted[-1]:,.0f}/s", flush=True)  # fmt: skip
        return {"ceiling": summary(ceiling), "worker": summary(worker), "ratio": summary(ratio),
                "uncounted": summary(uncounted), "counting_cost": summary(counting_cost),
                "all_checks_passed": all(checks), "tasks": size["tasks"]}  # fmt: skip

    def delay() -> dict[str, Any]:
        runs = [w.delay_rate(scope(), size["tasks"]) for _ in range(size["runs"])]
        return {k: summary([r[k] for r in runs]) for k in ("raw_produce", "delay", "ratio")}

    def scale_out() -> dict[str, Any]:
        res = {}
        for n in (1, 2, 4):
            r = w.worker_processes(scope(), size["scale_tasks"], n)
            r.pop("decoded")
            res[str(n)] = r
            print(
                f"  {n} processes: {r['rate']:,.0f}/s, partitions per member "
                f"{r['partitions_per_member']}, duplicates {r['duplicated']}",
                flush=True,
            )
        return res

    def keyed() -> dict[str, Any]:
        res = {}
        for keys, tasks in zip((1, 10, 1000), size["io_tasks"], strict=True):
            res[str(keys)] = w.keyed_io(scope(partitions=1), keys, tasks)
            print(f"  {keys} keys: {res[str(keys)]['rate']:,.0f}/s", flush=True)
        base = res["1"]["rate"]
        for r in res.values():
            r["ratio_to_partition_ordered"] = r["rate"] / base
        return res

    def materializer() -> dict[str, Any]:
        pg = os.environ.get(
            "TASKSTREAM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        )
        res = {"sqlite": w.materializer_rate(scope(), size["materializer_results"])}
        try:
            s = scope()
            s.store = f"{pg}?schema={s.prefix.replace('-', '_')}"
            res["postgresql"] = w.materializer_rate(s, size["materializer_results"])
            _drop_schema(pg, s.prefix.replace("-", "_"))
        except Exception as exc:
            res["postgresql"] = {"error": f"{type(exc).__name__}: {exc}"}
        return res

    step(1, "worker_vs_ceiling", worker_vs_ceiling)  # workloads 1 and 3
    step(2, "delay", delay)
    step(4, "end_to_end", lambda: w.end_to_end(scope(), [100, 1000, 5000], size["e2e_seconds"],
                                               size["saturation_tasks"]))  # fmt: skip
    step(4, "kafka_hop", lambda: {str(rate): w.bare_hop(scope(), rate, size["e2e_seconds"])
                                  for rate in (100, 1000)})  # fmt: skip
    step(7, "scale_out", scale_out)
    step(6, "materializer", materializer)
    step(5, "keyed_io", keyed)
    step(9, "celery", lambda: w.celery(size["celery_tasks"]))
    step(8, "memory", lambda: w.memory(scope(), size["memory_tasks"]))
    step(10, "quix", lambda: w.kafka_peer(scope, size["tasks"], size["runs"]))
    step(11, "rebalance", lambda: rebalance(scope, size["rebalance_runs"]))
    step(12, "exactly_once", lambda: w.exactly_once(scope, size["tasks"], size["runs"],
                                                    size["e2e_seconds"]))  # fmt: skip
    step(13, "shared_queues", lambda: w.shared_queues(scope, size["tasks"] // 2,
                                                      size["shared_slow_tasks"],
                                                      size["shared_runs"]))  # fmt: skip
    return out


BROKERS = {
    "tansu": "the embedded broker (Tansu)",
    # Wakes a waiting fetch when data arrives, as Apache Kafka does (Tansu answers only at
    # fetch.wait.max.ms): the latency figures without that quirk. The `noida` extra.
    "noida": "noida-db",
    # What users run: three KRaft nodes from Maven Central's jars (Java 17 and Maven),
    # topics replicated 3 times with min.insync.replicas=2, as the integration tests run it.
    "kafka": "Apache Kafka 4.4 (3 nodes, replication 3, min.insync.replicas 2)",
}


def local_broker(name: str, workdir: Path) -> Any:
    from taskstream.cli.embedded_broker import EmbeddedBroker

    if name == "kafka":
        from taskstream.cli.apache_kafka import KafkaCluster

        return KafkaCluster(workdir / "kafka", nodes=3)
    if name == "noida":
        from tests.brokers import NoidaBroker

        data = workdir / "noida-data"
        data.mkdir()
        return NoidaBroker(data, workdir / "noida.log")
    return EmbeddedBroker()


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    p.add_argument("--only", default="", help="comma-separated workload numbers (1-13)")
    p.add_argument("--bootstrap", default=os.environ.get("TASKSTREAM_BENCH_BOOTSTRAP"))
    p.add_argument("--broker", choices=sorted(BROKERS), default="tansu",
                   help="the local broker to start when no --bootstrap is given")  # fmt: skip
    p.add_argument("--out", default="latest", help="report name under benchmarks/reports/")
    args = p.parse_args()
    only = {int(x) for x in args.only.split(",") if x.strip()}
    if 3 in only:
        only.add(1)
    if 1 in only:
        only.add(3)
    with tempfile.TemporaryDirectory() as workdir:
        if args.bootstrap:
            result = run(args.bootstrap, args.quick, only, Path(workdir))
            result["broker"] = f"the cluster at {args.bootstrap}"
        else:
            replication = 3 if args.broker == "kafka" else 1
            with local_broker(args.broker, Path(workdir)) as broker:
                result = run(broker.bootstrap_servers, args.quick, only, Path(workdir), replication)
            result["broker"] = BROKERS[args.broker]
    cmd = "python -m benchmarks.run" + (" --quick" if args.quick else "")
    cmd += f" --only {args.only}" if args.only else ""
    cmd += f" --broker {args.broker}" if args.broker != "tansu" else ""
    cmd += f" --out {args.out}" if args.out != "latest" else ""
    print(write_report(result, cmd, args.out).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
