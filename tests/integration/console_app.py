"""The integration tests' app plus a task for the console's browser test: one that fails,
dead-lettered at once, until a file exists (so a replay of its letter succeeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskstream import App
from tests.integration.tasks_app import build_app as build_tasks_app


def build_app(**settings: Any) -> App:
    app = build_tasks_app(**settings)

    @app.task(name="itest.console.fragile", autoretry_for=(FileNotFoundError,), max_retries=0)
    def fragile(path: str) -> str:
        """The file's text; FileNotFoundError (retries exhausted: a dead letter) before it
        exists."""
        return Path(path).read_text()

    return app


app = build_app()
