"""Apache Kafka for the tests: a KRaft cluster of local JVM processes on loopback.

``KafkaCluster(directory).start()`` resolves the broker's classpath through Maven (the pinned
``tests/kafka/pom.xml``; jars land in the local Maven repository, outside the work tree),
formats each node's storage, starts every node as a combined broker and controller, and waits
until the cluster serves: every broker registered and the group coordinator's topic online.
Three nodes by default, with replication as production runs it: replication factor 3,
``min.insync.replicas=2`` and no unclean leader election, internal topics likewise.

Faults for the tests: ``kill(node)`` (SIGKILL), ``suspend``/``resume`` (SIGSTOP/SIGCONT),
``restart(node)`` (start again on the same storage and ports), and look-ups of the node that
leads a partition, coordinates a group or coordinates a transactional id.

Test-support code, not part of the installed package. Every node dies with the process that
started it (PR_SET_PDEATHSIG), so a killed test session leaves no broker behind.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # stub: no __all__
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from confluent_kafka.admin._metadata import PartitionMetadata

from taskstream.cli.children import spawn
from taskstream.cli.embedded_broker import free_port
from taskstream.errors import BrokerNotStarted
from tests.kafka_security import SaslSsl

HERE = Path(__file__).resolve().parent / "kafka"
POM = HERE / "pom.xml"
LOG4J = HERE / "log4j2.properties"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taskstream"

# Internal topics' partition counts: small, so a cluster starts and elects leaders fast.
OFFSETS_PARTITIONS = 12
TRANSACTION_STATE_PARTITIONS = 6

# Small heaps and the C1 compiler only: three JVMs share two cores with the tests. (With
# 512 MB a node ran out of heap after ~35 minutes of the suite, before the tests deleted
# their topics: the tests' fixtures delete them now, and 1 GB leaves room.)
TEST_JVM_OPTIONS = (
    "-Xms128m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
)  # fmt: skip


def kafka_classpath() -> str:
    """The broker's classpath, resolved by Maven once per version of the pom file."""
    pom = POM.read_bytes()
    cached = CACHE / f"kafka-classpath-{uuid.uuid5(uuid.NAMESPACE_OID, pom.hex()).hex[:12]}.txt"
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".tmp")
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(POM), "dependency:build-classpath",
             f"-Dmdep.outputFile={partial}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not partial.exists():
            raise BrokerNotStarted(
                f"mvn could not resolve Apache Kafka ({POM}): {result.stdout[-2000:]}"
            )
        partial.rename(cached)
    return cached.read_text().strip()


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


