"""Store URLs: which :class:`ResultStore` a URL such as ``sqlite:///results.db`` opens.

To add a backend, register a factory under its scheme in :data:`SCHEMES`; the factory gets the
whole URL and parses the rest itself (e.g. ``SCHEMES["postgresql"] = PostgresStore.from_url``).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from taskstream.errors import StoreError
from taskstream.store.base import redacted_url
from taskstream.store.memory import MemoryStore
from taskstream.store.postgres import PostgresStore
from taskstream.store.roles import ResultStore
from taskstream.store.sqlite import SQLiteStore


def open_store(url: str) -> ResultStore:
    """Open the store `url` names.

    ``memory://`` is a :class:`MemoryStore`; ``sqlite:///relative/path.db`` (relative to the
    working directory) and ``sqlite:////absolute/path.db`` are :class:`SQLiteStore` files;
    ``postgresql://user:password@host/dbname`` (or ``postgres://``) is a :class:`PostgresStore`.
    Raises :class:`StoreError` for an unsupported scheme or a malformed URL.
    """
    scheme = urlsplit(url).scheme
    factory = SCHEMES.get(scheme)
    if factory is None:
        supported = ", ".join(f"{s}://" for s in SCHEMES)
        raise StoreError(
            f"unsupported store URL {redacted_url(url)!r}: the scheme must be one of {supported} "
            "(e.g. sqlite:///results.db)"
        )
    return factory(url)


def _open_memory(url: str) -> ResultStore:
    parts = urlsplit(url)
    if parts.netloc or parts.path or parts.query or parts.fragment:
        raise StoreError(f"malformed store URL {url!r}: a memory store URL is just memory://")
    return MemoryStore()


def _open_sqlite(url: str) -> ResultStore:
    parts = urlsplit(url)
    # "sqlite:///a.db" has path "/a.db" (relative a.db); "sqlite:////a.db" has "//a.db" (/a.db).
    path = parts.path[1:]
    if parts.netloc or not path or parts.query or parts.fragment:
        raise StoreError(
            f"malformed store URL {url!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (no host, no query)"
        )
    return SQLiteStore(path)


# scheme -> factory taking the full URL; the extension point for further backends.
SCHEMES: dict[str, Callable[[str], ResultStore]] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
    "postgresql": PostgresStore.from_url,
    "postgres": PostgresStore.from_url,
}
