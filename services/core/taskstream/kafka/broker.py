"""Where an app's Kafka clients come from: the seam between taskstream and the cluster."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, Producer, ShareConsumer
from confluent_kafka.admin import AdminClient

from taskstream.config import Settings
from taskstream.kafka import preflight
from taskstream.kafka.admin import ensure_topics, list_topics
from taskstream.kafka.clients import admin_config
from taskstream.kafka.share_groups import alter_share_group
from taskstream.kafka.topics import TopicSpec


@dataclass(frozen=True)
class Access:
    """What a process needs of the cluster's ACLs: topics it reads and writes, consumer
    groups it joins."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


class Broker(Protocol):
    """Where an app's Kafka clients come from: the real cluster (:class:`KafkaBroker`) or the
    in-memory :class:`taskstream.testing.stub_broker.StubBroker` of unit tests and
    ``taskstream.testing``.

    The clients it returns have confluent-kafka's ``Consumer`` and ``Producer`` API (the
    part taskstream uses), so the code above this seam is the same for both.
    """

    def consumer(self, config: dict[str, Any]) -> Consumer: ...

    def producer(self, config: dict[str, Any]) -> Producer: ...

    def share_consumer(self, config: dict[str, Any]) -> ShareConsumer:
        """A share group member (KIP-932), for shared queues."""
        ...

    def alter_share_group(
        self, settings: Settings, group: str, entries: dict[str, str], timeout: float = 30.0
    ) -> None:
        """Set share group settings (taskstream.kafka.share_groups); SharedQueueError when
        the cluster refuses them or has no share groups."""
        ...

    def ensure_topics(
        self, settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
    ) -> list[str]:
        """Create the topics that do not exist yet; returns the names created."""
        ...

    def partition_counts(
        self, settings: Settings, names: Iterable[str], timeout: float = 30.0
    ) -> dict[str, int]:
        """The partition count of each of ``names`` that exists."""
        ...

    def check_access(self, settings: Settings, access: Access, timeout: float = 30.0) -> None:
        """A process's start-up check (taskstream.kafka.preflight): the cluster answers, takes
        the credentials, and its ACLs allow ``access``; else the taskstream error why."""
        ...


class KafkaBroker:
    """The real thing: confluent-kafka clients for the cluster in the settings."""

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Producer:
        return Producer(config)

    def share_consumer(self, config: dict[str, Any]) -> ShareConsumer:
        return ShareConsumer(config)

    def alter_share_group(
        self, settings: Settings, group: str, entries: dict[str, str], timeout: float = 30.0
    ) -> None:
        alter_share_group(settings, group, entries, timeout)

    def ensure_topics(
        self, settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
    ) -> list[str]:
        return ensure_topics(settings, specs, timeout)

    def check_access(self, settings: Settings, access: Access, timeout: float = 30.0) -> None:
        admin = preflight.connect(admin_config(settings), timeout)
        preflight.check_access(
            admin, settings.kafka.get("sasl.username", ""),
            reads=access.reads, writes=access.writes, groups=access.groups, timeout=timeout,
        )  # fmt: skip

    def partition_counts(
        self, settings: Settings, names: Iterable[str], timeout: float = 30.0
    ) -> dict[str, int]:
        topics = list_topics(AdminClient(admin_config(settings)), timeout).topics
        return {
            n: len(topics[n].partitions) for n in names if n in topics and topics[n].error is None
        }
