"""`taskstream dev` as a supervisor: its HTTP API, its metrics, and nothing left behind.

The HTTP path of docs/guide.md (POST a task, GET its result), the children's metrics merged
on the HTTP API's /metrics, and a dev that ends without Ctrl-C (SIGKILL, SIGHUP when the
terminal closes) taking its broker, worker, materializer and HTTP API with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from taskstream.cli.embedded_broker import free_port
from taskstream.config import read_dev_bootstrap
from tests.conftest import BrokerHandle
from tests.integration.running import wait_until
from tests.integration.test_cli import dev_env

pytestmark = pytest.mark.integration


def _answers(url: str, path: str = "/readyz") -> bool:
    try:
        return httpx.get(f"{url}{path}", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for_api(
    dev: subprocess.Popen[str], url: str, what: str, timeout: float = 90, path: str = "/readyz"
) -> None:
    """Until dev's HTTP API answers ``path``; on failure (dev ended, or the timeout), the
    assertion carries what dev printed, read after killing it."""
    deadline = time.monotonic() + timeout
    while not _answers(url, path):
        if dev.poll() is not None or time.monotonic() > deadline:
            ended = dev.poll() is not None
            if not ended:
                dev.kill()
            out, _ = dev.communicate(timeout=30)
            why = f"dev ended ({dev.returncode})" if ended else f"timed out after {timeout}s"
            raise AssertionError(f"{what}: {why}; dev printed:\n{out[-4000:]}")
        time.sleep(0.1)


def start_dev(cwd: Path, env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "dev", "examples.app:app",
         "--http-port", str(port)],
        cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def children_of(pid: int) -> dict[int, str]:
    """Live processes whose parent is `pid`: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = command
    return found


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_end(dev: subprocess.Popen[str], children: dict[int, str], sig: signal.Signals) -> None:
    """Every child of ``dev`` ends within 15 s of ``sig``; else each one left prints where it
    is (SIGUSR1: threads, and a worker's or materializer's state) into dev's output, which
    the failure shows, and is killed."""
    try:
        wait_until(lambda: not any(alive(pid) for pid in children), 15, "every child of dev")
    except AssertionError:
        left = {pid: command for pid, command in children.items() if alive(pid)}
        for pid in left:
            os.kill(pid, signal.SIGUSR1)
        time.sleep(2)  # a failure's diagnosis: the handlers print meanwhile
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if dev.poll() is None:
            dev.kill()
        out, _ = dev.communicate(timeout=30)
        raise AssertionError(
            f"children of dev alive 15 s after {sig.name}: {left}\n{out[-20_000:]}"
        ) from None


def nothing_listens(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server would
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_dev_serves_the_http_api_that_the_readme_curls(
    tmp_path: Path, broker: BrokerHandle
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev = start_dev(tmp_path, dev_env(broker), port)
    try:
        wait_for_api(dev, url, "the HTTP API of taskstream dev")
        sent = httpx.post(f"{url}/v1/tasks/examples.app.add", json={"a": 2, "b": 3}, timeout=30)
        assert sent.status_code == 202, sent.text
        done = httpx.get(f"{url}{sent.headers['location']}", params={"wait": 30}, timeout=40).json()
        assert (done["status"], done["result"]) == ("SUCCESS", 5)
        # The HTTP API's /metrics shows the worker's and the materializer's values too.
        wanted = (
            'taskstream_tasks_succeeded_total{task="examples.app.add"} 1.0',
            "taskstream_results_applied_total 1.0",
            'taskstream_http_tasks_accepted_total{task="examples.app.add"} 1.0',
        )
        wait_until(
            lambda: all(w in httpx.get(f"{url}/metrics", timeout=10).text for w in wanted),
            30,
            "the worker's and the materializer's metrics on the HTTP API's /metrics",
        )
    finally:
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=60)
    assert dev.returncode == 0, out
    assert f"curl -s -X POST {url}/v1/tasks/examples.app.add" in out
    assert not (tmp_path / ".taskstream" / "dev.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_a_dev_that_is_killed_or_hung_up_leaves_no_process_and_frees_its_ports(
    tmp_path: Path, broker: BrokerHandle, sig: signal.Signals
) -> None:
    port, metrics_port = free_port(), free_port()
    env = dev_env(broker) | {"TASKSTREAM_METRICS_PORT": str(metrics_port)}
    dev = start_dev(tmp_path, env, port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_api(dev, url, "the HTTP API of taskstream dev")
        # The worker and the materializer each serve /metrics on a port of their own.
        metrics_ports = (metrics_port, metrics_port + 1)
        wait_until(
            lambda: not any(nothing_listens(p) for p in metrics_ports), 30, "both /metrics ports"
        )
        children = children_of(dev.pid)
        roles = ["worker", "materialize", "serve"] + (["broker"] if broker.embedded else [])
        assert all(any(f" {r} " in c for c in children.values()) for r in roles), children
        dev.send_signal(sig)
        children_end(dev, children, sig)
        wait_until(
            lambda: all(nothing_listens(p) for p in (port, metrics_port, metrics_port + 1)),
            5,
            "the HTTP and metrics ports to be free",
        )
        assert not _answers(url)
        dev.wait(15)
    finally:
        if dev.poll() is None:
            dev.kill()
        out, _ = dev.communicate(timeout=30)
    state = tmp_path / ".taskstream" / "dev.json"
    if sig is signal.SIGHUP:
        assert dev.returncode == 0, out
        assert not state.exists()
    else:
        # A killed dev leaves its file behind; it is ignored, as its pid (and broker) are dead.
        if broker.embedded:
            assert json.loads(state.read_text())["pid"] == dev.pid
        assert read_dev_bootstrap(state) is None


def test_a_dev_started_after_a_killed_one_replaces_its_state_and_gets_the_http_port(
    tmp_path: Path, broker: BrokerHandle
) -> None:
    broker.require_embedded()  # only dev's own broker writes dev.json
    state = tmp_path / ".taskstream" / "dev.json"
    env, port = dev_env(broker), free_port()
    url = f"http://127.0.0.1:{port}"
    first = start_dev(tmp_path, env, port)
    try:
        wait_for_api(first, url, "the first dev's HTTP API")
        with httpx.Client() as client:  # a keep-alive connection open when the server dies
            assert client.get(f"{url}/healthz").status_code == 200
            first.kill()
            first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=30)
    second = start_dev(tmp_path, env, port)
    try:
        wait_for_api(second, url, "the second dev's HTTP API on the same port")
        assert json.loads(state.read_text())["pid"] == second.pid
        assert read_dev_bootstrap(state) is not None
    finally:
        second.send_signal(signal.SIGINT)
        out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out
    assert "already running" not in out and "is taken" not in out
