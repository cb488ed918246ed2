"""The consumer runtime: the one poll / batch / commit / pause / rebalance / stop loop.

The worker, the delay scheduler, the materializer and the dead-letter reader are handlers of
this loop; none of them polls a consumer itself. The loop owns the consumer and calls it
from one thread only, and it polls at least every ``poll_s`` whatever its handler does:
handlers never block it (task code runs elsewhere), so a member stays in its group for as
long as its tasks take, and ``max.poll.interval.ms`` bounds nothing but a stuck loop.

Offsets: a handler marks each record done in the :class:`OffsetTracker` the runtime gives it
(``tracker.get(topic, partition).finish(offset)``); the runtime commits what is committable
every commit interval, soon after the handler falls idle, on revoke and on stop.

Transaction markers: a transactional producer (beat, another team's Kafka Streams app)
leaves a commit or abort marker after its records, which takes an offset but never reaches
a consumer. With ``skip_markers``, once every record a partition gave the handler is done,
its commit moves on to the consumer's position (librdkafka's, past the markers it read), so
the group's committed offset reaches the end and lag reads 0 everywhere it is computed
(here, the console's backlog, kafka-consumer-groups, KEDA), not "one marker" forever.

Backpressure: when the handler has no room the loop takes no more records; if that lasts
``pause_after_s`` the assigned partitions are paused (a paused consumer still serves
rebalances and heartbeats), and resumed once the handler has room again.

Bands (priorities): with ``bands``, lists of topics from the highest band to the lowest
(a queue's high topic, then its own), all with the same partition count. Only the lowest
band's topic is subscribed: the group assigns its partitions, and the member that gets
partition p of it also assigns itself partition p of each higher band (co-partitioned, as
Kafka Streams reads the partitions of one number together), commits them in the same
group, and lets them go with it. (Subscribed as topics of their own, the sticky assignor
balances the total only: one member got a queue's whole topic and the other its whole high
band.) The loop drains a higher band first: at each turn, while an assigned partition of a
higher band has records this consumer has not taken yet, the assigned partitions of the
lower bands of its list are paused, and resumed once no higher band has any. Its own set
of partitions: a backpressure resume leaves them paused, and a band resume during a
backpressure pause only forgets them (the backpressure resume then resumes them). One
check per turn, not per record, and none without ``bands``.

A handler may run a task on the loop's own thread (the worker does, at concurrency 1: it is
the fastest way) only through :meth:`ConsumerRuntime.run_unlocked`. The loop's state is
guarded by one lock, which the loop thread holds except inside ``run_unlocked``; when a call
there lasts ``keeper_after_s``, the keeper thread takes the lock and keeps the member in its
group: it pauses fetching and polls for heartbeats and rebalances until the call returns
(a record it receives meanwhile is kept for the loop). So the consumer is polled at least
every ``keeper_every_s`` whatever the task, and ``max.poll.interval.ms`` bounds no task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from taskstream.consumer.offsets import OffsetTracker, commit
from taskstream.kafka.admin import topics_led
from taskstream.kafka.clients import record_position

log = logging.getLogger(__name__)

# Commits a tracker's committable offsets (asynchronously or not; only some partitions, or
# None: all); False when it failed. taskstream.consumer.offsets.commit, or exactly once
# taskstream.consumer.transaction.Transaction.commit.
Committer = Callable[[Consumer, OffsetTracker, bool, set[tuple[str, int]] | None], bool]


class Handler(Protocol):
    """What a consumer loop does with what it fetches. Every method runs on the loop's
    thread; none may block for long (serve() waits at most its ``timeout``)."""

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Partitions were assigned; a handler may set ``tp.offset`` to start elsewhere."""

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        """Partitions are going away. Not lost: the runtime commits them right after.
        Lost: another member may own them already, nothing is committed."""

    def records(self, batch: list[Message]) -> None:
        """Records fetched, in partition order (error events already filtered out)."""

    def room(self) -> int:
        """How many more records the handler takes now; 0 when full."""

    def serve(self, timeout: float) -> None:
        """Serve what the handler waits for (delivery reports), waiting at most ``timeout``."""

    def busy(self) -> bool:
        """Whether records are in flight (the loop then polls with a short wait)."""

    def drain(self, grace: float) -> None:
        """Stopping: wait up to ``grace`` seconds for records in flight."""


