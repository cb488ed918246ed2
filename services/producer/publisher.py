"""Publishes task events: idempotent, acks=all, with a delivery handle per event.

``task.delay()`` is a hot path: a publish costs one small object (a :class:`Delivery`) and the
delivery report one hook call, with the hooks (the metric children) looked up once per task
and queue.

The first event of a queue in this process makes sure the app's topics exist, creating the
missing ones with the configured ``partitions`` (and the queue's topic among them), and the
producer never asks the broker to auto-create a topic, so the broker's auto-creation never
picks a queue's partition count. A cluster that refuses the creation refuses the send
(ConfigError); one that refuses the credentials or the TLS handshake refuses it too
(AuthenticationFailed, TlsFailed: at once, not after the delivery timeout); one that cannot
be reached gets the event queued as before (librdkafka sends it within the delivery timeout
once the topic exists), and a later send tries again.

An event over the producer's ``message.max.bytes`` is refused before it is produced
(MessageTooLarge, naming the task and the size); a KafkaException from ``produce()`` reaches
the caller as a TaskstreamError, never bare.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Message

from taskstream import metrics, tracing
from taskstream.config import Settings
from taskstream.envelope import Envelopes, TaskEvent
from taskstream.errors import (
    AuthenticationFailed,
    BrokerError,
    DeliveryFailed,
    DeliveryTimeout,
    MessageTooLarge,
    TlsFailed,
)
from taskstream.kafka.broker import Broker, KafkaBroker
from taskstream.kafka.clients import producer_config
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.sizes import message_max_bytes, record_size
from taskstream.kafka.topics import event_topic, task_topic, topic_specs

if TYPE_CHECKING:
    from taskstream.app import App

log = logging.getLogger(__name__)

_PENDING: Any = object()  # a Delivery's outcome before the broker's report
_ENSURE_TIMEOUT_S = 5.0  # how long the first send of a queue waits for the cluster's topics
_ENSURE_RETRY_S = 30.0  # after the cluster could not be asked, sends try again this late


class DeliveryHooks:
    """What a delivery report of one (task, queue) calls: no-ops, to override."""

    def delivered(self, seconds: float) -> None:
        """The broker acknowledged an event ``seconds`` after it was produced."""

    def failed(self) -> None:
        """An event was not delivered within the delivery timeout."""


class PublisherHooks:
    """The publisher's hooks: ``for_task`` is asked once per (task, queue), so that a delivery
    report costs one method call."""

    def for_task(self, task: str, queue: str) -> DeliveryHooks:
        return DeliveryHooks()


class _PrometheusDelivery(DeliveryHooks):
    """The metric children of one (task, queue): a delivery report skips ``labels()``."""

    __slots__ = ("_failed", "_produced", "_seconds")

    def __init__(self, task: str, queue: str) -> None:
        self._produced = metrics.EVENTS_PRODUCED.labels(task, queue)
        self._failed = metrics.EVENTS_FAILED.labels(task, queue)
        self._seconds = metrics.DELIVERY_SECONDS.labels(queue)

    def delivered(self, seconds: float) -> None:
        self._produced.inc()
        self._seconds.observe(seconds)

    def failed(self) -> None:
        self._failed.inc()


class PrometheusPublisherHooks(PublisherHooks):
    """The publisher's Prometheus metrics (events produced and failed, delivery seconds)."""

    def for_task(self, task: str, queue: str) -> DeliveryHooks:
        return _PrometheusDelivery(task, queue)


class Delivery:
    """The broker's acknowledgement of one event, with the ``concurrent.futures.Future``
    methods callers use: ``done``, ``result``, ``exception``, ``add_done_callback``.

    ``result()`` returns None once the broker acknowledged the event (acks=all) and raises
    DeliveryFailed when it did not within the delivery timeout. Lighter than a Future: no
    Condition per event; the rare caller that blocks gets an Event made on demand. Every
    delivery of a publisher shares its lock, held only for a few attribute updates.
    """

    __slots__ = (
        "_callbacks",
        "_event",
        "_hooks",
        "_lock",
        "_outcome",
        "_sent",
        "_topic",
        "_wake",
    )

    def __init__(
        self,
        lock: threading.Lock,
        wake: Callable[[], None],
        topic: str,
        hooks: DeliveryHooks,
        sent: float,
    ) -> None:
        self._outcome: DeliveryFailed | None = _PENDING
        self._lock = lock
        self._wake = wake  # asks the producer to serve delivery reports now: someone waits
        self._topic = topic
        self._hooks = hooks
        self._sent = sent
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[Delivery], object]] | None = None

    def __repr__(self) -> str:
        state = "pending" if self._outcome is _PENDING else self._outcome or "delivered"
        return f"<Delivery {self._topic} {state}>"

    def report(self, err: KafkaError | None, _msg: Message) -> None:
        """The producer's delivery callback for this event."""
        if err is None:
            self._hooks.delivered(time.perf_counter() - self._sent)
            outcome = None
        else:
            self._hooks.failed()
            outcome = DeliveryFailed(self._topic, err.str())
            # Said where it happens: a group member or chain step nobody waits on would
            # otherwise leave its workflow waiting without a trace.
            log.error("a task event was not delivered to %s: %s", self._topic, err.str())
        with self._lock:
            self._outcome = outcome
            event, callbacks = self._event, self._callbacks
        if event is not None:
            event.set()
        if callbacks is not None:
            for callback in callbacks:
                self._call(callback)

    def done(self) -> bool:
        return self._outcome is not _PENDING

    def result(self, timeout: float | None = None) -> None:
        """None once acknowledged; DeliveryFailed if not, DeliveryTimeout (a TimeoutError)
        while still pending."""
        outcome = self._wait(timeout)
        if outcome is not None:
            raise outcome

    def exception(self, timeout: float | None = None) -> DeliveryFailed | None:
        return self._wait(timeout)

    def add_done_callback(self, callback: Callable[[Delivery], object]) -> None:
        """Call ``callback(delivery)`` once done: now if it is, else on the producer's thread."""
        with self._lock:
            pending = self._outcome is _PENDING
            if pending:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
        if pending:
            self._wake()
        else:
            self._call(callback)

    def _call(self, callback: Callable[[Delivery], object]) -> None:
        # As a Future does: a failing callback is logged, and must not escape into poll().
        try:
            callback(self)
        except Exception:
            log.exception("a delivery callback of %r raised", self)

    def _wait(self, timeout: float | None) -> DeliveryFailed | None:
        outcome = self._outcome
        if outcome is not _PENDING:
            return outcome
        with self._lock:
            if self._outcome is _PENDING and self._event is None:
                self._event = threading.Event()
            event = self._event
        if event is not None:
            self._wake()
            if not event.wait(timeout):
                raise DeliveryTimeout(self._topic, timeout)
        return self._outcome


