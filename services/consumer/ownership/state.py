"""Partition ownership's journal records and the takeover rules: pure, no I/O.

A record per task partition (``PartitionState``, JSON, the latest per key wins) says who owns
it and how the last owner left; :func:`takeover` is the state a new owner starts from. See
the package docstring for the rules in prose; ``tests/unit/test_ownership.py`` has them as a
table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

CLAIM, OWN, RELEASE = "claim", "own", "release"


@dataclass(frozen=True)
class PartitionState:
    """What the journal holds for one task partition (one record, the latest wins)."""

    owner: str  # worker id
    token: str  # one per assignment of the partition to the owner
    state: str  # claim | own | release
    careful_until: int | None = None  # records below this offset run carefully (-1: to be set)
    inferred: int = 0  # deaths not yet attributed to a record (JSON true from older journals: 1)
    running: int | None = None  # the offset whose careful run is in progress
    lost: dict[int, int] = field(default_factory=dict)  # offset -> lost deliveries
    window: int = 0  # the owner's max_tasks_in_flight: how far past the commit it may fetch
    suspects: int = 0  # careful: how many records past the first may be suspects
    handed: dict[int, str | None] = field(default_factory=dict)  # release: still running (key hex)
    done: list[int] = field(default_factory=list)  # release: finished above the committed offset
    probation: bool = False  # the suspects below careful_until run as usual, once

    def encode(self) -> bytes:
        d = asdict(self)
        d["lost"] = {str(k): v for k, v in self.lost.items()}
        d["handed"] = {str(k): v for k, v in self.handed.items()}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        d: dict[str, Any] = json.loads(data)
        d["lost"] = {int(k): int(v) for k, v in (d.get("lost") or {}).items()}
        d["handed"] = {int(k): v for k, v in (d.get("handed") or {}).items()}
        d["inferred"] = int(d.get("inferred") or 0)  # older journals: a bool
        return cls(**d)


@dataclass(frozen=True)
class HandoverReport:
    """A releasing owner's runs of a partition it handed over: those still running, and
    those whose outcome is acknowledged. A handed run in neither was abandoned (its worker
    stopped): the new owner runs it."""

    running: frozenset[int]
    done: frozenset[int]

    def encode(self) -> bytes:
        d = {"running": sorted(self.running), "done": sorted(self.done)}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> HandoverReport:
        d: dict[str, Any] = json.loads(data)
        return cls(frozenset(map(int, d["running"])), frozenset(map(int, d["done"])))


def journal_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def takeover(
    previous: PartitionState | None,
    me: str,
    token: str,
    window: int,
    *,
    mine: bool = False,
    probation: bool = True,
) -> PartitionState:
    """The state a new owner starts from, given how the previous owner left. ``mine``: the
    previous assignment was this very process's (it lost the partition, to a session timeout
    or a lost coordinator, and got it back): nobody died, whatever the state says.
    ``probation``: a first death leaves its suspects on probation rather than careful."""
    if previous is None:
        return PartitionState(me, token, OWN, window=window)
    if previous.state == RELEASE or mine:  # clean: carry an unfinished careful window on
        return replace(
            previous, owner=me, token=token, state=OWN, running=None, window=window,
            handed={}, done=[],
        )  # fmt: skip
    lost = dict(previous.lost)
    if previous.running is not None:  # died during a recorded run, alone: that record did it
        offset = previous.running
        lost[offset] = lost.get(offset, 0) + 1 + int(previous.inferred)
        until = max(lost) + 1  # the inferred deaths are now attributed: only counted ones stay
        return PartitionState(me, token, OWN, until, 0, None, lost, window)
    # Died with no run recorded: a record in what it had fetched may have done it.
    suspects = previous.window or window
    first = previous.careful_until is None and not lost and not previous.inferred
    if first and probation:  # most likely not a record's doing: run them as usual once
        return PartitionState(me, token, OWN, -1, 1, None, lost, window, suspects, probation=True)
    # Died again with its suspects on probation (a second death to attribute), or careful.
    inferred = int(previous.inferred) + 1 if previous.probation else max(1, previous.inferred)
    return PartitionState(me, token, OWN, -1, inferred, None, lost, window, suspects)


def report_key(key: str, token: str) -> str:
    """Where the owner of assignment ``token`` reports on the runs it handed over."""
    return f"{key}@{token}"
