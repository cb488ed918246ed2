"""The app of the beat integration test: one task on a 1 s schedule (settings from the
environment the test gives each ``taskstream beat`` process)."""

from __future__ import annotations

from taskstream import App

app = App("beat-it")


@app.task
def tick(n: int) -> int:
    return n


app.add_periodic_task(1.0, tick, (1,), name="every-second")
