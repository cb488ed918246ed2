"""The PostgreSQL lookup store: one database shared by materializers and readers on many hosts.

URL: ``postgresql://user:password@host:5432/dbname`` (or ``postgres://``), with any libpq
parameter in the query (``?sslmode=require``). ``?schema=NAME`` (taskstream's own parameter,
default ``taskstream``) is the schema that holds the ``results``, ``offsets`` and
``idempotency_keys`` tables; it is
created when missing, so several deployments can share one database.

Guarantees are those of :class:`SQLiteStore`: a batch's rows and its offsets are one
transaction; the "a final outcome is never replaced by a non-final one" rule is the upsert's
WHERE clause, so concurrent writers cannot race a read-then-write. A batch is written with
binary COPY into a temporary table (times as integer microseconds, turned into TIMESTAMPTZ by
the server) and one ``INSERT ... SELECT ... ON CONFLICT``; since one statement cannot touch a
row twice, the batch is first folded per task id with the same rule (folding then upserting
gives what applying the records one by one would).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    redacted_url,
    settled_state,
    storable_batch,
    storable_query,
    supersedes,
)
from taskstream.text import storable

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - depends on the install
    psycopg = None  # type: ignore[assignment]

SCHEMA_VERSION = 5  # kept in the schema's `meta` table; bump it and add to _MIGRATIONS
DEFAULT_SCHEMA = "taskstream"

_COLUMNS = tuple(f.name for f in fields(ResultRecord))
_FINAL = ", ".join(f"'{s.value}'" for s in Status if s.is_final)
_STATUSES = ", ".join(f"'{s.value}'" for s in Status)
# Any constant works: it only serialises concurrent first starts of the same database.
_MIGRATION_LOCK = 0x7461736B  # "task"

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        f"""CREATE TABLE IF NOT EXISTS results (
            task_id TEXT PRIMARY KEY,
            task TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
            attempt INTEGER NOT NULL,
            result BYTEA,
            error_type TEXT,
            error_message TEXT,
            error_traceback TEXT,
            worker TEXT,
            key TEXT,
            enqueued_at TIMESTAMPTZ,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            source_topic TEXT,
            source_partition INTEGER,
            source_offset BIGINT
        )""",
        """CREATE TABLE IF NOT EXISTS offsets (
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
            PRIMARY KEY (topic, partition)
        )""",
    ),
    # 2: the HTTP service's Idempotency-Keys, shared by its processes and hosts.
    2: (
        """CREATE TABLE IF NOT EXISTS idempotency_keys (
            key TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            fingerprint BYTEA NOT NULL,
            accepted BOOLEAN NOT NULL DEFAULT false,
            expires_at TIMESTAMPTZ NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at)",
    ),
    # 3: the REVOKED status joins the CHECK (named by PostgreSQL's default rule), and the index
    # that deletes outcomes by age (result_expires) reads, oldest first.
    3: (
        "ALTER TABLE results DROP CONSTRAINT IF EXISTS results_status_check",
        f"ALTER TABLE results ADD CONSTRAINT results_status_check CHECK (status IN ({_STATUSES}))",
        "CREATE INDEX IF NOT EXISTS results_finished_at ON results (finished_at)",
    ),
    # 4: the console's task search, as in the SQLite store: one index per filter, each ending
    # in finished_at, so a page is one index range read newest first (rows sharing a
    # finished_at sorted by task_id: an incremental sort); results_finished_at serves the rest.
    4: (
        "CREATE INDEX IF NOT EXISTS results_status ON results (status, finished_at)",
        "CREATE INDEX IF NOT EXISTS results_task ON results (task, finished_at)",
        # Partial: tasks without a key (most) cost this index nothing; `key = %s` implies it.
        "CREATE INDEX IF NOT EXISTS results_key ON results (key, finished_at)"
        " WHERE key IS NOT NULL",
    ),
    # 5: workflows: the groups' joins and their members, update_state()'s progress.
    5: (
        """CREATE TABLE IF NOT EXISTS groups (
            group_id TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            state TEXT NOT NULL,
            manifest BYTEA
        )""",
        """CREATE TABLE IF NOT EXISTS group_members (
            group_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            task_id TEXT NOT NULL,
            PRIMARY KEY (group_id, idx)
        )""",
        """CREATE TABLE IF NOT EXISTS progress (
            task_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            meta TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS links (
            task_id TEXT PRIMARY KEY,
            parent_id TEXT,
            root_id TEXT,
            group_id TEXT,
            group_index INTEGER
        )""",
        "CREATE INDEX IF NOT EXISTS links_parent ON links (parent_id)",
    ),
}

