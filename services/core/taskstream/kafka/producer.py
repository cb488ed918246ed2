"""The event producer: idempotent, acks=all, its delivery reports served where they belong."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from taskstream.errors import BrokerError
from taskstream.kafka import rdkafka_log
from taskstream.kafka.broker import Broker, KafkaBroker
from taskstream.kafka.clients import DeliveryCallback, Headers

log = logging.getLogger(__name__)


# Closing while every broker is down: stop waiting for deliveries after this long without
# one, in seconds (a broker that answers delivers within milliseconds).
_CLOSE_GIVE_UP_S = 1.0
_CLOSE_STEP_S = 0.1

# While a thread produces (and so serves delivery reports, see EventProducer.produce) the
# background poller checks this often whether it still does, in seconds: the most a report
# waits once that thread stops, if nobody waits for it (about the 2 ms linger.ms default).
_PRODUCER_ACTIVE_CHECK_S = 0.002


class _Serving(threading.local):
    """Whether this thread is inside a poll() or flush() of the producer, running callbacks.

    confluent-kafka keeps one call state per thread: a poll() from within a delivery callback
    (a callback that produces again) would clear the outer poll's state and crash the
    interpreter at its next callback. So produce() only serves reports outside of one.
    """

    active = False


class EventProducer:
    """An idempotent, acks=all producer.

    Delivery callbacks run in whichever thread calls :meth:`poll`. With
    ``background_poll=True`` a daemon thread polls, which suits callers (``task.delay``) that
    have no loop of their own, and :meth:`produce` serves the reports that are ready on the
    calling thread (``poll(0)``, as confluent's examples do), so callbacks then run on either
    thread. A worker polls from its own loop instead so that its callbacks run on the thread
    that owns its offset bookkeeping.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        background_poll: bool = False,
        broker: Broker | None = None,
    ) -> None:
        self._name = str(config.get("client.id", "producer"))
        self._user_error_cb: Callable[[KafkaError], None] | None = config.get("error_cb")
        self._all_down = False  # librdkafka said every broker is down, no delivery since
        config = {**config, "error_cb": self._on_error}
        self._producer = (broker or KafkaBroker()).producer(config)
        self._owner = threading.get_ident()  # the thread whose poll() serves the callbacks
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None
        self._produced = False  # a thread produced (and polled) since the poller last looked
        self._wakeup = threading.Event()
        self._serving = _Serving()
        if background_poll:
            self._poller = threading.Thread(
                target=self._poll_forever, name="taskstream-producer-poll", daemon=True
            )
            self._poller.start()

    def produce(
        self,
        topic: str,
        value: bytes | None,  # None: a tombstone (compaction deletes the key)
        key: str | bytes | None = None,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
        partition: int = -1,
    ) -> None:
        producer = self._producer
        while True:
            try:
                # Positional, and headers only when there are some: confluent-kafka parses
                # keyword arguments slowly enough to show in task.delay()'s rate.
                if headers is None:
                    producer.produce(topic, value, key, partition, on_delivery)
                else:
                    producer.produce(topic, value, key, partition, on_delivery, headers=headers)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry;
                # on a thread that must not run the owner's callbacks, wait for the owner to.
                if self._poller is None and threading.get_ident() != self._owner:
                    time.sleep(0.005)
                else:
                    producer.poll(0.05)
            except KafkaException as exc:  # e.g. MSG_SIZE_TOO_LARGE, or a fatal producer error
                raise BrokerError.wrap(exc, f"producing to {topic!r}") from exc
        if self._poller is not None and not self._serving.active:
            self.poll(0)
            self._produced = True

    def wake(self) -> None:
        """Have the background poller serve delivery reports now: someone waits for one."""
        self._wakeup.set()

    def poll(self, timeout: float = 0.0) -> int:
        return self._serve(self._producer.poll, timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        return self._serve(self._producer.flush, timeout)

    def _serve(self, call: Callable[[float], int], timeout: float) -> int:
        """``call`` (poll or flush, which run delivery callbacks), marked as serving them."""
        serving = self._serving
        nested, serving.active = serving.active, True
        try:
            return call(timeout)
        finally:
            serving.active = nested

    def __len__(self) -> int:
        return len(self._producer)

    def close(self, timeout: float = 30.0, *, expendable: str | None = None) -> int:
        """Flush for up to ``timeout`` s and stop; returns how many events were not delivered.

        ``expendable``: what the events still queued at close are, when the caller can do
        without them (their loss costs a recovery elsewhere, not data). Then, while every
        broker is down (librdkafka's ``_ALL_BROKERS_DOWN``), it stops waiting after a second
        without a delivery and logs one warning that says so. Without it, a close waits its
        timeout for a broker to come back (a client's task events)."""
        remaining = self._flush_to_close(timeout, give_up=expendable is not None)
        self._closed.set()
        self._wakeup.set()
        if self._poller is not None:
            self._poller.join(timeout=1.0)
        if remaining and expendable is not None and self._all_down:
            log.warning("the broker is gone: %d events not delivered (%s)", remaining, expendable)
        elif remaining:
            log.error("%d events were still undelivered when the producer closed", remaining)
        return remaining

    def _flush_to_close(self, timeout: float, *, give_up: bool) -> int:
        if not give_up:
            return self.flush(timeout)
        start = time.monotonic()
        deadline, progress_at = start + timeout, start
        remaining = len(self._producer)
        while True:
            now = time.monotonic()
            left = self.flush(max(0.0, min(_CLOSE_STEP_S, deadline - now)))
            now = time.monotonic()
            if left < remaining:
                self._all_down, progress_at = False, now  # a broker answers after all
            remaining = left
            if not left or now >= deadline:
                return left
            if self._all_down and now - progress_at >= _CLOSE_GIVE_UP_S:
                return left

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error events (served by poll/flush): what was logged without an
        ``error_cb``, through the rate-limited log; notes whether every broker is down."""
        code = error.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            self._all_down = True
        # A connection failure is in librdkafka's own log already (its FAIL line).
        level = logging.DEBUG if code == KafkaError._TRANSPORT else logging.WARNING
        level = logging.ERROR if error.fatal() else level
        rdkafka_log.LOGGER.log(level, "%s [%s] %s", "ERROR", self._name, error.str())
        if self._user_error_cb is not None:
            self._user_error_cb(error)

    def _poll_forever(self) -> None:
        wakeup = self._wakeup
        while not self._closed.is_set():
            if self._produced and not wakeup.is_set():
                # A thread is producing and serves the reports as it goes. Taking them here
                # too would pass the GIL back and forth once per report (each callback takes
                # it), which cost task.delay() 15-30% of its rate; so keep out of its way
                # while that thread produces, unless someone waits for a report (wake()).
                self._produced = False
                wakeup.wait(_PRODUCER_ACTIVE_CHECK_S)
                continue
            wakeup.clear()
            self.poll(0.1)
