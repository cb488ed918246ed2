"""The beat: fires the ticks of an app's periodic tasks, one leader among any replicas.

**Leadership from Kafka.** Every ``taskstream beat`` replica joins the group
``<prefix>.beat`` on the one-partition compacted topic ``<prefix>.beat``; the member that
owns the partition leads, the others wait in the group. The group is cooperative-sticky, so
a replica joining does not move the partition nor pause the leader. A SIGKILLed leader
leaves the group after ``session_timeout_ms`` and the partition (so the lead) moves to
another replica.

**State in Kafka.** The topic holds, per entry, the last tick fired (key ``tick/<entry>``)
and the leaders' claims (key ``leader``). A new leader takes the transactional id
``<prefix>.beat`` (``init_transactions``), commits a claim, and reads the topic from its
start up to that claim: it then knows every tick fired before it took over. Each turn it
fires the due ticks in **one Kafka transaction**: the task events (each with the tick's
deterministic task id, taskstream.periodic.tick_id), then the entries' new last ticks.

**No tick twice, none skipped.** A tick's event and its record commit together or not at
all, so there is no window between firing a tick and recording it: a leader killed before
the commit leaves an aborted transaction (hidden from ``read_committed`` readers, the
librdkafka default of workers and of the beat) and its successor fires the tick again; a
leader killed after it has recorded the tick. A zombie (an old leader paused past its
session, then resumed) is fenced by the producer: the new leader's ``init_transactions``
bumps the transactional id's epoch, so the zombie's next produce or commit fails with
``PRODUCER_FENCED`` and it stops firing (it claims again only if the group still gives it
the partition a session timeout later, when the other claimer must be the expelled one).
The producer makes the duplicate impossible; the worker needs no check. Where a broker does
not hide aborted records (Tansu, the embedded broker: it fences, but ``read_committed``
shows aborted records), a leader killed inside its few-millisecond transaction can leave a
visible, aborted task event whose tick the next leader fires again: the same task id twice.
To keep that the only effect, the task events are acknowledged (flushed) before the entry
records are produced, so a visible record always follows visible events.

It is a handler of the consumer runtime; it commits no offsets (a leader always reads the
topic from its start; compaction keeps that short).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from taskstream import clock
from taskstream.app import App, queues_of
from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming, RuntimeOwner
from taskstream.errors import NotAuthorized
from taskstream.kafka.broker import Access
from taskstream.kafka.clients import (
    Headers,
    consumer_config,
    incremental_assignment,
    producer_config,
    worker_id,
)
from taskstream.kafka.topics import band_topics, beat_group, beat_topic, event_topic
from taskstream.metrics import BEAT_LAST_TICK, BEAT_LEADER, BEAT_TICKS
from taskstream.periodic import PeriodicTask, next_tick, plan, tick_id

log = logging.getLogger(__name__)

LEADER_KEY = "leader"
TICK_KEY = "tick/"  # + entry name
ENTRY_HEADER = "taskstream.beat.entry"
TICK_HEADER = "taskstream.beat.tick"  # the tick's scheduled time, epoch microseconds
_FENCED = {KafkaError.PRODUCER_FENCED, KafkaError._FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
_TXN_DENIED = KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED  # no WRITE on the id
_TXN_TIMEOUT_S = 10.0
_RETRY_AFTER_S = 1.0  # after a failed transaction
_FETCH_WAIT_MS = 250


@dataclass
class _Term:
    """One assignment of the beat partition to this replica."""

    token: str  # the claim this leader looks for in the topic
    producer: Producer | None = None  # the transactional producer, once claimed
    caught_up: bool = False  # read the topic up to its own claim: leading


class Beat(RuntimeOwner):
    """``Beat(app).run()``: a beat replica until ``stop()``."""

    def __init__(self, app: App, *, timing: LoopTiming | None = None) -> None:
        s = app.settings
        self.timing = timing or LoopTiming(poll_s=0.1)
        self.app = app
        self.prefix = s.topic_prefix
        self.topic = beat_topic(self.prefix)
        self.tz = s.time_zone()
        self.entries: dict[str, PeriodicTask] = dict(app.periodic_tasks)
        self.last: dict[str, int] = {}  # entry -> last tick fired (or skipped), epoch µs
        self.fired = 0  # ticks this replica fired
        self._term: _Term | None = None
        self._due_at = 0  # epoch µs before which no entry is due (so no work per turn)
        self.me = worker_id()

    @property
    def leading(self) -> bool:
        return self._term is not None and self._term.caught_up

    def run(self) -> None:
        runtime = self.open()
        log.info("beat %s: %d periodic entries, waiting for the lead", self.me, len(self.entries))
        try:
            runtime.run()
        finally:
            self._resign()

    def open(self) -> ConsumerRuntime:
        """Create the topics, join the beat group: the runtime to run (or turn, in tests)."""
        s = self.app.settings
        # The task topics of every queue an entry sends to, not only the tasks' own queues.
        queues = queues_of([*self.app.queues, *self._entry_queues()])
        self.app.ensure_topics(queues)
        own = beat_topic(self.prefix)
        tasks = tuple(t for q in queues for t in band_topics(self.prefix, q))
        self.app.broker.check_access(s, Access((own,), (own, *tasks), (beat_group(self.prefix),)))
        # The beat topic gets a record per turn at most: a long fetch wait spares the
        # broker idle fetches (it delays the catch-up read of a new leader by as much).
        # Cooperative-sticky: a replica joining or leaving leaves the leader its partition,
        # so it fires on through the rebalance; an eager assignor revoked it and the leader
        # claimed and read anew (a ~2.5 s gap in the ticks, issue 20).
        config = consumer_config(
            s,
            beat_group(self.prefix),
            strategy="cooperative-sticky",
            **{
                "fetch.wait.max.ms": max(s.fetch_wait_max_ms, _FETCH_WAIT_MS),
                # librdkafka's default, stated: the state is what committed transactions say
                "isolation.level": "read_committed",
            },
        )
        consumer = self.app.broker.consumer(config)
        runtime = self._started(
            ConsumerRuntime(
                consumer,
                self,
                OffsetTracker(),
                timing=self.timing,
                cooperative=incremental_assignment(config),
            )
        )
        runtime.subscribe([self.topic])
        return runtime

    def _entry_queues(self) -> list[str]:
        return [e.queue for e in self.entries.values() if e.queue is not None]

    # -- the runtime's handler --------------------------------------------------------------

    def assigned(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING  # the whole state, not from a committed offset
        self._resign()
        self.last = {}
        self._term = _Term(token=uuid.uuid4().hex)
        self._due_at = 0  # claim at once

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        if partitions:
            self._resign()

    def records(self, batch: list[Message]) -> None:
        for message in batch:
            self._read(message)

    def room(self) -> int:
        return 10_000

    def busy(self) -> bool:
        return False

    def serve(self, timeout: float) -> None:
        term = self._term
        if term is None:
            return
        if term.producer is None:
            if clock.now_micros() >= self._due_at:
                self._claim(term)
        elif term.caught_up:
            self._fire_due(term)

    def drain(self, grace: float) -> None:
        pass

    # -- leading ----------------------------------------------------------------------------

    def _claim(self, term: _Term) -> None:
        """Take the transactional id (fencing any earlier leader) and commit a claim."""
        s = self.app.settings
        config = producer_config(
            s, **{"transactional.id": f"{self.prefix}.beat", "client.id": f"beat-{self.me}"}
        )
        producer = self.app.broker.producer(config)
        try:
            producer.init_transactions(_TXN_TIMEOUT_S)
            producer.begin_transaction()
            claim = {"leader": self.me, "token": term.token}
            producer.produce(self.topic, json.dumps(claim).encode(), LEADER_KEY)
            producer.commit_transaction(_TXN_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == _TXN_DENIED:
                # Not a passing state: the ACLs refuse the transactional id (taskstream
                # .preflight cannot ask without fencing the running leader), so stop here.
                username = s.kafka.get("sasl.username", "")
                raise NotAuthorized("WRITE", "transactional-id", config["transactional.id"],
                                    username) from exc  # fmt: skip
            log.warning("beat %s: cannot claim the lead yet: %s", self.me, exc)
            self._due_at = clock.now_micros() + int(_RETRY_AFTER_S * 1_000_000)
            return  # a later turn tries again with a new producer
        term.producer = producer
        log.info("beat %s: claimed the lead, reading the state", self.me)

    def _read(self, message: Message) -> None:
        key = (message.key() or b"").decode()
        value = message.value()
        if value is None:
            return
        try:
            data = json.loads(value)
        except ValueError:
            log.warning("beat: ignoring a record that is not JSON at offset %s", message.offset())
            return
        if key.startswith(TICK_KEY):
            entry = key[len(TICK_KEY) :]
            # max: a zombie's late record (shown aborted by some brokers) never moves it back
            self.last[entry] = max(self.last.get(entry, 0), int(data["last_us"]))
        elif key == LEADER_KEY:
            term = self._term
            if term is not None and data.get("token") == term.token and not term.caught_up:
                term.caught_up = True
                self._due_at = 0
                BEAT_LEADER.set(1)
                log.info("beat %s: leading (%d entries with state)", self.me, len(self.last))

    def _fire_due(self, term: _Term) -> None:
        now = clock.now_micros()
        if now < self._due_at:
            return
        s = self.app.settings
        fire: list[tuple[PeriodicTask, int]] = []
        updates: dict[str, int] = {}
        for entry in self.entries.values():
            last = self.last.get(entry.name)
            if last is None:  # a new entry: its ticks count from now (recorded, for the next)
                updates[entry.name] = now
                continue
            p = plan(
                entry.schedule,
                last,
                now,
                self.tz,
                catch_up="skip" if s.beat_catch_up == "skip" else "once",
                window_s=s.beat_catch_up_window_s,
            )
            if p.skipped:
                log.warning(
                    "beat: %s missed %d ticks over a long outage; beat_catch_up=%s",
                    entry.name, p.skipped, s.beat_catch_up,
                )  # fmt: skip
            if p.last != last:
                updates[entry.name] = p.last
                fire += [(entry, t) for t in p.fire]
        if updates and not self._commit(term, fire, updates):
            self._due_at = now + int(_RETRY_AFTER_S * 1_000_000)
            return
        self._due_at = min(
            (next_tick(e.schedule, self.last[e.name], self.tz) for e in self.entries.values()),
            default=now + 60_000_000,
        )

    def _commit(
        self, term: _Term, fire: list[tuple[PeriodicTask, int]], updates: dict[str, int]
    ) -> bool:
        """Fire ``fire`` and record ``updates`` in one transaction; False if it failed."""
        producer = term.producer
        assert producer is not None
        try:
            producer.begin_transaction()
            for entry, tick in fire:
                self._produce_tick(producer, entry, tick)
            producer.flush(_TXN_TIMEOUT_S)  # the events acknowledged first
            for name, last in updates.items():
                value = json.dumps({"last_us": last, "leader": self.me}).encode()
                producer.produce(self.topic, value, TICK_KEY + name)
            producer.commit_transaction(_TXN_TIMEOUT_S)
        except KafkaException as exc:
            self._failed(term, exc.args[0])
            return False
        self.last.update(updates)
        for entry, tick in fire:
            BEAT_TICKS.labels(entry.name).inc()
            BEAT_LAST_TICK.labels(entry.name).set(tick / 1_000_000)
            self.fired += 1
            log.info(
                "beat: sent %s (%s) for its tick at %s, task id %s",
                entry.name, entry.task, _iso(tick),
                tick_id(self.prefix, entry.name, tick, self.app.settings.beat_id_secret),
            )  # fmt: skip
        return True

    def _produce_tick(self, producer: Producer, entry: PeriodicTask, tick: int) -> None:
        task = self.app.get_task(entry.task)
        event = task.event(
            entry.encoded_args,
            key=entry.key,
            queue=entry.queue,
            task_id=tick_id(self.prefix, entry.name, tick, self.app.settings.beat_id_secret),
        )
        headers: Headers = [(ENTRY_HEADER, entry.name), (TICK_HEADER, str(tick))]
        producer.produce(
            event_topic(self.prefix, event.queue, event.priority),
            self.app.envelopes.encode_task(event),
            event.key or event.id,
            headers=headers,
        )

    def _failed(self, term: _Term, error: KafkaError) -> None:
        producer = term.producer
        assert producer is not None
        if error.code() in _FENCED or error.fatal():
            # Another replica took the transactional id: it leads now, and this one stops
            # firing. If the group still gives this replica the partition a session later,
            # the other was a zombie (expelled by then): claim again, fencing it in turn.
            log.warning("beat %s: fenced by a newer leader, stepping down: %s", self.me, error)
            self._claim_again(term, self.app.settings.session_timeout_ms / 1000)
            return
        log.warning("beat %s: transaction failed, retrying: %s", self.me, error)
        try:
            producer.abort_transaction(_TXN_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("beat %s: abort failed, claiming anew: %s", self.me, exc)
            self._claim_again(term, _RETRY_AFTER_S)

    def _claim_again(self, term: _Term, after_s: float) -> None:
        """Stop leading; claim with a new producer in ``after_s`` if still assigned. The state
        read so far stays right (a new claim comes after it in the topic): reading goes on."""
        if term.caught_up:
            log.info("beat %s: no longer leading", self.me)
        term.producer, term.token, term.caught_up = None, uuid.uuid4().hex, False
        self._due_at = clock.now_micros() + int(after_s * 1_000_000)
        BEAT_LEADER.set(0)

    def _resign(self) -> None:
        if self._term is not None and self._term.caught_up:
            log.info("beat %s: no longer leading", self.me)
        self._term = None
        BEAT_LEADER.set(0)


def _iso(micros: int) -> str:
    """A tick's time (µs since the epoch) for the log, in UTC to the second."""
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC).isoformat(timespec="seconds")
