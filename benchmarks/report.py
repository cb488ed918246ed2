"""The suite's report: reports/<name>.json (everything), .md (tables), .png (the plot)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORTS = Path(__file__).resolve().parent / "reports"


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def targets(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, reached, met?) for each target of issue 6 that the run measured."""
    out = []
    wc = r.get("worker_vs_ceiling", {})
    if "ratio" in wc:
        q = wc["ratio"]["median"]
        out.append(("worker >= 50% of the ceiling", f"{q:.0%}", _met(q >= 0.5)))
    d = r.get("delay", {})
    if "ratio" in d:
        q = d["ratio"]["median"]
        out.append(("delay() >= 50% of its ceiling", f"{q:.0%}", _met(q >= 0.5)))
    e = r.get("end_to_end", {}).get("1000")
    hop = r.get("kafka_hop", {}).get("1000")
    if e:
        ok = e["p50_ms"] < 10 and e["p99_ms"] < 25
        floor = (f" (two bare Kafka hops on this broker: p50 {2 * hop['p50_ms']:.1f} ms, "
                 f"p99 {2 * hop['p99_ms']:.1f} ms)" if hop else "")  # fmt: skip
        out.append(("e2e at 1,000/s: p50 < 10 ms, p99 < 25 ms",
                    f"p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms{floor}",
                    _met(ok)))  # fmt: skip
    if e and hop and r.get("broker", "").startswith("Apache Kafka"):  # issue 19's target
        p50, p99 = e["p50_ms"] / (2 * hop["p50_ms"]), e["p99_ms"] / (2 * hop["p99_ms"])
        out.append(("e2e at 1,000/s on Apache Kafka: p50 <= 1.5x, p99 <= 2x two bare hops",
                    f"p50 {p50:.2f}x, p99 {p99:.2f}x", _met(p50 <= 1.5 and p99 <= 2)))  # fmt: skip
    k = r.get("keyed_io", {}).get("1000")
    if k and "ratio_to_partition_ordered" in k:
        q = k["ratio_to_partition_ordered"]
        out.append(("1,000 keys on one partition >= 10x partition-ordered", f"{q:.1f}x",
                    _met(q >= 10 and k["key_order_kept"])))  # fmt: skip
    m = r.get("materializer", {}).get("sqlite", {})
    if "rate" in m:
        out.append(("materializer >= 50,000 results/s into SQLite", f"{_n(m['rate'])}/s",
                    _met(m["rate"] >= 50_000)))  # fmt: skip
    mem = r.get("memory", {})
    if "peak_rss_mb" in mem:
        out.append((f"peak RSS < 300 MB draining {_n(mem['tasks'])} tasks",
                    f"{mem['peak_rss_mb']:.0f} MB", _met(mem["peak_rss_mb"] < 300)))  # fmt: skip
    x = r.get("exactly_once", {})
    if "ratio" in x:
        q = x["ratio"]["median"]
        out.append(("exactly once >= 70% of at least once (one worker, preloaded)",
                    f"{q:.0%}", _met(q >= 0.7)))  # fmt: skip
        lat = x["latency_1000"]
        alo, eos = lat["at-least-once"]["p50_ms"], lat["exactly-once"]["p50_ms"]
        bound = 100 + 2 * alo  # the default commit interval plus twice at least once's p50
        out.append(("e2e p50 at 1,000/s exactly once <= commit interval + 2x at least once",
                    f"{eos:.0f} ms against {bound:.0f} ms (at least once {alo:.0f} ms)",
                    _met(eos <= bound)))  # fmt: skip
    sq = r.get("shared_queues", {})
    if "twelve_ratio" in sq:
        q = sq["twelve_ratio"]["median"]
        out.append(("12 workers, 3 partitions, 10 ms tasks sent one by one: shared >= 2x ordered",
                    f"{q:.1f}x", _met(q >= 2.0)))  # fmt: skip
    c = r.get("celery", {})
    if "rate" in c and "worker" in wc:
        q = wc["worker"]["median"] / c["rate"]
        out.append((">= 20x Celery's throughput", f"{q:.0f}x", _met(q >= 20)))
    return out


