"""``app.control``: revoking tasks, as records of the control topic every worker reads.

A revocation is one record of the compacted topic ``<prefix>.control`` (topics.py), keyed by
the task id, its value a small JSON object (internal, like the ownership journal; other
languages revoke through the HTTP API or the CLI)::

    {"task_id": "3f0c...", "terminate": false, "at": 1764410000000000}

``at`` is when it was revoked (µs since the epoch). Each worker reads the topic from its
beginning when it starts, then tails it, and keeps the revoked ids in memory for
``revoke_expires_s`` (the topic's retention): so a revocation reaches every worker within a
fetch, and survives worker restarts and workers joining later. A worker's start writes one
``marker`` record and the worker takes tasks only once it has read that marker back: every
revocation written before it was read by then.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message

from taskstream.config import Settings
from taskstream.envelope import now_micros
from taskstream.errors import CorruptMessage, DeliveryFailed
from taskstream.kafka.broker import Broker
from taskstream.kafka.clients import producer_config
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.topics import control_topic, results_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One record of the control topic: ``task_id`` is revoked since ``at`` (µs), and a run
    in progress is stopped when ``terminate``. A ``marker`` names a starting worker instead."""

    task_id: str
    terminate: bool = False
    at: int = 0  # µs since the epoch
    marker: str | None = None

    def encode(self) -> bytes:
        value: dict[str, Any] = {"task_id": self.task_id, "terminate": self.terminate}
        value["at"] = self.at
        if self.marker is not None:
            value["marker"] = self.marker
        return json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Revocation:
        try:
            d = json.loads(data)
            return cls(str(d["task_id"]), bool(d["terminate"]), int(d["at"]), d.get("marker"))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptMessage(f"not a control record: {exc!r}") from exc


class Control:
    """Celery's ``app.control`` for what taskstream supports: :meth:`revoke` (and the
    results topic's tombstones, for ``AsyncResult.forget()``)."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self._settings = settings
        self._broker = broker
        self.topic = control_topic(settings.topic_prefix)
        self._lock = threading.Lock()
        self._producer: EventProducer | None = None

    def revoke(
        self, task_id: str | Iterable[str], *, terminate: bool = False, timeout: float = 30.0
    ) -> None:
        """Revoke one task id (or several): a revoked task never starts, wherever it waits;
        with ``terminate`` a run in progress is stopped too (see docs/guide.md). Returns once
        the broker acknowledged the revocation; raises DeliveryFailed otherwise."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        at = now_micros()
        self.send([Revocation(i, terminate, at) for i in ids], timeout)

    def send(self, records: list[Revocation], timeout: float = 30.0, *, wait: bool = True) -> None:
        """Write control records and wait for their acknowledgement (``wait=False``: do not;
        a delivery error is then only logged)."""
        keyed: list[tuple[str, bytes | None]] = [
            (r.marker or r.task_id, r.encode()) for r in records
        ]
        self._produce(self.topic, keyed, timeout if wait else None)

    def tombstone_result(self, task_id: str, timeout: float = 30.0) -> None:
        """A tombstone for ``task_id`` on the results topic (``AsyncResult.forget()``): the
        materializers delete its outcome, and compaction removes it from the topic, so a
        rebuild does not bring it back."""
        topic = results_topic(self._settings.topic_prefix)
        self._produce(topic, [(task_id, None)], timeout)

    def _produce(
        self, topic: str, records: list[tuple[str, bytes | None]], timeout: float | None
    ) -> None:
        """Write ``(key, value)`` records and wait ``timeout`` for their acknowledgement
        (None: do not wait)."""
        errors: list[str] = []

        def delivered(err: KafkaError | None, _message: Message) -> None:
            if err is not None:
                errors.append(str(err))
                log.warning("control record to %s not delivered: %s", topic, err)

        producer = self._open()
        for key, value in records:
            producer.produce(topic, value, key, delivered)
        if timeout is None:
            producer.poll(0)
            return
        if producer.flush(timeout):
            raise DeliveryFailed(topic, f"not acknowledged within {timeout}s")
        if errors:
            raise DeliveryFailed(topic, errors[0])

    def _open(self) -> EventProducer:
        with self._lock:
            if self._producer is None:
                config = producer_config(self._settings)
                self._producer = EventProducer(config, broker=self._broker)
            return self._producer

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(self._settings.delivery_timeout_ms / 1000)
                self._producer = None
