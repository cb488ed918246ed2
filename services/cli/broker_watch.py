"""``taskstream dev``'s watch on its embedded broker: it warns before the broker collapses.

Why: Tansu 0.6's memory storage costs more per request as data accumulates. Measured with
``benchmarks.soak`` (one worker, failures, retries and chains): at 100 tasks/s the tasks'
median wait passed 1 s after about 12 minutes (~75,000 tasks) and 5 s after 18; at 1,000
tasks/s their p99 passed 1 s within 2 minutes and their median within 3-5, and in one run
results stopped at about 5 minutes, while the worker sat idle. Nothing else tells the user.

How, every ``interval_s``:

- a round trip: dev produces a small record to a topic of its own
  (``topics.dev_probe_topic``) and consumes it back; on a healthy loopback broker that takes
  a few milliseconds, 250 ms at worst (measured on Tansu). It catches a broker that stalls.
- the tasks' wait, two ways: how long a task record takes from its producer (CreateTime) to
  a reader that tails the task topics (``TaskTail``), and how long tasks wait for a worker
  that has free slots (the workers' heartbeats: the age of their oldest unfinished record,
  ``WorkerWait``). The round trip alone misses the collapse: Tansu slows down per partition
  as its data grows, so the probe's own, nearly empty topic stayed fast while tasks waited
  minutes; and at 100 tasks/s the tail stayed at 0.16 s while the tasks' wait grew (both
  measured with ``benchmarks.soak --broker tansu``). A worker that is busy with every slot
  is the tasks' own doing, not the broker's: its wait does not count.

Two round trips in a row longer than ``slow_s``, one still unanswered after ``stalled_s``,
or three intervals in a row in which tasks waited more than ``late_s`` make dev warn once,
naming the two ways out (restart dev, which empties the broker; or ``--broker kafka``);
``recover_after`` healthy intervals in a row re-arm it.

The pieces: ``BrokerWatch`` decides and only computes (an injectable clock, so tests advance
time instead of sleeping); ``Probe`` and ``Lateness`` are its I/O (``KafkaProbe``,
``TaskTail`` and ``WorkerWait`` the real ones); ``Watcher`` runs them on a thread of dev's.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    Producer,
    TopicPartition,
)

from taskstream.cli.supervisor import say
from taskstream.config import Settings
from taskstream.kafka import rdkafka_log
from taskstream.kafka.admin import ensure_topics
from taskstream.kafka.clients import topic_partitions
from taskstream.kafka.topics import TopicSpec, dev_probe_topic
from taskstream.worker_directory import ONLINE, WorkerDirectory

logger = logging.getLogger(__name__)

# The warning's words (measured in issue 27); the banner and the README's quick start say
# the same, shorter.
LIMIT = (
    "the embedded broker (Tansu, memory only) slows down as its data accumulates: measured, "
    "the tasks' median wait passed 1 s after ~75,000 tasks at 100 tasks/s (about 12 minutes) "
    "and after 3-5 minutes at 1,000 tasks/s, then grew to tens of seconds until tasks stopped"
)
WAYS_OUT = (
    "restart taskstream dev (its broker starts empty: this run's tasks and results are "
    "dropped), or run taskstream dev --broker kafka (Apache Kafka; needs java and mvn)"
)


class Probe(Protocol):
    """A produce -> consume round trip's two halves."""

    def send(self, token: str) -> None:
        """Produce `token`."""

    def received(self, timeout: float) -> list[str]:
        """The tokens consumed back within `timeout` seconds (maybe none)."""


class Lateness(Protocol):
    """How long tasks waited, in a way the broker is to blame for, since the last call."""

    def sample(self) -> tuple[float, str] | None:
        """The seconds, and what they are in words (None: nothing to judge by)."""


