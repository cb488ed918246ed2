"""Fixtures of the integration tests: the test app in a test's scope, and worker processes
that are killed at the end whatever happened."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from taskstream import App
from tests.conftest import Scope
from tests.integration.tasks_app import build_app


@pytest.fixture
def app(scope: Scope) -> Iterator[App]:
    app = build_app(**scope.settings())
    app.ensure_topics()
    yield app
    app.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(30)
