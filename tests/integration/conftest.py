"""Fixtures of the integration tests: the test app in a test's scope, and worker processes
that are killed at the end whatever happened."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from taskstream import App
from tests.conftest import Scope
from tests.integration.running import DUMP, threads_now, timed_out
from tests.integration.tasks_app import build_app

FAILED = pytest.StashKey[bool]()  # the test's call failed (its processes say where they were)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A test that timed out waiting, with its worker and materializer in a fixture (still
    running now, before the fixtures' teardown): the report says where records wait."""
    outcome: Any = yield
    report = outcome.get_result()
    if call.when != "call":
        return
    item.stash[FAILED] = report.failed
    error = call.excinfo.value if call.excinfo is not None else None
    if report.failed and error is not None and timed_out(error):
        if DUMP not in str(report.longrepr):
            report.sections.append(("where records wait", threads_now()))


@pytest.fixture
def app(scope: Scope) -> Iterator[App]:
    app = build_app(**scope.settings())
    app.ensure_topics()
    yield app
    app.close()


@pytest.fixture
def processes(request: pytest.FixtureRequest) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    alive = [p for p in started if p.poll() is None]
    if alive and request.node.stash.get(FAILED, False):
        for p in alive:  # taskstream's processes print their state and threads on SIGUSR1
            p.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(30)