@dataclass
class BrokerWatch:
    """Sends a probe every ``interval_s`` seconds and decides when to warn (``step``)."""

    probe: Probe
    say: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    interval_s: float = 5.0  # between round trips
    slow_s: float = 1.0  # a round trip longer than this is slow (healthy: 1-250 ms)
    slow_in_a_row: int = 2  # slow round trips in a row that warn
    stalled_s: float = 10.0  # an unanswered probe this old warns by itself
    recover_after: int = 3  # fast round trips in a row that end a warning
    lateness: Lateness | None = None  # the tasks' wait, sampled once an interval
    late_s: float = 2.0  # tasks waiting longer than this are late (healthy: well under 1 s)
    # Intervals in a row whose tasks came late that warn: more than for the probe, since a
    # producer's first seconds (its connection, its idempotence id) make its records late too.
    late_in_a_row: int = 3
    warned: bool = False
    last_lateness: float | None = None  # the last interval's wait (s), for reports
    _pending: tuple[str, float] | None = None  # the probe in flight and when it was sent
    _next_at: float = field(default=float("-inf"))
    _slow: int = 0
    _fast: int = 0
    _late: int = 0  # intervals in a row whose tasks came late

    def step(self, wait_s: float = 0.0) -> None:
        """Collect what came back (waiting up to ``wait_s`` for it), then warn or send."""
        if self._pending is not None:
            token, sent_at = self._pending
            if token in self.probe.received(wait_s):
                self._pending = None
                self._round_trip(self.clock() - sent_at)
            elif self.clock() - sent_at > self.stalled_s:
                # Given up on (it may still come back, then it is ignored): counted as slow,
                # and the next probe goes out, so a recovery can be seen.
                self._pending, self._slow, self._fast = None, self._slow + 1, 0
                if not self.warned:
                    self._warn(f"a probe record is not back after {self.stalled_s:g}s")
        now = self.clock()
        if self._pending is None and now >= self._next_at:
            self._sample_lateness()
            token = uuid.uuid4().hex
            self.probe.send(token)
            self._pending, self._next_at = (token, now), now + self.interval_s

    def _sample_lateness(self) -> None:
        sample = self.lateness.sample() if self.lateness is not None else None
        if sample is None:
            return  # no task sent meanwhile: nothing to judge by
        late, what = sample
        self.last_lateness = late
        if late <= self.late_s:
            self._late = 0
            if late > self.late_s / 2:
                self._fast = 0  # not late, not healthy either: no recovery yet (no flapping)
            return
        self._late, self._fast = self._late + 1, 0
        if not self.warned and self._late >= self.late_in_a_row:
            self._warn(what)

    def _round_trip(self, seconds: float) -> None:
        if seconds > self.slow_s:
            self._slow, self._fast = self._slow + 1, 0
            if not self.warned and self._slow >= self.slow_in_a_row:
                self._warn(f"a produce -> consume round trip took {seconds:.1f}s")
            return
        self._slow = 0
        if self._late:
            return  # the probe is fast, the tasks are not: not healthy yet
        self._fast += 1
        if self.warned and self._fast >= self.recover_after:
            self.warned = False
            self.say(f"the embedded broker answers in {seconds * 1000:.0f} ms again")

    @property
    def waiting(self) -> bool:
        """A probe is in flight."""
        return self._pending is not None

    def _warn(self, what: str) -> None:
        self.warned = True
        self.say(
            f"WARNING: the embedded broker is degrading: {what} (normally well under 1 s). "
            f"Why: {LIMIT}. Ways out: {WAYS_OUT}."
        )


class KafkaProbe:
    """The round trip on a real broker: one partition of ``topic``, read from its end.

    Its consumer reads by assignment (no group join, no commits) and long-polls: Tansu
    answers a fetch as soon as the record is there (1-2 ms on an idle broker), and an idle
    probe costs it two fetches a second. (Pausing the partition between round trips costs
    less but measured ~500 ms per resume, which would hide what we measure.)
    """

    def __init__(self, bootstrap_servers: str, topic: str, timeout: float = 30.0) -> None:
        self._partition = TopicPartition(topic, 0)
        # The embedded broker's own clients: no settings of the app's, but taskstream's
        # logger (librdkafka's lines rate-limited in Python logging, as every other client).
        logged = {"bootstrap.servers": bootstrap_servers, "logger": rdkafka_log.LOGGER}
        self._producer = Producer({**logged, "linger.ms": 0})
        self._consumer = Consumer({
            **logged,
            "group.id": f"{topic}-reader",  # never joined: librdkafka requires one
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 500,
        })  # fmt: skip
        _low, high = self._consumer.get_watermark_offsets(self._partition, timeout)
        self._consumer.assign([TopicPartition(topic, 0, high)])

    def send(self, token: str) -> None:
        self._producer.produce(self._partition.topic, token.encode(), partition=0)
        self._producer.poll(0)

    def received(self, timeout: float) -> list[str]:
        self._producer.poll(0)
        message = self._consumer.poll(timeout)  # one probe is in flight at a time
        value = None if message is None or message.error() else message.value()
        return [] if value is None else [value.decode()]

    def close(self) -> None:
        self._producer.purge()
        self._producer.flush(0)
        self._consumer.close()


