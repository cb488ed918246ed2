"""The PostgreSQL lookup store: one database shared by materializers and readers on many hosts.

URL: ``postgresql://user:password@host:5432/dbname`` (or ``postgres://``), with any libpq
parameter in the query (``?sslmode=require``). ``?schema=NAME`` (taskstream's own parameter,
default ``taskstream``) is the schema that holds the ``results``, ``offsets`` and
``idempotency_keys`` tables; it is
created when missing, so several deployments can share one database.

The queries and their guarantees are :class:`~taskstream.store.sql.SQLStore`'s; this module
is PostgreSQL's dialect, its schema and its migrations. A batch is written with
binary COPY into a temporary table (times as integer microseconds, turned into TIMESTAMPTZ by
the server) and one ``INSERT ... SELECT ... ON CONFLICT``; since one statement cannot touch a
row twice, the batch is first folded per task id with the same rule (folding then upserting
gives what applying the records one by one would).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from taskstream.errors import StoreError
from taskstream.status import Status
from taskstream.store.base import ResultRow, redacted_url, supersedes
from taskstream.store.sql import COLUMN_LIST, COLUMNS, UPSERT, Dialect, SQLStore

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - depends on the install
    psycopg = None  # type: ignore[assignment]

SCHEMA_VERSION = 6  # kept in the schema's `meta` table; bump it and add to _MIGRATIONS
DEFAULT_SCHEMA = "taskstream"

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
    # 6: a group counts its members as they are added, rather than per batch.
    6: (
        "ALTER TABLE groups ADD COLUMN IF NOT EXISTS completed INTEGER NOT NULL DEFAULT 0",
        """UPDATE groups SET completed =
            (SELECT count(*) FROM group_members m WHERE m.group_id = groups.group_id)""",
    ),
}

_TIMES = ("enqueued_at", "started_at", "finished_at")
# A ResultRow as COPY reads it: the results table's columns, but the times in µs since the epoch.
_STAGING_TYPES = (
    "text", "text", "text", "integer", "bytea", "text", "text", "text", "text", "text",
    "bigint", "bigint", "bigint", "text", "integer", "bigint",
)  # fmt: skip
# Per connection; ON COMMIT DELETE ROWS empties it at the end of each batch's transaction.
_STAGING = f"""CREATE TEMPORARY TABLE IF NOT EXISTS staging_rows
    ({", ".join(f"{c} {t}" for c, t in zip(COLUMNS, _STAGING_TYPES, strict=True))})
    ON COMMIT DELETE ROWS"""
_COPY = f"COPY staging_rows ({COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
# interval * bigint is exact below 2**53 µs (285 years from the epoch), unlike to_timestamp().
_STAGED = ", ".join(
    f"TIMESTAMPTZ 'epoch' + {c} * INTERVAL '1 microsecond'" if c in _TIMES else c for c in COLUMNS
)
_UPSERT = f"INSERT INTO results ({COLUMN_LIST}) SELECT {_STAGED} FROM staging_rows {UPSERT}"
_RESET = ("TRUNCATE results, offsets, groups, group_members, progress, links",)


class PostgresDialect(Dialect):
    """PostgreSQL's spelling: ``%s`` placeholders, TIMESTAMPTZ, row locks, the server's clock,
    a batch through binary COPY, and a connection replaced when it broke."""

    nul = True  # PostgreSQL's text holds neither NUL nor a lone surrogate
    skip_locked = " FOR UPDATE SKIP LOCKED"  # another materializer's rows are not waited for
    # Locked before counting a group's members: a concurrent materializer's transaction
    # counting the same group waits for this one to commit, then counts its members too (READ
    # COMMITTED: each statement sees what was committed before it began).
    for_update = " FOR UPDATE"
    reset = _RESET  # TRUNCATE is transactional in PostgreSQL: readers see all rows or none

    def __init__(self, conninfo: str, schema: str, connect_timeout: float) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self._connect_timeout = connect_timeout
        parts = urlsplit(conninfo)  # host/dbname and schema, never the password
        self.where = (
            f"postgres store {parts.hostname or 'localhost'}{parts.path or '/'} schema {schema}"
        )
        self.content_errors = _CONTENT_ERRORS
        self.text_errors = _TEXT_ERRORS
        self.errors = (psycopg.Error,)

    def sql(self, query: str) -> str:
        return query.replace("?", "%s")

    def connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self.conninfo,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=max(1, int(self._connect_timeout)),
                options="-c TimeZone=UTC",
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open {self.where}: {exc}") from exc
        try:
            _migrate(conn, self.schema, self.where)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot open {self.where}: {exc}") from exc
            raise
        return conn

    def usable(self, conn: psycopg.Connection[Any]) -> bool:
        return not (conn.closed or conn.broken)

    @contextmanager
    def transaction(
        self, conn: psycopg.Connection[Any], *, write: bool
    ) -> Iterator[psycopg.Cursor[Any]]:
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def write_rows(self, cur: psycopg.Cursor[Any], rows: Sequence[ResultRow]) -> None:
        cur.execute(_STAGING)
        with cur.copy(_COPY) as copy:
            copy.set_types(_STAGING_TYPES)
            write_row = copy.write_row
            for row in _fold(rows):
                write_row(row)
        cur.execute(_UPSERT)

    def to_time(self, moment: datetime) -> object:
        return moment

    def from_time(self, value: datetime | None) -> datetime | None:
        return value

    def bucket(self, bucket_s: int) -> tuple[str, object]:
        # date_bin (PostgreSQL 14+) buckets from the epoch, as bucket_start does.
        return "date_bin(? * INTERVAL '1 second', finished_at, TIMESTAMPTZ 'epoch')", bucket_s

    def now(self) -> tuple[str, tuple[object, ...]]:
        return "now()", ()  # the server's: hosts with skewed clocks agree on expiry

    def micros(self, placeholder: str) -> str:
        return f"{placeholder} * INTERVAL '1 microsecond'"

    def any_of(self, column: str, values: Sequence[str]) -> Iterator[tuple[str, list[Any]]]:
        yield f"{column} = ANY(?)", [list(values)]


class PostgresStore(SQLStore):
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
        super().__init__(PostgresDialect(conninfo, schema, connect_timeout))

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
                f"{where} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this taskstream understands; upgrade taskstream"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("DELETE FROM meta")
            conn.execute("INSERT INTO meta (version) VALUES (%s)", (SCHEMA_VERSION,))
    # SET (not SET LOCAL) outlives the transaction: the session keeps the schema.


def _fold(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """The batch reduced to one row per task id, as applying it in order would leave it."""
    latest: dict[str, ResultRow] = {}
    for row in rows:
        old = latest.get(row[0])
        if old is None or supersedes(row[2], old[2]):
            latest[row[0]] = row
    return list(latest.values())
