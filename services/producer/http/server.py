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
from taskstream.kafka.broker import Access, KafkaBroker
from taskstream.kafka.topics import band_topics, control_topic, topic_specs

from . import protocol
from .api import create_app
from .catalog import Catalog
from .service import HttpService
from .settings import HttpSettings

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

    def check(self) -> None:
        """The start-up check (taskstream.kafka.preflight), before uvicorn listens: the cluster
        answers and takes the credentials, the queues' topics exist (created as a first send
        would) and the principal may WRITE them and the control topic (revocations); else
        the taskstream error why, not a failure per request."""
        if self.app is not None:
            from taskstream.loading import load_app

            app = load_app(self.app)
            settings, broker, catalog = app.settings, app.broker, Catalog.from_app(app)
        else:
            assert self.schemas is not None
            settings, broker = Settings.load(), KafkaBroker()
            catalog = Catalog.from_schemas(self.schemas, self.queues)
        s, queues = settings, catalog.queues
        specs = topic_specs(
            s.topic_prefix, queues, s.partitions, s.replication_factor,
            result_expires_s=s.result_expires, revoke_expires_s=s.revoke_expires_s,
        )  # fmt: skip
        broker.ensure_topics(s, specs)
        bands = (t for q in queues for t in band_topics(s.topic_prefix, q))
        writes = (*bands, control_topic(s.topic_prefix))
        broker.check_access(s, Access(writes=writes))


def from_environment() -> Starlette:
    """The uvicorn factory of worker processes (``--workers N``)."""
    raw: dict[str, Any] = json.loads(os.environ[SOURCE_ENV])
    service = Source(**raw).service()
    protocol.configure(service.http)
    app: Starlette = create_app(service)
    return app


def server_options(http: HttpSettings) -> dict[str, Any]:
    """uvicorn's options: the bounded httptools protocol (protocol.py) and its limits."""
    return dict(
        http=protocol.BoundedHttpToolsProtocol, loop="uvloop", ws="none", lifespan="on",
        access_log=False, log_level="warning", timeout_graceful_shutdown=10,
        timeout_keep_alive=http.keepalive_timeout_s, limit_concurrency=http.max_connections,
        h11_max_incomplete_event_size=http.max_header_bytes,
    )  # fmt: skip


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
    # The limits as the environment sets them; each process's factory then applies its
    # service's own (an app's settings) to the connections it accepts.
    options = dict(host=host, port=port, **server_options(protocol.limits()))
    if factory is not None:
        os.environ[SOURCE_ENV] = json.dumps(
            {"app": source.app, "schemas": source.schemas, "queues": source.queues}
        )
        uvicorn.run(factory, factory=True, workers=workers, **options)
    elif workers > 1:
        os.environ[SOURCE_ENV] = json.dumps(
            {"app": source.app, "schemas": source.schemas, "queues": source.queues}
        )
        uvicorn.run(f"{__name__}:from_environment", factory=True, workers=workers, **options)
    else:
        service = source.service()
        protocol.configure(service.http)
        uvicorn.run(create_app(service), **options)
