"""HttpSettings: what the HTTP service reads of the settings, typed and parsed once.

Built from :class:`taskstream.config.Settings` (its ``http_*`` fields, so the
``TASKSTREAM_HTTP_*`` variables keep working) or loaded on its own::

    HttpSettings.from_settings(app.settings)
    HttpSettings.load(environ={"TASKSTREAM_HTTP_TOKENS": "s3cret"}, max_wait_s=5.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskstream.config import Settings
from taskstream.kafka.clients import producer_config

DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes


@dataclass(frozen=True)
class HttpSettings:
    tokens: frozenset[str]  # bearer tokens; empty: no auth
    open_paths: frozenset[str]  # routes that need no token even when there are tokens
    max_body_bytes: int  # larger request bodies get 413
    batch_max_items: int  # items per :batch request
    publish_timeout_s: float  # wait for the broker's ack before answering 503
    idempotency_ttl_s: float  # how long an Idempotency-Key keeps its task id
    recent_ids: int  # accepted ids remembered per process (PENDING, not 404)
    max_wait_s: float  # upper bound of GET ?wait=
    drain_max_bytes: int  # an oversize body is read and dropped up to this many bytes ...
    drain_timeout_s: float  # ... and seconds before its 413; beyond, the connection closes
    max_event_bytes: int = DEFAULT_MESSAGE_MAX_BYTES  # producer's message.max.bytes: else 413
    allowed_hosts: frozenset[str] = frozenset()  # Host names served; see origins.allowed_hosts
    max_header_bytes: int = 16_384  # request line and headers; beyond: 431
    max_headers: int = 100  # header fields per request; beyond: 431
    header_timeout_s: float = 10.0  # to send a request's line and headers; then 408, closed
    body_timeout_s: float = 30.0  # to send a request's body after its headers; then 408
    keepalive_timeout_s: float = 5.0  # idle between requests; then the connection closes
    max_connections: int = 1_000  # per process; beyond: 503
    max_connections_per_client: int = 0  # per client address and process; 0: no cap
    session_s: float = 43_200.0  # a console login lasts this long

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpSettings:
        return cls(
            tokens=_split(settings.http_tokens),
            open_paths=_split(settings.http_open_paths),
            max_body_bytes=settings.http_max_body_bytes,
            batch_max_items=settings.http_batch_max_items,
            publish_timeout_s=settings.http_publish_timeout_s,
            idempotency_ttl_s=settings.http_idempotency_ttl_s,
            recent_ids=settings.http_recent_ids,
            max_wait_s=settings.http_max_wait_s,
            drain_max_bytes=settings.http_drain_max_bytes,
            drain_timeout_s=settings.http_drain_timeout_s,
            max_event_bytes=message_max_bytes(settings),
            allowed_hosts=_split(settings.http_allowed_hosts),
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            keepalive_timeout_s=settings.http_keepalive_timeout_s,
            max_connections=settings.http_max_connections,
            max_connections_per_client=settings.http_max_connections_per_client,
            session_s=settings.http_session_s,
        )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HttpSettings:
        """From `environ`'s ``TASKSTREAM_*`` variables (default: the process's environment),
        then ``overrides`` by field name (``max_wait_s=5.0``)."""
        return dataclasses.replace(cls.from_settings(Settings.load(environ)), **overrides)


def message_max_bytes(settings: Settings) -> int:
    """``message.max.bytes`` of the producer config that `settings` render (user extras such
    as ``TASKSTREAM_KAFKA_MESSAGE_MAX_BYTES`` included), librdkafka's default otherwise."""
    # Only the size limit is read here: a missing bootstrap address does not matter.
    bootstrap = settings.bootstrap_servers or "unset"
    config = producer_config(settings.replace(bootstrap_servers=bootstrap))
    return int(config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))


def _split(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())