_COLUMN_LIST = ", ".join(_COLUMNS)
_TIMES = ("enqueued_at", "started_at", "finished_at")
# A ResultRow as COPY reads it: the results table's columns, but the times in µs since the epoch.
_STAGING_TYPES = (
    "text", "text", "text", "integer", "bytea", "text", "text", "text", "text", "text",
    "bigint", "bigint", "bigint", "text", "integer", "bigint",
)  # fmt: skip
# Per connection; ON COMMIT DELETE ROWS empties it at the end of each batch's transaction.
_STAGING = f"""CREATE TEMPORARY TABLE IF NOT EXISTS staging_rows
    ({", ".join(f"{c} {t}" for c, t in zip(_COLUMNS, _STAGING_TYPES, strict=True))})
    ON COMMIT DELETE ROWS"""
_COPY = f"COPY staging_rows ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
# interval * bigint is exact below 2**53 µs (285 years from the epoch), unlike to_timestamp().
_STAGED = ", ".join(
    f"TIMESTAMPTZ 'epoch' + {c} * INTERVAL '1 microsecond'" if c in _TIMES else c for c in _COLUMNS
)
_UPSERT = f"""
    INSERT INTO results ({_COLUMN_LIST}) SELECT {_STAGED} FROM staging_rows
    ON CONFLICT (task_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])}
    WHERE excluded.status IN ({_FINAL}) OR results.status NOT IN ({_FINAL})
"""
_SET_OFFSET = """
    INSERT INTO offsets (topic, partition, next_offset) VALUES (%s, %s, %s)
    ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset
"""
_SELECT = f"SELECT {_COLUMN_LIST} FROM results"
# The server's clock decides expiry, so hosts with skewed clocks agree. A live binding makes
# the conflict's WHERE false: nothing is returned and the row stays as it is (but locked, so
# the SELECT that follows in the same transaction reads what it is now).
_CLAIM_KEY = """
    INSERT INTO idempotency_keys AS k (key, task_id, fingerprint, accepted, expires_at)
    VALUES (%s, %s, %s, false, now() + %s * INTERVAL '1 microsecond')
    ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id,
        fingerprint = excluded.fingerprint, accepted = false, expires_at = excluded.expires_at
    WHERE k.expires_at <= now()
    RETURNING task_id
"""
_SELECT_KEY = "SELECT task_id, fingerprint, accepted FROM idempotency_keys WHERE key = %s"
# The oldest outcomes first, through the finished_at index, a batch at a time; rows another
# materializer is deleting (or writing) are skipped rather than waited for.
_EXPIRE = """
    DELETE FROM results WHERE task_id IN (
        SELECT task_id FROM results WHERE finished_at < %s
        ORDER BY finished_at LIMIT %s FOR UPDATE SKIP LOCKED
    )
"""
_PURGE_EVERY = 1024  # claims between deletions of expired Idempotency-Keys
_ADD_GROUP = """
    INSERT INTO groups (group_id, size, state, manifest) VALUES (%s, %s, 'waiting', %s)
    ON CONFLICT (group_id) DO UPDATE SET manifest = coalesce(groups.manifest, excluded.manifest)
"""
_ADD_MEMBER = """
    INSERT INTO group_members (group_id, idx, task_id) VALUES (%s, %s, %s)
    ON CONFLICT DO NOTHING
"""
_COUNT_MEMBERS = "SELECT count(*) FROM group_members WHERE group_id = %s"
_LINK_COLUMNS = "task_id, parent_id, root_id, group_id, group_index"
_SET_LINK = f"""
    INSERT INTO links ({_LINK_COLUMNS}) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (task_id) DO NOTHING
"""
_SELECT_GROUP = "SELECT group_id, size, state, manifest FROM groups"
_MEMBER_OUTCOMES = """
    SELECT m.idx, r.task_id, r.task, r.status, r.result, r.error_type, r.error_message
    FROM group_members m JOIN results r ON r.task_id = m.task_id
    WHERE m.group_id = %s ORDER BY m.idx
"""
_SET_PROGRESS = """
    INSERT INTO progress (task_id, state, meta) VALUES (%s, %s, %s)
    ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, meta = excluded.meta
"""


