"""The join's memory of members' results: used only when it holds every member's success."""

from __future__ import annotations

from typing import Any

from taskstream.consumer.joins import MemberResults
from taskstream.envelope import ParentResult


def result(group: str | None, index: int, status: str = "SUCCESS", value: bytes = b"v") -> Any:
    return {"group_id": group, "group_index": index, "status": status, "task": "t",
            "result": value + bytes([index])}  # fmt: skip


def test_every_member_succeeded_gives_their_results_in_the_group_order() -> None:
    members = MemberResults()
    for i in (2, 0, 1, 0):  # out of order, and one applied twice (a member that ran twice)
        members.applied(result("g", i))
    assert members.results("g", 3) == [ParentResult("t", b"v" + bytes([i])) for i in range(3)]


def test_a_missing_member_a_failed_one_or_another_group_sends_the_join_to_the_store() -> None:
    members = MemberResults()
    members.applied(result("g", 0))
    assert members.results("g", 2) is None  # one seen by another materializer, say
    members.applied(result("g", 1, "FAILURE"))
    members.applied(result("g", 1))  # (a later success does not hide the failure)
    assert members.results("g", 2) is None
    members.applied(result("h", 0, "STARTED"))
    members.applied(result(None, 0))
    assert members.results("h", 1) is None


def test_a_fired_group_is_forgotten_and_the_limit_forgets_them_all() -> None:
    members = MemberResults(limit=3)
    members.applied(result("g", 0))
    members.forget("g")
    assert members.results("g", 1) is None
    for i in range(3):
        members.applied(result("h", i))
    assert members.results("h", 3) is not None
    members.applied(result("k", 0))  # the fourth: over the limit, everything goes
    assert members.results("h", 3) is None
    assert members.results("k", 1) == [ParentResult("t", b"v\x00")]