class TaskPublisher:
    """Sends task events to their queue's topic, keyed by ordering key (else task id)."""

    def __init__(
        self,
        settings: Settings,
        envelopes: Envelopes,
        broker: Broker | None = None,
        hooks: PublisherHooks | None = None,
    ) -> None:
        self._settings = settings
        self._envelopes = envelopes
        # Never the broker's auto-creation: the first send of a queue creates its topics.
        config = producer_config(settings, **{"allow.auto.create.topics": False})
        self.message_max_bytes = message_max_bytes(config)  # the largest event it sends
        self._broker = broker if broker is not None else KafkaBroker()
        self._producer = EventProducer(config, background_poll=True, broker=self._broker)
        self._topics: dict[str, str] = {}  # queue -> its topic, made sure to exist
        self._unsure: dict[str, float] = {}  # queue -> when to try ensuring it again
        self._hooks = hooks if hooks is not None else PrometheusPublisherHooks()
        self._task_hooks: dict[tuple[str, str], DeliveryHooks] = {}
        self._lock = threading.Lock()

    def publish(self, event: TaskEvent) -> Delivery:
        """Produce ``event``; its Delivery resolves when the broker acknowledged it (acks=all)
        and fails with DeliveryFailed when it did not within the delivery timeout.

        Raises MessageTooLarge, before sending anything, for an event over
        ``message.max.bytes``, and BrokerError when the client refuses it for another reason."""
        value = self._envelopes.encode_task(event)
        key = event.key or event.id
        queue = event.queue
        topic = self._topics.get(queue)
        if topic is None:
            topic = task_topic(self._settings.topic_prefix, queue)
        if event.priority is not None:  # its band's topic (ensured with the queue's)
            topic = event_topic(self._settings.topic_prefix, queue, event.priority)
        headers = (
            tracing.send_headers(event, topic) if tracing.ENABLED and tracing.active() else None
        )
        size = record_size(value, key, headers)
        if size > self.message_max_bytes:
            raise MessageTooLarge(event.task, size, self.message_max_bytes)
        if queue not in self._topics:
            self._ensure(queue)
        hooks = self._task_hooks.get((event.task, queue))
        if hooks is None:
            hooks = self._task_hooks[event.task, queue] = self._hooks.for_task(event.task, queue)
        producer = self._producer
        delivery = Delivery(self._lock, producer.wake, topic, hooks, time.perf_counter())
        try:
            producer.produce(topic, value, key, delivery.report, headers)
        except BrokerError as exc:
            if exc.code == KafkaError.MSG_SIZE_TOO_LARGE:
                raise MessageTooLarge(event.task, size, self.message_max_bytes) from exc
            raise
        return delivery

    def flush(self, timeout: float = 30.0) -> int:
        return self._producer.flush(timeout)

    def _ensure(self, queue: str) -> None:
        """Create the app's missing topics, ``queue``'s (every band) among them; then its
        topic is known."""
        if time.monotonic() < self._unsure.get(queue, 0.0):
            return
        s = self._settings
        specs = topic_specs(
            s.topic_prefix, [queue], s.partitions, s.replication_factor,
            result_expires_s=s.result_expires, revoke_expires_s=s.revoke_expires_s,
        )  # fmt: skip
        try:
            created = self._broker.ensure_topics(s, specs, _ENSURE_TIMEOUT_S)
        except (AuthenticationFailed, TlsFailed):
            raise  # a refusal, not an outage: waiting for the delivery timeout cannot help
        except BrokerError as exc:
            self._unsure[queue] = time.monotonic() + _ENSURE_RETRY_S
            log.warning("cannot check queue %r's topics (%s); its events wait for the topic, "
                        "which a later send creates", queue, exc)  # fmt: skip
            return
        if created:
            log.info("created %d topics with %d partitions: %s",
                     len(created), s.partitions, ", ".join(created))  # fmt: skip
        self._topics[queue] = task_topic(s.topic_prefix, queue)

    def close(self, timeout: float = 30.0) -> int:
        return self._producer.close(timeout)


def for_app(app: App) -> TaskPublisher:
    """An app's default publisher (the ``taskstream.publishers`` entry point ``kafka``)."""
    return TaskPublisher(app.settings, app.envelopes, app.broker)
