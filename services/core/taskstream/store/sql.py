"""The SQL lookup store: every query once, for SQLite and PostgreSQL alike.

:class:`SQLStore` holds the queries and their transactions; a :class:`Dialect` holds what the
two databases spell differently: the placeholder, how a batch of rows is written, how times are
kept (TIMESTAMPTZ, or integer microseconds), row locks, the clock, and the connection with its
schema migrations (:mod:`taskstream.store.sqlite`, :mod:`taskstream.store.postgres`).

Guarantees: a batch's rows and its offsets are one transaction; the "a final outcome is never
replaced by a non-final one" rule is the upsert's WHERE clause, so concurrent writers cannot
race a read-then-write. Text a database cannot hold (a lone surrogate; NUL for PostgreSQL) is
written and looked up as storable text (:mod:`taskstream.text`).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields
from datetime import datetime
from typing import Any

from taskstream.errors import StoreError, StoreRejected
from taskstream.status import Status
from taskstream.store.base import (
    GroupInfo,
    GroupMember,
    GroupState,
    IdempotencyKey,
    Link,
    MemberOutcome,
    OutcomeCount,
    Progress,
    ResultRecord,
    ResultRow,
    TaskQuery,
    settled_state,
    storable_batch,
    storable_query,
)
from taskstream.store.roles import ResultStore
from taskstream.text import storable

COLUMNS = tuple(f.name for f in fields(ResultRecord))  # a ResultRow's order
COLUMN_LIST = ", ".join(COLUMNS)
_FINAL = ", ".join(f"'{s.value}'" for s in Status if s.is_final)
# After `INSERT INTO results (COLUMN_LIST) <rows>`: the replacement rule, in the WHERE clause.
UPSERT = f"""
    ON CONFLICT (task_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])}
    WHERE excluded.status IN ({_FINAL}) OR results.status NOT IN ({_FINAL})
"""

# Queries with `?` placeholders; Dialect.sql() spells them for the driver.
_SELECT = f"SELECT {COLUMN_LIST} FROM results"
_SET_OFFSET = """
    INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?)
    ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset
"""
_SET_PROGRESS = """
    INSERT INTO progress (task_id, state, meta) VALUES (?, ?, ?)
    ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, meta = excluded.meta
"""
_LINK_COLUMNS = "task_id, parent_id, root_id, group_id, group_index"
_SET_LINK = f"""
    INSERT INTO links ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (task_id) DO UPDATE SET parent_id = excluded.parent_id,
        root_id = excluded.root_id, group_id = excluded.group_id,
        group_index = excluded.group_index
"""
_ADD_GROUP = """
    INSERT INTO groups (group_id, size, state, manifest) VALUES (?, ?, 'waiting', ?)
    ON CONFLICT (group_id) DO UPDATE SET manifest = coalesce(groups.manifest, excluded.manifest)
"""
_ADD_MEMBER = (
    "INSERT INTO group_members (group_id, idx, task_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)
_SELECT_GROUP = "SELECT group_id, size, state, manifest, completed FROM groups"
_COUNT_GROUP = "UPDATE groups SET completed = ?, state = ? WHERE group_id = ?"
_SET_GROUP_STATE = "UPDATE groups SET state = ? WHERE group_id = ?"
_MEMBER_OUTCOMES = """
    SELECT m.idx, r.task_id, r.task, r.status, r.result, r.error_type, r.error_message
    FROM group_members m JOIN results r ON r.task_id = m.task_id
    WHERE m.group_id = ? ORDER BY m.idx
"""
# The database's clock (PostgreSQL's, or this host's wall clock for SQLite) decides expiry. A
# live binding makes the conflict's WHERE false: nothing is returned and the row stays as it
# is (but locked, so the SELECT that follows in the same transaction reads what it is now).
_CLAIM_KEY = """
    INSERT INTO idempotency_keys AS k (key, task_id, fingerprint, accepted, expires_at)
    VALUES (?, ?, ?, false, {now} + {ttl})
    ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id,
        fingerprint = excluded.fingerprint, accepted = false, expires_at = excluded.expires_at
    WHERE k.expires_at <= {now}
    RETURNING task_id
