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
