"""The SQLite store's schema versions: files written by an older taskstream are upgraded."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from taskstream.errors import StoreError
from taskstream.status import Status
from taskstream.store import GroupMember, IdempotencyKey, SQLiteStore
from taskstream.store.sqlite import _MIGRATIONS, SCHEMA_VERSION

TOPIC = "app.results"

# Version 1's schema as taskstream wrote it, kept verbatim: the files it made are the input.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'STARTED', 'RETRY', 'SUCCESS', 'FAILURE')),
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
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

V1_ROWS = [
    ("done", "add", "SUCCESS", 1, b"\xc3\x01\x00\xff", None, None, None, "host-1:42", "k",
     1_700_000_000_000_000, 1_700_000_000_000_001, -1, TOPIC, 0, 10_000_000_000),
    ("failed", "add", "FAILURE", 3, None, "ValueError", "bad card", "Traceback ...", None,
     None, None, None, None, TOPIC, 1, 7),
    ("running", "add", "STARTED", 1, None, None, None, None, "host-2:7", None,
     None, 1_700_000_000_000_002, None, None, None, None),
]  # fmt: skip


@pytest.fixture
def v1_file(tmp_path: Path) -> Path:
    path = tmp_path / "v1.db"
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("PRAGMA journal_mode = WAL")
        raw.executescript(V1_SCHEMA)
        raw.executemany(f"INSERT INTO results VALUES ({', '.join('?' * 16)})", V1_ROWS)
        raw.executemany("INSERT INTO offsets VALUES (?, ?, ?)", [(TOPIC, 0, 11), (TOPIC, 1, 8)])
    raw.close()
    return path


def schema_of(path: Path) -> tuple[int, dict[str, str]]:
    raw = sqlite3.connect(path)
    try:
        version = raw.execute("PRAGMA user_version").fetchone()[0]
        tables = dict(raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    finally:
        raw.close()
    return version, tables


def test_a_new_file_is_created_at_the_latest_version_directly(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "new.db").close()
    version, tables = schema_of(tmp_path / "new.db")
    assert version == SCHEMA_VERSION == 7
    assert set(tables) == {
        "results", "offsets", "idempotency_keys", "groups", "group_members", "progress", "links",
    }  # fmt: skip
    assert "status = 'PENDING' OR status = 'STARTED'" in tables["results"]
    assert "status IN" not in tables["results"]


def test_a_version_1_file_is_migrated_on_open_and_keeps_its_rows_and_offsets(
    v1_file: Path,
) -> None:
    with SQLiteStore(v1_file) as s:
        assert s.count() == 3 and s.offsets(TOPIC) == {0: 11, 1: 8}
        got = s.get_many([r[0] for r in V1_ROWS])
        assert [tuple(getattr(got[r[0]], f) for f in ("task", "attempt")) for r in V1_ROWS] == [
            ("add", 1),
            ("add", 3),
            ("add", 1),
        ]
    raw = sqlite3.connect(v1_file)
    try:
        assert raw.execute("SELECT * FROM results ORDER BY rowid").fetchall() == V1_ROWS
        assert raw.execute("SELECT * FROM offsets").fetchall() == [(TOPIC, 0, 11), (TOPIC, 1, 8)]
    finally:
        raw.close()
    version, tables = schema_of(v1_file)
    assert version == SCHEMA_VERSION
    assert {"results", "offsets", "idempotency_keys", "groups"} <= set(tables)
    assert "status IN" not in tables["results"]


def test_a_migrated_file_still_refuses_an_unknown_status_and_keeps_final_outcomes(
    v1_file: Path,
) -> None:
    with SQLiteStore(v1_file) as s:
        bad = ("lost", "add", "LOST", 1, *([None] * 12))
        with pytest.raises(StoreError):
            s.apply_rows([bad], {(TOPIC, 0): 12})
        late = ("done", "add", "STARTED", 2, *([None] * 12))
        s.apply_rows([late], {(TOPIC, 0): 12})
        done = s.get("done")
        assert done is not None and done.status is Status.SUCCESS and done.attempt == 1
        assert s.get("lost") is None and s.offsets(TOPIC) == {0: 12, 1: 8}


def test_stores_opening_a_version_1_file_at_once_migrate_it_once(v1_file: Path) -> None:
    errors: list[BaseException] = []

    def open_and_count() -> None:
        try:
            with SQLiteStore(v1_file) as s:
                assert s.count() == 3
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert schema_of(v1_file)[0] == SCHEMA_VERSION


def test_a_version_1_taskstream_refuses_a_file_of_this_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLiteStore(tmp_path / "new.db").close()
    monkeypatch.setattr("taskstream.store.sqlite.SCHEMA_VERSION", 1)  # as taskstream 1 was
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION}, newer than the 1"):
        SQLiteStore(tmp_path / "new.db")


def test_a_version_2_file_gains_the_idempotency_keys_and_keeps_its_rows(v1_file: Path) -> None:
    raw = sqlite3.connect(v1_file)
    with raw:  # version 2 as taskstream wrote it: version 1 migrated by its one step
        for statement in _MIGRATIONS[2]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 2")
    raw.close()
    assert set(schema_of(v1_file)[1]) == {"results", "offsets"}
    with SQLiteStore(v1_file) as s:
        assert s.count() == 3 and s.offsets(TOPIC) == {0: 11, 1: 8}
        assert s.claim_idempotency_key("k", "task-1", b"fp", 60) is None
        assert s.claim_idempotency_key("k", "task-2", b"fp", 60) == IdempotencyKey("task-1", b"fp")
    version, tables = schema_of(v1_file)
    assert version == SCHEMA_VERSION
    assert {"results", "offsets", "idempotency_keys", "groups"} <= set(tables)


def test_a_version_3_file_accepts_revoked_outcomes_and_gains_the_expiry_index(
    v1_file: Path,
) -> None:
    raw = sqlite3.connect(v1_file)
    with raw:  # its results table still has a CHECK without REVOKED
        for statement in _MIGRATIONS[3]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 3")
    raw.close()
    with SQLiteStore(v1_file) as s:
        assert s.count() == 3 and s.offsets(TOPIC) == {0: 11, 1: 8}
        revoked = (
            "r-1", "t", "REVOKED", 1, None, "TaskRevoked", "expired", "", None, None,
            1, 2, 3, None, None, None,
        )  # fmt: skip
        s.apply_rows([revoked], {})
        record = s.get("r-1")
        assert record is not None and record.status is Status.REVOKED
    version, _tables = schema_of(v1_file)
    raw = sqlite3.connect(v1_file)
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    raw.close()
    assert version == SCHEMA_VERSION and "results_finished_at" in indexes


def test_a_version_4_file_gains_the_search_indexes(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    SQLiteStore(path).close()
    raw = sqlite3.connect(path)
    with raw:
        for name in ("results_status", "results_task", "results_key"):
            raw.execute(f"DROP INDEX {name}")  # as taskstream with schema 4 left it
        for table in ("groups", "group_members", "progress", "links"):
            raw.execute(f"DROP TABLE {table}")
        raw.execute("PRAGMA user_version = 4")
    raw.close()
    SQLiteStore(path).close()
    raw = sqlite3.connect(path)
    try:
        indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()
    assert {"results_finished_at", "results_status", "results_task", "results_key"} <= indexes


def test_a_version_6_file_counts_its_groups_members_once_upgraded(tmp_path: Path) -> None:
    """Version 7 keeps each group's member count in its row: a group half joined under
    version 6 (members counted per batch) joins on with its count."""
    path = tmp_path / "v6.db"
    members = [GroupMember("g1", i, 3, f"m{i}", b"chord") for i in range(3)]
    with SQLiteStore(path) as s:
        s.apply_rows([], {}, members[:2])
    raw = sqlite3.connect(path)
    with raw:  # as taskstream with schema 6 left it
        raw.execute("ALTER TABLE groups DROP COLUMN completed")
        raw.execute("PRAGMA user_version = 6")
    raw.close()
    with SQLiteStore(path) as s:
        info = s.group("g1")
        assert info is not None and (info.completed, info.state) == (2, "waiting")
        s.apply_rows([], {}, members[2:])
        assert [(g.group_id, g.completed) for g in s.due_groups()] == [("g1", 3)]
