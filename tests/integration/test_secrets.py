"""No process prints the PostgreSQL password (issue 26, item 5): the materializer's start
line and its --rebuild warning, and `taskstream serve` answering requests, run against a
store URL with a planted password (the test server trusts loopback: any password connects).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from taskstream.cli.embedded_broker import free_port
from tests.conftest import REPO, Scope
from tests.integration.running import APP_SPEC, wait_until

pytestmark = pytest.mark.integration

PLANTED = "pl4nted-s3cret"


def with_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{PLANTED}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@contextmanager
def captured(scope: Scope, store: str, *args: str) -> Iterator[list[str]]:
    """`taskstream --log-level debug ARGS` with `store`; its output lines as they come."""
    process = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "--log-level", "debug", *args],
        env=scope.env(TASKSTREAM_STORE=store), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.decode("utf-8", "replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        process.terminate()
        process.wait(30)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


def test_no_process_prints_the_store_password(scope: Scope, postgres_url: str) -> None:
    store = with_password(postgres_url)
    with captured(scope, store, "materialize", "--app", APP_SPEC, "--rebuild") as lines:
        wait_until(lambda: any("materializing" in x for x in lines), 60, "the start line")
    output = "".join(lines)
    assert "rebuilding" in output and ":***@" in output
    assert PLANTED not in output

    port = free_port()
    with captured(scope, store, "serve", APP_SPEC, "--port", str(port)) as lines:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 60, "taskstream serve")
        assert httpx.get(f"{url}/v1/tasks/some-id").status_code == 404
        assert PLANTED not in httpx.get(f"{url}/metrics").text
        assert PLANTED not in httpx.get(f"{url}/ui").text
    assert lines and PLANTED not in "".join(lines)
