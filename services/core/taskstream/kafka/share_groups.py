"""Share groups (KIP-932, Apache Kafka 4.2+): the share consumer's config and the group's own.

A shared queue's workers read its topics as members of one share group: every member may
get records of every partition, each record is acquired under a lock that lasts the group's
``share.record.lock.duration.ms``, and acknowledged one by one (accept, release, reject).
The broker counts each record's deliveries and archives a record delivered
``share.delivery.count.limit`` times, so crash counting is the broker's here.

A group's settings are the group's, not a client's: the worker sets them at its start with
``incremental_alter_configs`` on the group (a ``ConfigResource`` of type GROUP), within the
bounds the brokers allow (``group.share.min/max.record.lock.duration.ms``, 15-60 s by default,
and ``group.share.min/max.delivery.count.limit``, 2-10).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # stub: no __all__
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from taskstream.config import Settings
from taskstream.errors import ConfigError
from taskstream.kafka import preflight
from taskstream.kafka.clients import admin_config, consumer_config

# Consumer-group settings librdkafka refuses in a share consumer ("not applicable for share
# consumer"): the group's session, assignment and offsets are the broker's.
_NOT_FOR_SHARE = frozenset(
    {
        "auto.offset.reset", "enable.auto.commit", "enable.auto.offset.store",
        "enable.partition.eof", "group.instance.id", "group.protocol", "group.remote.assignor",
        "heartbeat.interval.ms", "isolation.level", "partition.assignment.strategy",
        "session.timeout.ms",
    }
)  # fmt: skip

LOCK_MIN_MS = 15_000  # the brokers' default group.share.min.record.lock.duration.ms
# A run's outcome is published and acknowledged after it ends: the lock covers that too.
OUTCOME_MARGIN_S = 5.0
DELIVERY_LIMIT_RANGE = (2, 10)  # the brokers' default group.share.min/max.delivery.count.limit


class SharedQueueError(ConfigError):
    """A shared queue cannot be served as configured (the cluster, or a task's limits)."""


class ShareGroupRefused(SharedQueueError):
    """The brokers refused a share group setting (their message names the bounds)."""


def share_consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    """A share consumer's config: the consumers' (client, security, fetch wait) without what
    a share consumer refuses, acknowledging each record explicitly."""
    config = consumer_config(settings, group_id, **{"share.acknowledgement.mode": "explicit"})
    return {k: v for k, v in config.items() if k not in _NOT_FOR_SHARE}


@dataclass(frozen=True)
class ShareGroupConfig:
    """What a worker sets on its share group."""

    lock_ms: int  # share.record.lock.duration.ms
    delivery_limit: int | None  # share.delivery.count.limit; None: the broker's (5)

    @classmethod
    def plan(cls, settings: Settings, longest_time_limit_s: float) -> ShareGroupConfig:
        """The lock the longest run needs (with its outcome's publication), at least the
        brokers' default minimum; one delivery more than ``worker_lost_max_deliveries``
        allows lost runs (the last one is not run: a WorkerLost failure)."""
        needed = math.ceil((longest_time_limit_s + OUTCOME_MARGIN_S) * 1000)
        lost_max = settings.worker_lost_max_deliveries
        low, high = DELIVERY_LIMIT_RANGE
        limit = None if lost_max == 0 else min(max(lost_max + 1, low), high)
        return cls(max(LOCK_MIN_MS, needed), limit)

    def entries(self) -> dict[str, str]:
        entries = {
            # A queue's tasks published before its first worker started run too.
            "share.auto.offset.reset": "earliest",
            # An aborted transaction's records (a beat's, say) are never delivered.
            "share.isolation.level": "read_committed",
            "share.record.lock.duration.ms": str(self.lock_ms),
        }
        if self.delivery_limit is not None:
            entries["share.delivery.count.limit"] = str(self.delivery_limit)
        return entries


def alter_share_group(
    settings: Settings, group: str, entries: dict[str, str], timeout: float = 30.0
) -> None:
    """Set ``entries`` on share group ``group``. A value the brokers refuse raises
    :class:`SharedQueueError` with their message (it names the allowed range); a cluster
    without share groups raises it saying so."""
    admin = preflight.connect(admin_config(settings), timeout)
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in entries.items()
        ],
    )
    try:
        admin.incremental_alter_configs([resource], request_timeout=timeout)[resource].result(
            timeout
        )
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.code() == KafkaError.INVALID_CONFIG:
            raise refused(group, entries, error.str()) from exc
        raise unsupported(settings.bootstrap_servers or "", error.str()) from exc
    # A broker without share groups may take any group setting and keep none (Tansu does):
    # read them back. Apache Kafka answers with every group setting, the new ones once the
    # broker asked has applied the change (not always at once).
    target = ConfigResource(ResourceType.GROUP, group)
    deadline = time.monotonic() + timeout
    while True:
        try:
            kept = admin.describe_configs([target], request_timeout=timeout)[target].result(timeout)
        except KafkaException as exc:
            raise unsupported(settings.bootstrap_servers or "", exc.args[0].str()) from exc
        values = {name: entry.value for name, entry in kept.items()}
        if all(values.get(k) == v for k, v in entries.items()):
            return
        if not any(name.startswith("share.") for name in values) or (time.monotonic() >= deadline):
            answer = f"it took the group's settings and kept {values or 'none'}"
            raise unsupported(settings.bootstrap_servers or "", answer)
        time.sleep(0.1)


def refused(group: str, entries: dict[str, str], answer: str) -> ShareGroupRefused:
    """The error of settings the brokers refuse (``answer``, theirs, names the bounds)."""
    return ShareGroupRefused(
        f"the cluster refused share group {group!r}'s settings {entries}: {answer}"
    )


def unsupported(servers: str, answer: str) -> SharedQueueError:
    """The error of a cluster without share groups."""
    return SharedQueueError(
        f"shared queues (TASKSTREAM_SHARED_QUEUES) need Kafka share groups (KIP-932: Apache "
        f"Kafka 4.2 or later, share groups enabled), and the cluster at {servers} has none "
        f"(it answered: {answer}); serve these queues as ordered queues on this cluster"
    )
