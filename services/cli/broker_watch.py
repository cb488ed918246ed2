"""``taskstream dev``'s watch on its embedded broker: it warns before the broker collapses.

Why: Tansu 0.6's memory storage costs more per request as data accumulates. Offered 1,000
tasks/s, dev kept up for about 90 s (~100,000 tasks), then the queue wait rose from 69 ms to
38 s and results stopped, while the worker sat idle (issue 27). Nothing else tells the user.

How: every ``interval_s`` dev produces a small record to a topic of its own
(``topics.dev_probe_topic``) and consumes it back; on a healthy loopback broker that takes
a few milliseconds, 250 ms at worst (measured on Tansu). Two round trips in a row longer
than ``slow_s``, or one still unanswered after ``stalled_s``, make dev warn once, naming the
two ways out (restart dev, which empties the broker; or ``--broker kafka``);
``recover_after`` fast round trips in a row re-arm it.

The pieces: ``BrokerWatch`` decides and only computes (an injectable clock, so tests advance
time instead of sleeping); ``Probe`` is its I/O (``KafkaProbe`` the real one); ``Watcher``
runs them on a thread of dev's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import Consumer, Producer, TopicPartition

from taskstream import rdkafka_log
from taskstream.cli.supervisor import say
from taskstream.config import Settings
from taskstream.kafka import ensure_topics
from taskstream.topics import TopicSpec, dev_probe_topic

logger = logging.getLogger(__name__)

# The warning's words (measured in issue 27); the banner and the README's quick start say
# the same, shorter.
LIMIT = (
    "the embedded broker (Tansu, memory only) slows down as its data accumulates: measured at "
    "1,000 tasks/s it kept up for about 90 s (~100,000 tasks), then the queue wait grew to "
    "tens of seconds and tasks stopped"
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
    warned: bool = False
    _pending: tuple[str, float] | None = None  # the probe in flight and when it was sent
    _next_at: float = field(default=float("-inf"))
    _slow: int = 0
    _fast: int = 0

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
            token = uuid.uuid4().hex
            self.probe.send(token)
            self._pending, self._next_at = (token, now), now + self.interval_s

    def _round_trip(self, seconds: float) -> None:
        if seconds > self.slow_s:
            self._slow, self._fast = self._slow + 1, 0
            if not self.warned and self._slow >= self.slow_in_a_row:
                self._warn(f"a produce -> consume round trip took {seconds:.1f}s")
            return
        self._slow, self._fast = 0, self._fast + 1
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


def watch_embedded_broker(settings: Settings, bootstrap_servers: str) -> Watcher:
    """Start watching the embedded broker at ``bootstrap_servers`` (``settings``': dev's
    own broker); the probe's topic is made if missing."""
    topic = dev_probe_topic(settings.topic_prefix)
    ensure_topics(settings, [TopicSpec(topic, 1, 1)])
    probe = KafkaProbe(bootstrap_servers, topic)
    return Watcher(BrokerWatch(probe, say), probe.close).start()