"""
_SELECT_KEY = "SELECT task_id, fingerprint, accepted FROM idempotency_keys WHERE key = ?"
_PURGE_KEYS = "DELETE FROM idempotency_keys WHERE expires_at <= {now}"
_ACCEPT_KEY = "UPDATE idempotency_keys SET accepted = true WHERE key = ? AND task_id = ?"
# The oldest outcomes first, through the finished_at index, a batch at a time.
_EXPIRE = """
    DELETE FROM results WHERE task_id IN (
        SELECT task_id FROM results WHERE finished_at < ?
        ORDER BY finished_at LIMIT ?{skip_locked}
    )
"""
_PURGE_EVERY = 1024  # claims between deletions of expired Idempotency-Keys


class Dialect(ABC):
    """What one database spells its own way. Queries reach it with ``?`` placeholders."""

    where: str  # "sqlite store PATH": names the store in errors, never with a password
    nul: bool  # whether NUL must be written as storable text (taskstream.text)
    content_errors: tuple[type[BaseException], ...]  # what a statement's data caused
    text_errors: tuple[type[BaseException], ...]  # ... of them, text it cannot hold
    errors: tuple[type[BaseException], ...]  # any other failure of the database
    skip_locked: str  # appended to expire()'s SELECT: rows another writer holds are skipped
    for_update: str  # appended to a SELECT that must lock its row until commit
    reset: tuple[str, ...]  # statements that empty every table a rebuild refills

    def sql(self, query: str) -> str:
        """`query` with the driver's placeholders."""
        return query

    @abstractmethod
    def connect(self) -> Any:
        """A new connection, its schema migrated; StoreError if it cannot be had."""

    def usable(self, conn: Any) -> bool:
        """Whether `conn` still works (else the store replaces it)."""
        return True

    @abstractmethod
    def transaction(self, conn: Any, *, write: bool) -> AbstractContextManager[Any]:
        """A transaction on `conn`, yielding a cursor; committed at exit, else rolled back."""

    @abstractmethod
    def write_rows(self, cur: Any, rows: Sequence[ResultRow]) -> None:
        """Upsert `rows` into ``results`` (`UPSERT`), in order."""

    @abstractmethod
    def to_time(self, moment: datetime) -> object:
        """`moment` as the database compares it with the time columns."""

    @abstractmethod
    def from_time(self, value: Any) -> datetime | None:
        """A time column's value as a UTC datetime."""

    @abstractmethod
    def bucket(self, bucket_s: int) -> tuple[str, object]:
        """An expression of ``finished_at``'s `bucket_s`-second bucket (counted from the
        epoch), with its one parameter."""

    @abstractmethod
    def now(self) -> tuple[str, tuple[object, ...]]:
        """The current time as an expression comparable with ``expires_at``, and its
        parameters."""

    @abstractmethod
    def micros(self, placeholder: str) -> str:
        """A duration of `placeholder` microseconds, to add to :meth:`now`."""

    def any_of(self, column: str, values: Sequence[str]) -> Iterator[tuple[str, list[Any]]]:
        """`column` matching any of `values`: conditions with their parameters, one per
        chunk (their union is the match)."""
        for i in range(0, len(values), 500):  # under SQLite's historic 999-variable limit
            chunk = list(values[i : i + 500])
            yield f"{column} IN ({', '.join('?' * len(chunk))})", chunk


