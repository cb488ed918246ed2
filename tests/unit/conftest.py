"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskstream.store import MemoryStore, PostgresStore, ResultStore, SQLiteStore


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    """Each lookup store: the in-memory fake, SQLite, and PostgreSQL (which needs the server:
    marked integration, skipped with the reason when it is down)."""
    s: ResultStore
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "r.db")
    else:
        s = PostgresStore.from_url(request.getfixturevalue("postgres_url"))
    with s:
        yield s
