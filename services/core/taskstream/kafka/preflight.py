"""The start-up check of a long-running process against its Kafka cluster.

librdkafka retries what it cannot do forever: with a wrong password, an untrusted broker
certificate or a missing ACL a worker would log connection errors and wait, or consume
tasks whose outcomes it may not publish. So each role checks, before it takes any work:

- :func:`connect`: a metadata request answers within a bounded time; a SASL refusal or a
  failed TLS handshake, which librdkafka reports only as an error event, stops it at once
  (``AuthenticationFailed``, ``TlsFailed``), silence stops it at the deadline
  (``BrokerUnreachable``);
- :func:`check_access`: the principal may read and write the topics and join the groups
  the role needs (KIP-430's authorized operations). A broker that does not report them
  (no authorizer, or one that does not implement the field) passes.

Error texts name the user, the mechanism, the CA file and the topic; never a password.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient  # type: ignore[attr-defined]

from taskstream.errors import AuthenticationFailed, BrokerUnreachable, NotAuthorized, TlsFailed

log = logging.getLogger(__name__)

_ATTEMPT_S = 1.0  # one metadata request's wait; error events are read between attempts


def connect(config: Mapping[str, Any], timeout: float) -> AdminClient:
    """An admin client of ``config`` whose cluster answered a metadata request, or the
    taskstream error that says why none did within ``timeout`` seconds."""
    events: list[KafkaError] = []
    settings: dict[str, Any] = {**config, "error_cb": events.append}
    admin = AdminClient(settings)
    servers = str(config.get("bootstrap.servers", ""))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            admin.list_topics(timeout=min(_ATTEMPT_S, max(deadline - time.monotonic(), 0.01)))
            return admin
        except KafkaException as exc:
            last = exc.args[0].str() if exc.args else str(exc)
        admin.poll(0)  # serves error_cb
        for event in events:
            _raise_refusal(event, config, servers)
        if events:
            last = events[-1].str()
            events.clear()
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(servers, timeout, last)


def _raise_refusal(event: KafkaError, config: Mapping[str, Any], servers: str) -> None:
    code = event.code()
    if code == KafkaError._AUTHENTICATION:
        raise AuthenticationFailed(
            servers,
            str(config.get("sasl.username", "")),
            str(config.get("sasl.mechanisms", config.get("sasl.mechanism", "GSSAPI"))),
            event.str(),
        )
    if code == KafkaError._SSL or (
        code == KafkaError._TRANSPORT and "certificate verify failed" in event.str()
    ):
        raise TlsFailed(servers, config.get("ssl.ca.location"), event.str())


def check_access(
    admin: AdminClient,
    username: str,
    *,
    reads: Iterable[str] = (),
    writes: Iterable[str] = (),
    groups: Iterable[str] = (),
    timeout: float = 30.0,
) -> None:
    """NotAuthorized unless ``username``'s principal may read ``reads``, write ``writes``
    (topics) and read ``groups`` (join them, commit). Topics must exist."""
    needed: dict[str, set[AclOperation]] = {}
    for name in reads:
        needed.setdefault(name, set()).add(AclOperation.READ)
    for name in writes:
        needed.setdefault(name, set()).add(AclOperation.WRITE)
    if needed:
        futures = admin.describe_topics(
            TopicCollection(sorted(needed)),
            include_authorized_operations=True,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            _check(future, needed[name], "topic", name, username, timeout)
    wanted = sorted(set(groups))
    if wanted:
        futures = admin.describe_consumer_groups(
            wanted, include_authorized_operations=True, request_timeout=timeout
        )
        for name, future in futures.items():
            _check(future, {AclOperation.READ}, "group", name, username, timeout)


_DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


def _check(
    future: Any, needed: set[AclOperation], resource: str, name: str, username: str, timeout: float
) -> None:
    try:
        description = future.result(timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() in _DENIED:
            raise NotAuthorized("DESCRIBE", resource, name, username) from exc
        # Anything else (a broker without the API, a coordinator loading) is not an ACL
        # answer: the role's own clients meet it and report it as they always do.
        log.debug("start-up check of %s %r: %s", resource, name, exc)
        return
    allowed = getattr(description, "authorized_operations", None)
    if not allowed:  # not reported: no authorizer, or a broker without KIP-430
        return
    if AclOperation.ALL in allowed:
        return
    for operation in sorted(needed - set(allowed), key=lambda o: o.name):
        raise NotAuthorized(operation.name, resource, name, username)
