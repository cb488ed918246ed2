"""A thin layer over confluent-kafka: client configs, topic creation, an event producer.

Client configs merge, in rising precedence: taskstream's defaults, the user's librdkafka
settings (``Settings.kafka``), then what the caller states explicitly, so any librdkafka
setting (SASL, TLS, compression) can be passed through.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # stub: no __all__

from taskstream import preflight, rdkafka_log
from taskstream.config import Settings
from taskstream.errors import BrokerError, ConfigError, NotAuthorized
from taskstream.topics import TopicSpec

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
# A record's headers as Producer.produce takes them (a list: invariant, so build it as this).
Headers = list[tuple[str, str | bytes | None]]


def record_position(message: Message) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` of a record, or None for a consumer error event (logged;
    a fatal one raises)."""
    error = message.error()
    if error is not None:
        if error.fatal():
            raise BrokerError(error, "consuming")
        log.warning("consumer error: %s", error)
        return None
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def worker_id() -> str:
    """``host:pid``, the name a worker gives itself in results and client ids."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _merge(
    settings: Settings, defaults: dict[str, Any], explicit: dict[str, Any]
) -> dict[str, Any]:
    # librdkafka's log through Python logging, repeats rate-limited (taskstream.rdkafka_log)
    config = {
        "bootstrap.servers": settings.require_bootstrap(),
        "logger": rdkafka_log.LOGGER,
        **defaults,
    }
    config.update(settings.kafka)
    config.update(explicit)
    return config


# gzip because every Kafka client decompresses it without plugins (kafkajs reads only
# uncompressed and gzip batches natively, kafka-python needs extra packages for the others);
# level 1 because, for taskstream's ~140-200 byte events, it compresses within 5% of the
# default level 6 at about half the CPU. Measured (benchmarks/compression.py) and discussed
# in docs/operations.md (Compression).
DEFAULT_COMPRESSION: dict[str, Any] = {"compression.type": "gzip", "compression.level": 1}


def producer_config(settings: Settings, **explicit: Any) -> dict[str, Any]:
    chosen = {**settings.kafka, **explicit}
    codec = chosen.get("compression.type", chosen.get("compression.codec"))
    # The level means something else to another codec: a user's own codec keeps its default.
    compression = DEFAULT_COMPRESSION if codec in (None, "gzip") else {}
    return _merge(
        settings,
        {
            "client.id": f"taskstream-producer-{worker_id()}",
            # Idempotence brings acks=all and in-order, duplicate-free retries per partition.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.linger_ms,
            "delivery.timeout.ms": settings.delivery_timeout_ms,
            # librdkafka's default, stated because it is part of the wire contract: a key's
            # partition is CRC-32(key) mod the partition count, and a client in another
            # language must partition alike to keep a key's events in order (docs/wire-format.md).
            "partitioner": "consistent_random",
            **compression,
        },
        explicit,
    )


def consumer_config(
    settings: Settings, group_id: str, *, strategy: str | None = None, **explicit: Any
) -> dict[str, Any]:
    """A consumer's config; ``strategy``: its default partition assignment strategy (a user's
    ``partition.assignment.strategy`` setting wins over it)."""
    if settings.group_protocol == "consumer":
        # KIP-848: the broker owns assignment (always incremental), session and heartbeat;
        # librdkafka refuses those client settings with this protocol.
        group: dict[str, Any] = {"group.protocol": "consumer"}
    else:
        group = {
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        }
        if strategy is not None:
            group["partition.assignment.strategy"] = strategy
    return _merge(
        settings,
        {
            **group,
            "group.id": group_id,
            "client.id": f"taskstream-consumer-{worker_id()}",
            # Offsets are committed by taskstream, only for work whose outcome is delivered.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "enable.partition.eof": False,
        },
        explicit,
    )


def incremental_assignment(config: dict[str, Any]) -> bool:
    """Whether a consumer of `config` gets incremental (cooperative) assignments: KIP-848's
    protocol always, the classic one with a cooperative assignor."""
    if config.get("group.protocol") == "consumer":
        return True
    return "cooperative" in str(config.get("partition.assignment.strategy", ""))


def topic_partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """``topic``'s partition numbers, sorted, from the cluster's metadata; empty while the
    topic does not exist. KafkaException when the cluster does not answer."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    return sorted(metadata.partitions)


def header_pairs(message: Message) -> Headers:
    """A record's headers as (name, value) pairs, [] when it has none. A consumed record
    carries a list; confluent-kafka's stub also allows the dict that produce() takes."""
    headers = message.headers()
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else headers


def admin_config(settings: Settings) -> dict[str, Any]:
    return _merge(settings, {"client.id": f"taskstream-admin-{worker_id()}"}, {})


