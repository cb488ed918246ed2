"""The lookup store that task outcomes are materialized into from the results topic.

``open_store(url)`` picks the backend: ``memory://`` (the in-memory fake),
``sqlite:///path.db`` or ``postgresql://user@host/db``. Every backend implements
:class:`ResultStore`.
"""

from taskstream.store.base import (
    GroupInfo,
    GroupMember,
    GroupState,
    IdempotencyKey,
    Link,
    MemberOutcome,
    Progress,
    ResultRecord,
    ResultRow,
    ResultStore,
)
from taskstream.store.memory import MemoryStore
from taskstream.store.postgres import PostgresStore
from taskstream.store.sqlite import SQLiteStore
from taskstream.store.url import open_store

__all__ = [
    "GroupInfo",
    "GroupMember",
    "GroupState",
    "IdempotencyKey",
    "Link",
    "MemberOutcome",
    "MemoryStore",
    "PostgresStore",
    "Progress",
    "ResultRecord",
    "ResultRow",
    "ResultStore",
    "SQLiteStore",
    "open_store",
]