class PostgresStore(ResultStore):
    """A :class:`ResultStore` in a PostgreSQL schema (psycopg 3).

    Each instance holds one connection; threads share it under a lock, as with
    :class:`SQLiteStore` (lookups take well under a millisecond; run one instance per process).
    A connection that broke (server restart, network) is replaced on the next call; the call
    that saw it break raises :class:`StoreError` and its transaction did not happen.
    """

    def __init__(
        self, conninfo: str, *, schema: str = DEFAULT_SCHEMA, connect_timeout: float = 10.0
    ) -> None:
        if psycopg is None:
            raise StoreError(
                "the PostgreSQL store needs psycopg 3: pip install 'taskstream[postgres]'"
            )
        self.conninfo = conninfo
        self.schema = schema
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._claims = 0
        self._conn: psycopg.Connection[Any] | None = self._connect()

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Open ``postgresql://...`` or ``postgres://...``; ``?schema=`` picks the schema."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = DEFAULT_SCHEMA
        rest = []
        for name, value in query:
            if name == "schema":
                schema = value
            else:
                rest.append((name, value))
        if not schema or parts.fragment:
            raise StoreError(
                f"malformed store URL {redacted_url(url)!r}: use "
                "postgresql://user:password@host:5432/dbname[?schema=NAME&sslmode=...]"
            )
        conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
        return cls(conninfo, schema=schema)

    # -- the ResultStore interface -------------------------------------------------------------

    def apply_rows(
        self,
        rows: Sequence[ResultRow],
        offsets: Mapping[tuple[str, int], int],
        members: Sequence[GroupMember] = (),
        progress: Sequence[Progress] = (),
        links: Sequence[Link] = (),
    ) -> None:
        rows = _fold(rows)
        offset_rows = [(t, p, o) for (t, p), o in offsets.items()]
        if not rows and not offset_rows and not members and not progress and not links:
            return
        try:
            self._apply(rows, offset_rows, members, progress, links)
        except StoreRejected as exc:
            if not isinstance(exc.__cause__, _TEXT_ERRORS):
                raise
            # Text PostgreSQL cannot hold (NUL, a lone surrogate): written as storable text
            # (taskstream.text), which lookups map the same way. Rare, so the common batch
            # pays nothing for it.
            # Folded again: two ids may be one once storable.
            rows_, members_, progress_, links_ = storable_batch(rows, members, progress, links)
            self._apply(_fold(rows_), offset_rows, members_, progress_, links_)

    def _apply(
        self,
        rows: Sequence[ResultRow],
        offset_rows: Sequence[tuple[str, int, int]],
        members: Sequence[GroupMember],
        progress: Sequence[Progress],
        links: Sequence[Link],
    ) -> None:
        with self._transaction() as conn, conn.cursor() as cur:
            if rows:
                cur.execute(_STAGING)
                with cur.copy(_COPY) as copy:
                    copy.set_types(_STAGING_TYPES)
                    write_row = copy.write_row
                    for row in rows:
                        write_row(row)
                cur.execute(_UPSERT)
            if offset_rows:
                cur.executemany(_SET_OFFSET, offset_rows)
            if progress:
                cur.executemany(_SET_PROGRESS, [(p.task_id, p.state, p.meta) for p in progress])
            if links:
                rows_ = [
                    (k.task_id, k.parent_id, k.root_id, k.group_id, k.group_index) for k in links
                ]
                cur.executemany(_SET_LINK, rows_)
            if members:
                _join(cur, members)

    def group(self, group_id: str) -> GroupInfo | None:
        with self._transaction() as conn:
            group_id = storable(group_id)
            row = conn.execute(f"{_SELECT_GROUP} WHERE group_id = %s", (group_id,)).fetchone()
            if row is None:
                return None
            counted = conn.execute(_COUNT_MEMBERS, (group_id,)).fetchone()
        completed = int(counted[0]) if counted else 0
        return GroupInfo(row[0], row[1], completed, row[2], _blob(row[3]))

    def member_outcomes(self, group_id: str) -> list[MemberOutcome]:
        with self._transaction() as conn:
            rows = conn.execute(_MEMBER_OUTCOMES, (storable(group_id),)).fetchall()
        return [MemberOutcome(r[0], r[1], r[2], r[3], _blob(r[4]), r[5], r[6]) for r in rows]

    def due_groups(self) -> list[GroupInfo]:
        with self._transaction() as conn:
            sql_ = f"{_SELECT_GROUP} WHERE state = %s"
            rows = conn.execute(sql_, (GroupState.DUE,)).fetchall()
        return [GroupInfo(r[0], r[1], r[1], r[2], _blob(r[3])) for r in rows]

    def mark_fired(self, group_id: str) -> None:
        with self._transaction() as conn:
            sql_ = "UPDATE groups SET state = %s WHERE group_id = %s"
            conn.execute(sql_, (GroupState.FIRED, storable(group_id)))

    def link(self, task_id: str) -> Link | None:
        with self._transaction() as conn:
            sql_ = f"SELECT {_LINK_COLUMNS} FROM links WHERE task_id = %s"
            row = conn.execute(sql_, (storable(task_id),)).fetchone()
        return None if row is None else Link(*row)

    def children(self, task_id: str) -> list[str]:
        with self._transaction() as conn:
            sql_ = "SELECT task_id FROM links WHERE parent_id = %s ORDER BY task_id"
            return [str(r[0]) for r in conn.execute(sql_, (storable(task_id),))]

    def progress(self, task_id: str) -> Progress | None:
        with self._transaction() as conn:
            sql_ = "SELECT task_id, state, meta FROM progress WHERE task_id = %s"
            row = conn.execute(sql_, (storable(task_id),)).fetchone()
        return None if row is None else Progress(row[0], row[1], row[2])

    def get(self, task_id: str) -> ResultRecord | None:
        with self._transaction() as conn:
            row = conn.execute(f"{_SELECT} WHERE task_id = %s", (storable(task_id),)).fetchone()
        return None if row is None else _from_row(row)

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        stored = {storable(t): t for t in ids}
        with self._transaction() as conn:
            found = {
                stored.get(row[0], row[0]): _from_row(row)
                for row in conn.execute(f"{_SELECT} WHERE task_id = ANY(%s)", (list(stored),))
            }
        return {t: found[t] for t in ids if t in found}

    def offsets(self, topic: str) -> dict[int, int]:
        with self._transaction() as conn:
            sql_ = "SELECT partition, next_offset FROM offsets WHERE topic = %s"
            return {int(p): int(o) for p, o in conn.execute(sql_, (topic,))}

    def count(self, status: Status | None = None) -> int:
        with self._transaction() as conn:
            if status is None:
                row = conn.execute("SELECT count(*) FROM results").fetchone()
            else:
                sql_ = "SELECT count(*) FROM results WHERE status = %s"
                row = conn.execute(sql_, (status.value,)).fetchone()
        assert row is not None
        return int(row[0])

    def search(self, query: TaskQuery) -> list[ResultRecord]:
        where, params = _search_filter(storable_query(query))
        sql_ = f"{_SELECT} WHERE {where} ORDER BY finished_at DESC, task_id DESC LIMIT %s"
        with self._transaction() as conn:
            rows = conn.execute(sql_, (*params, query.limit)).fetchall()
        return [_from_row(row) for row in rows]

    def outcome_counts(self, since: datetime, bucket_s: int) -> list[OutcomeCount]:
        # date_bin (PostgreSQL 14+) buckets from the epoch, as bucket_start does.
        sql_ = """SELECT date_bin(%s * INTERVAL '1 second', finished_at, TIMESTAMPTZ 'epoch')
                AS bucket, status, count(*)
            FROM results WHERE finished_at >= %s GROUP BY bucket, status ORDER BY bucket, status"""
        with self._transaction() as conn:
            rows = conn.execute(sql_, (bucket_s, since)).fetchall()
        return [OutcomeCount(b, Status(s), int(n)) for b, s, n in rows]

    def reset(self, topic: str) -> None:
        with self._transaction() as conn:
            # TRUNCATE is transactional in PostgreSQL: readers see all rows or none.
            conn.execute("TRUNCATE results, offsets, groups, group_members, progress, links")

    def claim_idempotency_key(
        self, key: str, task_id: str, fingerprint: bytes, ttl_s: float
    ) -> IdempotencyKey | None:
        key, task_id = storable(key), storable(task_id)
        with self._transaction() as conn:
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= now()")
            ttl_us = int(ttl_s * 1_000_000)
            if conn.execute(_CLAIM_KEY, (key, task_id, fingerprint, ttl_us)).fetchone():
                return None
            row = conn.execute(_SELECT_KEY, (key,)).fetchone()
        if row is None:  # pragma: no cover - the conflicting row is locked until commit
            raise StoreError(f"postgres store {self._where()}: key {key!r} vanished mid-claim")
        return IdempotencyKey(row[0], bytes(row[1]), bool(row[2]))

    def accept_idempotency_key(self, key: str, task_id: str) -> None:
        sql_ = "UPDATE idempotency_keys SET accepted = true WHERE key = %s AND task_id = %s"
        with self._transaction() as conn:
            conn.execute(sql_, (storable(key), storable(task_id)))

    def forget(self, task_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(storable(t) for t in task_ids))
        if not ids:
            return 0
        with self._transaction() as conn:
            cursor = conn.execute("DELETE FROM results WHERE task_id = ANY(%s)", (ids,))
            return cursor.rowcount

    def expire(self, before: datetime, limit: int = 1000) -> int:
        with self._transaction() as conn:
            return conn.execute(_EXPIRE, (before, limit)).rowcount

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- connection and transactions -----------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        where = self._where()
        try:
            conn = psycopg.connect(
                self.conninfo,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=max(1, int(self._connect_timeout)),
                options="-c TimeZone=UTC",
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open postgres store {where}: {exc}") from exc
        try:
            _migrate(conn, self.schema, where)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot open postgres store {where}: {exc}") from exc
            raise
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """Hold the lock and a transaction; it rolls back, raising StoreError, on failure."""
        with self._lock:
            if self._closed:
                raise StoreError(f"postgres store {self._where()} is closed")
            if self._conn is None or self._conn.closed or self._conn.broken:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._conn = self._connect()
            conn = self._conn
            try:
                with conn.transaction():
                    yield conn
            except _CONTENT_ERRORS as exc:
                raise StoreRejected(f"postgres store {self._where()}: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"postgres store {self._where()}: {exc}") from exc

    def _where(self) -> str:
        """host/dbname and schema, never the password (for errors and logs)."""
        parts = urlsplit(self.conninfo)
        host = parts.hostname or "localhost"
        return f"{host}{parts.path or '/'} schema {self.schema}"


if psycopg is not None:
    # What the content of a statement caused, not the server's state: SQLSTATE class 22
    # (invalid text such as NUL, a value out of range) and 54 (an index entry over its size).
    _CONTENT_ERRORS: tuple[type[BaseException], ...] = (
        psycopg.DataError, psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError,
    )  # fmt: skip
    _TEXT_ERRORS: tuple[type[BaseException], ...] = (
        psycopg.errors.CharacterNotInRepertoire, psycopg.errors.UntranslatableCharacter,
        UnicodeEncodeError,
    )  # fmt: skip


def _migrate(conn: psycopg.Connection[Any], schema: str, where: str) -> None:
    """Create the schema and tables, or upgrade them; refuse a newer taskstream's schema."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("CREATE TABLE IF NOT EXISTS meta (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM meta").fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"postgres store {where} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this taskstream understands; upgrade taskstream"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("DELETE FROM meta")
            conn.execute("INSERT INTO meta (version) VALUES (%s)", (SCHEMA_VERSION,))
    # SET (not SET LOCAL) outlives the transaction: the session keeps the schema.


def _search_filter(query: TaskQuery) -> tuple[str, list[object]]:
    """The WHERE clause of `query` (see :func:`taskstream.store.base.matches`)."""
    clauses, params = ["finished_at IS NOT NULL"], list[object]()
    for column, value in (("status", query.status), ("task", query.task), ("key", query.key)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(str(value))
    if query.since is not None:
        clauses.append("finished_at >= %s")
        params.append(query.since)
    if query.until is not None:
        clauses.append("finished_at < %s")
        params.append(query.until)
    if query.after is not None:
        # The page order's (finished_at, task_id) < cursor, spelt so that the index range
        # on finished_at is plain to the planner.
        clauses.append("finished_at <= %s AND (finished_at < %s OR task_id < %s)")
        params += [query.after[0], query.after[0], query.after[1]]
    return " AND ".join(clauses), params


def _join(cur: psycopg.Cursor[Any], members: Sequence[GroupMember]) -> None:
    """Count the members in (once each) and settle the groups they complete. The group's row
    is locked (FOR UPDATE) before counting: a concurrent materializer's transaction counting
    the same group waits for this one to commit, then counts its members too (READ
    COMMITTED: each statement sees what was committed before it began)."""
    cur.executemany(_ADD_GROUP, [(m.group_id, m.size, m.manifest) for m in members])
    cur.executemany(_ADD_MEMBER, [(m.group_id, m.index, m.task_id) for m in members])
    for group_id in sorted({m.group_id for m in members}):  # one lock order: no deadlock
        sql_ = "SELECT size, state, manifest FROM groups WHERE group_id = %s FOR UPDATE"
        row = cur.execute(sql_, (group_id,)).fetchone()
        if row is None or row[1] != GroupState.WAITING:
            continue
        counted = cur.execute(_COUNT_MEMBERS, (group_id,)).fetchone()
        settled = settled_state(row[0], int(counted[0]) if counted else 0, row[2])
        if settled != row[1]:
            cur.execute("UPDATE groups SET state = %s WHERE group_id = %s", (settled, group_id))


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _fold(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """The batch reduced to one row per task id, as applying it in order would leave it."""
    latest: dict[str, ResultRow] = {}
    for row in rows:
        old = latest.get(row[0])
        if old is None or supersedes(row[2], old[2]):
            latest[row[0]] = row
    return list(latest.values())


def _from_row(row: Sequence[Any]) -> ResultRecord:
    return ResultRecord(
        row[0], row[1], Status(row[2]), row[3],
        None if row[4] is None else bytes(row[4]),
        row[5], row[6], row[7], row[8], row[9],
        row[10], row[11], row[12],
        row[13], row[14], row[15],
    )  # fmt: skip