def markdown(r: dict[str, Any], cmd: str, name: str) -> str:
    lines = [f"# taskstream benchmarks ({r['mode']})", "",
             f"`{cmd}`, {r['started']}, {r['cpus']} cores (shared, noisy), Python "
             f"{r['python']}, {r.get('broker', 'the embedded broker (Tansu)')} on loopback, "
             "12 partitions unless "
             "stated. Throughputs: median (min-max) of the runs; ratios against a ceiling "
             "measured in the same run. Every run checked one result per task and committed "
             "offsets covering all input.", "", f"![plot]({name}.png)", ""]  # fmt: skip

    def rng(s: dict[str, float], pct: bool = False) -> str:
        f = (lambda v: f"{v:.0%}") if pct else _n
        return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})"

    lines += ["| workload | figure | ceiling / baseline | ratio |", "|---|---|---|---|"]
    wc = r.get("worker_vs_ceiling", {})
    if "worker" in wc:
        lines.append(f"| 1+3. worker, no-op, 1 process, {_n(wc['tasks'])}-task backlog | "
                     f"{rng(wc['worker'])} tasks/s | bare loop {rng(wc['ceiling'])} tasks/s | "
                     f"{rng(wc['ratio'], True)} |")  # fmt: skip
    if "uncounted" in wc:
        lines.append(f"| 1b. the same worker with crash counting off "
                     f"(`worker_lost_max_deliveries=0`) | {rng(wc['uncounted'])} tasks/s | "
                     f"with it {rng(wc['worker'])} tasks/s | cost of counting "
                     f"{rng(wc['counting_cost'], True)} |")  # fmt: skip
    d = r.get("delay", {})
    if "delay" in d:
        lines.append(
            f"| 2. `task.delay()`, one thread | {rng(d['delay'])} events/s | bare "
            f"produce + Avro {rng(d['raw_produce'])} events/s | {rng(d['ratio'], True)} |"
        )
    for key, e in r.get("end_to_end", {}).items():
        if not isinstance(e, dict) or "p50_ms" not in e:
            continue
        label = (
            "saturation (delay() flat out)" if key == "saturation" else f"offered {_n(int(key))}/s"
        )
        parts = ""
        if "pickup_p50_ms" in e:  # where the time went: enqueue -> start, finish -> store
            parts = (f"; of which enqueue to start p50 {e['pickup_p50_ms']:.1f} / p99 "
                     f"{e['pickup_p99_ms']:.1f} ms, finish to readable p50 "
                     f"{e['store_p50_ms']:.1f} / p99 {e['store_p99_ms']:.1f} ms")  # fmt: skip
        hop = r.get("kafka_hop", {}).get(key)
        floor = (f"; two bare Kafka hops (the floor) p50 {2 * hop['p50_ms']:.1f} / p99 "
                 f"{2 * hop['p99_ms']:.1f} ms" if hop else "")  # fmt: skip
        lines.append(
            f"| 4. end to end, {label} | p50 {e['p50_ms']:.1f} ms, p99 "
            f"{e['p99_ms']:.1f} ms, max {e['max_ms']:.0f} ms{parts} | completed "
            f"{_n(e['completed_per_s'])}/s of {_n(e['sent_per_s'])}/s sent{floor} | |"
        )
    so = r.get("scale_out", {})
    base = so.get("1", {}).get("rate")
    for n, s in so.items():
        if "rate" in s:
            lines.append(f"| 7. scale-out, {n} worker process(es) | {_n(s['rate'])} tasks/s, "
                         f"partitions per member {s['partitions_per_member']} | 1 process "
                         f"{_n(base)} tasks/s | {s['rate'] / base:.2f}x |")  # fmt: skip
    for store, m in r.get("materializer", {}).items():
        if "rate" in m:
            lines.append(f"| 6. materializer, {store} | {_n(m['rate'])} results/s | | |")
        else:
            lines.append(f"| 6. materializer, {store} | {m.get('error')} | | |")
    for keys, k in r.get("keyed_io", {}).items():
        if "rate" in k:
            lines.append(
                f"| 5. 10 ms tasks, 1 partition, {keys} key(s), concurrency 100 | "
                f"{_n(k['rate'])} tasks/s, key order kept: {k['key_order_kept']} | "
                f"1 key (partition order) | {k['ratio_to_partition_ordered']:.1f}x |"
            )
    c = r.get("celery", {})
    if "rate" in c and "worker" in wc:
        lines.append(
            f"| 9. Celery 5 + Redis, prefork -c {c['concurrency']}, same no-op | "
            f"{_n(c['rate'])} tasks/s | taskstream worker {_n(wc['worker']['median'])}"
            f" tasks/s | taskstream {wc['worker']['median'] / c['rate']:.0f}x |"
        )
    lines += quix_rows(r.get("quix", {}), rng)
    lines += rebalance_rows(r.get("rebalance", {}))
    lines += exactly_once_rows(r.get("exactly_once", {}), rng)
    lines += shared_queue_rows(r.get("shared_queues", {}), rng)
    mem = r.get("memory", {})
    if "peak_rss_mb" in mem:
        lines.append(f"| 8. memory, {_n(mem['tasks'])}-task backlog | peak RSS "
                     f"{mem['peak_rss_mb']:.0f} MB (median {mem['median_sampled_rss_mb']:.0f}) "
                     f"| | |")  # fmt: skip
    if "taskstream" in r.get("quix", {}):
        lines += ["", QUIX_NOTE]
    errors = [(k, v["error"]) for k, v in r.items() if isinstance(v, dict) and "error" in v]
    lines += ["", "## Targets", "", "| target | reached | |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {m} |" for t, v, m in targets(r)]
    if errors:
        lines += ["", "## Failed workloads", ""] + [f"- {k}: {e}" for k, e in errors]
    return "\n".join(lines) + "\n"