class TaskLoop(Protocol):
    """What the worker's handler and the worker ask of the loop that feeds the handler: a
    consumer group member's :class:`ConsumerRuntime`, or a share group member's
    (taskstream.consumer.share_runtime)."""

    @property
    def paused(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def subscribe(self, topics: list[str]) -> None: ...

    def run(self, *, grace: float = 0.0) -> None: ...

    def stop(self) -> None: ...

    def run_unlocked(self, call: Callable[[], None]) -> None: ...

    def lag(self) -> dict[tuple[str, int], int]: ...

    def lag_seconds(self, now: float) -> dict[tuple[str, int], float]: ...

    def high_watermark(self, topic: str, partition: int) -> int | None: ...

    def end_offset(self, topic: str, partition: int) -> int | str: ...


@dataclass(frozen=True)
class LoopTiming:
    """How the loop waits, in seconds."""

    poll_s: float = 0.05  # consumer poll wait when idle
    busy_poll_s: float = 0.005  # ... with records in flight: how late delivery reports wait
    commit_every_s: float = 0.2  # periodic commit while busy
    idle_commit_s: float = 0.05  # once idle, commit this soon after the last commit
    pause_after_s: float = 0.5  # full this long: pause the partitions
    keeper_after_s: float = 0.5  # a task on the loop's thread this long: the keeper polls
    keeper_every_s: float = 0.1  # ... this often
    batch: int = 500  # records taken per loop turn, at most
    resume_ratio: float = 0.8  # paused: resume when the room is back to this share
    committed_timeout_s: float = 2.0  # on assignment, to learn the committed offsets (lag)
    band_check_s: float = 0.005  # bands: how often, at most, higher bands are looked at
    metadata_wait_s: float = 10.0  # before subscribing, for the topics to be in the metadata


class ConsumerRuntime:
    """Runs one consumer for one handler until stopped.

    ``subscribe(topics)`` joins the group (rebalances served through the handler), or
    ``assign(partitions)`` reads fixed partitions without a group's assignment.
    ``cooperative``: the group uses incremental (cooperative-sticky) rebalancing, so a member
    joining or leaving moves only the partitions that must move.
    ``skip_markers``: the handler adds every record it is given to the tracker (or advances
    it) at once and never seeks, so a partition with nothing pending may commit up to the
    consumer's position (see the module docstring). Not for a handler that seeks back (the
    delay scheduler: a position after a seek is no promise to build a commit on).
    """

    def __init__(
        self,
        consumer: Consumer,
        handler: Handler,
        tracker: OffsetTracker,
        *,
        timing: LoopTiming | None = None,
        capacity: int = 1000,
        cooperative: bool = False,
        skip_markers: bool = False,
        on_commit: Callable[[bool], None] | None = None,
        keep_alive: Callable[[], None] | None = None,
        bands: list[list[str]] | None = None,
        committer: Committer = commit,
    ) -> None:
        self.consumer = consumer
        self._committer = committer  # the group's commit, or a transaction's (exactly once)
        self.handler = handler
        self.tracker = tracker
        self.timing = timing or LoopTiming()
        self.capacity = capacity  # the handler's room when empty: sets the resume mark
        self.cooperative = cooperative
        self.skip_markers = skip_markers
        self._on_commit = on_commit or (lambda ok: None)
        self._keep_alive = keep_alive  # the handler's own heartbeats, also while kept
        self._stopping = threading.Event()
        self._paused = False  # backpressure pause of every assigned partition
        self._full_since: float | None = None
        self._last_commit = time.monotonic()
        self.last_record_at = time.monotonic()  # when the last record arrived
        self._lock = threading.Lock()  # the loop's state: held by the loop or the keeper
        self._unlocked_since: float | None = None  # a task runs on the loop's thread since
        self._kept: list[Message] = []  # received by the keeper, for the loop
        self._polling = False  # inside consumer.poll()/consume(): rebalance callbacks run
        self._age_unknown_since: dict[tuple[str, int], int] = {}  # see lag_seconds(), in ms
        # Bands: each topic of a higher band -> the topics below it (in its own list only).
        self._below: dict[str, tuple[str, ...]] = {}
        # Each lowest band's topic -> the higher bands' topics read along with it.
        self._higher: dict[str, tuple[str, ...]] = {}
        for topics in [b for b in bands or [] if len(b) > 1]:
            for i, topic in enumerate(topics[:-1]):
                self._below[topic] = tuple(topics[i + 1 :])
            self._higher[topics[-1]] = tuple(topics[:-1])
        self._held: set[tuple[str, int]] = set()  # paused for a higher band
        self._held_topics: frozenset[str] = frozenset()
        self._next_band_check = 0.0

    # -- set-up and stop --------------------------------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        """Join the group for ``topics`` (a higher band's topic is read along with its
        lowest band's partitions, not subscribed)."""
        higher = {h for t in topics for h in self._higher.get(t, ())}
        self._await_metadata([*topics, *sorted(higher - set(topics))])
        self.consumer.subscribe(
            [t for t in topics if t not in higher],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _with_higher(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's partitions and, for each of a lowest band, the same partition of
        each higher band."""
        if not self._higher:
            return partitions
        more = [
            TopicPartition(h, tp.partition)
            for tp in partitions
            for h in self._higher.get(tp.topic, ())
        ]
        return [*partitions, *more]

    def _await_metadata(self, topics: list[str]) -> None:
        """Subscribe once this client's metadata has every topic. A group leader leaves a
        subscribed topic its metadata lacks out of the assignment, and librdkafka does not
        rejoin when the topic shows up (seen on Apache Kafka just after the topic's creation,
        when a broker had not learned it yet: the member kept no partitions). A topic still
        unknown after ``metadata_wait_s`` is subscribed to as it is; a stop ends the wait."""
        deadline = time.monotonic() + self.timing.metadata_wait_s
        pending = list(topics)
        while pending:
            try:
                pending = [
                    t
                    for t in pending
                    if not topics_led(self.consumer.list_topics(t, timeout=1.0).topics, [t])
                ]
            except KafkaException as exc:
                log.debug("metadata before subscribing: %s", exc)
            if not pending or self._stopping.is_set() or time.monotonic() >= deadline:
                break  # (a stop meanwhile: the loop returns at once, subscribed or not)
            time.sleep(0.05)
        if pending:
            log.warning("subscribing to %s, which the cluster does not list yet", pending)

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.tracker.assign(tp.topic, tp.partition)
        self.consumer.assign(partitions)

    def stop(self) -> None:
        """Ask the loop to drain and return; safe from any thread."""
        self._stopping.set()

    @property
    def paused(self) -> bool:
        """Every assigned partition is paused for backpressure."""
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the loop ---------------------------------------------------------------------------

    def run(
        self, *, grace: float = 0.0, idle_stop_s: float | None = None, close: bool = True
    ) -> None:
        """Loop until stop() (or, with ``idle_stop_s``, until nothing arrived for that long),
        then drain within ``grace``, commit, and close the consumer."""
        keeper = threading.Thread(target=self._keep, name="taskstream-keeper", daemon=True)
        self._lock.acquire()
        keeper.start()
        try:
            while not self._stopping.is_set():
                self.turn()
                if idle_stop_s is not None and (
                    time.monotonic() - self.last_record_at >= idle_stop_s
                    and not self.handler.busy()
                ):
                    break
            self._drain(grace)
        finally:
            try:
                if close:
                    self.consumer.close()  # a subscribed consumer's revoke commits what is done
            finally:
                self._stopping.set()
                self._lock.release()
                keeper.join(1.0)

    def run_unlocked(self, call: Callable[[], None]) -> None:
        """Run ``call`` (a task) on the loop's thread, letting the keeper poll meanwhile
        (not from inside a rebalance callback: the consumer is in a poll() there)."""
        if self._polling:
            call()
            return
        self._unlocked_since = time.monotonic()
        self._lock.release()
        try:
            call()
        finally:
            self._lock.acquire()
            self._unlocked_since = None

    def _keep(self) -> None:
        """The keeper: while a task holds the loop's thread, poll in its place."""
        timing = self.timing
        while not self._stopping.wait(timing.keeper_every_s):
            since = self._unlocked_since
            if since is None or time.monotonic() - since < timing.keeper_after_s:
                continue
            if not self._lock.acquire(timeout=timing.keeper_every_s):
                continue
            try:
                if self._unlocked_since is None or self._stopping.is_set():
                    continue
                if not self._paused:
                    self._set_paused(True)  # nothing more to fetch while the task runs
                    self._full_since = time.monotonic()
                message = self.consumer.poll(0)  # heartbeats, rebalances
                if message is not None and record_position(message) is not None:
                    self._kept.append(message)
                if self._keep_alive is not None:
                    self._keep_alive()
            finally:
                self._lock.release()

    def turn(self) -> None:
        """One turn: fetch what there is room for, serve the handler, commit when due."""
        handler, timing = self.handler, self.timing
        if self._kept:
            kept, self._kept = self._kept, []
            self.handler.records(kept)
        if self._below:
            self._order_bands()
        room = handler.room()
        self._apply_backpressure(room)
        if room <= 0 and not self._paused:
            # Full, not paused yet (within pause_after_s): wait for outcomes only; a consumer
            # poll now would hand over records there is no room for.
            handler.serve(timing.busy_poll_s)
        elif room <= 0 or self._paused:
            # Paused: wait for outcomes, not records; poll(0) still serves rebalances and
            # heartbeats (a record of a partition assigned since the pause is taken too).
            handler.serve(timing.poll_s if room <= 0 else timing.busy_poll_s)
            self._take(self._poll(0), room)
        else:
            wait = timing.busy_poll_s if handler.busy() else timing.poll_s
            self._take(self._poll(wait), room)
            handler.serve(0)
        self._commit_when_due()

    def _poll(self, timeout: float) -> Message | None:
        self._polling = True
        try:
            return self.consumer.poll(timeout)
        finally:
            self._polling = False

    def _take(self, first: Message | None, room: int) -> None:
        if first is None:
            return
        batch = [first]
        if room > 1:
            # What else is ready, without waiting (consume(n, t) would wait for all n).
            self._polling = True
            try:
                batch += self.consumer.consume(min(room - 1, self.timing.batch), 0)
            finally:
                self._polling = False
        records = [m for m in batch if record_position(m) is not None]
        if records:
            self.last_record_at = time.monotonic()
            self.handler.records(records)

    # -- bands ----------------------------------------------------------------------------

    @property
    def held(self) -> set[tuple[str, int]]:
        """The partitions paused because a higher band has records waiting."""
        return set(self._held)

    def _order_bands(self) -> None:
        """Hold the lower bands of each higher band partition with records waiting here."""
        now = time.monotonic()
        if now < self._next_band_check:
            return
        self._next_band_check = now + self.timing.band_check_s
        held_topics: set[str] = set()
        behind: dict[tuple[str, int], int] = {}  # a higher band's partition -> its end
        below, partitions = self._below, self.tracker.partitions
        for key, offsets in partitions.items():
            if key[0] not in below:
                continue
            low, high = self.consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            if high is None or high < 0:
                continue  # not fetched yet: nothing known to wait
            start = offsets.next_offset
            if start is None:
                start = max(offsets.committed or 0, low if low is not None else 0)
            if high > start:
                behind[key] = high
        if behind:
            # The consumer's position is past transaction markers, which are no records.
            try:
                positions = self.consumer.position([TopicPartition(t, p) for t, p in behind])
            except KafkaException as exc:
                log.debug("reading positions failed: %s", exc)
                positions = []
            for tp in positions:
                if tp.error is None and tp.offset >= behind[(tp.topic, tp.partition)]:
                    del behind[(tp.topic, tp.partition)]
            for topic, _partition in behind:
                held_topics.update(below[topic])
        self._held_topics = frozenset(held_topics)
        hold = {key for key in partitions if key[0] in held_topics}
        if hold != self._held:
            self._hold(hold)

    def _hold(self, hold: set[tuple[str, int]]) -> None:
        consumer = self.consumer
        more = [TopicPartition(t, p) for t, p in hold - self._held]
        fewer = [TopicPartition(t, p) for t, p in self._held - hold]
        try:
            if more:
                consumer.pause(more)
            if fewer and not self._paused:  # paused for backpressure: its resume resumes them
                consumer.resume(fewer)
        except KafkaException as exc:  # a partition revoked meanwhile; the next check retries
            log.debug("band pause/resume failed: %s", exc)
            return
        if more or fewer:
            log.debug("bands: holding %s", partition_names([TopicPartition(*k) for k in hold]))
        self._held = hold

    def _commit_when_due(self) -> None:
        now = time.monotonic()
        since = now - self._last_commit
        # Every commit interval while busy; soon after falling idle (lag reads 0 then).
        due = since >= self.timing.commit_every_s
        if not due and (since < self.timing.idle_commit_s or self.handler.busy()):
            return
        self._past_markers()
        if due or self.tracker.uncommitted():
            self.commit(asynchronous=True)
            self._last_commit = now

    def _past_markers(self) -> None:
        """Move each partition whose records are all done on to the consumer's position when
        that is further, up to the partition's end: what lies between is transaction markers
        (and an aborted transaction's records), which no handler ever gets. Local calls only
        (cached watermark, position), and only for a partition that looks behind."""
        if not self.skip_markers or self._kept:  # kept records: not in the tracker yet
            return
        behind: dict[tuple[str, int], int] = {}  # -> its end
        for key, offsets in self.tracker.partitions.items():
            if offsets.pending:
                continue
            high = self.high_watermark(*key)
            if high is not None and high > offsets.done_up_to:
                behind[key] = high
        if not behind:
            return
        try:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in behind])
        except KafkaException as exc:
            log.debug("reading positions failed: %s", exc)
            return
        for tp in positions:
            key = (tp.topic, tp.partition)
            offsets = self.tracker.partitions[key]
            if tp.error is None and offsets.done_up_to < tp.offset <= behind[key]:
                offsets.advance(tp.offset)

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet committed per assigned partition: the high watermark of the last
        fetch (what the consumer knows without asking; queried watermarks are wrong on some
        brokers) minus the committed offset."""
        lag = {}
        for (topic, partition), offsets in self.tracker.partitions.items():
            high = self.high_watermark(topic, partition)
            if high is not None:
                committed = offsets.committed if offsets.committed is not None else 0
                lag[(topic, partition)] = max(0, high - committed)
        return lag

    def lag_seconds(self, now: float) -> dict[tuple[str, int], float]:
        """Per assigned partition, the age in seconds of its oldest record not yet done at
        ``now`` (epoch seconds), 0 when caught up: from the record timestamps the handler
        gave the tracker, nothing asked of the broker. Records not received yet (the
        handler is full, or a fetch is under way) count from when they were first seen
        waiting: a lower bound that starts at 0, so a record that has just arrived never
        shows as old."""
        now_ms = int(now * 1000)
        ages: dict[tuple[str, int], float] = {}
        unknown = self._age_unknown_since
        for key, offsets in self.tracker.partitions.items():
            age = offsets.age_ms(now_ms, self.high_watermark(*key))
            if age is None:
                age = now_ms - unknown.setdefault(key, now_ms)
            else:
                unknown.pop(key, None)
            ages[key] = age / 1000
        for key in [k for k in unknown if k not in self.tracker.partitions]:
            del unknown[key]
        return ages

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The partition's end as of the consumer's last fetch (None before one): what the
        consumer knows without asking, where queried watermarks are wrong on some brokers."""
        _low, high = self.consumer.get_watermark_offsets(
            TopicPartition(topic, partition), cached=True
        )
        return high if high is not None and high >= 0 else None

    def end_offset(self, topic: str, partition: int) -> int | str:
        """The partition's end as the broker says now (a diagnosis: one request), or why
        not."""
        try:
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=2.0, cached=False
            )
        except KafkaException as exc:
            return f"unknown ({exc.args[0]})"
        return int(high)

    def commit(self, *, asynchronous: bool, only: set[tuple[str, int]] | None = None) -> bool:
        ok = self._committer(self.consumer, self.tracker, asynchronous, only)
        self._on_commit(ok)
        return ok

    def _apply_backpressure(self, room: int) -> None:
        """Full for ``pause_after_s`` (slow tasks): pause, so that polling serves rebalances
        without fetching; pausing at once would cost a refetch per short burst."""
        timing = self.timing
        if room > 0:
            self._full_since = None
            if self._paused and room >= self.capacity * (1 - timing.resume_ratio):
                self._set_paused(False)
            return
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        if not self._paused and now - self._full_since >= timing.pause_after_s:
            self._set_paused(True)

    def _set_paused(self, paused: bool) -> None:
        assignment = self.consumer.assignment()
        if not paused and self._held:  # held for a higher band: they stay paused
            held = self._held
            assignment = [tp for tp in assignment if (tp.topic, tp.partition) not in held]
        try:
            (self.consumer.pause if paused else self.consumer.resume)(assignment)
        except KafkaException as exc:  # a partition revoked meanwhile; the next turn retries
            log.debug("pause/resume failed: %s", exc)
            return
        self._paused = paused

    def _drain(self, grace: float) -> None:
        try:
            self.consumer.pause(self.consumer.assignment())
        except KafkaException as exc:
            log.debug("pause on drain failed: %s", exc)
        self.handler.drain(grace)
        self.commit(asynchronous=False)

    # -- rebalances (served inside poll, on the loop's thread) -------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        partitions = self._with_higher(partitions)
        for tp in partitions:
            self.tracker.assign(tp.topic, tp.partition)
        self._learn_committed(consumer, partitions)
        self.handler.assigned(partitions)
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if self._paused and partitions:
            consumer.pause(partitions)  # full: new partitions wait like the others
        if self._held_topics and partitions:
            held = [tp for tp in partitions if tp.topic in self._held_topics]
            if held:  # a higher band has records waiting: new lower partitions wait too
                consumer.pause(held)
                self._held.update((tp.topic, tp.partition) for tp in held)
        log.info("assigned %s", partition_names(partitions))

    def _learn_committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group's committed offsets of newly assigned partitions: lag counts from them
        until this member commits (without them, an idle partition handed to a new member
        showed its whole length as lag). One request per rebalance, never per record."""
        if not partitions:
            return
        try:
            found = consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions],
                timeout=self.timing.committed_timeout_s,
            )
        except KafkaException as exc:  # lag then counts from 0 until the first commit
            log.debug("reading committed offsets failed: %s", exc)
            return
        for tp in found:
            offsets = self.tracker.partitions.get((tp.topic, tp.partition))
            if offsets is not None and tp.error is None and tp.offset >= 0:
                offsets.committed = tp.offset

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        partitions = self._with_higher(partitions)
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.handler.revoked(partitions, lost=False)
        self.commit(asynchronous=False, only=revoked)
        for topic, partition in revoked:
            self.tracker.revoke(topic, partition)
        self._held -= revoked
        _unpause(consumer, partitions)
        if self.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        log.info("revoked %s", partition_names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them already: committing now could skip its work.
        partitions = self._with_higher(partitions)
        self.handler.revoked(partitions, lost=True)
        for tp in partitions:
            self.tracker.revoke(tp.topic, tp.partition)
        self._held -= {(tp.topic, tp.partition) for tp in partitions}
        _unpause(consumer, partitions)
        if self.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        log.warning("lost %s", partition_names(partitions))


class RuntimeOwner:
    """What the owners of a runtime (worker, delay scheduler, materializer) share: ``stop()``,
    safe from any thread, before or during ``run()``."""

    _runtime: ConsumerRuntime | None = None
    _stop_requested = False

    def stop(self) -> None:
        """Ask ``run()`` to drain and return."""
        self._stop_requested = True
        if self._runtime is not None:
            self._runtime.stop()

    def _started(self, runtime: ConsumerRuntime) -> ConsumerRuntime:
        """Keep ``runtime`` as the one to stop (a stop() that came first stops it at once)."""
        self._runtime = runtime
        if self._stop_requested:
            runtime.stop()
        return runtime


def _unpause(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Resume partitions about to be unassigned. librdkafka keeps a partition's pause across
    unassign and assign: one paused for backpressure when it was taken away would come back
    paused at its next assignment, and never be fetched again (checked with librdkafka
    2.16.0 on Apache Kafka). Resumed while still assigned, it comes back fetching."""
    try:
        consumer.resume(partitions)
    except KafkaException as exc:
        log.debug("resume before unassign failed: %s", exc)


def partition_names(partitions: list[TopicPartition]) -> str:
    """``topic[0,1,2]`` per topic, for logs that stay one line with many partitions."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    parts = [f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items())]
    return ", ".join(parts) or "nothing"