def random_cluster_id() -> str:
    while True:  # Kafka's Uuid.randomUuid: URL-safe base64, never starting with "-"
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass
class KafkaNode:
    """One combined broker + controller."""

    node_id: int
    broker_port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class KafkaCluster:
    """A KRaft cluster: ``with KafkaCluster(directory) as c: c.bootstrap_servers``."""

    def __init__(
        self,
        directory: Path,
        nodes: int = 3,
        *,
        broker_config: dict[str, str] | None = None,
        jvm_options: tuple[str, ...] = TEST_JVM_OPTIONS,
        secure: bool = False,
    ) -> None:
        """``secure``: clients and brokers on SASL_SSL (SCRAM-SHA-512) with ACLs, see
        tests/kafka_security.py; ``self.security`` has the CA and the admin's credentials."""
        self.directory = directory
        self.security = SaslSsl.create(directory / "tls") if secure else None
        self.jvm_options = jvm_options
        self.replication = min(3, nodes)
        self.nodes = {
            i: KafkaNode(i, free_port(), free_port(), directory / f"node-{i}")
            for i in range(1, nodes + 1)
        }
        self.broker_config = broker_config or {}
        self._classpath = ""

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.broker_port}" for n in self.nodes.values())

    @property
    def listener(self) -> str:
        return "PLAINTEXT" if self.security is None else "SASL_SSL"

    def client_config(self) -> dict[str, str]:
        """The librdkafka settings of an admin client (the super user on a secure cluster)."""
        extra = {} if self.security is None else self.security.client_config()
        return {"bootstrap.servers": self.bootstrap_servers, **extra}

    def admin(self) -> AdminClient:
        return AdminClient({**self.client_config(), "socket.timeout.ms": 5000})

    # --- start and stop ---------------------------------------------------------------------

    def config(self, node: KafkaNode) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes.values())
        min_isr = str(min(2, self.replication))
        return {
            "node.id": str(node.node_id),
            "process.roles": "broker,controller",
            "controller.quorum.voters": voters,
            "listeners": f"{self.listener}://127.0.0.1:{node.broker_port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"{self.listener}://127.0.0.1:{node.broker_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": self.listener,
            "listener.security.protocol.map": f"{self.listener}:{self.listener},"
            "CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            # Replication as production runs it.
            "default.replication.factor": str(self.replication),
            "min.insync.replicas": min_isr,
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": str(OFFSETS_PARTITIONS),
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": str(TRANSACTION_STATE_PARTITIONS),
            "share.coordinator.state.topic.replication.factor": str(self.replication),
            "share.coordinator.state.topic.min.isr": min_isr,
            "share.coordinator.state.topic.num.partitions": "3",
            # Fast group and failure detection for tests.
            "group.initial.rebalance.delay.ms": "0",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.heartbeat.interval.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "10000",
            # Few threads: three JVMs share two cores.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
            **({} if self.security is None else self.security.broker_config()),
            **self.broker_config,
        }

    def start(self, timeout: float = 180.0) -> KafkaCluster:
        self._classpath = kafka_classpath()
        cluster_id = random_cluster_id()
        for node in self.nodes.values():
            (node.directory / "data").mkdir(parents=True, exist_ok=True)
            node.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.config(node).items()))
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id,
                "-c", str(node.config_path), "--ignore-formatted",
                *(() if self.security is None else self.security.format_arguments()),
            )  # fmt: skip
        try:
            for node in self.nodes.values():
                self._launch(node)
            self.wait_until_serving(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _java(self, main: str, *args: str) -> None:
        result = subprocess.run(
            ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", self._classpath,
             f"-Dlog4j2.configurationFile={LOG4J}", main, *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise BrokerNotStarted(f"{main} {' '.join(args)}: {result.stdout}{result.stderr}")

    def _launch(self, node: KafkaNode) -> None:
        command = ["java", *self.jvm_options, "-cp", self._classpath,
                   f"-Dlog4j2.configurationFile={LOG4J}", "kafka.Kafka",
                   str(node.config_path)]  # fmt: skip
        with open(node.log_path, "ab") as log:
            options: dict[str, Any] = {
                "stdout": log, "stderr": log, "stdin": subprocess.DEVNULL,
                "start_new_session": True,
            }  # fmt: skip
            if threading.current_thread() is threading.main_thread():
                node.process = spawn(command, death_signal=signal.SIGKILL, **options)
            else:
                # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: a node
                # restarted from a test's fault thread would die with that thread. stop()
                # still ends it.
                node.process = subprocess.Popen(command, **options)

    def wait_until_serving(self, timeout: float = 120.0) -> None:
        """Until every running node is a registered broker and every partition has a leader."""
        deadline = time.monotonic() + timeout
        self._wait_until_listening(deadline)
        self._wait_for_partitions(lambda p, _want: p.leader < 0, deadline, "serve", "leaderless")
        self._ensure_offsets_topic(self.admin())

    def _wait_for_partitions(
        self,
        lagging: Callable[[PartitionMetadata, set[int]], bool],
        deadline: float,
        what: str,
        label: str,
    ) -> None:
        """Until every running node is a registered broker and no partition is `lagging`
        (given the running nodes' ids); BrokerNotStarted at `deadline`."""
        want = {n.node_id for n in self.nodes.values() if n.running}
        admin = self.admin()
        last: object = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                metadata = admin.list_topics(timeout=5)
                brokers = set(metadata.brokers)
                behind = [
                    (t, p.id)
                    for t, topic in metadata.topics.items()
                    for p in topic.partitions.values()
                    if lagging(p, want)
                ]
                if want <= brokers and not behind:
                    return
                last = f"brokers {sorted(brokers)} of {sorted(want)}, {label} {behind[:5]}"
            except KafkaException as exc:
                last = exc
            time.sleep(0.2)
        raise BrokerNotStarted(f"Apache Kafka did not {what} in time: {last}")

    def _wait_until_listening(self, deadline: float) -> None:
        """Until every running node accepts connections (clients before that only log noise)."""
        for node in self.nodes.values():
            while node.running and time.monotonic() < deadline:
                self._check_alive()
                try:
                    socket.create_connection(("127.0.0.1", node.broker_port), 0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)

    def _ensure_offsets_topic(self, admin: AdminClient) -> None:
        """The group coordinators' topic exists (a first group join would otherwise wait):
        describing a group looks up its coordinator, which creates the topic. (Not
        list_consumer_group_offsets: librdkafka 2.16's admin client crashes on an OffsetFetch
        answer with a coordinator error, as while that topic loads.)"""
        for future in admin.describe_consumer_groups(["warm-up"], request_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()

    def _check_alive(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is not None:
                tail = node.log_path.read_text(errors="replace")[-3000:]
                raise BrokerNotStarted(
                    f"Kafka node {node.node_id} exited with {node.process.returncode}:\n{tail}"
                )

    def stop(self, timeout: float = 20.0) -> None:
        for node in self.nodes.values():
            self._signal(node, signal.SIGCONT)
            self._signal(node, signal.SIGTERM)
        for node in self.nodes.values():
            process, node.process = node.process, None
            if process is None:
                continue
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- faults -----------------------------------------------------------------------------

    def _signal(self, node: KafkaNode, sig: signal.Signals) -> None:
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, sig)

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
