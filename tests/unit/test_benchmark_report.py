"""The benchmark report: targets judged from a run's figures, floors shown beside them."""

from __future__ import annotations

from typing import Any

from benchmarks.report import markdown, targets


def summary(median: float) -> dict[str, float]:
    return {"median": median, "min": median * 0.9, "max": median * 1.1, "runs": 3}


def run(**parts: Any) -> dict[str, Any]:
    return {"mode": "quick", "cpus": 2, "python": "3.11", "started": "now", **parts}


def test_targets_are_met_or_missed_by_the_medians() -> None:
    r = run(
        worker_vs_ceiling={
            "worker": summary(30_000),
            "ceiling": summary(60_000),
            "ratio": summary(0.51),
            "tasks": 50_000,
        },
        delay={"delay": summary(40_000), "raw_produce": summary(90_000), "ratio": summary(0.44)},
        celery={"rate": 1_000.0, "concurrency": 2},
    )
    judged = {t: met for t, _reached, met in targets(r)}
    assert judged["worker >= 50% of the ceiling"] == "met"
    assert judged["delay() >= 50% of its ceiling"] == "**missed**"
    assert judged[">= 20x Celery's throughput"] == "met"  # 30,000 / 1,000


def test_end_to_end_shows_its_legs_and_the_kafka_floor() -> None:
    e2e = {"offered_per_s": 1000, "sent_per_s": 1000.0, "completed_per_s": 995.0,
           "p50_ms": 15.6, "p99_ms": 35.0, "max_ms": 48.0, "tasks": 3000,
           "pickup_p50_ms": 6.8, "pickup_p99_ms": 17.0, "store_p50_ms": 8.3,
           "store_p99_ms": 21.5}  # fmt: skip
    r = run(end_to_end={"1000": e2e}, kafka_hop={"1000": {"p50_ms": 5.3, "p99_ms": 9.9}})
    text = markdown(r, "python -m benchmarks.run --quick", "latest")
    assert "enqueue to start p50 6.8" in text
    assert "two bare Kafka hops (the floor) p50 10.6 / p99 19.8 ms" in text
    (target,) = targets(r)
    assert target[2] == "**missed**" and "p50 10.6 ms" in target[1]


def peer(last_result: float, last_commit: float, cpu: float) -> dict[str, Any]:
    return {"last_result": summary(last_result), "last_commit": summary(last_commit),
            "cpu_us_per_task": summary(cpu), "all_checks_passed": True}  # fmt: skip


def quix_run() -> dict[str, Any]:
    ts = dict(peer(40_000, 32_500, 32), ratio_to_ceiling=summary(0.52))
    slow = dict(peer(46_000, 9_000, 23), taskstream_ratio={
        "last_result": summary(0.87), "last_commit": summary(3.61),
        "cpu_us_per_task": summary(1.39)})  # fmt: skip
    fast = dict(peer(41_000, 30_000, 25), taskstream_ratio={
        "last_result": summary(0.98), "last_commit": summary(1.08),
        "cpu_us_per_task": summary(1.28)})  # fmt: skip
    return run(
        quix={
            "tasks": 100_000,
            "ceiling": summary(63_000),
            "taskstream": ts,
            "quix_5s": slow,
            "quix_0.2s": fast,
            "versions": {
                "quixstreams": "3.28.1",
                "confluent_kafka": "2.12.2",
                "taskstream_confluent_kafka": "2.16.1",
            },
        }
    )


def test_quix_rows_give_taskstreams_ratio_to_quix_per_measure_and_commit_interval() -> None:
    lines = markdown(quix_run(), "python -m benchmarks.run --quick --only 10", "x").splitlines()
    quix = [line for line in lines if line.startswith("| 10. Quix Streams 3.28.1 (JSON")]
    assert len(quix) == 2
    slow, fast = quix
    assert "commit every 5 s (its default)" in slow and "commit every 0.2 s" in fast
    # the within-run ratios' medians, not a ratio of the medians shown beside them
    assert "last result 0.87x, last commit 3.61x, CPU per task 1.39x" in slow
    assert "last result 0.98x, last commit 1.08x, CPU per task 1.28x" in fast
    assert "CPU 23 (21-25) µs/task" in slow
    assert "confluent-kafka 2.12.2" in slow


def test_taskstreams_row_beside_quix_says_avro_and_its_share_of_the_ceiling() -> None:
    text = markdown(quix_run(), "python -m benchmarks.run --quick --only 10", "x")
    (row,) = [line for line in text.splitlines() if line.startswith("| 10. taskstream")]
    assert "(Avro; confluent-kafka 2.16.1)" in row and "100,000-task backlog" in row
    assert "to last commit 32,500 (29,250-35,750) tasks/s" in row
    assert "bare Avro loop 63,000" in row and "52%" in row
    assert "reads and writes JSON" in text  # the serializers differ, and the report says so


def test_a_failed_quix_workload_is_listed_and_renders_no_rows() -> None:
    r = run(quix={"error": "RuntimeError: no Quix Streams interpreter at .venv-quix"})
    text = markdown(r, "python -m benchmarks.run --quick --only 10", "x")
    assert "| 10." not in text
    assert "- quix: RuntimeError: no Quix Streams interpreter" in text
    assert not targets(r)