class TaskTail:
    """The tasks' lateness on a real broker: ``topics`` read from their ends, in no group,
    each record's CreateTime against the moment it arrives (payloads are not decoded).

    Read on a thread of its own, continuously: records left in the client's queue until the
    watch's next interval would count that wait as the broker's (measured: a median of
    2.7 s on a healthy broker when read every 5 s)."""

    def __init__(self, bootstrap_servers: str, topics: list[str], timeout: float = 30.0) -> None:
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap_servers,
            "logger": rdkafka_log.LOGGER,
            "group.id": "dev-task-tail",  # never joined: librdkafka requires one
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        })  # fmt: skip
        # From each partition's end (librdkafka asks for it on assignment: no round trip
        # per partition here, at dev's start).
        self._consumer.assign([
            TopicPartition(topic, partition, OFFSET_END)
            for topic in topics
            for partition in topic_partitions(self._consumer, topic, timeout)
        ])  # fmt: skip
        self._lock = threading.Lock()
        self._lateness: list[float] = []  # seconds, since the last sample()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="task-tail", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        consumer = self._consumer
        while not self._stopping.is_set():
            try:
                batch = consumer.consume(1000, 0.1)
            except Exception:  # a broker error must not end dev: the next read tries again
                logger.debug("task tail read failed", exc_info=True)
                self._stopping.wait(1.0)
                continue
            now_ms = time.time() * 1000
            late = [
                (now_ms - ts[1]) / 1000
                for m in batch
                if m.error() is None and (ts := m.timestamp())[0] == TIMESTAMP_CREATE_TIME
            ]
            if late:
                with self._lock:
                    self._lateness.extend(late)

    def sample(self) -> tuple[float, str] | None:
        """The median lateness of the records read since the last call."""
        with self._lock:
            lateness, self._lateness = self._lateness, []
        if not lateness:
            return None
        late = statistics.median(lateness)
        return late, f"tasks reach a reader {late:.1f}s after they were sent (the median)"

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._consumer.close()


class WorkerWait:
    """How long tasks wait for a worker that has free slots, from the workers' heartbeats
    (``workers``: ``WorkerDirectory.workers_json``): the age of a worker's oldest unfinished
    record at its last commit, for the online workers running fewer tasks than their
    concurrency (a worker busy with every slot makes its tasks wait by itself) and holding
    none back for a rate limit (which makes them wait on purpose)."""

    def __init__(self, workers: Callable[[], list[dict[str, Any]]]) -> None:
        self._workers = workers

    def sample(self) -> tuple[float, str] | None:
        waits = [
            max((float(lag["seconds"]) for lag in worker["lag"]), default=0.0)
            for worker in self._workers()
            if worker["state"] == ONLINE
            and len(worker["running"]) < worker["concurrency"]
            and not worker.get("throttled")
        ]
        if not waits:
            return None
        late = max(waits)
        return late, f"tasks wait {late:.1f}s in their queue while a worker has free slots"


class Worst:
    """The worst of several lateness sources."""

    def __init__(self, *sources: Lateness) -> None:
        self._sources = sources

    def sample(self) -> tuple[float, str] | None:
        samples = [s for s in (source.sample() for source in self._sources) if s is not None]
        return max(samples, default=None)


class Watcher:
    """Runs a ``BrokerWatch`` on a daemon thread until ``stop()``."""

    def __init__(self, watch: BrokerWatch, close: Callable[[], None], poll_s: float = 0.2):
        self.watch, self._close, self._poll_s = watch, close, poll_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.watch.step(self._poll_s)  # waits for the probe's record, if one is out
            except Exception:  # a broker error must not end dev: the next step tries again
                logger.debug("broker watch step failed", exc_info=True)
            if not self.watch.waiting:
                self._stopping.wait(self._poll_s)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        if not self._thread.is_alive():
            self._close()


def watch_embedded_broker(
    settings: Settings,
    bootstrap_servers: str,
    task_topics: list[str],
    said: Callable[[str], None] = say,
) -> Watcher:
    """Start watching the embedded broker at ``bootstrap_servers`` (``settings``': dev's
    own broker) and the lateness of ``task_topics``, telling ``said`` (dev's output); the
    probe's topic is made if missing."""
    topic = dev_probe_topic(settings.topic_prefix)
    ensure_topics(settings, [TopicSpec(topic, 1, 1)])
    probe = KafkaProbe(bootstrap_servers, topic)
    tail = TaskTail(bootstrap_servers, task_topics)
    directory = WorkerDirectory(settings).start()

    def close() -> None:
        probe.close()
        tail.close()
        directory.close()

    lateness = Worst(tail, WorkerWait(directory.workers_json))
    return Watcher(BrokerWatch(probe, said, lateness=lateness), close).start()