@dataclass(frozen=True)
class Access:
    """What a process needs of the cluster's ACLs: topics it reads and writes, consumer
    groups it joins."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


class Broker(Protocol):
    """Where an app's Kafka clients come from: the real cluster (:class:`KafkaBroker`) or the
    in-memory :class:`taskstream.testing.stub_broker.StubBroker` of unit tests and
    ``taskstream.testing``.

    The clients it returns have confluent-kafka's ``Consumer`` and ``Producer`` API (the
    part taskstream uses), so the code above this seam is the same for both.
    """

    def consumer(self, config: dict[str, Any]) -> Consumer: ...

    def producer(self, config: dict[str, Any]) -> Producer: ...

    def ensure_topics(
        self, settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
    ) -> list[str]:
        """Create the topics that do not exist yet; returns the names created."""
        ...

    def partition_counts(
        self, settings: Settings, names: Iterable[str], timeout: float = 30.0
    ) -> dict[str, int]:
        """The partition count of each of ``names`` that exists."""
        ...

    def check_access(self, settings: Settings, access: Access, timeout: float = 30.0) -> None:
        """A process's start-up check (taskstream.preflight): the cluster answers, takes
        the credentials, and its ACLs allow ``access``; else the taskstream error why."""
        ...


class KafkaBroker:
    """The real thing: confluent-kafka clients for the cluster in the settings."""

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Producer:
        return Producer(config)

    def ensure_topics(
        self, settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
    ) -> list[str]:
        return ensure_topics(settings, specs, timeout)

    def check_access(self, settings: Settings, access: Access, timeout: float = 30.0) -> None:
        admin = preflight.connect(admin_config(settings), timeout)
        preflight.check_access(
            admin, settings.kafka.get("sasl.username", ""),
            reads=access.reads, writes=access.writes, groups=access.groups, timeout=timeout,
        )  # fmt: skip

    def partition_counts(
        self, settings: Settings, names: Iterable[str], timeout: float = 30.0
    ) -> dict[str, int]:
        admin = AdminClient(admin_config(settings))
        try:
            topics = admin.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise BrokerError.wrap(exc, "listing topics") from exc
        return {
            n: len(topics[n].partitions) for n in names if n in topics and topics[n].error is None
        }


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. The first
    request is the start-up check of the connection (taskstream.preflight.connect): wrong
    credentials or an untrusted certificate raise at once, not after the timeout."""
    admin = preflight.connect(admin_config(settings), timeout)
    try:
        cluster = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError.wrap(exc, "listing topics") from exc
    existing = set(cluster.topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            ):  # (a topic the principal may not describe is not listed: it looks missing)
                username = settings.kafka.get("sasl.username", "")
                raise NotAuthorized("CREATE", "topic", name, username) from exc
            if code != KafkaError.TOPIC_ALREADY_EXISTS:  # a racing creator won
                raise ConfigError(f"cannot create topic {name!r}: {exc}") from exc
    addresses = [f"{b.host}:{b.port}" for b in cluster.brokers.values()]
    known_everywhere(settings, addresses, [s.name for s in missing], timeout)
    return created


_PER_BROKER_S = 5.0  # a broker that does not list the new topics this soon is passed over


def known_everywhere(
    settings: Settings, brokers: list[str], names: list[str], timeout: float = 30.0
) -> None:
    """Wait until every broker of ``brokers`` (``host:port``) lists ``names`` with a leader
    for each partition.

    Each broker of a cluster learns a new topic at its own pace (KRaft's metadata log). A
    consumer group's leader that gets its metadata from one that has not yet leaves the topic
    out of the assignment, and librdkafka does not rejoin for it (measured on Apache Kafka 4.4,
    three nodes: one join in fifteen right after the creation got no partitions, for good).
    So the creator waits: it asks each broker in turn, through a client bootstrapped on that
    broker alone (a client's first metadata request goes to its bootstrap broker)."""
    deadline = time.monotonic() + timeout
    for address in brokers:
        until = min(deadline, time.monotonic() + _PER_BROKER_S)
        while not _lists(settings, address, names, max(0.1, until - time.monotonic())):
            if time.monotonic() >= until:
                log.warning("broker %s does not list the new topics yet", address)
                break
            time.sleep(0.05)


def _lists(settings: Settings, address: str, names: list[str], timeout: float) -> bool:
    """Whether the broker at ``address`` lists every topic of ``names``, each partition
    with a leader (one metadata request, from a client that knows no other broker yet)."""
    client = AdminClient({**admin_config(settings), "bootstrap.servers": address})
    try:
        return topics_led(client.list_topics(timeout=timeout).topics, names)
    except KafkaException:
        return False


def topics_led(topics: dict[str, Any], names: Iterable[str]) -> bool:
    """Whether metadata ``topics`` (``list_topics().topics``) has every one of ``names``,
    each partition with a leader."""
    for name in names:
        topic = topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            return False
        if any(p.leader < 0 for p in topic.partitions.values()):
            return False
    return True


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