def exactly_once_rows(x: dict[str, Any], rng: Any) -> list[str]:
    """Workload 12: one worker at least once and exactly once, tasks/s median (min-max)."""
    if "ratio" not in x:
        return [f"| 12. exactly once | {x['error']} | | |"] if "error" in x else []
    out = [
        f"| 12. one worker, {_n(x['tasks'])} preloaded tasks, at least once | "
        f"{rng(x['at_least_once'])}/s | | |",
        f"| 12. the same, exactly once (commit every 100 ms) | {rng(x['exactly_once'])}/s | "
        f"{rng(x['ratio'], pct=True)} of at least once | |",
    ]
    for ms, rate in x["by_commit_interval_ms"].items():
        out.append(f"| 12. exactly once, commit every {ms} ms | {_n(rate)}/s | | |")
    for mode, e in x["latency_1000"].items():
        out.append(f"| 12. e2e at 1,000/s, {mode} | p50 {e['p50_ms']:.0f} ms, "
                   f"p99 {e['p99_ms']:.0f} ms | | |")  # fmt: skip
    return out


def shared_queue_rows(x: dict[str, Any], rng: Any) -> list[str]:
    """Workload 13: ordered against shared queues, tasks/s median (min-max)."""
    if "twelve" not in x:
        return [f"| 13. shared queues | {x['error']} | | |"] if "error" in x else []
    served, cpu, t = x["workers_with_tasks"], x["cpu_us_per_task"], x["twelve"]
    n = _n(x["slow_tasks"])
    rows = []
    for load, how in (("single", "one per producer batch"), ("bulk", "in bulk batches")):
        ratio = x["twelve_ratio" if load == "single" else "twelve_ratio_bulk"]
        rows += [
            f"| 13. 12 workers, 3 partitions, {n} tasks of 10 ms sent {how}, ordered | "
            f"{rng(t['ordered_' + load])}/s | {served['ordered_' + load]} workers ran tasks | |",
            f"| 13. the same, shared | {rng(t['shared_' + load])}/s | "
            f"{served['shared_' + load]} workers ran tasks | {rng(ratio, pct=True)} of ordered |",
        ]
    rows += [
        f"| 13. one worker, {_n(x['tasks'])} no-op tasks, ordered | {rng(x['one']['ordered'])}/s"
        f" | {cpu['ordered']['median']:.0f} us CPU per task | |",
        f"| 13. the same, shared | {rng(x['one']['shared'])}/s | {cpu['shared']['median']:.0f} "
        f"us CPU per task (acknowledgements: {x['ack_cost_us']['median']:+.0f} us) | "
        f"{rng(x['one_ratio'], pct=True)} of ordered |",
    ]
    return rows


