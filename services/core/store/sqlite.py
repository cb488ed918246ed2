"""The SQLite lookup store: one file, written by the materializer, read by other processes.

Durability: WAL journal with ``synchronous=NORMAL``. A process crash loses nothing that was
committed. A power loss or OS crash can roll back the last few transactions, but a batch's rows
and its offsets are one transaction, so they roll back together and the materializer simply
re-reads those events from the older offset: consistency holds, only re-work is lost.
``FULL`` would fsync every batch and buy no correctness, so it is not worth its cost here.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from datetime import datetime
from pathlib import Path

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
    ResultStore,
    TaskQuery,
    from_micros,
    from_row,
    settled_state,
    storable_batch,
    storable_query,
    to_micros,
)
from taskstream.text import storable

SCHEMA_VERSION = 6  # kept in PRAGMA user_version; bump it and add to _MIGRATIONS

_COLUMNS = tuple(f.name for f in fields(ResultRecord))  # same order as the dataclass
_FINAL = ", ".join(f"'{s.value}'" for s in Status if s.is_final)
# The status check as ORs rather than `status IN (...)`: SQLite evaluates a CHECK once per
# written row, and an IN list costs it about 2 µs a row more than the equivalent comparisons.
_STATUS_CHECK = " OR ".join(f"status = '{s.value}'" for s in Status)
_RESULTS_COLUMNS = f"""(
        task_id TEXT PRIMARY KEY NOT NULL,
        task TEXT NOT NULL,
        status TEXT NOT NULL CHECK ({_STATUS_CHECK}),
        attempt INTEGER NOT NULL,
        result BLOB,
        error_type TEXT,
        error_message TEXT,
        error_traceback TEXT,
        worker TEXT,
        key TEXT,
        enqueued_at INTEGER,  -- microseconds since the epoch, UTC
        started_at INTEGER,
        finished_at INTEGER,
        source_topic TEXT,
        source_partition INTEGER,
        source_offset INTEGER
    )"""
# The HTTP service's Idempotency-Keys (version 3), looked up by key, purged by expiry.
_IDEMPOTENCY: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY NOT NULL,
        task_id TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        accepted INTEGER NOT NULL DEFAULT 0 CHECK (accepted IN (0, 1)),
        expires_at INTEGER NOT NULL  -- microseconds since the epoch, UTC
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at)",
)

# Outcomes are deleted by age (result_expires, version 4), oldest first, a batch at a time.
_EXPIRY_INDEX = "CREATE INDEX IF NOT EXISTS results_finished_at ON results (finished_at)"

# The console's task search (version 5): one index per filter, each ending in finished_at, so
# a filtered page is one index range read newest first (only rows that share a finished_at
# are sorted by task_id), never a sort of every matching row; the expiry index serves the
# unfiltered pages, time ranges and the outcome counts. task_id is left out of them
# (smaller, cheaper to write). They cost the materializer's writes: see docs/guide.md's Console
# section (python -m benchmarks.console).
_SEARCH_INDEXES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS results_status ON results (status, finished_at)",
    "CREATE INDEX IF NOT EXISTS results_task ON results (task, finished_at)",
    # Partial: tasks without a key (most) cost this index nothing; `key = ?` implies it.
    "CREATE INDEX IF NOT EXISTS results_key ON results (key, finished_at) WHERE key IS NOT NULL",
)

# Workflows (version 6): the groups' joins and their members, update_state()'s progress.
_WORKFLOWS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS groups (
        group_id TEXT PRIMARY KEY NOT NULL,
        size INTEGER NOT NULL,
        state TEXT NOT NULL,
        manifest BLOB
    )""",
    """CREATE TABLE IF NOT EXISTS group_members (
        group_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        PRIMARY KEY (group_id, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS progress (
        task_id TEXT PRIMARY KEY NOT NULL,
        state TEXT NOT NULL,
        meta TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS links (
        task_id TEXT PRIMARY KEY NOT NULL,
        parent_id TEXT,
        root_id TEXT,
        group_id TEXT,
        group_index INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS links_parent ON links (parent_id)",
)

# A new file gets the latest schema at once.
_CREATE: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS results {_RESULTS_COLUMNS}",
    """CREATE TABLE IF NOT EXISTS offsets (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        next_offset INTEGER NOT NULL CHECK (next_offset >= 0),
        PRIMARY KEY (topic, partition)
    ) WITHOUT ROWID""",
    *_IDEMPOTENCY,
    _EXPIRY_INDEX,
    *_SEARCH_INDEXES,
    *_WORKFLOWS,
)

# Statements that bring an existing file from the previous version to each version, applied
# in order from the file's version, in one transaction. (Version 1 was the first schema.)
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the status CHECK as ORs. SQLite cannot alter a constraint, so the table is rebuilt
    # (https://sqlite.org/lang_altertable.html#otheralter). `results` has no foreign keys,
    # triggers, views or indexes other than its primary key's, which the new table brings.
    2: (
        f"CREATE TABLE results_v2 {_RESULTS_COLUMNS}",
        f"INSERT INTO results_v2 ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM results",
        "DROP TABLE results",
        "ALTER TABLE results_v2 RENAME TO results",
    ),
    # 3: Idempotency-Keys shared by the HTTP service's processes.
    3: _IDEMPOTENCY,
    # 4: the REVOKED status joins the CHECK (a rebuild, as in 2), and the expiry index.
    4: (
        f"CREATE TABLE results_v4 {_RESULTS_COLUMNS}",
        f"INSERT INTO results_v4 ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM results",
        "DROP TABLE results",
        "ALTER TABLE results_v4 RENAME TO results",
        _EXPIRY_INDEX,
    ),
    # 5: indexes of the console's task search.
    5: _SEARCH_INDEXES,
    # 6: workflows (group joins, progress).
    6: _WORKFLOWS,
}

# The replacement rule lives in the WHERE clause, so concurrent writers cannot race a
# read-then-write: an existing final row is only overwritten by another final outcome.
_UPSERT = f"""
    INSERT INTO results ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})
    ON CONFLICT (task_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])}
    WHERE excluded.status IN ({_FINAL}) OR results.status NOT IN ({_FINAL})
