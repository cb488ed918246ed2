"""The lookup store that task outcomes are materialized into from the results topic.

``open_store(url)`` picks the backend: ``memory://`` (the in-memory fake),
``sqlite:///path.db`` or ``postgresql://user@host/db``. Every backend implements
:class:`ResultStore`, the union of the roles a component may ask for instead:
:class:`ResultWriter`, :class:`ResultReader`, :class:`TaskSearch`, :class:`IdempotencyStore`
and :class:`GroupJoins`.
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
)
from taskstream.store.memory import MemoryStore
from taskstream.store.postgres import PostgresStore
from taskstream.store.roles import (
    GroupJoins,
    IdempotencyStore,
    ResultReader,
    ResultStore,
    ResultWriter,
    TaskSearch,
)
from taskstream.store.sqlite import SQLiteStore
from taskstream.store.url import open_store

__all__ = [
    "GroupInfo",
    "GroupJoins",
    "GroupMember",
    "GroupState",
    "IdempotencyKey",
    "IdempotencyStore",
    "Link",
    "MemberOutcome",
    "MemoryStore",
    "PostgresStore",
    "Progress",
    "ResultReader",
    "ResultRecord",
    "ResultRow",
    "ResultStore",
    "ResultWriter",
    "SQLiteStore",
    "TaskSearch",
    "open_store",
]
