"""Security against a real broker (issue 19): Apache Kafka on SASL_SSL (SCRAM-SHA-512, a CA
the test makes) with ACLs. Runs with TASKSTREAM_TEST_BROKER=kafka; the module starts its own
secure cluster, one node (three would triple the start-up on two shared cores, and
replication is not what is under test here).

The right credentials, given only through the documented TASKSTREAM_KAFKA_* settings, run a
task end to end (sent from Python, and posted to `taskstream serve`); a wrong password, an
untrusted CA and a principal without WRITE on the results topic each stop a worker at start
with the taskstream error that names the cause, as a wrong password stops the materializer,
beat and serve; beat fires ticks (transactions on its ACL'd transactional id) and stops,
naming the id, when WRITE on it is denied; no process prints the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AclOperation, ResourceType  # type: ignore[attr-defined]

from taskstream.cli.embedded_broker import free_port
from taskstream.errors import AuthenticationFailed, TlsFailed
from taskstream.kafka.topics import results_topic, task_topic
from tests.conftest import REPO, Scope
from tests.integration.running import APP_SPEC, wait_until
from tests.integration.tasks_app import build_app
from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.integration

PREFIX = "sec"
APP_PASSWORD = "app-" + uuid.uuid4().hex  # planted: must never be printed
NOWRITE_PASSWORD = "nowrite-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    if os.environ.get("TASKSTREAM_TEST_BROKER") != "kafka":
        pytest.skip("needs Apache Kafka (TASKSTREAM_TEST_BROKER=kafka)")
    cluster = KafkaCluster(tmp_path_factory.mktemp("secure"), nodes=1, secure=True).start()
    try:
        for user, password in (("app", APP_PASSWORD), ("nowrite", NOWRITE_PASSWORD)):
            cluster.add_user(user, password)
            cluster.acl(user, ResourceType.TOPIC, PREFIX)
            cluster.acl(user, ResourceType.GROUP, PREFIX)
            cluster.acl(user, ResourceType.TRANSACTIONAL_ID, PREFIX)
        yield cluster
    finally:
        cluster.stop()


def secure_scope(cluster: KafkaCluster, tmp_path: Path) -> Scope:
    return Scope(
        bootstrap_servers=cluster.bootstrap_servers,
        topic_prefix=f"{PREFIX}-{uuid.uuid4().hex[:10]}",
        store=f"sqlite:///{tmp_path}/results.db",
    )


def kafka_env(cluster: KafkaCluster, user: str, password: str, ca: Path) -> dict[str, str]:
    """The documented settings (docs/operations.md, Security) as a process gets them."""
    return {
        "TASKSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TASKSTREAM_KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
        "TASKSTREAM_KAFKA_SASL_USERNAME": user,
        "TASKSTREAM_KAFKA_SASL_PASSWORD": password,
        "TASKSTREAM_KAFKA_SSL_CA_LOCATION": str(ca),
    }


def client_settings(env: dict[str, str]) -> dict[str, str]:
    """The same settings as an in-process app's ``kafka=`` (librdkafka's names)."""
    return {k[len("TASKSTREAM_KAFKA_") :].lower().replace("_", "."): v for k, v in env.items()}


def start(scope: Scope, env: dict[str, str], *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "--log-level", "debug", *command],
        env=scope.env(**env), cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def output_at_exit(process: subprocess.Popen[str], timeout: float) -> str:
    """What a process printed once it exited by itself; one that hangs past ``timeout`` is
    killed and the test fails (TimeoutExpired)."""
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return out


def output_after_stop(*processes: subprocess.Popen[str]) -> str:
    """What running processes printed, each stopped with SIGTERM."""
    output = []
    for process in processes:
        process.terminate()
        out, _ = process.communicate(timeout=60)
        output.append(out)
    return "".join(output)


def test_the_right_credentials_run_a_task_end_to_end(cluster: KafkaCluster, tmp_path: Path) -> None:
    assert cluster.security is not None
    scope = secure_scope(cluster, tmp_path)
    env = kafka_env(cluster, "app", APP_PASSWORD, cluster.security.ca)
    worker = start(scope, env, "worker", APP_SPEC)
    materializer = start(scope, env, "materialize", "--app", APP_SPEC)
    kafka = client_settings(env)
    app = build_app(**scope.settings(kafka=kafka))
    try:
        result = app.tasks["itest.add"].delay(2, 3)
        assert result.get(timeout=120) == 5
    finally:
        app.close()
        output = output_after_stop(worker, materializer)
    assert APP_PASSWORD not in output


@pytest.mark.parametrize("case", ["wrong-password", "untrusted-ca"])
def test_delay_refused_by_the_cluster_raises_at_once_naming_why(
    cluster: KafkaCluster, tmp_path: Path, case: str
) -> None:
    security = cluster.security
    assert security is not None
    scope = secure_scope(cluster, tmp_path)
    error: type[Exception] = AuthenticationFailed if case == "wrong-password" else TlsFailed
    password = APP_PASSWORD + "x" if case == "wrong-password" else APP_PASSWORD
    ca = security.ca if case == "wrong-password" else security.other_ca
    env = kafka_env(cluster, "app", password, ca)
    kafka = client_settings(env)
    app = build_app(**scope.settings(kafka=kafka, delivery_timeout_ms=120_000))
    try:
        started = time.monotonic()
        with pytest.raises(error) as raised:
            app.tasks["itest.add"].delay(2, 3)
        # The refusal, not the 120 s delivery timeout (the first check waits at most 5 s).
        assert time.monotonic() - started < 60
    finally:
        app.close()
    assert APP_PASSWORD not in str(raised.value)


@pytest.mark.parametrize("case", ["wrong-password", "untrusted-ca", "no-write-on-results"])
def test_a_worker_refused_by_the_cluster_stops_at_start_naming_why(
    cluster: KafkaCluster, tmp_path: Path, case: str
) -> None:
    security = cluster.security
    assert security is not None
    scope = secure_scope(cluster, tmp_path)
    if case == "wrong-password":
        env, expected = kafka_env(cluster, "app", APP_PASSWORD + "x", security.ca), "refused"
    elif case == "untrusted-ca":
        env, expected = kafka_env(cluster, "app", APP_PASSWORD, security.other_ca), "TLS"
    else:
        cluster.acl(
            "nowrite", ResourceType.TOPIC, results_topic(scope.topic_prefix),
            (AclOperation.WRITE,), prefixed=False, deny=True,
        )  # fmt: skip
        env = kafka_env(cluster, "nowrite", NOWRITE_PASSWORD, security.ca)
        expected = f"not authorized to WRITE the topic '{results_topic(scope.topic_prefix)}'"
    worker = start(scope, env, "worker", APP_SPEC)
    out = output_at_exit(worker, 90)  # never a hang or a retry loop
    assert worker.returncode == 2, out[-3000:]
    assert expected in out, out[-3000:]
    assert "taskstream worker:" in out
    assert APP_PASSWORD not in out and NOWRITE_PASSWORD not in out


def test_serve_with_the_right_credentials_runs_a_task_posted_over_http(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    assert cluster.security is not None
    scope = secure_scope(cluster, tmp_path)
    env = kafka_env(cluster, "app", APP_PASSWORD, cluster.security.ca)
    url = f"http://127.0.0.1:{free_port()}"
    processes = [
        start(scope, env, "serve", APP_SPEC, "--port", url.rsplit(":", 1)[1]),
        start(scope, env, "worker", APP_SPEC),
        start(scope, env, "materialize", "--app", APP_SPEC),
    ]
    try:

        def up() -> bool:
            assert processes[0].poll() is None, "taskstream serve exited"
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 90, "taskstream serve")
        sent = httpx.post(f"{url}/v1/tasks/itest.add", json={"a": 2, "b": 3}, timeout=30)
        assert sent.status_code == 202, sent.text
        location = f"{url}{sent.headers['location']}"

        def done() -> bool:
            answer: dict[str, object] = httpx.get(location, params={"wait": 10}, timeout=20).json()
            return answer.get("status") == "SUCCESS" and answer.get("result") == 5

        wait_until(done, 120, "the posted task's result")
    finally:
        output = output_after_stop(*processes)
    assert APP_PASSWORD not in output


@pytest.mark.parametrize(
    "command",
    [
        ("materialize", "--app", APP_SPEC),
        ("beat", APP_SPEC),
        ("serve", APP_SPEC, "--port", str(free_port())),
    ],
)
def test_the_materializer_beat_and_serve_with_a_wrong_password_stop_at_start(
    cluster: KafkaCluster, tmp_path: Path, command: tuple[str, ...]
) -> None:
    assert cluster.security is not None
    scope = secure_scope(cluster, tmp_path)
    env = kafka_env(cluster, "app", APP_PASSWORD + "x", cluster.security.ca)
    process = start(scope, env, *command)
    out = output_at_exit(process, 90)
    assert process.returncode == 2, out[-3000:]
    assert "refused the SCRAM-SHA-512 credentials of user 'app'" in out, out[-3000:]
    assert APP_PASSWORD not in out


@pytest.mark.parametrize("case", ["untrusted-ca", "no-write-on-tasks"])
def test_serve_refused_by_the_cluster_stops_before_listening(
    cluster: KafkaCluster, tmp_path: Path, case: str
) -> None:
    security = cluster.security
    assert security is not None
    scope = secure_scope(cluster, tmp_path)
    if case == "untrusted-ca":
        env, expected = kafka_env(cluster, "app", APP_PASSWORD, security.other_ca), "TLS"
    else:
        topic = task_topic(scope.topic_prefix, "default")
        cluster.acl(
            "nowrite", ResourceType.TOPIC, topic, (AclOperation.WRITE,), prefixed=False, deny=True
        )
        env = kafka_env(cluster, "nowrite", NOWRITE_PASSWORD, security.ca)
        expected = f"not authorized to WRITE the topic '{topic}'"
    process = start(scope, env, "serve", APP_SPEC, "--port", str(free_port()))
    out = output_at_exit(process, 90)
    assert process.returncode == 2, out[-3000:]
    assert expected in out and "taskstream serve:" in out, out[-3000:]
    assert APP_PASSWORD not in out and NOWRITE_PASSWORD not in out


BEAT_SPEC = "tests.integration.beat_app:app"  # one task on a 1 s schedule


def test_beat_with_the_right_credentials_fires_ticks(cluster: KafkaCluster, tmp_path: Path) -> None:
    """Beat's ticks are transactions: the principal's ACL on the transactional id
    ``<prefix>.beat`` (prefixed, from the fixture) lets it lead and fire."""
    assert cluster.security is not None
    scope = secure_scope(cluster, tmp_path)
    env = kafka_env(cluster, "app", APP_PASSWORD, cluster.security.ca)
    topic = task_topic(scope.topic_prefix, "default")
    beat = start(scope, env, "beat", BEAT_SPEC)
    reader = Consumer(
        {**cluster.client_config(), "group.id": f"{scope.topic_prefix}.reader",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    ticks: list[bytes] = []
    try:

        def created() -> bool:
            assert beat.poll() is None, "beat exited"
            return topic in cluster.admin().list_topics(timeout=10).topics

        wait_until(created, 90, "beat to create its topics")
        reader.subscribe([topic])

        def fired() -> bool:
            assert beat.poll() is None, "beat exited"
            ticks.extend(m.value() or b"" for m in reader.consume(10, 1.0) if not m.error())
            return len(ticks) >= 2

        wait_until(fired, 120, "two ticks from beat")
    finally:
        reader.close()
        out = output_after_stop(beat)
    assert APP_PASSWORD not in out


def test_beat_without_write_on_its_transactional_id_stops_naming_it(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    assert cluster.security is not None
    scope = secure_scope(cluster, tmp_path)
    txn_id = f"{scope.topic_prefix}.beat"
    cluster.acl(
        "nowrite", ResourceType.TRANSACTIONAL_ID, txn_id, (AclOperation.WRITE,),
        prefixed=False, deny=True,
    )  # fmt: skip
    env = kafka_env(cluster, "nowrite", NOWRITE_PASSWORD, cluster.security.ca)
    beat = start(scope, env, "beat", BEAT_SPEC)
    out = output_at_exit(beat, 120)
    assert beat.returncode == 2, out[-3000:]
    assert f"not authorized to WRITE the transactional-id '{txn_id}'" in out, out[-3000:]
    assert "taskstream beat:" in out
    assert NOWRITE_PASSWORD not in out
