"""The console's tasks page on a store of a million outcomes (SQLite and PostgreSQL).

    python -m benchmarks.console [--rows 1000000] [--repeat 20] [--stores sqlite,postgres]
                                 [--postgres postgresql://postgres@127.0.0.1:5432/test]

Fills each store with ``--rows`` outcomes through ``apply_rows`` (the materializer's path,
in batches of 5,000, in finished_at order as a materializer meets them): 20 task names, 90%
SUCCESS / 8% FAILURE / 2% RETRY, half of them with one of 10,000 keys, finished over the
last 24 hours. Then it times the console's answers to GET
/ui/tasks with each filter, a deep page reached by its cursor and a search by id, in process
through httpx's ASGI transport (the server's time: routing, the store query, the HTML; no
network), ``--repeat`` times each, and the overview's store query (outcome counts of the
last 15 minutes). It also reports the fill rate with the search indexes against a store
whose search indexes were dropped (what the indexes cost the materializer) and the time to
build them on a full store (what the migration costs an existing deployment).
PostgreSQL uses a schema of its own, dropped at the end; SQLite a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from taskstream import App
from taskstream.console import Console, with_console
from taskstream.envelope import TaskEvent
from taskstream.producer.http import HttpService, create_app
from taskstream.producer.http.catalog import Catalog
from taskstream.store import PostgresStore, ResultStore, SQLiteStore
from taskstream.store.base import ResultRow, to_micros

BATCH = 5_000
TASKS = [f"bench.task{i:02d}" for i in range(20)]
INDEXES = ("results_status", "results_task", "results_key")  # the console's own


class _NoPublisher:
    """The tasks page never publishes; the service needs a publisher all the same."""

    def publish(self, event: TaskEvent) -> Future[None]:
        raise NotImplementedError("the benchmark sends no task")

    def close(self, timeout: float = 30.0) -> int:
        return 0


def _rows(n: int, seed: int) -> list[ResultRow]:
    rnd = random.Random(seed)
    now = to_micros(datetime.now(UTC))
    assert now is not None
    day = 86_400_000_000
    rows: list[ResultRow] = []
    for i in range(n):
        roll = rnd.random()
        status = "SUCCESS" if roll < 0.9 else ("FAILURE" if roll < 0.98 else "RETRY")
        finished = now - rnd.randrange(day)
        failed = status != "SUCCESS"
        rows.append(
            (
                str(uuid.UUID(int=rnd.getrandbits(128), version=4)), TASKS[i % len(TASKS)],
                status, 1 if status != "RETRY" else 2, None if failed else b"\xc3\x01" + b"r" * 12,
                "ValueError" if failed else None, "bad input" if failed else None,
                "Traceback (most recent call last):\n  ..." if failed else None,
                "bench-host:1", f"key-{rnd.randrange(10_000)}" if rnd.random() < 0.5 else None,
                finished - 2_000, finished - 1_000, finished, "bench.tasks.default",
                rnd.randrange(12), i,
            )
        )  # fmt: skip
    return rows


def _fill(store: ResultStore, rows: list[ResultRow]) -> float:
    """Rows per second through apply_rows, in batches as the materializer writes them."""
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        store.apply_rows(rows[i : i + BATCH], {("bench.results", 0): i + BATCH})
    return len(rows) / (time.perf_counter() - started)


def _drop_indexes(store: ResultStore) -> None:
    if isinstance(store, SQLiteStore):
        with store._transaction(write=True) as conn:
            for name in INDEXES:
                conn.execute(f"DROP INDEX {name}")
    elif isinstance(store, PostgresStore):
        with store._transaction() as conn:
            for name in INDEXES:
                conn.execute(f"DROP INDEX {name}")


def _build_indexes(store: ResultStore) -> float:
    from taskstream.store import postgres, sqlite

    started = time.perf_counter()
    if isinstance(store, SQLiteStore):
        with store._transaction(write=True) as conn:
            for statement in sqlite._SEARCH_INDEXES:
                conn.execute(statement)
    elif isinstance(store, PostgresStore):
        with store._transaction() as conn:
            for statement in postgres._MIGRATIONS[4]:
                conn.execute(statement)
    return time.perf_counter() - started


def _timed(call: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and max of `repeat` calls, in milliseconds (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


async def _pages(
    store: ResultStore, rows: list[ResultRow], repeat: int
) -> list[tuple[str, float, float]]:
    app = App("bench", store="memory://", bootstrap_servers="127.0.0.1:9")
    service = HttpService(Catalog.from_app(app), app.settings, _NoPublisher(), store)
    asgi = with_console(create_app(service, close_on_shutdown=False), Console(service, app))
    newest = sorted(rows, key=lambda r: (r[12], r[0]), reverse=True)
    deep = newest[5_000]  # the cursor of page 101 (50 a page)
    moment = datetime.fromtimestamp(deep[12] / 1e6, UTC)
    hour = (moment - timedelta(hours=1)).isoformat(), moment.isoformat()
    some = rows[len(rows) // 2]
    cases = [
        ("first page, no filter", {}),
        ("status=FAILURE", {"status": "FAILURE"}),
        ("task=bench.task07", {"task": "bench.task07"}),
        ("key=key-1234", {"key": "key-1234"}),
        ("status=RETRY, task and key (rare)", {"status": "RETRY", "task": "bench.task03",
                                              "key": "key-17"}),
        ("one hour's window (since/until)", {"since": hour[0], "until": hour[1]}),
        ("page 101 by its cursor", {"after": f"{moment.isoformat()}|{deep[0]}"}),
        ("search by id", {"id": some[0]}),
    ]  # fmt: skip
    results = []
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, params in cases:

            async def get(params: dict[str, str] = params) -> None:
                r = await client.get("/ui/tasks", params=params)
                assert r.status_code == 200 and "<h1>Tasks</h1>" in r.text, r.text[:500]

            await get()
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await get()
                times.append((time.perf_counter() - started) * 1000)
            results.append((name, statistics.median(times), max(times)))
    return results


def run(kind: str, rows: list[ResultRow], repeat: int, postgres: str) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:

        def open_store() -> ResultStore:
            if kind == "sqlite":
                return SQLiteStore(Path(tmp) / f"{uuid.uuid4().hex}.db")
            return PostgresStore.from_url(f"{postgres}?schema={schema}_{uuid.uuid4().hex[:4]}")

        bare = open_store()
        _drop_indexes(bare)
        bare_rate = _fill(bare, rows)
        build_s = _build_indexes(bare)
        _drop_schema(bare)
        bare.close()
        with open_store() as store:
            rate = _fill(store, rows)
            if isinstance(store, PostgresStore):
                # Planner statistics, as autovacuum gathers them soon after a bulk load;
                # without them PostgreSQL scans the table for the outcome counts (~95 ms).
                with store._transaction() as conn:
                    conn.execute("ANALYZE results")
            print(f"\n{kind}: {len(rows):,} rows")
            print(
                f"  fill (apply_rows, {BATCH:,} a batch): {rate:,.0f} rows/s with the search "
                f"indexes, {bare_rate:,.0f} rows/s without ({1 - rate / bare_rate:.0%} slower)"
            )
            print(f"  building the three search indexes on the full store: {build_s:.1f} s")
            since = datetime.now(UTC) - timedelta(minutes=15)
            med, top = _timed(lambda: store.outcome_counts(since, 30), repeat)
            print(
                f"  overview's outcome counts (last 15 min, 30 s buckets): {med:.1f} ms median, "
                f"{top:.1f} ms max"
            )
            print("  GET /ui/tasks (server time, median / max of", repeat, "):")
            for name, med, top in asyncio.run(_pages(store, rows, repeat)):
                print(f"    {name:<48} {med:7.1f} ms / {top:7.1f} ms")
            _drop_schema(store)  # fmt: skip


def _drop_schema(store: ResultStore) -> None:
    if isinstance(store, PostgresStore):
        from psycopg import sql

        with store._transaction() as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(store.schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    # In the order a materializer meets them: by finished_at, as workers finish them.
    rows = sorted(_rows(args.rows, seed=7), key=lambda row: row[12])
    for kind in args.stores.split(","):
        run(kind.strip(), rows, args.repeat, args.postgres)


if __name__ == "__main__":
    main()
