"""Kafka client configs, and reading a consumed record.

Client configs merge, in rising precedence: taskstream's defaults, the user's librdkafka
settings (``Settings.kafka``), then what the caller states explicitly, so any librdkafka
setting (SASL, TLS, compression) can be passed through.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message

from taskstream.config import Settings
from taskstream.errors import BrokerError
from taskstream.kafka import rdkafka_log

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
# A record's headers as Producer.produce takes them (a list: invariant, so build it as this).
Headers = list[tuple[str, str | bytes | None]]


def record_position(message: Message) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` of a record, or None for a consumer error event (logged;
    a fatal one raises)."""
    error = message.error()
    if error is not None:
        if error.fatal():
            raise BrokerError(error, "consuming")
        log.warning("consumer error: %s", error)
        return None
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def worker_id() -> str:
    """``host:pid``, the name a worker gives itself in results and client ids."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _merge(
    settings: Settings, defaults: dict[str, Any], explicit: dict[str, Any]
) -> dict[str, Any]:
    # librdkafka's log through Python logging, repeats rate-limited (taskstream.kafka.rdkafka_log)
    config = {
        "bootstrap.servers": settings.require_bootstrap(),
        "logger": rdkafka_log.LOGGER,
        **defaults,
    }
    config.update(settings.kafka)
    config.update(explicit)
    return config


# gzip because every Kafka client decompresses it without plugins (kafkajs reads only
# uncompressed and gzip batches natively, kafka-python needs extra packages for the others);
# level 1 because, for taskstream's ~140-200 byte events, it compresses within 5% of the
# default level 6 at about half the CPU. Measured (benchmarks/compression.py) and discussed
# in docs/operations.md (Compression).
DEFAULT_COMPRESSION: dict[str, Any] = {"compression.type": "gzip", "compression.level": 1}


def producer_config(settings: Settings, **explicit: Any) -> dict[str, Any]:
    chosen = {**settings.kafka, **explicit}
    codec = chosen.get("compression.type", chosen.get("compression.codec"))
    # The level means something else to another codec: a user's own codec keeps its default.
    compression = DEFAULT_COMPRESSION if codec in (None, "gzip") else {}
    return _merge(
        settings,
        {
            "client.id": f"taskstream-producer-{worker_id()}",
            # Idempotence brings acks=all and in-order, duplicate-free retries per partition.
            "enable.idempotence": True,
            "acks": "all",
            # One request in flight per broker: with more, a fresh producer loses events and
            # reports them delivered when a broker refuses its first batch to a partition (not
            # leader yet: a topic just made, a leader election) and takes the next one, which
            # it may since it holds no state for that producer there; librdkafka then counts
            # the refused batch as "implicitly acked" (confluent-kafka-go#921). Seen on a
            # three-node Apache Kafka 4.4: 2 of 40 events sent just after the topic's creation.
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": settings.linger_ms,
            "delivery.timeout.ms": settings.delivery_timeout_ms,
            # librdkafka's default, stated because it is part of the wire contract: a key's
            # partition is CRC-32(key) mod the partition count, and a client in another
            # language must partition alike to keep a key's events in order (docs/wire-format.md).
            "partitioner": "consistent_random",
            **compression,
        },
        explicit,
    )


def consumer_config(
    settings: Settings, group_id: str, *, strategy: str | None = None, **explicit: Any
) -> dict[str, Any]:
    """A consumer's config; ``strategy``: its default partition assignment strategy (a user's
    ``partition.assignment.strategy`` setting wins over it)."""
    if settings.group_protocol == "consumer":
        # KIP-848: the broker owns assignment (always incremental), session and heartbeat;
        # librdkafka refuses those client settings with this protocol.
        group: dict[str, Any] = {"group.protocol": "consumer"}
    else:
        group = {
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        }
        if strategy is not None:
            group["partition.assignment.strategy"] = strategy
    return _merge(
        settings,
        {
            **group,
            "group.id": group_id,
            "client.id": f"taskstream-consumer-{worker_id()}",
            # Offsets are committed by taskstream, only for work whose outcome is delivered.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "enable.partition.eof": False,
        },
        explicit,
    )


def incremental_assignment(config: dict[str, Any]) -> bool:
    """Whether a consumer of `config` gets incremental (cooperative) assignments: KIP-848's
    protocol always, the classic one with a cooperative assignor."""
    if config.get("group.protocol") == "consumer":
        return True
    return "cooperative" in str(config.get("partition.assignment.strategy", ""))


def topic_partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """``topic``'s partition numbers, sorted, from the cluster's metadata; empty while the
    topic does not exist. KafkaException when the cluster does not answer."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    return sorted(metadata.partitions)


def header_pairs(message: Message) -> Headers:
    """A record's headers as (name, value) pairs, [] when it has none. A consumed record
    carries a list; confluent-kafka's stub also allows the dict that produce() takes."""
    headers = message.headers()
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else headers


def admin_config(settings: Settings) -> dict[str, Any]:
    return _merge(settings, {"client.id": f"taskstream-admin-{worker_id()}"}, {})