"""
_SET_OFFSET = """
    INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?)
    ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset
"""
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM results"
_SELECT_KEY = (
    "SELECT task_id, fingerprint, accepted, expires_at FROM idempotency_keys WHERE key = ?"
)
_BIND_KEY = """
    INSERT OR REPLACE INTO idempotency_keys (key, task_id, fingerprint, accepted, expires_at)
    VALUES (?, ?, ?, 0, ?)
"""
# The oldest outcomes first, through the finished_at index, a batch at a time.
_EXPIRE = """
    DELETE FROM results WHERE task_id IN
        (SELECT task_id FROM results WHERE finished_at < ? ORDER BY finished_at LIMIT ?)
"""
_ADD_GROUP = """
    INSERT INTO groups (group_id, size, state, manifest) VALUES (?, ?, 'waiting', ?)
    ON CONFLICT (group_id) DO UPDATE SET manifest = coalesce(groups.manifest, excluded.manifest)
"""
_ADD_MEMBER = "INSERT OR IGNORE INTO group_members (group_id, idx, task_id) VALUES (?, ?, ?)"
_COUNT_MEMBERS = "SELECT count(*) FROM group_members WHERE group_id = ?"
_SELECT_GROUP = "SELECT group_id, size, state, manifest FROM groups"
_MEMBER_OUTCOMES = """
    SELECT m.idx, r.task_id, r.task, r.status, r.result, r.error_type, r.error_message
    FROM group_members m JOIN results r ON r.task_id = m.task_id
    WHERE m.group_id = ? ORDER BY m.idx