def rebalance_rows(rb: dict[str, Any]) -> list[str]:
    """Workload 11: seconds per move and group protocol, median (min-max)."""
    moves = {"join_s": "a third worker joins two", "leave_s": "one of three leaves (SIGTERM)",
             "crash_s": "one of two is killed (SIGKILL)"}  # fmt: skip
    out = []
    for protocol in ("classic", "consumer"):
        figures = rb.get(protocol)
        if figures is None:
            continue
        if "error" in figures:
            out.append(f"| 11. rebalance, group_protocol={protocol} | {figures['error']} | | |")
            continue
        for move, label in moves.items():
            f = figures[move]
            out.append(
                f"| 11. rebalance, group_protocol={protocol}: {label}, "
                f"{rb['trickle_per_s']} tasks/s | {f['median']:.2f} s ({f['min']:.2f}-"
                f"{f['max']:.2f}) to every partition owned | session timeout "
                f"{rb['session_timeout_s']} s | |"
            )
    return out


QUIX_VARIANTS = {"quix_5s": "commit every 5 s (its default)", "quix_0.2s": "commit every 0.2 s"}

QUIX_NOTE = (
    "Workload 10: one process each on a preloaded 12-partition topic, timed from the start "
    "to the last result readable on the results topic and to the group's committed offsets "
    "covering every task. Quix Streams reads and writes JSON (its idiomatic serializer; its "
    "input is the same tasks as JSON values), taskstream Avro. CPU: the process's user+sys "
    "from the start to its last commit, per task. Quix checks its commit interval between "
    "polls (1 s poll timeout), so its last commit trails its last result by up to the "
    "interval plus 1 s; at 5 s it depends on where the interval stands when the backlog "
    "arrives. Ratios are taken within each run, then the median."
)


