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
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from pathlib import Path

from taskstream.errors import StoreError
from taskstream.status import Status
from taskstream.store.base import ResultRow, from_micros, to_micros
from taskstream.store.sql import COLUMN_LIST, COLUMNS, UPSERT, Dialect, SQLStore

SCHEMA_VERSION = 7  # kept in PRAGMA user_version; bump it and add to _MIGRATIONS

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

# Version 7: a group counts its members as they are added, rather than per batch.
_COUNTED: tuple[str, ...] = (
    "ALTER TABLE groups ADD COLUMN completed INTEGER NOT NULL DEFAULT 0",
    """UPDATE groups SET completed =
        (SELECT count(*) FROM group_members m WHERE m.group_id = groups.group_id)""",
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
    *_COUNTED,
)

# Statements that bring an existing file from the previous version to each version, applied
# in order from the file's version, in one transaction. (Version 1 was the first schema.)
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the status CHECK as ORs. SQLite cannot alter a constraint, so the table is rebuilt
    # (https://sqlite.org/lang_altertable.html#otheralter). `results` has no foreign keys,
    # triggers, views or indexes other than its primary key's, which the new table brings.
    2: (
        f"CREATE TABLE results_v2 {_RESULTS_COLUMNS}",
        f"INSERT INTO results_v2 ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM results",
        "DROP TABLE results",
        "ALTER TABLE results_v2 RENAME TO results",
    ),
    # 3: Idempotency-Keys shared by the HTTP service's processes.
    3: _IDEMPOTENCY,
    # 4: the REVOKED status joins the CHECK (a rebuild, as in 2), and the expiry index.
    4: (
        f"CREATE TABLE results_v4 {_RESULTS_COLUMNS}",
        f"INSERT INTO results_v4 ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM results",
        "DROP TABLE results",
        "ALTER TABLE results_v4 RENAME TO results",
        _EXPIRY_INDEX,
    ),
    # 5: indexes of the console's task search.
    5: _SEARCH_INDEXES,
    # 6: workflows (group joins, progress).
    6: _WORKFLOWS,
    # 7: the groups' member counts.
    7: _COUNTED,
}

_INSERT = f"INSERT INTO results ({COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))}) {UPSERT}"
_RESET = tuple(
    f"DELETE FROM {t}"
    for t in ("results", "offsets", "groups", "group_members", "progress", "links")
)


class SQLiteDialect(Dialect):
    """SQLite's spelling: ``?`` placeholders, times as integer microseconds, the write lock
    taken up front, this host's wall clock."""

    nul = False  # SQLite holds NUL, not a lone surrogate
    content_errors = (UnicodeEncodeError, sqlite3.DataError)
    text_errors = (UnicodeEncodeError,)
    errors = (sqlite3.Error,)
    skip_locked = ""  # one writer at a time: nothing is locked by another
    for_update = ""  # the write transaction already holds the database's write lock
    reset = _RESET

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self.where = f"sqlite store {path}"
        self._busy_timeout = busy_timeout

    def connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.where}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
            # wal_autocheckpoint stays at 1000 pages: 4000 measured no faster once the table is
            # large (it only skipped checkpoints on small stores) and quadruples the WAL.
            _migrate(conn, self.path)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open {self.where}: {exc}") from exc
            raise
        return conn

    def transaction(self, conn: sqlite3.Connection, *, write: bool) -> _Transaction:
        return _Transaction(conn, write)

    def write_rows(self, cur: sqlite3.Connection, rows: Sequence[ResultRow]) -> None:
        # The rows' layout is the table's (times in µs): they bind as they are.
        cur.executemany(_INSERT, rows)

    def to_time(self, moment: datetime) -> object:
        return to_micros(moment)

    def from_time(self, value: int | None) -> datetime | None:
        return from_micros(value)

    def bucket(self, bucket_s: int) -> tuple[str, object]:
        return "finished_at - finished_at % ?", bucket_s * 1_000_000

    def now(self) -> tuple[str, tuple[object, ...]]:
        # The wall clock, not a monotonic one: other processes read the expiry too.
        return "?", (time.time_ns() // 1000,)

    def micros(self, placeholder: str) -> str:
        return placeholder


class _Transaction:
    """BEGIN, then COMMIT or ROLLBACK; the connection is the cursor. A class rather than a
    generator: a lookup takes microseconds, and this is a good part of them."""

    def __init__(self, conn: sqlite3.Connection, write: bool) -> None:
        self.conn = conn
        # IMMEDIATE takes the write lock up front: a deferred transaction that later
        # upgrades can fail with SQLITE_BUSY at once, without honouring busy_timeout.
        self.begin = "BEGIN IMMEDIATE" if write else "BEGIN"

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(self.begin)
        return self.conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")


class SQLiteStore(SQLStore):
    """A :class:`ResultStore` in an SQLite file, created with its parent directory if missing.

    Each instance holds one connection; open one instance per process. An instance may be
    shared by threads: a lock serialises them on that connection. SQLite admits one writer at a
    time anyway and lookups take microseconds, whereas a connection per thread could not be
    closed deterministically by :meth:`close`. `busy_timeout` (seconds) is how long to wait for
    another process's write lock before failing.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDialect(self.path, busy_timeout))


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
