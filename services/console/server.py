"""``taskstream serve``'s application: the HTTP API with the console at ``/ui``.

uvicorn builds it in each service process from ``TASKSTREAM_SERVE_SOURCE`` (see
:mod:`taskstream.producer.http.server`), so ``--workers N`` serves the console too.
"""

from __future__ import annotations

import json
import os
from typing import Any

from taskstream.app import App
from taskstream.config import Settings
from taskstream.loading import load_app
from taskstream.producer.http import HttpService, create_app, protocol
from taskstream.producer.http.server import SOURCE_ENV, Source
from taskstream.worker_directory import WorkerDirectory

from .app import WithConsole
from .console import Console
from .workers import WorkerSource

FACTORY = f"{__name__}:from_environment"


def build(source: Source, workers: WorkerSource | None = None) -> WithConsole:
    """The API and the console; ``workers`` by default from the workers' heartbeats (a
    WorkerDirectory tailing their topic in this process)."""
    app: App | None = None
    if source.app is not None:
        app = load_app(source.app)
        service = HttpService.for_app(app)
        settings = app.settings
    else:
        assert source.schemas is not None
        settings = Settings.load()
        service = HttpService.for_schemas(source.schemas, settings, source.queues)
    protocol.configure(service.http)  # the limits of the connections this process accepts
    if workers is None:
        workers = WorkerDirectory(settings, app.broker if app is not None else None).start()
    return WithConsole(create_app(service), Console(service, app, workers))


def from_environment() -> WithConsole:
    """The uvicorn factory of ``taskstream serve``'s processes."""
    raw: dict[str, Any] = json.loads(os.environ[SOURCE_ENV])
    return build(Source(**raw))
