"""Running the HTTP service for a test: uvicorn on a free loopback port, in a thread or as
a `taskstream serve` process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from taskstream.cli.embedded_broker import free_port
from taskstream.producer.http import HttpService, create_app, protocol
from taskstream.producer.http.server import server_options
from tests.conftest import REPO, Scope


@contextmanager
def serving(service: HttpService) -> Iterator[str]:
    """Serve `service` on 127.0.0.1:<free port> in a thread; yields the base URL."""
    port = free_port()
    protocol.configure(service.http)
    options = server_options(service.http)
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the HTTP service did not start"
        assert time.monotonic() < deadline, "the HTTP service did not start within 20s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the HTTP service did not stop"


@contextmanager
def serve_process(scope: Scope, *args: str, **env: str) -> Iterator[str]:
    """`taskstream serve ARGS --port <free>` as a process sharing the test's scope."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "serve", *args, "--port", str(port)],
        env=scope.env(**env),
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"taskstream serve exited with {process.returncode}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "taskstream serve did not answer within 30s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
