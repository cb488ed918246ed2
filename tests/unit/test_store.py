"""The lookup store contract, run against the in-memory fake, SQLite and PostgreSQL.

The PostgreSQL cases need the server (TASKSTREAM_TEST_POSTGRES, default the local one):
they are marked `integration` and skip locally, with the reason, when it is down."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from taskstream.errors import StoreError, StoreRejected
from taskstream.status import Status
from taskstream.store import (
    GroupMember,
    IdempotencyKey,
    Link,
    MemberOutcome,
    MemoryStore,
    PostgresStore,
    Progress,
    ResultRecord,
    ResultRow,
    ResultStore,
    SQLiteStore,
    open_store,
    postgres,
)
from taskstream.store.base import from_micros, from_row, to_micros, to_row
from taskstream.store.sqlite import SCHEMA_VERSION
from tests.unit.store_records import record

TOPIC = "app.results"
T0 = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "results.db"


# --- round trips ----------------------------------------------------------------------------


def test_every_field_round_trips(store: ResultStore) -> None:
    full = ResultRecord(
        task_id="t1", task="billing.charge", status=Status.FAILURE, attempt=3,
        result=b"\xc3\x01\x00\xffbinary", error_type="ValueError", error_message="bad card",
        error_traceback="Traceback (most recent call last):\n  ...", worker="host-1:42",
        key="customer-7", enqueued_at=T0, started_at=T0 + timedelta(microseconds=1),
        finished_at=T0 + timedelta(days=1), source_topic=TOPIC, source_partition=2,
        source_offset=10_000_000_000,
    )  # fmt: skip
    store.apply([full], {})
    got = store.get("t1")
    assert got == full
    assert got is not None and got.finished_at is not None and got.finished_at.tzinfo is UTC


def test_a_record_with_only_required_fields_round_trips(store: ResultStore) -> None:
    store.apply([record(status=Status.STARTED)], {})
    assert store.get("t1") == record(status=Status.STARTED)


def test_datetimes_in_other_zones_are_stored_as_the_same_instant_in_utc(
    store: ResultStore,
) -> None:
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    store.apply([record(enqueued_at=local)], {})
    got = store.get("t1")
    assert got is not None and got.enqueued_at == T0 and got.enqueued_at.tzinfo is UTC


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record(started_at=datetime(2024, 1, 1))


def test_a_task_without_an_outcome_is_none(store: ResultStore) -> None:
    assert store.get("nope") is None


def row(task_id: str = "t1", status: str = "SUCCESS", **fields: Any) -> ResultRow:
    return to_row(record(task_id, Status(status), **fields))


def test_rows_are_written_as_their_records_would_be(store: ResultStore) -> None:
    micros = to_micros(T0)
    assert micros is not None
    written = (
        "t1", "billing.charge", "FAILURE", 3, b"\xc3\x01\x00", "ValueError", "bad card", "tb",
        "host-1:42", "customer-7", micros, micros + 1, -1, TOPIC, 2, 10_000_000_000,
    )  # fmt: skip
    store.apply_rows([written], {(TOPIC, 2): 5})
    got = store.get("t1")
    assert got is not None and got == from_row(written) and to_row(got) == written
    assert got.finished_at == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert store.offsets(TOPIC) == {2: 5}


def test_a_row_with_an_unknown_status_is_refused_with_its_whole_batch(
    store: ResultStore,
) -> None:
    store.apply_rows([row("a")], {(TOPIC, 0): 1})
    bad = (*row("c")[:2], "LOST", *row("c")[3:])
    with pytest.raises(StoreError):
        store.apply_rows([row("b"), bad], {(TOPIC, 0): 3})
    assert store.count() == 1 and store.get("b") is None and store.offsets(TOPIC) == {0: 1}


def test_rows_in_one_batch_apply_in_order_and_keep_final_outcomes(store: ResultStore) -> None:
    statuses = ["STARTED", "SUCCESS", "STARTED", "RETRY", "FAILURE", "STARTED"]
    store.apply_rows([row("t1", s, attempt=n) for n, s in enumerate(statuses)], {})
    assert store.get("t1") == record("t1", Status.FAILURE, attempt=4)


@pytest.mark.parametrize("micros", [0, 1, -1, 1_715_949_045_123_457, 2**52 + 1, -(2**50) - 3])
def test_micros_and_datetimes_convert_exactly(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros
    assert to_micros(None) is None and from_micros(None) is None


# --- the replacement rule -------------------------------------------------------------------


@pytest.mark.parametrize("one_batch", [True, False], ids=["one batch", "two batches"])
def test_a_late_started_event_does_not_hide_a_success(store: ResultStore, one_batch: bool) -> None:
    events = [record(status=Status.SUCCESS, result=b"ok"), record(status=Status.STARTED, attempt=2)]
    if one_batch:
        store.apply(events, {})
    else:
        for event in events:
            store.apply([event], {})
    assert store.get("t1") == events[0]


def test_a_late_retry_does_not_hide_a_failure(store: ResultStore) -> None:
    store.apply([record(status=Status.FAILURE, error_type="E")], {})
    store.apply([record(status=Status.RETRY)], {})
    got = store.get("t1")
    assert got is not None and got.status is Status.FAILURE and got.error_type == "E"


def test_a_later_final_outcome_replaces_an_earlier_one(store: ResultStore) -> None:
    store.apply([record(status=Status.FAILURE, error_type="E")], {})
    store.apply([record(status=Status.SUCCESS, attempt=2, result=b"ok")], {})
    assert store.get("t1") == record(status=Status.SUCCESS, attempt=2, result=b"ok")


def test_a_final_outcome_replaces_a_started_one(store: ResultStore) -> None:
    store.apply([record(status=Status.STARTED, worker="w1")], {})
    store.apply([record(status=Status.SUCCESS, worker="w1")], {})
    assert store.get("t1") == record(status=Status.SUCCESS, worker="w1")


def test_a_later_non_final_event_replaces_an_earlier_non_final_one(store: ResultStore) -> None:
    store.apply([record(status=Status.STARTED), record(status=Status.RETRY, attempt=1)], {})
    store.apply([record(status=Status.STARTED, attempt=2)], {})
    assert store.get("t1") == record(status=Status.STARTED, attempt=2)


def test_records_in_one_batch_apply_in_order(store: ResultStore) -> None:
    store.apply(
        [
            record(status=Status.STARTED),
            record(status=Status.RETRY),
            record(status=Status.STARTED, attempt=2),
            record(status=Status.FAILURE, attempt=2),
            record(status=Status.SUCCESS, attempt=3),
            record(status=Status.STARTED, attempt=3),
        ],
        {},
    )
    assert store.get("t1") == record(status=Status.SUCCESS, attempt=3)


# --- offsets and atomicity ------------------------------------------------------------------


def test_offsets_are_kept_per_topic_and_partition(store: ResultStore) -> None:
    store.apply([record("a")], {(TOPIC, 0): 5, (TOPIC, 1): 7, ("other", 0): 100})
    store.apply([record("b")], {(TOPIC, 0): 9})
    assert store.offsets(TOPIC) == {0: 9, 1: 7}
    assert store.offsets("other") == {0: 100}
    assert store.offsets("never-read") == {}


def test_offsets_can_advance_without_records(store: ResultStore) -> None:
    store.apply([], {(TOPIC, 3): 42})
    assert store.offsets(TOPIC) == {3: 42}
    assert store.count() == 0


def test_a_failed_apply_changes_neither_rows_nor_offsets(store: ResultStore) -> None:
    store.apply([record("a", result=b"v1")], {(TOPIC, 0): 1})
    with pytest.raises(StoreError):
        # The rows are fine and written first; the bad offset must undo them too.
        store.apply([record("a", result=b"v2"), record("b")], {(TOPIC, 0): 3, (TOPIC, 1): -1})
    assert store.get("a") == record("a", result=b"v1")
    assert store.get("b") is None
    assert store.offsets(TOPIC) == {0: 1}


def test_a_record_that_cannot_be_written_rolls_back_its_whole_batch(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "r.db") as s:
        s.apply([record("a")], {(TOPIC, 0): 1})
        unbindable = record("c", result=object())  # fails inside executemany, after "b"
        with pytest.raises(StoreError, match=r"r\.db"):
            s.apply([record("b"), unbindable], {(TOPIC, 0): 3})
        assert s.count() == 1
        assert s.get("b") is None
        assert s.offsets(TOPIC) == {0: 1}


def test_a_failure_while_committing_rolls_back_rows_and_offsets(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "r.db") as s:
        assert s._conn is not None
        real: sqlite3.Connection = s._conn

        class FailingCommit:  # sqlite3.Connection's methods cannot be monkeypatched directly
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def execute(self, sql: str, *args: Any) -> Any:
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("disk I/O error (simulated)")
                return real.execute(sql, *args)

        s._conn = FailingCommit()
        with pytest.raises(StoreError, match="simulated"):
            s.apply([record("a")], {(TOPIC, 0): 1})
        s._conn = real
        assert s.get("a") is None
        assert s.offsets(TOPIC) == {}


# --- reads, counts, reset -------------------------------------------------------------------


def test_get_many_returns_the_tasks_that_have_outcomes(store: ResultStore) -> None:
    store.apply([record(f"t{i}") for i in range(1200)], {})
    wanted = ["t5", "missing", "t1100", "t5", *(f"t{i}" for i in range(600, 1200))]
    got = store.get_many(wanted)
    assert set(got) == {"t5", "t1100", *(f"t{i}" for i in range(600, 1200))}
    assert got["t1100"] == record("t1100")
    assert store.get_many([]) == {}


def test_count_by_status(store: ResultStore) -> None:
    store.apply(
        [record("a"), record("b"), record("c", Status.FAILURE), record("d", Status.STARTED)], {}
    )
    assert store.count() == 4
    assert store.count(Status.SUCCESS) == 2
    assert store.count(Status.FAILURE) == 1
    assert store.count(Status.RETRY) == 0


def test_reset_drops_every_row_and_offset_and_the_store_can_be_rebuilt(store: ResultStore) -> None:
    store.apply([record("a"), record("b")], {(TOPIC, 0): 2, ("other", 0): 4})
    store.reset(TOPIC)
    assert store.count() == 0
    assert store.offsets(TOPIC) == {} and store.offsets("other") == {}
    store.apply([record("a")], {(TOPIC, 0): 1})
    assert store.get("a") == record("a") and store.offsets(TOPIC) == {0: 1}


def test_a_closed_store_raises_store_error(store: ResultStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get("a")
    with pytest.raises(StoreError, match="closed"):
        store.apply([record()], {})


# --- SQLite specifics -----------------------------------------------------------------------


def test_sqlite_creates_its_directory_and_keeps_data_across_reopening(db: Path) -> None:
    with SQLiteStore(db) as s:
        s.apply([record()], {(TOPIC, 0): 1})
    with SQLiteStore(db) as s:
        assert s.get("t1") == record() and s.offsets(TOPIC) == {0: 1}
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    raw.close()


def test_a_reader_sees_what_another_store_on_the_same_file_wrote(db: Path) -> None:
    with SQLiteStore(db) as writer, SQLiteStore(db) as reader:
        assert reader.get("t1") is None
        writer.apply([record(status=Status.STARTED)], {(TOPIC, 0): 1})
        assert reader.get("t1") == record(status=Status.STARTED)
        writer.apply([record()], {(TOPIC, 0): 2})
        assert reader.get("t1") == record() and reader.offsets(TOPIC) == {0: 2}


def test_two_writers_on_one_file_lose_no_batch(db: Path) -> None:
    with SQLiteStore(db) as a, SQLiteStore(db) as b:
        run_in_threads(
            [partial(a.apply, [record(f"a{n}")], {}) for n in range(100)]
            + [partial(b.apply, [record(f"b{n}")], {}) for n in range(100)]
        )
        assert a.count() == 200


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(path)


def test_a_file_from_a_newer_schema_version_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(db)


# --- threads --------------------------------------------------------------------------------


def run_in_threads(calls: Sequence[Callable[[], object]], threads: int = 8) -> None:
    jobs = list(calls)  # popped by the workers
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not jobs:
                    return
                job = jobs.pop()
            try:
                job()
            except BaseException as exc:
                errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []


def test_one_store_can_be_shared_by_threads(store: ResultStore) -> None:
    def job(n: int) -> None:
        store.apply([record(f"t{n}-{i}") for i in range(10)], {(TOPIC, n % 4): n})
        assert store.get(f"t{n}-3") == record(f"t{n}-3")
        assert len(store.get_many([f"t{n}-{i}" for i in range(10)])) == 10

    run_in_threads([partial(job, n) for n in range(200)])
    assert store.count() == 2000
    assert set(store.offsets(TOPIC)) == {0, 1, 2, 3}


# --- Idempotency-Keys -----------------------------------------------------------------------


def test_a_free_idempotency_key_is_claimed_then_answers_with_its_first_binding(
    store: ResultStore,
) -> None:
    assert store.claim_idempotency_key("add:k1", "task-1", b"fp-1", 60) is None
    again = store.claim_idempotency_key("add:k1", "task-2", b"fp-2", 60)
    assert again == IdempotencyKey("task-1", b"fp-1", accepted=False)
    assert store.claim_idempotency_key("add:k2", "task-3", b"fp-1", 60) is None


def test_an_accepted_key_says_so_and_accepting_for_another_task_id_changes_nothing(
    store: ResultStore,
) -> None:
    store.claim_idempotency_key("k", "task-1", b"fp", 60)
    store.accept_idempotency_key("k", "task-other")
    assert store.claim_idempotency_key("k", "x", b"", 60) == IdempotencyKey("task-1", b"fp")
    store.accept_idempotency_key("k", "task-1")
    store.accept_idempotency_key("never-claimed", "task-1")
    assert store.claim_idempotency_key("k", "x", b"", 60) == IdempotencyKey("task-1", b"fp", True)


def test_an_expired_idempotency_key_is_claimed_afresh(store: ResultStore) -> None:
    assert store.claim_idempotency_key("k", "task-1", b"fp-1", 0) is None  # expires at once
    assert store.claim_idempotency_key("k", "task-2", b"fp-2", 60) is None
    assert store.claim_idempotency_key("k", "x", b"", 60) == IdempotencyKey("task-2", b"fp-2")


def test_idempotency_keys_outlive_a_reset_of_the_results(store: ResultStore) -> None:
    store.claim_idempotency_key("k", "task-1", b"fp", 60)
    store.reset(TOPIC)
    assert store.claim_idempotency_key("k", "x", b"", 60) == IdempotencyKey("task-1", b"fp")


def test_concurrent_claims_of_one_key_bind_it_once(store: ResultStore) -> None:
    won: list[str] = []

    def claim(n: int) -> None:
        if store.claim_idempotency_key(f"k{n % 10}", f"task-{n}", b"", 60) is None:
            won.append(f"k{n % 10}")

    run_in_threads([partial(claim, n) for n in range(100)])
    assert sorted(won) == [f"k{i}" for i in range(10)]


def test_two_sqlite_stores_on_one_file_share_idempotency_keys(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "r.db") as a, SQLiteStore(tmp_path / "r.db") as b:
        won: list[str] = []

        def claim(s: ResultStore, n: int) -> None:
            if s.claim_idempotency_key("k", f"task-{n}", b"", 60) is None:
                won.append(f"task-{n}")

        run_in_threads([partial(claim, (a, b)[n % 2], n) for n in range(40)])
        assert len(won) == 1
        b.accept_idempotency_key("k", won[0])
        assert a.claim_idempotency_key("k", "x", b"", 60) == IdempotencyKey(won[0], b"", True)


def test_sqlite_purges_expired_idempotency_keys_now_and_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskstream.store.sql._PURGE_EVERY", 4)
    with SQLiteStore(tmp_path / "r.db") as s:
        for n in range(3):
            s.claim_idempotency_key(f"gone{n}", "t", b"", 0)
        s.claim_idempotency_key("kept", "t", b"", 60)  # the 4th claim sweeps
    raw = sqlite3.connect(tmp_path / "r.db")
    try:
        assert raw.execute("SELECT key FROM idempotency_keys").fetchall() == [("kept",)]
    finally:
        raw.close()


# --- URLs -----------------------------------------------------------------------------------


def test_memory_url_opens_a_memory_store() -> None:
    with open_store("memory://") as s:
        assert isinstance(s, MemoryStore)


def test_sqlite_url_with_three_slashes_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///data/results.db") as s:
        assert isinstance(s, SQLiteStore) and s.path == Path("data/results.db")
    assert (tmp_path / "data" / "results.db").exists()


def test_sqlite_url_with_four_slashes_is_absolute(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/abs.db") as s:
        assert isinstance(s, SQLiteStore) and s.path == tmp_path / "abs.db"


@pytest.mark.parametrize("url", ["redis://localhost/0", "results.db", "mysql://u@h/db"])
def test_an_unknown_scheme_names_the_url_and_the_supported_schemes(url: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store(url)
    assert repr(url) in str(info.value)
    assert "memory://" in str(info.value) and "sqlite://" in str(info.value)


def test_an_unknown_scheme_does_not_echo_a_password() -> None:
    with pytest.raises(StoreError) as info:
        open_store("mysql://user:s3cret@db/results")
    assert "s3cret" not in str(info.value) and "user:***@db" in str(info.value)


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///x.db?mode=ro", "memory://x"]
)
def test_a_malformed_url_is_refused(url: str) -> None:
    with pytest.raises(StoreError, match="malformed store URL"):
        open_store(url)


# --- PostgreSQL specifics -------------------------------------------------------------------


@pytest.mark.integration
def test_postgres_url_aliases_open_the_same_schema_and_keep_data_across_reopening(
    postgres_url: str,
) -> None:
    with open_store(postgres_url) as s:
        assert isinstance(s, PostgresStore) and s.schema.startswith("test_")
        s.apply([record()], {(TOPIC, 0): 1})
    with open_store(postgres_url.replace("postgresql://", "postgres://", 1)) as s:
        assert s.get("t1") == record() and s.offsets(TOPIC) == {0: 1}


@pytest.mark.integration
def test_postgres_refuses_a_schema_from_a_newer_version(postgres_url: str) -> None:
    with PostgresStore.from_url(postgres_url) as s, s._transaction() as conn:
        conn.execute("UPDATE meta SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        PostgresStore.from_url(postgres_url)


@pytest.mark.integration
def test_postgres_a_record_that_cannot_be_written_rolls_back_its_whole_batch(
    postgres_url: str,
) -> None:
    with PostgresStore.from_url(postgres_url) as s:
        s.apply([record("a")], {(TOPIC, 0): 1})
        # A key over the btree entry limit (random, so no compression shrinks it).
        too_long = os.urandom(6000).hex()
        with pytest.raises(StoreRejected, match="schema test_"):
            s.apply([record("b"), record("c", key=too_long)], {(TOPIC, 0): 3})
        assert s.count() == 1 and s.get("b") is None and s.offsets(TOPIC) == {0: 1}


@pytest.mark.integration
def test_postgres_a_version_1_schema_gains_the_idempotency_keys_and_keeps_its_rows(
    postgres_url: str,
) -> None:
    with PostgresStore.from_url(postgres_url) as s:
        s.apply([record()], {(TOPIC, 0): 1})
    with PostgresStore.from_url(postgres_url) as s, s._transaction() as conn:
        conn.execute("DROP TABLE idempotency_keys")  # as taskstream with schema 1 left it
        conn.execute("UPDATE meta SET version = 1")
    with PostgresStore.from_url(postgres_url) as s:
        assert s.get("t1") == record() and s.offsets(TOPIC) == {0: 1}
        assert s.claim_idempotency_key("k", "task-1", b"fp", 60) is None
        assert s.claim_idempotency_key("k", "x", b"", 60) == IdempotencyKey("task-1", b"fp")
        with s._transaction() as conn:
            version = conn.execute("SELECT version FROM meta").fetchall()
        assert version == [(postgres.SCHEMA_VERSION,)]


@pytest.mark.integration
def test_postgres_a_version_2_schema_accepts_revoked_outcomes(postgres_url: str) -> None:
    with PostgresStore.from_url(postgres_url) as s, s._transaction() as conn:
        conn.execute("ALTER TABLE results DROP CONSTRAINT results_status_check")
        conn.execute(  # as taskstream with schema 2 left it: no REVOKED
            "ALTER TABLE results ADD CONSTRAINT results_status_check CHECK (status IN "
            "('PENDING', 'STARTED', 'RETRY', 'SUCCESS', 'FAILURE'))"
        )
        conn.execute("DROP INDEX results_finished_at")
        conn.execute("UPDATE meta SET version = 2")
    with PostgresStore.from_url(postgres_url) as s:
        s.apply([record("r", status=Status.REVOKED)], {})
        revoked = s.get("r")
        assert revoked is not None and revoked.status is Status.REVOKED


@pytest.mark.integration
def test_postgres_stores_on_two_connections_share_idempotency_keys(postgres_url: str) -> None:
    with PostgresStore.from_url(postgres_url) as a, PostgresStore.from_url(postgres_url) as b:
        won: list[str] = []

        def claim(s: ResultStore, n: int) -> None:
            if s.claim_idempotency_key("k", f"task-{n}", b"", 60) is None:
                won.append(f"task-{n}")

        run_in_threads([partial(claim, (a, b)[n % 2], n) for n in range(40)])
        assert len(won) == 1
        b.accept_idempotency_key("k", won[0])
        assert a.claim_idempotency_key("k", "x", b"", 60) == IdempotencyKey(won[0], b"", True)


@pytest.mark.integration
def test_postgres_writers_on_two_connections_lose_no_batch_and_keep_final_outcomes(
    postgres_url: str,
) -> None:
    with PostgresStore.from_url(postgres_url) as a, PostgresStore.from_url(postgres_url) as b:
        # For each id, one connection writes SUCCESS while the other writes a late STARTED.
        run_in_threads(
            [partial(a.apply, [record(f"t{n}", Status.SUCCESS)], {}) for n in range(100)]
            + [partial(b.apply, [record(f"t{n}", Status.STARTED)], {}) for n in range(100)]
            + [partial(b.apply, [record(f"b{n}")], {(TOPIC, n % 3): n}) for n in range(100)]
        )
        assert a.count() == 200 and a.count(Status.SUCCESS) == 200
        assert set(b.offsets(TOPIC)) == {0, 1, 2}


@pytest.mark.integration
def test_postgres_replaces_a_broken_connection_on_the_next_call(
    postgres_url: str, postgres_server: str
) -> None:
    import psycopg

    with PostgresStore.from_url(postgres_url) as s:
        s.apply([record("a")], {})
        assert s._conn is not None
        pid = s._conn.info.backend_pid
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError):
            s.get("a")  # the call that finds the connection dead fails ...
        assert s.get("a") == record("a")  # ... the next one reconnects


def test_postgres_connection_errors_do_not_echo_the_password() -> None:
    with pytest.raises(StoreError) as info:
        PostgresStore.from_url("postgresql://user:s3cret@127.0.0.1:1/db?connect_timeout=1")
    assert "s3cret" not in str(info.value) and "127.0.0.1/db" in str(info.value)


def test_postgres_batch_folding_matches_applying_records_one_by_one() -> None:
    from taskstream.store.base import from_row, to_row
    from taskstream.store.postgres import _fold

    events = [
        record("x", Status.STARTED), record("y", Status.FAILURE),
        record("x", Status.SUCCESS), record("y", Status.RETRY),
        record("x", Status.STARTED, attempt=2), record("z", Status.RETRY),
        record("z", Status.STARTED, attempt=2),
    ]  # fmt: skip
    one_by_one = MemoryStore()
    for event in events:
        one_by_one.apply([event], {})
    folded = {row[0]: from_row(row) for row in _fold([to_row(e) for e in events])}
    assert folded == one_by_one.get_many(["x", "y", "z"])


# --- the console's search and outcome counts ------------------------------------------------


def _history(store: ResultStore) -> list[ResultRecord]:
    """60 outcomes a second apart (two share a finished_at), of two tasks, keys and statuses."""
    records = [
        record(
            f"id-{i:03d}",
            status=(Status.FAILURE if i % 3 == 0 else Status.SUCCESS),
            task=("add" if i % 2 else "mul"),
            key=("k1" if i % 4 == 0 else None),
            finished_at=T0 + timedelta(seconds=min(i, 58)),
        )
        for i in range(60)
    ]
    store.apply(records, {})
    return records


def _page_order(records: Sequence[ResultRecord]) -> list[str]:
    ordered = sorted(records, key=lambda r: (r.finished_at, r.task_id), reverse=True)
    return [r.task_id for r in ordered]


def test_search_pages_through_every_match_newest_first_with_a_keyset_cursor(
    store: ResultStore,
) -> None:
    from taskstream.store.base import TaskQuery

    records = _history(store)
    seen: list[str] = []
    query = TaskQuery(limit=7)
    while True:
        page = store.search(query)
        seen += [r.task_id for r in page]
        if len(page) < query.limit:
            break
        last = page[-1]
        assert last.finished_at is not None
        query = dataclasses.replace(query, after=(last.finished_at, last.task_id))
    assert seen == _page_order(records)  # ties on finished_at split by id, none lost


def test_search_filters_by_status_task_key_and_time_range(store: ResultStore) -> None:
    from taskstream.store.base import TaskQuery

    records = _history(store)
    since, until = T0 + timedelta(seconds=10), T0 + timedelta(seconds=40)
    query = TaskQuery(
        status=Status.FAILURE, task="mul", key="k1", since=since, until=until, limit=100
    )
    expected = [
        r
        for r in records
        if r.status is Status.FAILURE and r.task == "mul" and r.key == "k1"
        and r.finished_at is not None and since <= r.finished_at < until
    ]  # fmt: skip
    assert expected  # the filter keeps some, drops others
    assert [r.task_id for r in store.search(query)] == _page_order(expected)
    assert store.search(TaskQuery(task="nothing")) == []
    full = store.search(TaskQuery(key="k1", limit=1))[0]
    assert full == next(r for r in records if r.task_id == full.task_id)


def test_outcome_counts_count_each_status_per_time_bucket(store: ResultStore) -> None:
    _history(store)
    counts = store.outcome_counts(T0 + timedelta(seconds=30), 10)
    got = {(c.bucket, c.status): c.count for c in counts}
    start = T0.replace(second=30, microsecond=0)  # the bucket holding T0 + 30 s
    # T0 is 12:30:45.123456: finished_at T0+30s..T0+58s falls in 12:31:10, 12:31:20, 12:31:30
    # ids 30..58 (59 shares 58's finished_at): statuses by i % 3.
    expected: dict[tuple[datetime, Status], int] = {}
    for i in range(30, 60):
        moment = T0 + timedelta(seconds=min(i, 58))
        bucket = moment.replace(microsecond=0, second=moment.second - moment.second % 10)
        status = Status.FAILURE if i % 3 == 0 else Status.SUCCESS
        expected[(bucket, status)] = expected.get((bucket, status), 0) + 1
    assert got == expected
    assert [c.bucket for c in counts] == sorted(c.bucket for c in counts)
    assert start.tzinfo is UTC and all(c.bucket.tzinfo is not None for c in counts)


@pytest.mark.integration
def test_postgres_a_version_3_schema_gains_the_search_indexes(postgres_url: str) -> None:
    with PostgresStore.from_url(postgres_url) as s, s._transaction() as conn:
        for name in ("results_status", "results_task", "results_key"):
            conn.execute(f"DROP INDEX {name}")  # as taskstream with schema 3 left it
        conn.execute("UPDATE meta SET version = 3")
    with PostgresStore.from_url(postgres_url) as s, s._transaction() as conn:
        names = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (s.schema,)
        )}  # fmt: skip
        assert {"results_finished_at", "results_status", "results_task", "results_key"} <= names
        version = conn.execute("SELECT version FROM meta").fetchall()
    assert version == [(postgres.SCHEMA_VERSION,)]


def _half_joined(store: ResultStore) -> None:
    store.apply_rows([], {}, [GroupMember("g1", i, 3, f"m{i}", b"chord") for i in (0, 1)])


def _joins_on(store: ResultStore) -> None:
    """A group two of three members into, as an older schema counted it, joins on."""
    info = store.group("g1")
    assert info is not None and (info.completed, info.state) == (2, "waiting")
    store.apply_rows([], {}, [GroupMember("g1", 2, 3, "m2", b"chord")])
    assert [(g.group_id, g.completed) for g in store.due_groups()] == [("g1", 3)]


@pytest.mark.integration
def test_postgres_a_version_5_schema_counts_its_groups_members_once_upgraded(
    postgres_url: str,
) -> None:
    with PostgresStore.from_url(postgres_url) as s:
        _half_joined(s)
    with PostgresStore.from_url(postgres_url) as s, s._transaction() as conn:
        conn.execute("ALTER TABLE groups DROP COLUMN completed")
        conn.execute("UPDATE meta SET version = 5")
    with PostgresStore.from_url(postgres_url) as s:
        _joins_on(s)


# --- workflows: joins, progress, links ------------------------------------------------------


def test_a_group_is_due_once_every_position_is_final_counting_each_once(
    store: ResultStore,
) -> None:
    def member(i: int, manifest: bytes | None = b"chord") -> GroupMember:
        return GroupMember("g1", i, 3, f"m{i}", manifest)

    store.apply_rows([], {}, [member(0), member(0), member(1)])  # member 0 ran twice
    info = store.group("g1")
    assert info is not None and (info.size, info.completed, info.state) == (3, 2, "waiting")
    assert store.due_groups() == []
    store.apply_rows([], {}, [member(1), member(2)])
    due = store.due_groups()
    assert [(g.group_id, g.state, g.manifest) for g in due] == [("g1", "due", b"chord")]
    store.mark_fired("g1")
    store.apply_rows([], {}, [member(2)])  # a late duplicate changes nothing
    info = store.group("g1")
    assert info is not None and (info.completed, info.state) == (3, "fired")
    assert store.due_groups() == []
    store.apply(
        [record("m2", Status.FAILURE, error_type="E", error_message="no"), record("m0")], {}
    )
    assert store.member_outcomes("g1") == [
        MemberOutcome(0, "m0", "add", "SUCCESS", None, None, None),
        MemberOutcome(2, "m2", "add", "FAILURE", None, "E", "no"),
    ]  # m1 has no stored row: left out
    store.apply_rows([], {}, [GroupMember("plain", 0, 1, "p0")])
    plain = store.group("plain")
    assert plain is not None and plain.state == "done" and store.due_groups() == []
    assert store.group("nope") is None


def test_progress_and_links_are_kept(store: ResultStore) -> None:
    store.apply_rows(
        [],
        {},
        progress=[Progress("t1", "PROGRESS", '{"done": 1}'), Progress("t1", "X", None)],
        links=[Link("t2", "t1", "t1", None, None), Link("t3", "t1", "t1", "g", 0)],
    )
    assert store.progress("t1") == Progress("t1", "X", None)
    assert store.progress("t2") is None
    assert store.link("t3") == Link("t3", "t1", "t1", "g", 0)
    assert store.children("t1") == ["t2", "t3"] and store.children("t2") == []
    store.reset("topic")
    assert store.link("t3") is None and store.progress("t1") is None


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
)
def test_concurrent_writers_complete_a_group_exactly_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two materializers applying members of one group at once: the last transaction to
    commit sees every member and settles the group, never neither of them."""

    def open_one() -> ResultStore:
        if kind == "sqlite":
            return SQLiteStore(tmp_path / "shared.db")
        return PostgresStore.from_url(request.getfixturevalue("postgres_url"))

    stores = [open_one(), open_one()]
    size = 200

    def write(store: ResultStore, parity: int) -> None:
        for i in range(parity, size, 2):
            store.apply_rows([], {}, [GroupMember("g", i, size, f"m{i}", b"chord")])

    try:
        threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        info = stores[0].group("g")
        assert info is not None and info.completed == size and info.state == "due"
        assert [g.group_id for g in stores[1].due_groups()] == ["g"]
    finally:
        for s in stores:
            s.close()
