"""What the lookup store holds: one row per task (:class:`ResultRecord`, or as a plain
:data:`ResultRow`), the workflow rows beside it (group members, progress, links), and the
helpers every backend shares (the replacement rule, time conversion, storable text). The
interfaces are in :mod:`taskstream.store.roles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from taskstream.errors import InvalidRecord
from taskstream.status import Status
from taskstream.text import storable, storable_or_none

_TIME_FIELDS = ("enqueued_at", "started_at", "finished_at")
_FINAL = frozenset(s.value for s in Status if s.is_final)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

ResultRow = tuple[Any, ...]
"""A :class:`ResultRecord` as plain values, in the order of its fields, with ``status`` as its
string value and the three times as integer microseconds since the epoch (UTC), as the result
envelope carries them. The write path's format: no objects to build per event."""


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """The latest known outcome of one task.

    Datetimes must be timezone-aware and are normalised to UTC. ``result`` is the return value,
    Avro single-object encoded; the store never looks inside it. ``source_*`` say where the
    event that produced this row was read from.
    """

    task_id: str
    task: str
    status: Status
    attempt: int
    result: bytes | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    worker: str | None
    key: str | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None

    def __post_init__(self) -> None:
        for name in _TIME_FIELDS:
            value: datetime | None = getattr(self, name)
            if value is None:
                continue
            if value.utcoffset() is None:
                # A naive datetime's instant is unknowable; guessing would shift it by hours.
                raise InvalidRecord(name, value)
            if value.tzinfo is not UTC:
                object.__setattr__(self, name, value.astimezone(UTC))


def supersedes(new: Status | str, old: Status | str) -> bool:
    """Whether an outcome with status `new` replaces a stored one with status `old`.

    A final outcome is never replaced by a non-final one: a redelivered task's late STARTED
    must not hide its SUCCESS. Otherwise the latest wins, as with a compacted topic. Statuses
    may be given as :class:`Status` or as their string values (as in a :data:`ResultRow`).
    """
    return new in _FINAL or old not in _FINAL


def to_row(r: ResultRecord) -> ResultRow:
    """`r` as a :data:`ResultRow`."""
    return (
        r.task_id, r.task, r.status.value, r.attempt, r.result,
        r.error_type, r.error_message, r.error_traceback, r.worker, r.key,
        to_micros(r.enqueued_at), to_micros(r.started_at), to_micros(r.finished_at),
        r.source_topic, r.source_partition, r.source_offset,
    )  # fmt: skip


def from_row(row: Sequence[Any]) -> ResultRecord:
    """The :class:`ResultRecord` of a :data:`ResultRow`; ValueError for an unknown status."""
    return ResultRecord(
        row[0], row[1], Status(row[2]), row[3], row[4],
        row[5], row[6], row[7], row[8], row[9],
        from_micros(row[10]), from_micros(row[11]), from_micros(row[12]),
        row[13], row[14], row[15],
    )  # fmt: skip


def to_micros(value: datetime | None) -> int | None:
    """Microseconds since the epoch of an aware datetime."""
    # Integer division of timedeltas is exact, unlike timestamp() which goes through a float.
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def from_micros(micros: int | None) -> datetime | None:
    """The UTC datetime `micros` microseconds after the epoch, exactly."""
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """A filtered page of stored outcomes, newest ``finished_at`` first (ties: by task id,
    descending), for :meth:`ResultStore.search`.

    ``since``/``until`` bound ``finished_at`` (``since`` included, ``until`` not). ``after`` is
    the keyset cursor: the ``(finished_at, task_id)`` of the last row of the previous page; the
    page holds the rows that sort after it, so paging costs the same on page 1 and page 1000
    (an OFFSET would read and drop every row before the page).
    """

    status: Status | None = None
    task: str | None = None
    key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, str] | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class OutcomeCount:
    """How many stored outcomes of one status finished in one time bucket."""

    bucket: datetime  # the bucket's start (UTC)
    status: Status
    count: int


def bucket_start(moment: datetime, bucket_s: int) -> datetime:
    """The start of the `bucket_s`-second bucket (counted from the epoch) holding `moment`."""
    micros = to_micros(moment)
    assert micros is not None
    step = bucket_s * 1_000_000
    start = from_micros(micros - micros % step)
    assert start is not None
    return start


