"""Lag in seconds: the age of a partition's oldest record not yet done, from the record
timestamps the tracker keeps; 0 when caught up; never an old age for a record just arrived."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from taskstream import metrics
from taskstream.consumer.instrumentation import PrometheusHooks
from taskstream.consumer.offsets import OffsetTracker, PartitionOffsets
from taskstream.consumer.runtime import ConsumerRuntime


def test_the_oldest_unfinished_record_sets_the_age_whatever_finishes_first() -> None:
    p = PartitionOffsets("t", 0)
    for offset, stamp in ((10, 1_000), (11, 2_000), (12, 3_000)):
        p.add(offset, stamp)
    assert p.age_ms(10_000, high=13) == 9_000
    p.finish(11)  # out of order: 10 still runs
    assert p.age_ms(10_000, high=13) == 9_000
    p.finish(10)  # 10 and 11 done: 12 is the oldest
    assert p.age_ms(10_000, high=13) == 7_000
    p.finish(12)
    assert p.age_ms(10_000, high=13) == 0  # caught up
    assert p.age_ms(10_000, high=15) is None  # two more wait, not received yet


def test_a_partition_never_read_is_caught_up_at_its_committed_offset() -> None:
    p = PartitionOffsets("t", 0)
    assert p.age_ms(5_000, high=None) == 0
    p.committed = 40
    assert p.age_ms(5_000, high=40) == 0
    assert p.age_ms(5_000, high=41) is None


class _Watermarks:
    """The one consumer call lag_seconds makes: the cached high watermark."""

    def __init__(self) -> None:
        self.high: dict[tuple[str, int], int] = {}

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.high.get((tp.topic, tp.partition), -1001)


def test_records_not_received_yet_count_from_when_they_were_first_seen_waiting() -> None:
    consumer = _Watermarks()
    tracker = OffsetTracker()
    handler: Any = object()
    runtime = ConsumerRuntime(consumer, handler, tracker)  # type: ignore[arg-type]
    p = tracker.assign("t", 0)
    p.committed = 100
    consumer.high[("t", 0)] = 100
    assert runtime.lag_seconds(1_000.0) == {("t", 0): 0.0}
    consumer.high[("t", 0)] = 105  # five arrive; the handler is full and takes none
    assert runtime.lag_seconds(1_000.0) == {("t", 0): 0.0}  # just seen: no old age
    assert runtime.lag_seconds(1_030.0) == {("t", 0): 30.0}  # still not taken 30 s later
    p.add(100, 995_000)  # taken at last: its own timestamp tells, 35 s old at 1030
    assert runtime.lag_seconds(1_030.0) == {("t", 0): 35.0}


def test_the_gauge_follows_the_hook_and_leaves_with_the_partition() -> None:
    hooks = PrometheusHooks()
    hooks.lagged({("unit.lag", 3): 12.5})
    gauge = metrics.CONSUMER_LAG_SECONDS.labels("unit.lag", "3")
    assert gauge._value.get() == 12.5
    hooks.partitions_changed("revoke", 0, [("unit.lag", 3)])
    assert ("unit.lag", "3") not in metrics.CONSUMER_LAG_SECONDS._metrics


def test_a_gone_partitions_gauge_reads_0_in_multiprocess_mode_without_a_warning(
    monkeypatch: Any, tmp_path: Any
) -> None:
    """prometheus-client cannot remove labels in multiprocess mode and warned on every stop
    (issue 20, minor 13): there the gauge reads 0 instead (livemax shows the new owner's)."""
    hooks = PrometheusHooks()
    hooks.lagged({("unit.mp", 1): 4.0})
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    hooks.partitions_changed("revoke", 0, [("unit.mp", 1)])  # filterwarnings=error: none
    assert metrics.CONSUMER_LAG_SECONDS.labels("unit.mp", "1")._value.get() == 0
