"""Workers you can see: the heartbeat a worker publishes, and the directory that reads them.

Every worker process publishes a heartbeat every ``worker_heartbeat_s`` seconds to the
topic ``<prefix>.heartbeats`` (compacted, keyed by worker id: the latest beat per worker is
what counts), from a timer thread, never per task. A beat is JSON (internal, not part of
the Avro contract in ``schemas/``)::

    {"worker_id": "host:4242", "hostname": "host", "pid": 4242, "version": "0.1.0",
     "queues": ["default"], "partitions": [{"topic": "...", "partition": 3}],
     "concurrency": 4, "processing_guarantee": "at-least-once",
     "running": [{"task_id": "...", "task": "...", "started_at": 1.7e9}],
     "throttled": 0,
     "counts": {"started": 10, "succeeded": 9, ...},
     "lag": [{"topic": "...", "partition": 3, "records": 12, "seconds": 0.4}],
     "state": "online", "sent_at": 1.7e9, "interval": 2.0}

A worker that stops cleanly publishes a last beat with ``"state": "offline"``. One that
vanished (SIGKILL, a lost host) stops beating: the directory shows it as ``lost`` once
``MISSED_BEATS`` of its beats are overdue. Times are epoch seconds on the worker's clock,
so the hosts' clocks should agree to within a beat (NTP).

:class:`WorkerDirectory` reads the topic from its beginning, then tails it; it is a plain
reader (assigned partitions, no group, nothing committed), so the producer side (the HTTP
service and its console) can use it without the consumer runtime.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from taskstream import clock
from taskstream.config import Settings
from taskstream.errors import BrokerError
from taskstream.kafka.broker import Broker, KafkaBroker
from taskstream.kafka.clients import consumer_config, record_position, topic_partitions
from taskstream.kafka.topics import heartbeats_topic

log = logging.getLogger(__name__)

ONLINE, OFFLINE, LOST = "online", "offline", "lost"
MISSED_BEATS = 3  # beats overdue before a worker that said nothing is shown as lost
_SLACK_S = 1.0  # on top of them: a beat delayed by a busy broker or host is not a loss
_FETCH_WAIT_MS = 250  # beats come every few seconds: no need to fetch eagerly

Beat = dict[str, Any]


def encode_beat(beat: Mapping[str, Any]) -> bytes:
    return json.dumps(beat, separators=(",", ":")).encode()


def decode_beat(data: bytes) -> Beat | None:
    """A beat from its record value; None when it is not one (logged, skipped)."""
    try:
        beat = json.loads(data)
    except ValueError:
        log.warning("a heartbeat that is not JSON was skipped")
        return None
    if not isinstance(beat, dict) or not isinstance(beat.get("worker_id"), str):
        log.warning("a heartbeat without a worker id was skipped")
        return None
    return beat


def worker_state(beat: Mapping[str, Any], now: float) -> str:
    """online, offline (said so), or lost (``MISSED_BEATS`` beats overdue)."""
    if beat.get("state") == OFFLINE:
        return OFFLINE
    interval = float(beat.get("interval") or 0) or 1.0
    sent_at = float(beat.get("sent_at") or 0)
    return LOST if now - sent_at > MISSED_BEATS * interval + _SLACK_S else ONLINE


def worker_json(beat: Mapping[str, Any], now: float) -> dict[str, object]:
    """One worker as the console and ``taskstream workers --json`` show it."""
    return {
        "worker_id": beat["worker_id"],
        "hostname": beat.get("hostname", ""),
        "pid": beat.get("pid", 0),
        "version": beat.get("version", ""),
        "queues": list(beat.get("queues") or []),
        "partitions": list(beat.get("partitions") or []),
        "concurrency": beat.get("concurrency", 0),
        # A beat of a version before the setting: at least once, the only mode there was.
        "processing_guarantee": beat.get("processing_guarantee", "at-least-once"),
        "running": list(beat.get("running") or []),
        "throttled": int(beat.get("throttled") or 0),  # runs held back by a rate limit
        "counts": dict(beat.get("counts") or {}),
        "lag": list(beat.get("lag") or []),
        "state": worker_state(beat, now),
        "last_beat": float(beat.get("sent_at") or 0),
        "warnings": list(beat.get("warnings") or []),
    }


class WorkerDirectory:
    """Every worker's latest heartbeat: ``read_to_end()`` once (the CLI), or ``start()`` to
    keep tailing the topic on a daemon thread (a long-running service); then
    ``workers_json()`` at any time, from any thread. ``close()`` when done."""

    def __init__(
        self,
        settings: Settings,
        broker: Broker | None = None,
        *,
        now: Callable[[], float] = clock.now,
    ) -> None:
        self.topic = heartbeats_topic(settings.topic_prefix)
        self._settings = settings
        self._broker = broker if broker is not None else KafkaBroker()
        self._now = now
        self._beats: dict[str, Beat] = {}
        self._lock = threading.Lock()
        self._read_up_to: dict[int, int] = {}  # partition -> next offset to read
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    # -- what it knows ----------------------------------------------------------------------

    def workers_json(self) -> list[dict[str, object]]:
        """The workers, JSON-ready, ordered by worker id: worker_id, hostname, pid, version,
        queues, partitions, concurrency, processing_guarantee, running, throttled (runs held
        back by a rate limit), counts, lag, state (online|offline|lost), last_beat (epoch
        seconds)."""
        now = self._now()
        with self._lock:
            beats = sorted(self._beats.items())
        return [worker_json(beat, now) for _id, beat in beats]

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic: a beat, or a tombstone (the worker is forgotten)."""
        if value is None:
            if key is not None:
                with self._lock:
                    self._beats.pop(key.decode("utf-8", "replace"), None)
            return
        beat = decode_beat(value)
        if beat is not None:
            with self._lock:
                self._beats[beat["worker_id"]] = beat

    # -- reading ----------------------------------------------------------------------------

    def _open(self) -> Any:
        """The reader, made on first use and assigned every partition of the topic (once
        the topic exists: the first worker creates it)."""
        consumer = self._consumer
        if consumer is None:
            s = self._settings
            fetch: dict[str, Any] = {"fetch.wait.max.ms": max(s.fetch_wait_max_ms, _FETCH_WAIT_MS)}
            config = consumer_config(
                s, f"{s.topic_prefix}.heartbeats-reader-{uuid.uuid4().hex[:8]}", **fetch
            )  # a reader: never joins the group, commits nothing
            consumer = self._consumer = self._broker.consumer(config)
        if not self._read_up_to:
            try:
                partitions = topic_partitions(consumer, self.topic)
            except KafkaException as exc:
                raise BrokerError.wrap(exc, f"reading {self.topic!r}") from exc
            if partitions:
                consumer.assign(
                    [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
                )
                self._read_up_to = dict.fromkeys(partitions, 0)
        return consumer

    def poll(self, timeout: float) -> int:
        """Read what has arrived, waiting up to ``timeout`` for the first record; returns
        how many records were read."""
        consumer = self._open()
        if not self._read_up_to:
            time.sleep(timeout)  # no topic yet: no worker has started
            return 0
        first = consumer.poll(timeout)
        if first is None:
            return 0
        batch = [first, *consumer.consume(500, 0)]
        read = 0
        for message in batch:
            position = record_position(message)
            if position is None:
                continue
            _topic, partition, offset = position
            self._read_up_to[partition] = offset + 1
            self.apply(message.key(), message.value())
            read += 1
        return read

    def caught_up(self) -> bool:
        """Whether every partition is read up to its end as of the last fetch (the cached
        high watermark: queried ones are wrong on some brokers)."""
        consumer = self._open()
        for partition, next_offset in self._read_up_to.items():
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), cached=True
            )
            if high is None or high < 0 or next_offset < high:
                return False
        return True

    def read_to_end(self, timeout: float = 10.0) -> bool:
        """Read the topic up to its end (or for ``timeout`` seconds at most); True when the
        end was reached."""
        deadline = time.monotonic() + timeout
        self._open()
        while time.monotonic() < deadline:
            self.poll(0.1)
            if self.caught_up():
                return True
        return False

    def start(self) -> WorkerDirectory:
        """Keep reading on a daemon thread until close() (it connects there: a broker not
        up yet delays the workers' list, not the caller)."""
        self._thread = threading.Thread(
            target=self._tail, name="taskstream-worker-directory", daemon=True
        )
        self._thread.start()
        return self

    def _tail(self) -> None:
        while not self._closed.is_set():
            try:
                self.poll(0.5)
            except Exception:  # a broker hiccup must not end the directory
                log.exception("reading heartbeats failed; retrying")
                self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