def matches(record: ResultRecord, query: TaskQuery) -> bool:
    """Whether `record` belongs in `query`'s result set (the cursor aside): the reference
    semantics that the SQL stores' WHERE clauses implement."""
    done = record.finished_at
    return (
        done is not None
        and (query.status is None or record.status == query.status)
        and (query.task is None or record.task == query.task)
        and (query.key is None or record.key == query.key)
        and (query.since is None or done >= query.since)
        and (query.until is None or done < query.until)
        and (query.after is None or (done, record.task_id) < query.after)
    )


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """What a live Idempotency-Key is bound to: the task id of the request that first used it,
    that request's fingerprint (a hash the caller chose), and whether the broker acknowledged
    the task's event (then a retry needs no new event)."""

    task_id: str
    fingerprint: bytes
    accepted: bool = False


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A group member's final outcome, as the join counts it: once per (group, index), however
    often the member ran. ``manifest``: for a chord's member, its result event (single-object
    Avro), which carries the chord's body and errbacks."""

    group_id: str
    index: int
    size: int
    task_id: str
    manifest: bytes | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """A running task's custom state from ``update_state()`` (``meta`` as JSON)."""

    task_id: str
    state: str
    meta: str | None


@dataclass(frozen=True, slots=True)
class Link:
    """Where a workflow step sits: the task that sent it, the workflow's first task, its
    group and position (``AsyncResult.parent`` and ``.children`` read them)."""

    task_id: str
    parent_id: str | None
    root_id: str | None
    group_id: str | None
    group_index: int | None


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    """A group member's final outcome, as a chord's join needs it (no times, no source)."""

    index: int
    task_id: str
    task: str
    status: str
    result: bytes | None
    error_type: str | None
    error_message: str | None


class GroupState:
    """Where a group's join stands."""

    WAITING = "waiting"  # not every member is final yet
    DUE = "due"  # a chord whose members are all final: its body (or FAILURE) to publish
    FIRED = "fired"  # ... published
    DONE = "done"  # a plain group whose members are all final: nothing to publish


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group_id: str
    size: int
    completed: int  # members with a final outcome
    state: str  # a GroupState
    manifest: bytes | None


def settled_state(size: int, completed: int, manifest: bytes | None) -> str:
    """The state of a waiting group with ``completed`` of ``size`` members final."""
    if completed < size:
        return GroupState.WAITING
    return GroupState.DUE if manifest is not None else GroupState.DONE


def storable_query(query: TaskQuery, *, nul: bool = True) -> TaskQuery:
    """`query` with its text filters made storable, as the rows they match were."""
    after = query.after
    return replace(
        query,
        task=storable_or_none(query.task, nul=nul),
        key=storable_or_none(query.key, nul=nul),
        after=None if after is None else (after[0], storable(after[1], nul=nul)),
    )


def redacted_url(url: str) -> str:
    """`url` as logs, banners and errors may show it: the password of its user part and any
    ``password`` parameter (libpq's) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = parts.query
    if "password" in query.lower():
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
        )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_ROW_TEXT = (0, 1, 2, 5, 6, 7, 8, 9, 13)  # the str columns of a ResultRow


def storable_row(row: ResultRow, *, nul: bool = True) -> ResultRow:
    """`row` with its text made storable (taskstream.text.storable)."""
    values = list(row)
    for i in _ROW_TEXT:
        if values[i] is not None:
            values[i] = storable(values[i], nul=nul)
    return tuple(values)


def storable_batch(
    rows: Sequence[ResultRow],
    members: Sequence[GroupMember],
    progress: Sequence[Progress],
    links: Sequence[Link],
    *,
    nul: bool = True,
) -> tuple[list[ResultRow], list[GroupMember], list[Progress], list[Link]]:
    """A batch of :meth:`ResultStore.apply_rows` with every text made storable: what a SQL
    store writes when the batch as it came held text it cannot encode (NUL, lone surrogates)."""

    def t(text: str | None) -> str | None:
        return storable_or_none(text, nul=nul)

    return (
        [storable_row(r, nul=nul) for r in rows],
        [GroupMember(storable(m.group_id, nul=nul), m.index, m.size,
                     storable(m.task_id, nul=nul), m.manifest) for m in members],
        [Progress(storable(p.task_id, nul=nul), storable(p.state, nul=nul), t(p.meta))
         for p in progress],
        [Link(storable(k.task_id, nul=nul), t(k.parent_id), t(k.root_id), t(k.group_id),
              k.group_index) for k in links],
    )  # fmt: skip
