"""Apache Kafka for the tests: a three-node KRaft cluster on loopback, with faults.

The cluster itself (Maven classpath, storage format, nodes, waiting until it serves, stop) is
the product's ``taskstream.cli.apache_kafka.KafkaCluster``, which ``taskstream dev --broker
kafka`` runs with one node. This subclass adds what only tests need: three nodes by default,
an optional SASL_SSL listener with ACLs (tests/kafka_security.py), faults (``kill(node)``
(SIGKILL), ``suspend``/``resume`` (SIGSTOP/SIGCONT), ``restart(node)`` on the same storage and
ports), and look-ups of the node that leads a partition, coordinates a group or coordinates a
transactional id.

Test-support code, not part of the installed package.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # stub: no __all__
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from taskstream.cli import apache_kafka
from taskstream.cli.apache_kafka import (
    JVM_OPTIONS,
    OFFSETS_PARTITIONS,
    TRANSACTION_STATE_PARTITIONS,
)
from tests.kafka_security import SaslSsl


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def coordinator_partition(key: str, partitions: int) -> int:
    """The internal topic's partition whose leader coordinates ``key`` (Kafka's Utils.abs)."""
    h = java_string_hash(key)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


class KafkaCluster(apache_kafka.KafkaCluster):
    """A KRaft cluster: ``with KafkaCluster(directory) as c: c.bootstrap_servers``."""

    def __init__(
        self,
        directory: Path,
        nodes: int = 3,
        *,
        broker_config: dict[str, str] | None = None,
        jvm_options: tuple[str, ...] = JVM_OPTIONS,
        secure: bool = False,
    ) -> None:
        """``secure``: clients and brokers on SASL_SSL (SCRAM-SHA-512) with ACLs, see
        tests/kafka_security.py; ``self.security`` has the CA and the admin's credentials."""
        self.security = SaslSsl.create(directory / "tls") if secure else None
        security = {} if self.security is None else self.security.broker_config()
        super().__init__(
            directory,
            nodes,
            broker_config={**security, **(broker_config or {})},
            jvm_options=jvm_options,
        )

    @property
    def listener(self) -> str:
        return "PLAINTEXT" if self.security is None else "SASL_SSL"

    def client_config(self) -> dict[str, str]:
        """The librdkafka settings of an admin client (the super user on a secure cluster)."""
        extra = {} if self.security is None else self.security.client_config()
        return {**super().client_config(), **extra}

    def format_arguments(self) -> tuple[str, ...]:
        return () if self.security is None else self.security.format_arguments()

    # --- faults -----------------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no clean shutdown, no leadership hand-over."""
        node = self.nodes[node_id]
        self._signal(node, signal.SIGKILL)
        if node.process is not None:
            node.process.wait()
            node.process = None

    def suspend(self, node_id: int | None = None) -> None:
        """SIGSTOP one node (every node without one): it keeps its sockets open, answers
        nothing and keeps its data."""
        for node in self.nodes.values() if node_id is None else [self.nodes[node_id]]:
            self._signal(node, signal.SIGSTOP)

    def resume(self, node_id: int | None = None) -> None:
        for node in self.nodes.values() if node_id is None else [self.nodes[node_id]]:
            self._signal(node, signal.SIGCONT)

    def shutdown(self, node_id: int, timeout: float = 60.0) -> None:
        """SIGTERM one node and wait for its controlled shutdown (a rolling restart's step)."""
        node = self.nodes[node_id]
        self._signal(node, signal.SIGTERM)
        if node.process is not None:
            node.process.wait(timeout)
            node.process = None

    def restart(self, node_id: int, timeout: float = 120.0, *, wait: bool = True) -> None:
        """Start a stopped or killed node again on its storage and (``wait``) wait until every
        partition is back in sync."""
        node = self.nodes[node_id]
        if node.running:
            self.kill(node_id)
        self._launch(node)
        if wait:
            self.wait_until_in_sync(timeout)

    def heal(self, timeout: float = 180.0) -> None:
        """Every node running and resumed, every partition in sync (after a test's faults)."""
        for node_id, node in self.nodes.items():
            self.resume(node_id)
            if not node.running:
                self.restart(node_id, wait=False)
        self.wait_until_in_sync(timeout)

    # --- users and ACLs (a secure cluster) ----------------------------------------------

    def add_user(self, username: str, password: str) -> None:
        """A SCRAM-SHA-512 credential for ``username`` (through the admin API)."""
        upsert = UserScramCredentialUpsertion(
            username, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
        )
        admin = self.admin()  # kept until the answer: a destroyed client fails its futures
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)

    def acl(
        self,
        username: str,
        resource: ResourceType,
        name: str,
        operations: tuple[AclOperation, ...] = (AclOperation.ALL,),
        *,
        prefixed: bool = True,
        deny: bool = False,
    ) -> None:
        """Allow (or ``deny``) ``username`` the ``operations`` on ``resource`` ``name``
        (every name starting with it when ``prefixed``), from any host."""
        pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
        permission = AclPermissionType.DENY if deny else AclPermissionType.ALLOW
        principal = f"User:{username}"
        bindings = [
            AclBinding(resource, name, pattern, principal, "*", operation, permission)
            for operation in operations
        ]
        admin = self.admin()
        for future in admin.create_acls(bindings, request_timeout=30).values():
            future.result(30)

    # --- look-ups ---------------------------------------------------------------------------

    def wait_until_in_sync(self, timeout: float = 120.0) -> None:
        """Until every running node is registered and every partition's ISR has all replicas."""
        self._wait_for_partitions(
            lambda p, want: p.leader < 0 or set(p.isrs) != set(p.replicas) & want,
            time.monotonic() + timeout,
            "get back in sync",
            "out of sync",
        )

    def leader(self, topic: str, partition: int) -> int:
        """The node that leads ``topic``'s ``partition`` now (-1: none, or no such topic)."""
        metadata = self.admin().list_topics(topic, timeout=10)
        found = metadata.topics[topic].partitions.get(partition)
        return -1 if found is None else int(found.leader)

    def leader_counts(self, topic: str) -> dict[int, int]:
        """How many of ``topic``'s partitions each node leads."""
        metadata = self.admin().list_topics(topic, timeout=10)
        counts: dict[int, int] = {}
        for p in metadata.topics[topic].partitions.values():
            counts[p.leader] = counts.get(p.leader, 0) + 1
        return counts

    def group_coordinator(self, group: str) -> int:
        """The node that coordinates consumer group ``group`` (leads its offsets partition)."""
        partition = coordinator_partition(group, OFFSETS_PARTITIONS)
        return self.leader("__consumer_offsets", partition)

    def transaction_coordinator(self, transactional_id: str) -> int:
        """The node that coordinates the transactions of ``transactional_id`` (-1: none yet,
        before the first transactional producer made the coordinators' topic)."""
        partition = coordinator_partition(transactional_id, TRANSACTION_STATE_PARTITIONS)
        return self.leader("__transaction_state", partition)
