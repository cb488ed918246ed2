"""`taskstream dev` prints the console's address and serves it, and `taskstream serve`
behind HTTP tokens asks a browser to log in."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from taskstream.cli.embedded_broker import free_port
from tests.conftest import BrokerHandle, Scope
from tests.integration.http_server import serve_process
from tests.integration.running import APP_SPEC, wait_until
from tests.integration.test_cli import dev_env
from tests.integration.test_http_dev import start_dev, wait_for_api

pytestmark = pytest.mark.integration


def test_dev_prints_the_console_address_and_serves_it(tmp_path: Path, broker: BrokerHandle) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev = start_dev(tmp_path, dev_env(broker), port)
    try:
        wait_for_api(dev, url, "the console of taskstream dev", timeout=60, path="/ui")
        sent = httpx.post(f"{url}/v1/tasks/examples.app.add", json={"a": 2, "b": 3}, timeout=30)
        task_id = sent.json()["task_id"]
        httpx.get(f"{url}/v1/tasks/{task_id}", params={"wait": 30}, timeout=40)
        page = httpx.get(f"{url}/ui/tasks/{task_id}", timeout=30).text
        assert "SUCCESS" in page and "examples.app.add" in page
        assert httpx.get(f"{url}/ui/static/console.css", timeout=5).status_code == 200
        # The workers panel reads the workers' heartbeats: dev's worker shows as online.
        wait_until(
            lambda: "badge-online" in httpx.get(f"{url}/ui", timeout=10).text,
            30,
            "dev's worker online on the overview",
        )
    finally:
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=60)
    assert f"console: {url}/ui" in out


def test_serve_with_tokens_sends_a_browser_to_the_login_form(scope: Scope) -> None:
    with serve_process(scope, APP_SPEC, TASKSTREAM_HTTP_TOKENS="s3cret") as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            first = client.get("/ui/dead-letters")
            assert first.status_code == 303 and first.headers["location"].startswith("/ui/login")
            logged = client.post("/ui/login", data={"token": "s3cret", "next": "/ui/delays"})
            assert logged.status_code == 303
            assert client.get("/ui/delays").status_code == 200  # the login cookie
            assert client.get("/v1/tasks").status_code == 401  # the API wants its bearer token


def test_serve_with_several_processes_serves_the_console_from_each(scope: Scope) -> None:
    with serve_process(scope, APP_SPEC, "--workers", "2") as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            pages = [client.get(path) for path in ("/ui", "/ui/tasks", "/ui/delays") * 3]
            assert [p.status_code for p in pages] == [200] * 9
            assert client.get("/healthz").status_code == 200