class SQLStore(ResultStore):
    """A :class:`ResultStore` in a SQL database.

    Each instance holds one connection; threads share it under a lock (lookups take well
    under a millisecond; run one instance per process). A connection that broke is replaced on
    the next call when the dialect can tell (PostgreSQL); the call that saw it break raises
    :class:`StoreError` and its transaction did not happen.
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._lock = threading.Lock()
        self._closed = False
        self._claims = 0
        self._conn: Any = dialect.connect()

    # -- the materializer's writes -------------------------------------------------------------

    def apply_rows(
        self,
        rows: Sequence[ResultRow],
        offsets: Mapping[tuple[str, int], int],
        members: Sequence[GroupMember] = (),
        progress: Sequence[Progress] = (),
        links: Sequence[Link] = (),
    ) -> None:
        offset_rows = [(t, p, o) for (t, p), o in offsets.items()]
        if not rows and not offset_rows and not members and not progress and not links:
            return
        try:
            self._apply(rows, offset_rows, members, progress, links)
        except StoreRejected as exc:
            if not isinstance(exc.__cause__, self.dialect.text_errors):
                raise
            # Text the database cannot hold: written as storable text, which lookups map the
            # same way. Rare, so the common batch pays nothing for it.
            batch = storable_batch(rows, members, progress, links, nul=self.dialect.nul)
            rows_, members_, progress_, links_ = batch
            self._apply(rows_, offset_rows, members_, progress_, links_)

    def _apply(
        self,
        rows: Sequence[ResultRow],
        offset_rows: Sequence[tuple[str, int, int]],
        members: Sequence[GroupMember],
        progress: Sequence[Progress],
        links: Sequence[Link],
    ) -> None:
        q = self.dialect.sql
        with self._transaction(write=True) as cur:
            if rows:
                self.dialect.write_rows(cur, rows)
            if offset_rows:
                cur.executemany(q(_SET_OFFSET), offset_rows)
            if progress:
                cur.executemany(q(_SET_PROGRESS), [(p.task_id, p.state, p.meta) for p in progress])
            if links:
                link_rows = [
                    (k.task_id, k.parent_id, k.root_id, k.group_id, k.group_index) for k in links
                ]
                cur.executemany(q(_SET_LINK), link_rows)
            if members:
                self._join(cur, members)

    def _join(self, cur: Any, members: Sequence[GroupMember]) -> None:
        """Count the members in (once each) and settle the groups they complete. The group's
        row is locked before its members are added (SQLite's write transaction holds its one
        write lock; PostgreSQL's FOR UPDATE), so a concurrent writer adding the same group's
        members waits for this one to commit; a member already there adds nothing to the
        insert's row count, which the group's ``completed`` grows by (counting the members
        instead took a batch time in the group's size: quadratic in a chord's)."""
        q = self.dialect.sql
        by_group: dict[str, list[GroupMember]] = {}
        for m in members:
            by_group.setdefault(m.group_id, []).append(m)
        ordered = sorted(by_group)  # one lock order: no deadlock
        cur.executemany(
            q(_ADD_GROUP), [(g, by_group[g][0].size, _manifest(by_group[g])) for g in ordered]
        )
        lock = self.dialect.for_update
        select = q(f"SELECT size, state, manifest, completed FROM groups WHERE group_id = ?{lock}")
        add = q(_ADD_MEMBER)
        for group_id in ordered:
            row = cur.execute(select, (group_id,)).fetchone()
            added = _changed(
                cur, add, [(m.group_id, m.index, m.task_id) for m in by_group[group_id]]
            )
            if row is None or added <= 0:
                continue
            completed = int(row[3]) + added
            state = row[1]
            if state == GroupState.WAITING:
                state = settled_state(row[0], completed, _blob(row[2]))
            cur.execute(q(_COUNT_GROUP), (completed, state, group_id))

    def offsets(self, topic: str) -> dict[int, int]:
        sql = self.dialect.sql("SELECT partition, next_offset FROM offsets WHERE topic = ?")
        with self._transaction() as cur:
            return {int(p): int(o) for p, o in cur.execute(sql, (topic,))}

    def reset(self, topic: str) -> None:
        with self._transaction(write=True) as cur:
            for statement in self.dialect.reset:
                cur.execute(statement)

    def forget(self, task_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(self._text(t) for t in task_ids))
        if not ids:
            return 0
        deleted = 0
        with self._transaction(write=True) as cur:
            for where, params in self.dialect.any_of("task_id", ids):
                sql = self.dialect.sql(f"DELETE FROM results WHERE {where}")
                deleted += int(cur.execute(sql, params).rowcount)
        return deleted

    def expire(self, before: datetime, limit: int = 1000) -> int:
        d = self.dialect
        sql = d.sql(_EXPIRE.format(skip_locked=d.skip_locked))
        with self._transaction(write=True) as cur:
            return int(cur.execute(sql, (d.to_time(before), limit)).rowcount)

    # -- callers' reads ------------------------------------------------------------------------

    def get(self, task_id: str) -> ResultRecord | None:
        sql = self.dialect.sql(f"{_SELECT} WHERE task_id = ?")
        with self._transaction() as cur:
            row = cur.execute(sql, (self._text(task_id),)).fetchone()
        return None if row is None else self._record(row)

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        stored = {self._text(t): t for t in ids}
        found: dict[str, ResultRecord] = {}
        with self._transaction() as cur:  # one snapshot across the chunks
            for where, params in self.dialect.any_of("task_id", list(stored)):
                for row in cur.execute(self.dialect.sql(f"{_SELECT} WHERE {where}"), params):
                    found[stored.get(row[0], row[0])] = self._record(row)
        return {t: found[t] for t in ids if t in found}

    def progress(self, task_id: str) -> Progress | None:
        sql = self.dialect.sql("SELECT task_id, state, meta FROM progress WHERE task_id = ?")
        with self._transaction() as cur:
            row = cur.execute(sql, (self._text(task_id),)).fetchone()
        return None if row is None else Progress(row[0], row[1], row[2])

    def link(self, task_id: str) -> Link | None:
        sql = self.dialect.sql(f"SELECT {_LINK_COLUMNS} FROM links WHERE task_id = ?")
        with self._transaction() as cur:
            row = cur.execute(sql, (self._text(task_id),)).fetchone()
        return None if row is None else Link(*row)

    def children(self, task_id: str) -> list[str]:
        sql = self.dialect.sql("SELECT task_id FROM links WHERE parent_id = ? ORDER BY task_id")
        with self._transaction() as cur:
            return [str(r[0]) for r in cur.execute(sql, (self._text(task_id),))]

    # -- the console's search ------------------------------------------------------------------

    def search(self, query: TaskQuery) -> list[ResultRecord]:
        where, params = self._search_filter(storable_query(query, nul=self.dialect.nul))
        order = "ORDER BY finished_at DESC, task_id DESC LIMIT ?"
        sql = self.dialect.sql(f"{_SELECT} WHERE {where} {order}")
        with self._transaction() as cur:
            rows = cur.execute(sql, (*params, query.limit)).fetchall()
        return [self._record(row) for row in rows]

    def _search_filter(self, query: TaskQuery) -> tuple[str, list[object]]:
        """The WHERE clause of `query` (see :func:`taskstream.store.base.matches`)."""
        t = self.dialect.to_time
        clauses, params = ["finished_at IS NOT NULL"], list[object]()
        for column, value in (("status", query.status), ("task", query.task), ("key", query.key)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        if query.since is not None:
            clauses.append("finished_at >= ?")
            params.append(t(query.since))
        if query.until is not None:
            clauses.append("finished_at < ?")
            params.append(t(query.until))
        if query.after is not None:
            # The page order's (finished_at, task_id) < cursor, spelt so that the index range
            # on finished_at is plain to the planner.
            moment = t(query.after[0])
            clauses.append("finished_at <= ? AND (finished_at < ? OR task_id < ?)")
            params += [moment, moment, query.after[1]]
        return " AND ".join(clauses), params

    def outcome_counts(self, since: datetime, bucket_s: int) -> list[OutcomeCount]:
        d = self.dialect
        bucket, step = d.bucket(bucket_s)
        sql = d.sql(f"""SELECT {bucket} AS bucket, status, count(*) FROM results
            WHERE finished_at >= ? GROUP BY bucket, status ORDER BY bucket, status""")
        with self._transaction() as cur:
            rows = cur.execute(sql, (step, d.to_time(since))).fetchall()
        return [OutcomeCount(_moment(d.from_time(b)), Status(s), int(n)) for b, s, n in rows]

    def count(self, status: Status | None = None) -> int:
        with self._transaction() as cur:
            if status is None:
                row = cur.execute("SELECT count(*) FROM results").fetchone()
            else:
                sql = self.dialect.sql("SELECT count(*) FROM results WHERE status = ?")
                row = cur.execute(sql, (status.value,)).fetchone()
        return int(row[0])

    # -- HTTP idempotency ----------------------------------------------------------------------

    def claim_idempotency_key(
        self, key: str, task_id: str, fingerprint: bytes, ttl_s: float
    ) -> IdempotencyKey | None:
        d = self.dialect
        key, task_id = self._text(key), self._text(task_id)
        with self._transaction(write=True) as cur:  # atomic: see _CLAIM_KEY
            now, now_params = d.now()
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                cur.execute(d.sql(_PURGE_KEYS.format(now=now)), now_params)
            claim = d.sql(_CLAIM_KEY.format(now=now, ttl=d.micros("?")))
            ttl_us = int(ttl_s * 1_000_000)
            params = (key, task_id, fingerprint, *now_params, ttl_us, *now_params)
            if cur.execute(claim, params).fetchall():
                return None
            row = cur.execute(d.sql(_SELECT_KEY), (key,)).fetchone()
        if row is None:  # pragma: no cover - the conflicting row is locked until commit
            raise StoreError(f"{d.where}: key {key!r} vanished mid-claim")
        return IdempotencyKey(row[0], bytes(row[1]), bool(row[2]))

    def accept_idempotency_key(self, key: str, task_id: str) -> None:
        with self._transaction(write=True) as cur:
            cur.execute(self.dialect.sql(_ACCEPT_KEY), (self._text(key), self._text(task_id)))

    # -- chords' joins -------------------------------------------------------------------------

    def group(self, group_id: str) -> GroupInfo | None:
        q = self.dialect.sql
        group_id = self._text(group_id)
        with self._transaction() as cur:
            row = cur.execute(q(f"{_SELECT_GROUP} WHERE group_id = ?"), (group_id,)).fetchone()
        if row is None:
            return None
        return GroupInfo(row[0], row[1], int(row[4]), row[2], _blob(row[3]))

    def member_outcomes(self, group_id: str) -> list[MemberOutcome]:
        sql = self.dialect.sql(_MEMBER_OUTCOMES)
        with self._transaction() as cur:
            rows = cur.execute(sql, (self._text(group_id),)).fetchall()
        return [MemberOutcome(r[0], r[1], r[2], r[3], _blob(r[4]), r[5], r[6]) for r in rows]

    def due_groups(self) -> list[GroupInfo]:
        sql = self.dialect.sql(f"{_SELECT_GROUP} WHERE state = ?")
        with self._transaction() as cur:
            rows = cur.execute(sql, (GroupState.DUE,)).fetchall()
        return [GroupInfo(r[0], r[1], int(r[4]), r[2], _blob(r[3])) for r in rows]

    def mark_fired(self, group_id: str) -> None:
        sql = self.dialect.sql(_SET_GROUP_STATE)
        with self._transaction(write=True) as cur:
            cur.execute(sql, (GroupState.FIRED, self._text(group_id)))

    # -- connection and transactions -----------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Any]:
        """Hold the lock and a transaction, yielding a cursor; it rolls back, raising
        StoreError (StoreRejected for what the statements' data caused), on failure.
        `write`: the transaction will write (SQLite takes its write lock up front)."""
        d = self.dialect
        with self._lock:
            if self._closed:
                raise StoreError(f"{d.where} is closed")
            if self._conn is None or not d.usable(self._conn):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._conn = d.connect()
            try:
                with d.transaction(self._conn, write=write) as cur:
                    yield cur
            except d.content_errors as exc:
                raise StoreRejected(f"{d.where}: {exc}") from exc
            except d.errors as exc:
                raise StoreError(f"{d.where}: {exc}") from exc

    def _text(self, text: str) -> str:
        """`text` as the store keeps it (taskstream.text)."""
        return storable(text, nul=self.dialect.nul)

    def _record(self, row: Sequence[Any]) -> ResultRecord:
        t = self.dialect.from_time
        return ResultRecord(
            row[0], row[1], Status(row[2]), row[3], _blob(row[4]),
            row[5], row[6], row[7], row[8], row[9],
            t(row[10]), t(row[11]), t(row[12]),
            row[13], row[14], row[15],
        )  # fmt: skip


def _changed(cur: Any, sql: str, params: list[tuple[Any, ...]]) -> int:
    """Rows ``sql``, run once per item of ``params``, changed in all: sqlite3's connection
    returns the cursor that ran it; psycopg's cursor sums the counts itself (3.1 and later)."""
    ran = cur.executemany(sql, params)
    return int((ran if ran is not None else cur).rowcount)


def _manifest(members: list[GroupMember]) -> bytes | None:
    """The first manifest a group's members in a batch carry (any: they are alike)."""
    return next((m.manifest for m in members if m.manifest is not None), None)


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _moment(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment
