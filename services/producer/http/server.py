"""Running the service under uvicorn: ``taskstream serve MODULE:app`` or ``--schemas DIR``.

With ``--workers N`` uvicorn forks N processes that each build the service from the
``TASKSTREAM_SERVE_SOURCE`` variable this module sets (an app spec or ``schemas:DIR``); each
process has its own producer and metrics; Idempotency-Keys live in the lookup store, which
every process (and host) of the service shares.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette

from taskstream.config import Settings

from .api import create_app
from .service import HttpService

SOURCE_ENV = "TASKSTREAM_SERVE_SOURCE"


@dataclass(frozen=True)
class Source:
    """What to serve: an app (``module:attribute``) or a schemas directory."""

    app: str | None = None
    schemas: str | None = None
    queues: dict[str, str] = field(default_factory=dict)  # task -> queue, schemas mode only

    def service(self) -> HttpService:
        if self.app is not None:
            from taskstream.loading import load_app

            return HttpService.for_app(load_app(self.app))
        assert self.schemas is not None
        return HttpService.for_schemas(self.schemas, Settings.load(), self.queues)


def from_environment() -> Starlette:
    """The uvicorn factory of worker processes (``--workers N``)."""
    raw: dict[str, Any] = json.loads(os.environ[SOURCE_ENV])
    app: Starlette = create_app(Source(**raw).service())
    return app


def serve(
    source: Source,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    factory: str | None = None,
) -> None:
    """Serve `source`. `factory` (``module:function``) builds each process's ASGI app from
    ``TASKSTREAM_SERVE_SOURCE`` instead of the API alone: the command line passes the one
    that adds the console, which this package does not import."""
    options = dict(
        host=host, port=port, http="httptools", loop="uvloop", ws="none",
        lifespan="on", access_log=False, log_level="warning", timeout_graceful_shutdown=10,
    )  # fmt: skip
    if factory is not None:
        os.environ[SOURCE_ENV] = json.dumps(
            {"app": source.app, "schemas": source.schemas, "queues": source.queues}
        )
        uvicorn.run(factory, factory=True, workers=workers, **options)  # type: ignore[arg-type]
    elif workers > 1:
        os.environ[SOURCE_ENV] = json.dumps(
            {"app": source.app, "schemas": source.schemas, "queues": source.queues}
        )
        uvicorn.run(f"{__name__}:from_environment", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(source.service()), **options)  # type: ignore[arg-type]
