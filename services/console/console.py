"""Console: what the console's pages read, in one object the endpoints share.

Outcomes come from the lookup store, backlogs and records from Kafka (:mod:`.kafka_view`),
dead letters through ``taskstream dlq``'s reader and replay, workers from a
:class:`WorkerSource`. Every method blocks (store, Kafka): endpoints call them in a thread.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from taskstream.app import App
from taskstream.avro.json import datum_to_json
from taskstream.envelope import Prepend, TaskEvent
from taskstream.errors import BrokerError, CodecError
from taskstream.kafka.topics import (
    DELAY_TIERS_S,
    delay_topic,
    delays_group,
    high_topic,
    task_topic,
    worker_group,
)
from taskstream.producer.http import HttpService
from taskstream.store import ResultRecord
from taskstream.store.base import Link, OutcomeCount, TaskQuery

from .cache import Cached
from .dead_letters import DeadLetters
from .kafka_view import PartitionBacklog, backlog, read_record
from .workers import NoWorkers, WorkerSource

BACKLOG_MAX_AGE_S = 2.0  # how stale a backlog the pages may show
ARGUMENTS_CACHED = 1024  # task events whose decoded arguments are kept


@dataclass(frozen=True)
class Arguments:
    """A task's arguments as read back from its task event; ``json`` is None when the event
    could not be read (``problem`` says why)."""

    json: Any
    problem: str | None = None
    # A workflow step's first parameter, filled in by the worker (taskstream.consumer.workflow):
    # its name, and where its value came from; it leads ``json``.
    received: str | None = None
    received_from: str | None = None


_PATH_MAX = 50  # ancestors shown on a task's page, at most


class Console:
    """The console's data. `app` gives the Kafka clients and settings (default: an app with
    the service's settings); `workers` the worker list (default: none known)."""

    def __init__(
        self,
        service: HttpService,
        app: App | None = None,
        workers: WorkerSource | None = None,
    ) -> None:
        self.service = service
        self.app = app if app is not None else _app_for(service)
        self.workers: WorkerSource = workers if workers is not None else NoWorkers()
        self.store = service.store
        self.dead_letters = DeadLetters(self.app, self.store)
        prefix = self.app.settings.topic_prefix
        # Each queue's topic, and its high band's (priorities) as a row of its own.
        self.queue_topics: dict[str, str] = {}
        for q in service.catalog.queues:
            self.queue_topics[task_topic(prefix, q)] = q
            self.queue_topics[high_topic(prefix, q)] = f"{q} (high)"
        self.delay_topics = {delay_topic(prefix, t): t for t in DELAY_TIERS_S}
        self._arguments: dict[tuple[str, int, int], Arguments] = {}
        self._lock = threading.Lock()
        self._queue_backlog = Cached(
            lambda: backlog(self.app, worker_group(prefix), list(self.queue_topics)),
            BACKLOG_MAX_AGE_S,
        )
        self._delay_backlog = Cached(
            lambda: backlog(self.app, delays_group(prefix), list(self.delay_topics)),
            BACKLOG_MAX_AGE_S,
        )

    @property
    def tokens(self) -> frozenset[str]:
        return self.service.http.tokens

    @property
    def task_names(self) -> list[str]:
        return sorted(self.service.catalog.tasks)

    def queue_backlog(self) -> list[PartitionBacklog]:
        return self._queue_backlog.get()

    def delay_backlog(self) -> list[PartitionBacklog]:
        return self._delay_backlog.get()

    def outcome_counts(self, minutes: int, bucket_s: int) -> list[OutcomeCount]:
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        return self.store.outcome_counts(since, bucket_s)

    def search(self, query: TaskQuery) -> list[ResultRecord]:
        return self.store.search(query)

    def task(self, task_id: str) -> ResultRecord | None:
        return self.store.get(task_id)

    def workflow(self, task_id: str) -> tuple[Link | None, list[str], list[tuple[str, bool]]]:
        """The task's place in a workflow (parent, root, group), the tasks it sent, and the
        path down to it, root first: ``(id, is_group)`` for each task or group (a group's
        join started what follows it) that led to it, as far as the store has seen them."""
        place = self.store.link(task_id)
        path: list[tuple[str, bool]] = []
        current = place.parent_id if place is not None else None
        seen = {task_id}
        while current is not None and current not in seen and len(path) < _PATH_MAX:
            seen.add(current)
            link = self.store.link(current)
            if link is None and self.store.group(current) is not None:
                path.append((current, True))
                break  # a group has no parent of its own in the store
            path.append((current, False))
            current = link.parent_id if link is not None else None
        return place, self.store.children(task_id), path[::-1]

    def render(self, record: ResultRecord) -> dict[str, Any]:
        """The outcome as the HTTP API's GET /v1/tasks/{id} answers it (result as JSON)."""
        return self.service.render(record)

    def arguments(self, record: ResultRecord) -> Arguments:
        """The arguments of `record`'s task, from the task event it was run from."""
        topic, partition, offset = (
            record.source_topic,
            record.source_partition,
            record.source_offset,
        )
        if topic is None or partition is None or offset is None:
            return Arguments(None, "the outcome does not say which event it came from")
        # A record never changes: a task page that refreshes reads its event from Kafka once.
        where = (topic, partition, offset)
        with self._lock:
            known = self._arguments.get(where)
        if known is None:
            known = self._read_arguments(topic, partition, offset)
            if known.problem is None:  # a read that failed is tried again next time
                with self._lock:
                    if len(self._arguments) >= ARGUMENTS_CACHED:
                        self._arguments.pop(next(iter(self._arguments)))  # the oldest
                    self._arguments[where] = known
        return known

    def _read_arguments(self, topic: str, partition: int, offset: int) -> Arguments:
        try:
            message = read_record(self.app, topic, partition, offset)
        except BrokerError as exc:
            return Arguments(None, f"Kafka could not be read: {exc}")
        if message is None:
            return Arguments(None, f"{topic}[{partition}]@{offset} is no longer in Kafka")
        catalog = self.service.catalog
        try:
            event = catalog.envelopes.decode_task(message.value() or b"")
            args = datum_to_json(catalog.codec.decode(event.args)[1])
            if event.prepend is Prepend.NONE or not isinstance(args, dict):
                return Arguments(args)
            return self._with_received(event, args)
        except CodecError as exc:
            raw = base64.b64encode(message.value() or b"").decode("ascii")
            return Arguments({"avro_base64": raw}, f"cannot decode: {exc}")

    def _with_received(self, event: TaskEvent, tail: dict[str, Any]) -> Arguments:
        """A step's arguments as it ran: its first parameter (the parent's result, a chord's
        list of results or a failed parent's id, which its event carries apart) and the rest."""
        spec = self.service.catalog.tasks.get(event.task)
        fields = spec.args.schema.get("fields", []) if spec is not None else []
        name = str(fields[0]["name"]) if fields else "(first parameter)"
        decode = self.service.catalog.codec.decode
        value: Any
        if event.prepend is Prepend.PARENT_ID:
            value, source = event.parent_id, "the failed parent's task id"
        elif event.prepend is Prepend.VALUE and event.parent_results:
            parent = event.parent_results[0]
            value = datum_to_json(decode(parent.result)[1])
            source = f"the result of its parent ({parent.task})"
        else:
            value = [datum_to_json(decode(p.result)[1]) for p in event.parent_results]
            source = "the results of the group before it, in order"
        return Arguments({name: value, **tail}, received=name, received_from=source)

    def workers_json(self) -> list[dict[str, object]]:
        return self.workers.workers_json()


def _app_for(service: HttpService) -> App:
    """An app with the service's settings and codec (its Kafka clients, the dlq reader's)."""
    app = App("taskstream-console")
    app.settings = service.settings
    app.codec = service.catalog.codec
    app.envelopes = service.catalog.envelopes
    return app
