"""The app the integration tests run, in-process and in worker processes.

Worker processes get their settings from TASKSTREAM_* variables (see Scope.env)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from taskstream import App


def build_app(**settings: Any) -> App:
    app = App("itest", **settings)

    @app.task(name="itest.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="itest.fail")
    def fail(message: str) -> int:
        raise ValueError(message)

    @app.task(name="itest.nap")
    def nap(seconds: float, tag: int) -> int:
        time.sleep(seconds)
        return tag

    @app.task(name="itest.async_mul")
    async def async_mul(a: int, b: int) -> int:
        await asyncio.sleep(0.001)
        return a * b

    return app


app = build_app()
