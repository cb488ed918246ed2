"""The README's path: `taskstream dev`, then `send` and `result` from another terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from taskstream.cli.embedded_broker import free_port
from tests.conftest import REPO, BrokerHandle
from tests.integration.running import wait_until

pytestmark = pytest.mark.integration


def cli(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskstream.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@contextmanager
def dev_running(
    cwd: Path,
    env: dict[str, str],
    embedded: bool,
    app: str = "examples.app:app",
    *options: str,
    ready_s: float = 30,
) -> Iterator[list[str]]:
    """`taskstream dev examples.app:app [options]` in ``cwd`` until the block ends, then
    Ctrl-C; with ``embedded``, the block starts once dev's broker serves (``ready_s``)."""
    output: list[str] = []
    dev = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "dev", app, *options],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        if embedded:
            wait_until(lambda: (cwd / ".taskstream" / "dev.json").exists(), ready_s, "dev broker")
        yield output
    finally:
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=60)
        output.append(out)
    assert dev.returncode == 0, out
    assert not (cwd / ".taskstream" / "dev.json").exists()


def dev_env(broker: BrokerHandle | None) -> dict[str, str]:
    """The environment of dev and the commands beside it (``broker`` None: dev starts its
    own broker whatever the session's is)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSTREAM_")}
    env["PYTHONPATH"] = str(REPO)
    env["TASKSTREAM_SESSION_TIMEOUT_MS"] = "6000"
    if broker is not None and broker.embedded is None:  # an external cluster: dev uses it
        env["TASKSTREAM_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        env["TASKSTREAM_TOPIC_PREFIX"] = f"cli-{os.getpid()}"
    return env


def send_add(cwd: Path, env: dict[str, str], a: int, b: int) -> tuple[str, str]:
    sent = cli("send", "examples.app.add", json.dumps({"a": a, "b": b}), "--app",
               "examples.app:app", "--wait", "30", cwd=cwd, env=env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    task_id, value = sent.stdout.split()
    return task_id, value


def test_dev_then_send_and_result_from_another_terminal(
    tmp_path: Path, broker: BrokerHandle
) -> None:
    env = dev_env(broker)
    with dev_running(tmp_path, env, broker.embedded is not None) as output:
        task_id, value = send_add(tmp_path, env, 2, 3)
        assert value == "5"
        shown = cli("result", task_id, "--app", "examples.app:app", cwd=tmp_path, env=env)
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        assert record["status"] == "SUCCESS" and record["result"] == 5

        order = json.dumps(
            {"order": {"order_id": "o-1", "amount_cents": 1000, "items": ["a", "b"],
                       "placed_at": "2026-11-25T10:00:00+00:00"}, "discount_percent": 10}
        )  # fmt: skip
        sent = cli("send", "examples.app.process_order", order, "--app", "examples.app:app",
                   "--key", "customer-42", "--wait", "30", cwd=tmp_path, env=env)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout.split("\n", 1)[1]) == {
            "order_id": "o-1", "total_cents": 900, "item_count": 2,
        }  # fmt: skip

        failed = cli("send", "examples.app.divide", '{"a": 1, "b": 0}', "--app", "examples.app:app",
                     "--wait", "30", cwd=tmp_path, env=env)  # fmt: skip
        assert failed.returncode == 1
        assert "ZeroDivisionError" in failed.stdout and "Traceback" in failed.stderr

        bad = cli("send", "examples.app.add", '{"a": "two"}', "--app", "examples.app:app",
                  cwd=tmp_path, env=env)  # fmt: skip
        assert bad.returncode == 2 and "args.a" in bad.stderr
    assert "send examples.app.add" in output[0]


KILLER_APP = """
import os, signal
from taskstream import App

app = App("killer")

@app.task(name="killer.die")
def die() -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0

@app.task(name="killer.add")
def add(a: int, b: int) -> int:
    return a + b
"""


def test_dev_restarts_a_worker_killed_by_its_task_and_stops_only_on_ctrl_c(
    tmp_path: Path, broker: BrokerHandle
) -> None:
    (tmp_path / "killer.py").write_text(KILLER_APP)
    env = dev_env(broker)
    env["TASKSTREAM_WORKER_LOST_MAX_DELIVERIES"] = "1"  # the first death ends its retries
    with dev_running(tmp_path, env, broker.embedded is not None, "killer:app") as output:
        died = cli("send", "killer.die", "{}", "--app", "killer:app", "--wait", "90",
                   cwd=tmp_path, env=env, timeout=120)  # fmt: skip
        assert died.returncode == 1 and "WorkerLost" in died.stdout, died.stdout + died.stderr
        sent = cli("send", "killer.add", '{"a": 1, "b": 2}', "--app", "killer:app",
                   "--wait", "90", cwd=tmp_path, env=env, timeout=120)  # fmt: skip
        assert sent.returncode == 0 and sent.stdout.split()[1] == "3", sent.stderr
    out = output[0]
    assert "the worker exited with -9; restarting it in 1s" in out
    assert "the worker restarted" in out
    assert "stopping: the worker finishes its tasks in flight" in out
    assert "received SIGINT: stopping; waiting up to" in out


def test_a_second_dev_run_in_the_same_directory_starts_clean(
    tmp_path: Path, broker: BrokerHandle
) -> None:
    broker.require_embedded()  # dev's own broker starts empty; the store must too
    env = dev_env(broker)
    with dev_running(tmp_path, env, embedded=True):
        for i in range(30):
            send_add(tmp_path, env, i, i)
    with dev_running(tmp_path, env, embedded=True):
        assert send_add(tmp_path, env, 20, 22)[1] == "42"


def test_serve_prints_the_address_it_listens_on(tmp_path: Path, broker: BrokerHandle) -> None:
    port = free_port()
    env = dev_env(broker) | {"TASKSTREAM_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    serve = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "serve", "examples.app:app", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        first = serve.stdout.readline()
    finally:
        serve.terminate()
        serve.communicate(timeout=30)
    assert first == f"taskstream serve: examples.app:app on http://127.0.0.1:{port}\n"
