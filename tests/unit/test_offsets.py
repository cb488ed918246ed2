"""The offset tracker commits only below the lowest unfinished offset."""

from __future__ import annotations

from taskstream.consumer.offsets import OffsetTracker, PartitionOffsets


def test_nothing_is_committable_before_anything_finishes() -> None:
    p = PartitionOffsets("t", 0)
    for o in (10, 11, 12):
        p.add(o)
    assert p.committable() == 10  # the position: the lowest unfinished offset
    p.committed = 10
    assert p.committable() is None


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    p = PartitionOffsets("t", 0)
    for o in range(5):
        p.add(o)
    p.finish(2)
    p.finish(1)
    assert p.committable() == 0
    p.finish(0)
    assert p.committable() == 3
    p.finish(4)
    assert p.committable() == 3
    p.finish(3)
    assert p.committable() == 5
    assert p.in_flight == 0


def test_in_flight_counts_unfinished_records() -> None:
    p = PartitionOffsets("t", 0)
    for o in (7, 8, 9):
        p.add(o)
    p.finish(9)
    assert p.in_flight == 2


def test_gaps_in_offsets_are_fine() -> None:
    # Compacted topics and transaction markers leave gaps between offsets.
    p = PartitionOffsets("t", 0)
    for o in (3, 9, 20):
        p.add(o)
    p.finish(3)
    assert p.committable() == 9
    p.finish(20)
    p.finish(9)
    assert p.committable() == 21


def test_the_window_holds_only_unfinished_offsets() -> None:
    p = PartitionOffsets("t", 0)
    for o in range(10_000):
        p.add(o)
        p.finish(o)
    assert p.committable() == 10_000
    assert not p._pending and not p._done


def test_a_revoked_partitions_late_completion_does_not_touch_the_new_assignment() -> None:
    tracker = OffsetTracker()
    old = tracker.get("t", 1)
    old.add(5)
    tracker.revoke("t", 1)
    new = tracker.assign("t", 1)
    new.add(5)
    old.finish(5)  # the old run's result arrives after the rebalance
    assert new.committable() == 5
    assert tracker.committable() == [(new, 5)]


def test_committable_lists_only_partitions_that_moved() -> None:
    tracker = OffsetTracker()
    a, b = tracker.get("t", 0), tracker.get("t", 1)
    a.add(0)
    a.finish(0)
    b.add(0)
    assert tracker.committable() == [(a, 1), (b, 0)]
    a.committed, b.committed = 1, 0
    assert tracker.committable() == []
    assert tracker.in_flight == 1
