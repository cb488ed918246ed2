"""The README's HTTP path: `taskstream dev` starts the HTTP API; POST a task, GET its result."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from taskstream.embedded_broker import free_port
from tests.conftest import BrokerHandle
from tests.integration.running import wait_until
from tests.integration.test_cli import dev_env

pytestmark = pytest.mark.integration


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_dev_serves_the_http_api_that_the_readme_curls(
    tmp_path: Path, broker: BrokerHandle
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev = subprocess.Popen(
        [sys.executable, "-m", "taskstream", "dev", "examples.app:app", "--http-port", str(port)],
        cwd=tmp_path, env=dev_env(broker), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(url), 60, "the HTTP API of taskstream dev")
        sent = httpx.post(f"{url}/v1/tasks/examples.app.add", json={"a": 2, "b": 3}, timeout=30)
        assert sent.status_code == 202, sent.text
        done = httpx.get(f"{url}{sent.headers['location']}", params={"wait": 30}, timeout=40).json()
        assert (done["status"], done["result"]) == ("SUCCESS", 5)
    finally:
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=60)
    assert dev.returncode == 0, out
    assert f"curl -s -X POST {url}/v1/tasks/examples.app.add" in out
