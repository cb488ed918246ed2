"""Publishes task events: idempotent, acks=all, with a delivery future per event."""

from __future__ import annotations

import time
from concurrent.futures import Future

from confluent_kafka import KafkaError, Message

from taskstream import metrics
from taskstream.config import Settings
from taskstream.envelope import Envelopes, TaskEvent
from taskstream.errors import DeliveryFailed
from taskstream.kafka import EventProducer, producer_config
from taskstream.topics import task_topic


class TaskPublisher:
    """Sends task events to their queue's topic, keyed by ordering key (else task id)."""

    def __init__(self, settings: Settings, envelopes: Envelopes) -> None:
        self._settings = settings
        self._envelopes = envelopes
        self._producer = EventProducer(producer_config(settings), background_poll=True)
        self._topics: dict[str, str] = {}

    def publish(self, event: TaskEvent) -> Future[None]:
        """Produce ``event``; the future resolves when the broker acknowledged it (acks=all)
        and fails with DeliveryFailed when it did not within the delivery timeout."""
        topic = self._topics.get(event.queue)
        if topic is None:
            topic = self._topics[event.queue] = task_topic(self._settings.topic_prefix, event.queue)
        delivered: Future[None] = Future()
        sent = time.perf_counter()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                metrics.EVENTS_PRODUCED.labels(event.task, event.queue).inc()
                metrics.DELIVERY_SECONDS.labels(event.queue).observe(time.perf_counter() - sent)
                delivered.set_result(None)
            else:
                metrics.EVENTS_FAILED.labels(event.task, event.queue).inc()
                delivered.set_exception(DeliveryFailed(topic, err.str()))

        self._producer.produce(
            topic, self._envelopes.encode_task(event), event.key or event.id, on_delivery
        )
        return delivered

    def flush(self, timeout: float = 30.0) -> int:
        return self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> int:
        return self._producer.close(timeout)
