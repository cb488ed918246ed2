"""Apache Kafka on loopback: KRaft nodes as local JVM processes.

``taskstream dev --broker kafka`` runs one node; the tests run three
(``tests/kafka_cluster.py`` adds their faults and security to this class).
``KafkaCluster(directory).start()`` resolves the broker's classpath through Maven (the pinned
``apache-kafka/pom.xml`` beside this module; jars land in the local Maven repository, ~/.m2),
formats each node's storage, starts every node as a combined broker and controller, and waits
until the cluster serves: every broker registered and the group coordinator's topic online.
Replication as production runs it when there are three nodes: replication factor 3,
``min.insync.replicas=2`` and no unclean leader election, internal topics likewise.

Needs ``java`` (17 or later) and ``mvn`` on PATH; ``require_tools()`` names what is missing.
Every node dies with the process that started it (PR_SET_PDEATHSIG), so a killed dev or test
session leaves no broker behind. Without a ``directory`` the nodes' data lives in a temporary
one, deleted at ``stop()``.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import PartitionMetadata

from taskstream.cli.children import spawn
from taskstream.cli.embedded_broker import free_port, wait_or_kill
from taskstream.errors import BrokerNotStarted

HERE = Path(__file__).resolve().parent / "apache-kafka"
POM = HERE / "pom.xml"
LOG4J = HERE / "log4j2.properties"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taskstream"

# Internal topics' partition counts: small, so a cluster starts and elects leaders fast.
OFFSETS_PARTITIONS = 12
TRANSACTION_STATE_PARTITIONS = 6

# Small heaps and the C1 compiler only: three test JVMs share two cores with the tests, and
# one dev node shares a laptop with the worker. (With 512 MB a node ran out of heap after ~35
# minutes of the test suite, before the tests deleted their topics: 1 GB leaves room.)
JVM_OPTIONS = (
    "-Xms128m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
)  # fmt: skip


def require_tools() -> None:
    """BrokerNotStarted naming ``java`` and/or ``mvn`` when they are not on PATH."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise BrokerNotStarted(
            f"Apache Kafka needs Java 17+ (java) and Maven (mvn) on PATH; missing: "
            f"{' and '.join(missing)} (or use --broker tansu, or set "
            "TASKSTREAM_BOOTSTRAP_SERVERS to a Kafka cluster)"
        )


def kafka_classpath() -> str:
    """The broker's classpath, resolved by Maven once per version of the pom file."""
    require_tools()
    pom = POM.read_bytes()
    cached = CACHE / f"kafka-classpath-{uuid.uuid5(uuid.NAMESPACE_OID, pom.hex()).hex[:12]}.txt"
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")  # two first runs at once
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
    """A KRaft cluster: ``with KafkaCluster(nodes=1) as c: c.bootstrap_servers``."""

    def __init__(
        self,
        directory: Path | None = None,
        nodes: int = 1,
        *,
        broker_config: dict[str, str] | None = None,
        jvm_options: tuple[str, ...] = JVM_OPTIONS,
    ) -> None:
        """``directory``: the nodes' configs, logs and data (None: a temporary directory,
        deleted at stop); ``broker_config``: settings over every node's defaults."""
        self._temporary = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="taskstream-kafka-"))
        self.directory = directory
        self.jvm_options = jvm_options
        self.replication = min(3, nodes)
        self.nodes = {
            i: KafkaNode(i, free_port(), free_port(), self.directory / f"node-{i}")
            for i in range(1, nodes + 1)
        }
        self.broker_config = broker_config or {}
        self._classpath = ""

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.broker_port}" for n in self.nodes.values())

    @property
    def listener(self) -> str:
        """The clients' and brokers' listener name and security protocol."""
        return "PLAINTEXT"

    def client_config(self) -> dict[str, str]:
        """The librdkafka settings of an admin client."""
        return {"bootstrap.servers": self.bootstrap_servers}

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
            # Fast group and failure detection: a killed worker's partitions move in seconds.
            "group.initial.rebalance.delay.ms": "0",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.heartbeat.interval.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            # ... and a dead share group member's records delivered again in seconds.
            "group.share.session.timeout.ms": "6000",
            "group.share.min.session.timeout.ms": "1000",
            "group.share.heartbeat.interval.ms": "1000",
            "group.share.min.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "10000",
            # Few threads: the nodes share a few cores with their clients.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
            **self.broker_config,
        }

    def format_arguments(self) -> tuple[str, ...]:
        """Extra arguments of the storage format (a subclass's SCRAM users, say)."""
        return ()

    def start(self, timeout: float = 180.0) -> Self:
        try:
            self._classpath = kafka_classpath()
            cluster_id = random_cluster_id()
            for node in self.nodes.values():
                (node.directory / "data").mkdir(parents=True, exist_ok=True)
                node.config_path.write_text(
                    "".join(f"{k}={v}\n" for k, v in self.config(node).items())
                )
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", cluster_id,
                    "-c", str(node.config_path), "--ignore-formatted", *self.format_arguments(),
                )  # fmt: skip
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
                "start_new_session": True,  # Ctrl-C in a terminal reaches us, and we stop it
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
        # The admin clients above sit in reference cycles (a failed future's exception's
        # traceback holds their frames): freed now, they do not outlive the cluster and log
        # its stop as refused connections.
        gc.collect()

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
        """Every node: SIGTERM (a controlled shutdown), SIGKILL after ``timeout``; then the
        temporary directory, if it is one, is deleted."""
        for node in self.nodes.values():
            self._signal(node, signal.SIGCONT)
            self._signal(node, signal.SIGTERM)
        for node in self.nodes.values():
            process, node.process = node.process, None
            if process is not None:
                wait_or_kill(process, timeout)
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _signal(self, node: KafkaNode, sig: signal.Signals) -> None:
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, sig)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
