"""HttpSettings: the HTTP service's settings (``taskstream serve`` and the console on it).

Not the app's (taskstream.config.Settings): each comes from, in rising precedence, its
default, a ``TASKSTREAM_HTTP_<NAME>`` environment variable, an explicit keyword argument::

    HttpSettings.load()  # the process's environment; the event limit of Settings.load()
    HttpSettings.load(environ={"TASKSTREAM_HTTP_TOKENS": "s3cret"}, max_wait_s=5.0)
    HttpSettings.load(settings=app.settings, tokens="tok1,tok2")

A list (tokens, open paths, allowed hosts) is comma-separated in its variable, and may be
given so as a keyword too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskstream.config import Settings, load_fields
from taskstream.kafka.sizes import DEFAULT_MESSAGE_MAX_BYTES, producer_limit

HTTP_ENV_PREFIX = "TASKSTREAM_HTTP_"


@dataclass(frozen=True)
class HttpSettings:
    # Bearer tokens of the API and the console; empty: no auth. Not in repr(): secrets.
    tokens: frozenset[str] = field(default=frozenset(), repr=False)
    session_s: float = 43_200.0  # a console login lasts this long (its cookie's expiry)
    # No token needed (with tokens set). /metrics holds counts and timings by route, no
    # secret; /openapi.json lists every task and schema, so it is guarded like /v1/tasks.
    open_paths: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics"})
    # Host names served ("*": any); empty: loopback only without tokens, any with tokens
    # (taskstream.producer.http.origins: DNS rebinding).
    allowed_hosts: frozenset[str] = frozenset()
    max_body_bytes: int = 1_048_576  # larger request bodies get 413
    batch_max_items: int = 10_000  # items per :batch request
    publish_timeout_s: float = 5.0  # wait for the broker's ack before answering 503
    idempotency_ttl_s: float = 86_400.0  # how long an Idempotency-Key keeps its task id
    recent_ids: int = 200_000  # accepted ids remembered per process (PENDING, not 404)
    max_wait_s: float = 60.0  # upper bound of GET ?wait=
    # An oversize body is read and dropped, up to these bounds, before its 413 is sent: a
    # client that reads only after sending everything then sees the 413, not a reset.
    drain_max_bytes: int = 16_777_216  # beyond this the connection is closed instead
    drain_timeout_s: float = 5.0  # as nginx's lingering_timeout
    # The server's own bounds (taskstream.producer.http.protocol), before any route or token:
    max_header_bytes: int = 16_384  # request line and headers, in bytes; beyond: 431
    max_headers: int = 100  # header fields per request; beyond: 431
    header_timeout_s: float = 10.0  # a request's line and headers, from its first byte
    # (and a new connection's first byte); beyond: 408 and the connection closes
    body_timeout_s: float = 30.0  # a request's whole body, after its headers; then 408
    keepalive_timeout_s: float = 5.0  # an idle connection between requests is closed
    max_connections: int = 1_000  # per process; beyond: 503 (uvicorn's limit_concurrency)
    # Open connections from one client address, per process; beyond, new ones are closed at
    # once. 0: no such cap (behind a proxy every client has the proxy's address).
    max_connections_per_client: int = 0
    # No variable of its own: the producer's message.max.bytes (TASKSTREAM_KAFKA_MESSAGE_MAX_
    # BYTES), in bytes; a task event over it gets 413.
    max_event_bytes: int = DEFAULT_MESSAGE_MAX_BYTES

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> HttpSettings:
        """Defaults, then the ``TASKSTREAM_HTTP_*`` variables of `environ` (default: the
        process's environment), then ``overrides`` by field name (``max_wait_s=5.0``).
        ``max_event_bytes`` is the producer limit of `settings` (default: Settings.load of
        `environ`)."""
        values = load_fields(cls, HTTP_ENV_PREFIX, environ, overrides, skip={"max_event_bytes"})
        if "max_event_bytes" not in values:
            kafka = Settings.load(environ) if settings is None else settings
            values["max_event_bytes"] = producer_limit(kafka)
        return cls(**values)