def quix_rows(q: dict[str, Any], rng: Any) -> list[str]:
    """Workload 10's rows: taskstream's worker, then Quix Streams at each commit interval
    with taskstream's ratio to it (above 1: taskstream faster, or more CPU per task)."""
    ts = q.get("taskstream")
    if not ts:
        return []

    def figures(x: dict[str, Any]) -> str:
        c = x["cpu_us_per_task"]
        return (f"to last result {rng(x['last_result'])} tasks/s, to last commit "
                f"{rng(x['last_commit'])} tasks/s; CPU {c['median']:.0f} "
                f"({c['min']:.0f}-{c['max']:.0f}) µs/task")  # fmt: skip

    v = q.get("versions", {})
    out = [f"| 10. taskstream worker (Avro; confluent-kafka "
           f"{v.get('taskstream_confluent_kafka', '?')}), no-op, 1 process, "
           f"{_n(q['tasks'])}-task backlog | "
           f"{figures(ts)} | bare Avro loop {rng(q['ceiling'])} tasks/s | to last commit "
           f"{rng(ts['ratio_to_ceiling'], True)} |"]  # fmt: skip
    for key, label in QUIX_VARIANTS.items():
        x = q.get(key)
        if not x:
            continue
        t = x["taskstream_ratio"]
        out.append(
            f"| 10. Quix Streams {v.get('quixstreams', '')} (JSON; confluent-kafka "
            f"{v.get('confluent_kafka', '?')}), {label}, 1 process | "
            f"{figures(x)} | taskstream to last result {_n(ts['last_result']['median'])}, to "
            f"last commit {_n(ts['last_commit']['median'])} tasks/s; CPU "
            f"{ts['cpu_us_per_task']['median']:.0f} µs/task | taskstream / Quix: last result "
            f"{t['last_result']['median']:.2f}x, last commit {t['last_commit']['median']:.2f}x,"
            f" CPU per task {t['cpu_us_per_task']['median']:.2f}x |"
        )
    return out


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float, float | None]] = []  # label, value, ceiling
    wc = r.get("worker_vs_ceiling", {})
    if "worker" in wc:
        bars.append(("worker\n(1 proc)", wc["worker"]["median"], wc["ceiling"]["median"]))
    d = r.get("delay", {})
    if "delay" in d:
        bars.append(("delay()", d["delay"]["median"], d["raw_produce"]["median"]))
    for n, s in r.get("scale_out", {}).items():
        if "rate" in s:
            bars.append((f"{n} worker\nprocs", s["rate"], None))
    m = r.get("materializer", {})
    for store in ("sqlite", "postgresql"):
        if "rate" in m.get(store, {}):
            bars.append((f"materializer\n{store}", m[store]["rate"], None))
    q = r.get("quix", {})
    for key, label in (("taskstream", "taskstream"), ("quix_5s", "Quix 5 s"),
                       ("quix_0.2s", "Quix 0.2 s")):  # fmt: skip
        if key in q:  # taskstream's beside its ceiling, the bare Avro loop of the same runs
            ceiling = q["ceiling"]["median"] if key == "taskstream" else None
            bars.append((f"{label}\nto last commit", q[key]["last_commit"]["median"], ceiling))
    if "rate" in r.get("celery", {}):
        bars.append(("Celery+Redis\nprefork 2", r["celery"]["rate"], None))
    e2e = {
        k: v for k, v in r.get("end_to_end", {}).items() if isinstance(v, dict) and "p50_ms" in v
    }
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2.2, 1]})
    ax = axes[0]
    xs = range(len(bars))
    ceilings = [c or 0 for _, _, c in bars]
    ax.bar(xs, ceilings, color="#dddddd", label="ceiling (same run)")
    ax.bar(xs, [v for _, v, _ in bars], color="#2a6fb0", width=0.6, label="taskstream / other")
    for x, (_, v, c) in zip(xs, bars, strict=True):
        ax.text(x, v, f"{v:,.0f}" + (f"\n{v / c:.0%}" if c else ""), ha="center", va="bottom",
                fontsize=8)  # fmt: skip
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=8, rotation=30, ha="right")
    ax.set_ylabel("tasks (events) per second")
    ax.set_yscale("log")
    ax.set_title("Throughput, median of runs (log scale)")
    ax.legend(fontsize=8)
    ax = axes[1]
    labels = list(e2e)
    for i, q in enumerate(("p50_ms", "p99_ms")):
        ax.bar([x + i * 0.4 for x in range(len(labels))], [e2e[k][q] for k in labels], width=0.4,
               label=q.replace("_ms", ""))  # fmt: skip
    ax.set_xticks([x + 0.2 for x in range(len(labels))],
                  [f"{k}/s" if k != "saturation" else "flat out" for k in labels])  # fmt: skip
    ax.set_ylabel("delay() -> result readable, ms")
    ax.set_yscale("log")
    ax.set_title("End-to-end latency by offered rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(r: dict[str, Any], cmd: str, name: str = "latest") -> Path:
    REPORTS.mkdir(exist_ok=True)
    r = dict(r, command=cmd)
    (REPORTS / f"{name}.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    try:
        plot(r, REPORTS / f"{name}.png")
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no plot")
    path = REPORTS / f"{name}.md"
    path.write_text(markdown(r, cmd, name))
    return path