"""
_SET_PROGRESS = "INSERT OR REPLACE INTO progress (task_id, state, meta) VALUES (?, ?, ?)"
_SET_LINK = "INSERT OR REPLACE INTO links VALUES (?, ?, ?, ?, ?)"
_LINK_COLUMNS = "task_id, parent_id, root_id, group_id, group_index"
_PURGE_EVERY = 1024  # claims between deletions of expired Idempotency-Keys
_IN_CHUNK = 500  # ids per IN (...) query, under SQLite's historic 999-variable limit


class SQLiteStore(ResultStore):
    """A :class:`ResultStore` in an SQLite file, created with its parent directory if missing.

    Each instance holds one connection; open one instance per process. An instance may be
    shared by threads: a lock serialises them on that connection. SQLite admits one writer at a
    time anyway and lookups take microseconds, whereas a connection per thread could not be
    closed deterministically by :meth:`close`. `busy_timeout` (seconds) is how long to wait for
    another process's write lock before failing.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open sqlite store {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
            # wal_autocheckpoint stays at 1000 pages: 4000 measured no faster once the table is
            # large (it only skipped checkpoints on small stores) and quadruples the WAL.
            _migrate(conn, self.path)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open sqlite store {self.path}: {exc}") from exc
            raise
        self._conn: sqlite3.Connection | None = conn
        self._claims = 0

    def apply_rows(
        self,
        rows: Sequence[ResultRow],
        offsets: Mapping[tuple[str, int], int],
        members: Sequence[GroupMember] = (),
        progress: Sequence[Progress] = (),
        links: Sequence[Link] = (),
    ) -> None:
        # The rows' layout is the table's (times in µs): they bind as they are.
        offset_rows = [(t, p, o) for (t, p), o in offsets.items()]
        if not rows and not offset_rows and not members and not progress and not links:
            return
        try:
            self._apply(rows, offset_rows, members, progress, links)
        except StoreRejected as exc:
            if not isinstance(exc.__cause__, UnicodeEncodeError):
                raise
            # A lone surrogate (taskstream.text): written as storable text, which lookups map
            # the same way. Rare, so the common batch pays nothing for it.
            self._apply(*_storable(rows, members, progress, links, offset_rows))

    def _apply(
        self,
        rows: Sequence[ResultRow],
        offset_rows: Sequence[tuple[str, int, int]],
        members: Sequence[GroupMember],
        progress: Sequence[Progress],
        links: Sequence[Link],
    ) -> None:
        with self._transaction(write=True) as conn:
            conn.executemany(_UPSERT, rows)
            conn.executemany(_SET_OFFSET, offset_rows)
            if progress:
                conn.executemany(_SET_PROGRESS, [(p.task_id, p.state, p.meta) for p in progress])
            if links:
                conn.executemany(_SET_LINK, [_link_row(k) for k in links])
            if members:
                self._join(conn, members)

    @staticmethod
    def _join(conn: sqlite3.Connection, members: Sequence[GroupMember]) -> None:
        """Count the members in (once each) and settle the groups they complete. The write
        transaction holds SQLite's one write lock: no other writer counts meanwhile."""
        conn.executemany(_ADD_GROUP, [(m.group_id, m.size, m.manifest) for m in members])
        conn.executemany(_ADD_MEMBER, [(m.group_id, m.index, m.task_id) for m in members])
        for group_id in dict.fromkeys(m.group_id for m in members):
            size, state, manifest = conn.execute(
                "SELECT size, state, manifest FROM groups WHERE group_id = ?", (group_id,)
            ).fetchone()
            if state != GroupState.WAITING:
                continue
            completed = conn.execute(_COUNT_MEMBERS, (group_id,)).fetchone()[0]
            settled = settled_state(size, completed, manifest)
            if settled != state:
                sql = "UPDATE groups SET state = ? WHERE group_id = ?"
                conn.execute(sql, (settled, group_id))

    def group(self, group_id: str) -> GroupInfo | None:
        group_id = _text(group_id)
        with self._transaction() as conn:
            row = conn.execute(f"{_SELECT_GROUP} WHERE group_id = ?", (group_id,)).fetchone()
            if row is None:
                return None
            completed = conn.execute(_COUNT_MEMBERS, (group_id,)).fetchone()[0]
        return GroupInfo(row[0], row[1], completed, row[2], _blob(row[3]))

    def member_outcomes(self, group_id: str) -> list[MemberOutcome]:
        with self._transaction() as conn:
            rows = conn.execute(_MEMBER_OUTCOMES, (_text(group_id),)).fetchall()
        return [MemberOutcome(r[0], r[1], r[2], r[3], _blob(r[4]), r[5], r[6]) for r in rows]

    def due_groups(self) -> list[GroupInfo]:
        with self._transaction() as conn:
            sql = f"{_SELECT_GROUP} WHERE state = ?"
            rows = conn.execute(sql, (GroupState.DUE,)).fetchall()
        return [GroupInfo(r[0], r[1], r[1], r[2], _blob(r[3])) for r in rows]

    def mark_fired(self, group_id: str) -> None:
        with self._transaction(write=True) as conn:
            sql = "UPDATE groups SET state = ? WHERE group_id = ?"
            conn.execute(sql, (GroupState.FIRED, _text(group_id)))

    def link(self, task_id: str) -> Link | None:
        with self._transaction() as conn:
            sql = f"SELECT {_LINK_COLUMNS} FROM links WHERE task_id = ?"
            row = conn.execute(sql, (_text(task_id),)).fetchone()
        return None if row is None else Link(*row)

    def children(self, task_id: str) -> list[str]:
        with self._transaction() as conn:
            sql = "SELECT task_id FROM links WHERE parent_id = ? ORDER BY task_id"
            return [r[0] for r in conn.execute(sql, (_text(task_id),))]

    def progress(self, task_id: str) -> Progress | None:
        with self._transaction() as conn:
            sql = "SELECT task_id, state, meta FROM progress WHERE task_id = ?"
            row = conn.execute(sql, (_text(task_id),)).fetchone()
        return None if row is None else Progress(row[0], row[1], row[2])

    def get(self, task_id: str) -> ResultRecord | None:
        with self._transaction() as conn:
            row = conn.execute(f"{_SELECT} WHERE task_id = ?", (_text(task_id),)).fetchone()
        return None if row is None else from_row(row)

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        ids = list(dict.fromkeys(task_ids))
        stored = {_text(t): t for t in ids}
        found: dict[str, ResultRecord] = {}
        with self._transaction() as conn:  # one snapshot across the chunks
            keys = list(stored)
            for i in range(0, len(keys), _IN_CHUNK):
                chunk = keys[i : i + _IN_CHUNK]
                sql = f"{_SELECT} WHERE task_id IN ({', '.join('?' * len(chunk))})"
                for row in conn.execute(sql, chunk):
                    found[stored.get(row[0], row[0])] = from_row(row)
        return {t: found[t] for t in ids if t in found}

    def offsets(self, topic: str) -> dict[int, int]:
        with self._transaction() as conn:
            sql = "SELECT partition, next_offset FROM offsets WHERE topic = ?"
            return dict(conn.execute(sql, (topic,)).fetchall())

    def count(self, status: Status | None = None) -> int:
        with self._transaction() as conn:
            if status is None:
                row = conn.execute("SELECT count(*) FROM results").fetchone()
            else:
                sql = "SELECT count(*) FROM results WHERE status = ?"
                row = conn.execute(sql, (status.value,)).fetchone()
        return int(row[0])

    def search(self, query: TaskQuery) -> list[ResultRecord]:
        where, params = _search_filter(storable_query(query, nul=False))
        sql = f"{_SELECT} WHERE {where} ORDER BY finished_at DESC, task_id DESC LIMIT ?"
        with self._transaction() as conn:
            rows = conn.execute(sql, (*params, query.limit)).fetchall()
        return [from_row(row) for row in rows]

    def outcome_counts(self, since: datetime, bucket_s: int) -> list[OutcomeCount]:
        step = bucket_s * 1_000_000
        sql = """SELECT finished_at - finished_at % ? AS bucket, status, count(*) FROM results
            WHERE finished_at >= ? GROUP BY bucket, status ORDER BY bucket, status"""
        with self._transaction() as conn:
            rows = conn.execute(sql, (step, to_micros(since))).fetchall()
        return [OutcomeCount(_moment(b), Status(s), n) for b, s, n in rows]

    def reset(self, topic: str) -> None:
        with self._transaction(write=True) as conn:
            conn.execute("DELETE FROM results")
            conn.execute("DELETE FROM offsets")
            for table in ("groups", "group_members", "progress", "links"):
                conn.execute(f"DELETE FROM {table}")

    def claim_idempotency_key(
        self, key: str, task_id: str, fingerprint: bytes, ttl_s: float
    ) -> IdempotencyKey | None:
        # The wall clock, not a monotonic one: other processes read the expiry too.
        now = time.time_ns() // 1000
        key, task_id = _text(key), _text(task_id)
        with self._transaction(write=True) as conn:  # the write lock makes the claim atomic
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
            row = conn.execute(_SELECT_KEY, (key,)).fetchone()
            if row is not None and row[3] > now:
                return IdempotencyKey(row[0], bytes(row[1]), bool(row[2]))
            conn.execute(_BIND_KEY, (key, task_id, fingerprint, now + int(ttl_s * 1_000_000)))
            return None

    def accept_idempotency_key(self, key: str, task_id: str) -> None:
        sql = "UPDATE idempotency_keys SET accepted = 1 WHERE key = ? AND task_id = ?"
        with self._transaction(write=True) as conn:
            conn.execute(sql, (_text(key), _text(task_id)))

    def forget(self, task_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(_text(t) for t in task_ids))
        deleted = 0
        with self._transaction(write=True) as conn:
            for i in range(0, len(ids), _IN_CHUNK):
                chunk = ids[i : i + _IN_CHUNK]
                sql = f"DELETE FROM results WHERE task_id IN ({', '.join('?' * len(chunk))})"
                deleted += conn.execute(sql, chunk).rowcount
        return deleted

    def expire(self, before: datetime, limit: int = 1000) -> int:
        with self._transaction(write=True) as conn:
            return int(conn.execute(_EXPIRE, (to_micros(before), limit)).rowcount)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """Hold the lock and a transaction; roll back and raise StoreError on failure."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"sqlite store {self.path} is closed")
            try:
                # IMMEDIATE takes the write lock up front: a deferred transaction that later
                # upgrades can fail with SQLITE_BUSY at once, without honouring busy_timeout.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, (UnicodeEncodeError, sqlite3.DataError)):
                    raise StoreRejected(f"sqlite store {self.path}: {exc}") from exc
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"sqlite store {self.path}: {exc}") from exc
                raise


def _text(text: str) -> str:
    """`text` as the store keeps it: SQLite holds NUL, not a lone surrogate."""
    return storable(text, nul=False)


def _storable(
    rows: Sequence[ResultRow],
    members: Sequence[GroupMember],
    progress: Sequence[Progress],
    links: Sequence[Link],
    offset_rows: Sequence[tuple[str, int, int]],
) -> tuple[
    list[ResultRow], Sequence[tuple[str, int, int]], list[GroupMember], list[Progress], list[Link]
]:
    rows_, members_, progress_, links_ = storable_batch(rows, members, progress, links, nul=False)
    return rows_, offset_rows, members_, progress_, links_


def _search_filter(query: TaskQuery) -> tuple[str, list[object]]:
    """The WHERE clause of `query` (see :func:`taskstream.store.base.matches`)."""
    clauses, params = ["finished_at IS NOT NULL"], list[object]()
    for column, value in (("status", query.status), ("task", query.task), ("key", query.key)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(str(value))
    if query.since is not None:
        clauses.append("finished_at >= ?")
        params.append(to_micros(query.since))
    if query.until is not None:
        clauses.append("finished_at < ?")
        params.append(to_micros(query.until))
    if query.after is not None:
        # The page order's (finished_at, task_id) < cursor, spelt so that the index range
        # on finished_at is plain to the planner.
        moment = to_micros(query.after[0])
        clauses.append("finished_at <= ? AND (finished_at < ? OR task_id < ?)")
        params += [moment, moment, query.after[1]]
    return " AND ".join(clauses), params


def _moment(micros: int) -> datetime:
    moment = from_micros(micros)
    assert moment is not None
    return moment


def _link_row(link: Link) -> tuple[object, ...]:
    return (link.task_id, link.parent_id, link.root_id, link.group_id, link.group_index)


def _blob(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file's schema to SCHEMA_VERSION; refuse files from a newer taskstream."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated in the meantime.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"sqlite store {path} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this taskstream understands; upgrade taskstream"
            )
        if version == 0:
            statements = _CREATE
        else:
            upgrades = range(version + 1, SCHEMA_VERSION + 1)
            statements = tuple(s for v in upgrades for s in _MIGRATIONS[v])
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
