"""Creating topics, and waiting until every broker of the cluster knows them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # stub: no __all__
    AdminClient,
    ClusterMetadata,
    NewTopic,
)

from taskstream.config import Settings
from taskstream.errors import BrokerError, ConfigError, NotAuthorized
from taskstream.kafka import preflight
from taskstream.kafka.clients import admin_config
from taskstream.kafka.topics import TopicSpec

log = logging.getLogger(__name__)


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. The first
    request is the start-up check of the connection (taskstream.kafka.preflight.connect): wrong
    credentials or an untrusted certificate raise at once, not after the timeout."""
    admin = preflight.connect(admin_config(settings), timeout)
    cluster = list_topics(admin, timeout)
    existing = set(cluster.topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            ):  # (a topic the principal may not describe is not listed: it looks missing)
                username = settings.kafka.get("sasl.username", "")
                raise NotAuthorized("CREATE", "topic", name, username) from exc
            if code != KafkaError.TOPIC_ALREADY_EXISTS:  # a racing creator won
                raise ConfigError(f"cannot create topic {name!r}: {exc}") from exc
    addresses = [f"{b.host}:{b.port}" for b in cluster.brokers.values()]
    known_everywhere(settings, addresses, [s.name for s in missing], timeout)
    return created


_ATTEMPT_S = 1.0  # one metadata request's wait at most (see list_topics)


def list_topics(admin: AdminClient, timeout: float = 30.0) -> ClusterMetadata:
    """The cluster's metadata, asked for one second at a time until ``timeout``: a stop signal
    is handled (Python runs handlers between calls, not inside librdkafka's wait) within a
    second even while the broker is gone. BrokerError after the last attempt failed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(
                timeout=min(_ATTEMPT_S, max(deadline - time.monotonic(), 0.01))
            )
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise BrokerError.wrap(exc, "listing topics") from exc


_PER_BROKER_S = 5.0  # a broker that does not list the new topics this soon is passed over


def known_everywhere(
    settings: Settings, brokers: list[str], names: list[str], timeout: float = 30.0
) -> None:
    """Wait until every broker of ``brokers`` (``host:port``) lists ``names`` with a leader
    for each partition.

    Each broker of a cluster learns a new topic at its own pace (KRaft's metadata log). A
    consumer group's leader that gets its metadata from one that has not yet leaves the topic
    out of the assignment, and librdkafka does not rejoin for it (measured on Apache Kafka 4.4,
    three nodes: one join in fifteen right after the creation got no partitions, for good).
    So the creator waits: it asks each broker in turn, through a client bootstrapped on that
    broker alone (a client's first metadata request goes to its bootstrap broker)."""
    deadline = time.monotonic() + timeout
    for address in brokers:
        until = min(deadline, time.monotonic() + _PER_BROKER_S)
        while not _lists(settings, address, names, max(0.1, until - time.monotonic())):
            if time.monotonic() >= until:
                log.warning("broker %s does not list the new topics yet", address)
                break
            time.sleep(0.05)


def _lists(settings: Settings, address: str, names: list[str], timeout: float) -> bool:
    """Whether the broker at ``address`` lists every topic of ``names``, each partition
    with a leader (one metadata request, from a client that knows no other broker yet)."""
    client = AdminClient({**admin_config(settings), "bootstrap.servers": address})
    try:
        return topics_led(client.list_topics(timeout=timeout).topics, names)
    except KafkaException:
        return False


def topics_led(topics: dict[str, Any], names: Iterable[str]) -> bool:
    """Whether metadata ``topics`` (``list_topics().topics``) has every one of ``names``,
    each partition with a leader."""
    for name in names:
        topic = topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            return False
        if any(p.leader < 0 for p in topic.partitions.values()):
            return False
    return True
