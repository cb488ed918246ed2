"""HttpService: what the HTTP routes share (catalog, publisher, store, ingestor, metrics)."""

from __future__ import annotations

import base64
import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from starlette.concurrency import run_in_threadpool

from taskstream.app import App
from taskstream.avro.json import datum_to_json
from taskstream.config import Settings
from taskstream.control import Control
from taskstream.errors import CodecError
from taskstream.kafka.broker import KafkaBroker
from taskstream.kafka.clients import admin_config
from taskstream.outcome_json import outcome_json
from taskstream.store import Progress, ResultRecord, ResultStore, open_store

from .catalog import Catalog
from .idempotency import IdempotencyKeys, RecentIds
from .ingest import Ingestor, Publisher
from .metrics import HttpMetrics
from .settings import HttpSettings

_PROBE_CACHE_S = 1.0  # how long a readiness answer is reused


class BrokerProbe:
    """Whether the broker answers a metadata request, asked at most once a second."""

    def __init__(self, settings: Settings, timeout_s: float = 1.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._admin: AdminClient | None = None
        self._last: tuple[float, bool] = (-1e9, False)

    async def ready(self) -> bool:
        checked_at, ok = self._last
        if time.monotonic() - checked_at < _PROBE_CACHE_S:
            return ok
        ok = await run_in_threadpool(self._ask)
        self._last = (time.monotonic(), ok)
        return ok

    def _ask(self) -> bool:
        try:
            if self._admin is None:
                self._admin = AdminClient(admin_config(self._settings))
            self._admin.list_topics(timeout=self._timeout_s)
            return True
        except KafkaException:
            return False

    def close(self) -> None:
        self._admin = None


class HttpService:
    """Everything a request needs. Build it with :meth:`for_app` / :meth:`for_schemas`, or
    directly with a fake publisher and store in tests. `http` defaults to
    ``HttpSettings.load(settings=settings)`` (the ``TASKSTREAM_HTTP_*`` variables, the event
    limit of `settings`); the store also keeps the Idempotency-Keys, shared with every process
    that uses it."""

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        publisher: Publisher,
        store: ResultStore,
        broker: BrokerProbe | None = None,
        http: HttpSettings | None = None,
        control: Control | None = None,
    ) -> None:
        self.catalog = catalog
        self._control = control  # revocations; opened on the first one
        self.settings = settings
        self.http = HttpSettings.load(settings=settings) if http is None else http
        self.publisher = publisher
        self.store = store
        self.broker = broker
        self.metrics = HttpMetrics()
        self.ingestor = Ingestor(
            catalog,
            publisher,
            self.metrics,
            publish_timeout_s=self.http.publish_timeout_s,
            max_event_bytes=self.http.max_event_bytes,
            idempotency=IdempotencyKeys(store, self.http.idempotency_ttl_s),
            recent=RecentIds(self.http.recent_ids),
        )

    @classmethod
    def for_app(cls, app: App, http: HttpSettings | None = None) -> HttpService:
        """Serve `app`'s tasks, with its settings and codec (its own publisher and store)."""
        from taskstream.producer.publisher import TaskPublisher

        s = app.settings
        publisher = TaskPublisher(s, app.envelopes)
        store = open_store(s.store)
        return cls(Catalog.from_app(app), s, publisher, store, BrokerProbe(s), http)

    @classmethod
    def for_schemas(
        cls,
        directory: str,
        settings: Settings,
        queues: dict[str, str] | None = None,
        http: HttpSettings | None = None,
    ) -> HttpService:
        """Serve the tasks whose schemas are in `directory`, without their code."""
        from taskstream.producer.publisher import TaskPublisher

        catalog = Catalog.from_schemas(directory, queues)
        publisher = TaskPublisher(settings, catalog.envelopes)
        store, probe = open_store(settings.store), BrokerProbe(settings)
        return cls(catalog, settings, publisher, store, probe, http)

    @property
    def control(self) -> Control:
        """Where ``POST /v1/tasks/{id}:revoke`` writes (the control topic)."""
        if self._control is None:
            self._control = Control(self.settings, KafkaBroker())
        return self._control

    async def store_ready(self) -> bool:
        try:
            await run_in_threadpool(self.store.get, "taskstream-readiness-probe")
            return True
        except Exception:
            return False

    def render(self, record: ResultRecord, progress: Progress | None = None) -> dict[str, Any]:
        """A stored outcome as the JSON body of GET /v1/tasks/{id}."""
        return outcome_json(record, self._result_json, progress)

    def _result_json(self, task: str, data: bytes) -> Any:
        codec = self.catalog.codec
        spec = self.catalog.tasks.get(task)
        try:
            if spec is not None:
                return datum_to_json(codec.decode_as(spec.result, data))
            return datum_to_json(codec.decode(data)[1])
        except CodecError:
            # A result whose schema this service does not know: hand over the raw Avro.
            return {"avro_base64": base64.b64encode(data).decode("ascii")}

    def close(self) -> None:
        self.publisher.close(self.http.publish_timeout_s)
        self.store.close()
        if self._control is not None:
            self._control.close()
        if self.broker is not None:
            self.broker.close()
