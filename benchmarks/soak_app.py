"""The soak's app (benchmarks/soak.py): quick tasks, failures, retries and chains.

Worker processes import ``benchmarks.soak_app:app`` (settings from TASKSTREAM_* variables);
the soak's sender builds its own with ``build_app(**settings)``.
"""

from __future__ import annotations

from typing import Any

from taskstream import App, Retry, current_request


def build_app(**settings: Any) -> App:
    app = App("soak", **settings)

    @app.task(name="soak.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="soak.fail")
    def fail(n: int) -> int:
        raise ValueError(f"soak failure {n}")

    @app.task(name="soak.retry_once", max_retries=1)
    def retry_once(n: int) -> int:
        if current_request().attempt < 2:
            raise Retry(countdown=1, exc=RuntimeError("the first attempt fails"))
        return n

    return app


app = build_app()
