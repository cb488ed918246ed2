"""Running workers and materializers for a test: in threads or as real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from taskstream import App
from taskstream.consumer.materializer import Materializer
from taskstream.consumer.runtime import partition_names
from taskstream.consumer.worker import Worker
from taskstream.kafka.clients import admin_config, header_pairs, topic_partitions
from tests.conftest import REPO, Scope

APP_SPEC = "tests.integration.tasks_app:app"


DUMP = "the process's threads when the wait timed out:\n"


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a wait that timed out (a result, or a condition)."""
    text = str(exc)
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, AssertionError) and ("timed out" in text or "no result within" in text)
    )


_components: list[Worker | Materializer] = []  # under running() now


def threads_now() -> str:
    """The state of the workers and materializers running in this process, then every
    thread's stack, named: where a record that never got its outcome waits."""
    states = []
    for component in list(_components):
        try:
            states.append(f"=== {type(component).__name__}: {component.describe()}")
        except Exception as failed:  # a diagnosis never hides the failure it explains
            states.append(f"=== {type(component).__name__}: no state ({failed!r})")
    states.extend(_groups_now())
    names = {t.ident: t.name for t in threading.enumerate()}
    stacks = [
        f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame)[-6:])
        for ident, frame in sys._current_frames().items()
    ]
    return "\n".join(states + stacks)


def _groups_now() -> list[str]:
    """Each running component's consumer group as its coordinator sees it: its state and what
    each member was given. A member that holds no partitions while its group gave it some is
    one thing (an assignment not applied), a group that gave it none another (a join that
    left a topic out)."""
    lines = []
    for component in list(_components):
        try:
            admin = AdminClient(admin_config(component.app.settings))
            future = admin.describe_consumer_groups([component.group_id], request_timeout=5)
            group = future[component.group_id].result(timeout=5)
            members = "; ".join(
                f"{m.client_id} {m.host}: {partition_names(list(m.assignment.topic_partitions))}"
                for m in group.members
            )
            state = group.state.name
            lines.append(f"=== group {component.group_id}: {state} [{members or 'empty'}]")
        except Exception as failed:  # a diagnosis never hides the failure it explains
            lines.append(f"=== group {component.group_id}: not described ({failed!r})")
    return lines


@contextmanager
def running(component: Worker | Materializer) -> Iterator[Any]:
    """Run a worker or materializer on a thread; stop and join it at the end."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            component.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    _components.append(component)
    try:
        yield component
    except BaseException as exc:
        if errors:  # the component died first: that is what the test waited on in vain
            exc.add_note(f"{component!r} had failed: {errors[0]!r}")
        if timed_out(exc) and not any(n.startswith(DUMP) for n in getattr(exc, "__notes__", [])):
            exc.add_note(DUMP + threads_now())  # before stop(): where the stuck run is
        raise
    finally:
        _components.remove(component)
        component.stop()
        thread.join(60)
        assert not thread.is_alive(), f"{component!r} did not stop"
    if errors:
        raise errors[0]


@contextmanager
def worker_and_materializer(app: App, **worker_options: Any) -> Iterator[Worker]:
    with running(Materializer(app)), running(Worker(app, **worker_options)) as worker:
        yield worker


def spawn_worker(scope: Scope, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A worker as a real process (`taskstream worker`), sharing the test's scope."""
    return subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "worker", APP_SPEC, *args],
        env=scope.env(**env),
        cwd=REPO,
    )


def spawn_materializer(scope: Scope) -> subprocess.Popen[bytes]:
    """A materializer as a real process (`taskstream materialize`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "materialize", "--app", APP_SPEC],
        env=scope.env(),
        cwd=REPO,
    )


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    state: Callable[[], object] | None = None,
) -> None:
    """Polls ``condition``; on timeout, the error names ``what`` and the ``state`` then."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            seen = f" ({state()})" if state is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        time.sleep(0.05)


def headers_of(message: Message) -> dict[str, bytes]:
    """A consumed record's headers by name (taskstream writes every value as bytes)."""
    return {k: v for k, v in header_pairs(message) if isinstance(v, bytes)}


def read_topic(
    scope: Scope,
    topic: str,
    count: int,
    timeout: float = 30,
    idle: float = 0.0,
    *,
    isolation: str = "read_committed",  # librdkafka's default; read_uncommitted: aborted too
) -> list[Message]:
    """At least ``count`` records of ``topic`` from its start; with ``idle``, also every
    record that arrives until none has for that many seconds. The reader assigns itself every
    partition, with no group: a group join on the embedded broker can take long late in a
    session, and a test that reads a topic needs none."""
    consumer = Consumer(
        {
            "bootstrap.servers": scope.bootstrap_servers,
            "group.id": f"{scope.topic_prefix}.reader-{uuid.uuid4().hex[:6]}",  # never joined
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    messages: list[Message] = []
    assigned = False

    def fetched() -> bool:
        nonlocal assigned
        if not assigned:
            partitions = topic_partitions(consumer, topic)
            if not partitions:
                time.sleep(0.2)  # not created yet
                return False
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            assigned = True
        messages.extend(m for m in consumer.consume(1000, 0.2) if not m.error())
        return len(messages) >= count

    try:
        wait_until(
            fetched,
            timeout,
            f"{count} records on {topic}",
        )
        quiet_since = time.monotonic()
        while idle and time.monotonic() - quiet_since < idle:
            more = [m for m in consumer.consume(1000, 0.2) if not m.error()]
            if more:
                messages.extend(more)
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def worker_metrics(port: int, *prefixes: str) -> dict[str, float]:
    """A worker's Prometheus samples whose names start with one of ``prefixes`` (all when
    none), read from its --metrics-port; empty while it does not serve."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {
        name: float(value)
        for name, value in samples
        if not prefixes or name.startswith(prefixes)
        if not name.partition("{")[0].endswith(("_bucket", "_created"))
    }


def assigned_partitions(port: int) -> int:
    """A worker's taskstream_assigned_partitions, read from its --metrics-port."""
    return int(
        worker_metrics(port, "taskstream_assigned_partitions").get(
            "taskstream_assigned_partitions", 0
        )
    )
