"""Kafka share groups (KIP-932) in the :class:`~taskstream.testing.stub_broker.StubBroker`:
:class:`StubShareConsumer`, confluent-kafka's ``ShareConsumer`` API, and the share-partition
state it acquires records from (:class:`ShareCoordinator`).

What it mimics (Apache Kafka 4.x with confluent-kafka 2.16), because shared queues rest on it:

- no assignment: every member of a share group fetches from every partition of the topics it
  subscribes to, and a record is held by one member at a time. A poll *acquires* up to 500
  available records (``max.poll.records``) round-robin over the partitions, each locked for
  the group's ``share.record.lock.duration.ms``, its delivery count incremented (the first
  delivery is 1; ``Message.delivery_count()``);
- a partition's share state starts at the group's first fetch of it: at the partition's start
  (``share.auto.offset.reset=earliest``) or its end (``latest``, the default);
- acknowledgements are kept by the member and sent at its next ``poll``, ``commit_sync``,
  ``commit_async`` or ``close``, inside which the acknowledgement commit callback runs:
  ACCEPT ends a record, RELEASE makes it available again (its count kept), REJECT archives it.
  In ``implicit`` mode (the default) those calls accept the previous poll's records first; in
  ``explicit`` mode a poll with any of them unacknowledged raises ``IllegalStateException``;
- a partition's acknowledgements in one send succeed or fail together, as Kafka's
  ``SharePartition.acknowledge`` rolls them all back when one fails: one of a record this
  member no longer holds (its lock expired) fails them with ``INVALID_RECORD_STATE``, given
  to the callback, and changes nothing;
- a record released, whose lock expires, or still held at ``close()``/``unsubscribe()`` is
  available again, or archived once its delivery count reached ``share.delivery.count.limit``;
  ``crash()`` leaves without a word: its records come back only when their locks expire.

Locks run on the broker's ``clock`` (so ``taskstream.testing``'s ``advance()`` expires them)
and are checked whenever a member polls or acknowledges, with no timer thread: a waiting poll
looks again every 50 ms while any record of its group is locked.

Not mimicked: share sessions and their timeout, and ``max.poll.interval.ms`` (a member that
stops polling keeps its records until their locks expire, as after ``crash()``),
``share.partition.max.record.locks`` (no cap on in-flight records), ``by_duration:`` resets,
RENEW acknowledgements, whole producer batches per poll, the callback's delay (it runs within
the call that sends, ``commit_async()`` included), and ``read_uncommitted`` (Kafka's share
default): transaction markers and aborted records are never delivered, as with
``share.isolation.level=read_committed``, which taskstream sets.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    AcknowledgeType,
    IllegalStateException,
    KafkaError,
    KafkaException,
    Message,
    Messages,
    ShareConsumer,
    TopicPartition,
)

from taskstream.errors import ConfigError

if TYPE_CHECKING:
    from taskstream.testing.stub_broker import StubBroker

__all__ = [
    "RecordState",
    "ShareCoordinator",
    "ShareGroupState",
    "ShareRecord",
    "StubShareConsumer",
]

TP = tuple[str, int]  # (topic, partition)
Key = tuple[str, int, int]  # (topic, partition, offset)
AckCallback = Callable[[dict[TopicPartition, set[int]], KafkaException | None], None]

DEFAULT_POLL_RECORDS = 500  # records a poll acquires at most (max.poll.records)
DEFAULT_LOCK_MS = 30_000  # Kafka's group.share.record.lock.duration.ms
DEFAULT_DELIVERY_LIMIT = 5  # Kafka's group.share.delivery.count.limit
LOCK_MS_RANGE = (15_000, 60_000)  # group.share.{min,max}.record.lock.duration.ms
DELIVERY_LIMIT_RANGE = (2, 10)  # group.share.{min,max}.delivery.count.limit
_RECHECK_S = 0.05  # a waiting poll's look at the locks (no timer thread expires them)
_INVALID_RECORD_STATE = (
    "The record state is invalid. The acknowledgement of delivery could not be completed."
)
# Group configs Kafka knows and the stub accepts without acting on them.
_IGNORED_CONFIGS = frozenset({
    "consumer.session.timeout.ms", "consumer.heartbeat.interval.ms",
    "consumer.assignment.interval.ms", "consumer.assignor.offload.enable",
    "share.session.timeout.ms", "share.heartbeat.interval.ms",
    "share.partition.max.record.locks", "share.renew.acknowledge.enable",
    "share.assignment.interval.ms", "share.assignor.offload.enable",
    "streams.session.timeout.ms", "streams.heartbeat.interval.ms",
    "streams.num.standby.replicas", "streams.initial.rebalance.delay.ms",
    "errors.deadletterqueue.topic.name", "errors.deadletterqueue.copy.record.enable",
})  # fmt: skip


class RecordState(enum.Enum):
    """A delivered record's state in its share partition."""

    AVAILABLE = "available"  # released or its lock expired: the next poll may take it
    ACQUIRED = "acquired"  # locked by one member until it acknowledges or the lock expires
    ACKNOWLEDGED = "acknowledged"  # accepted: never delivered again
    ARCHIVED = "archived"  # rejected, or delivered share.delivery.count.limit times


@dataclass(frozen=True)
class ShareRecord:
    """One delivered record in :class:`ShareGroupState`."""

    state: RecordState
    delivery_count: int
    member: str | None  # the member id holding it, while ACQUIRED


@dataclass(frozen=True)
class ShareGroupState:
    """A share group at one moment (``StubBroker.share_group_state``), for tests and metrics.

    ``records`` has every record delivered at least once, by (topic, partition, offset); a
    record never delivered is not in it. The totals count since the group began: records
    acquired (deliveries), acknowledgements applied by type, and locks that expired.
    """

    members: tuple[str, ...]
    start_offsets: dict[TP, int]  # the share-partition start offset of each partition fetched
    records: dict[Key, ShareRecord]
    deliveries: int
    accepted: int
    released: int
    rejected: int
    expired: int

    def count(self, state: RecordState) -> int:
        return sum(1 for r in self.records.values() if r.state is state)

    @property
    def acquired(self) -> int:
        return self.count(RecordState.ACQUIRED)

    @property
    def available(self) -> int:
        return self.count(RecordState.AVAILABLE)

    @property
    def acknowledged(self) -> int:
        return self.count(RecordState.ACKNOWLEDGED)

    @property
    def archived(self) -> int:
        return self.count(RecordState.ARCHIVED)


class _InFlight:
    """A delivered record's broker-side state."""

    __slots__ = ("count", "deadline", "member", "state")

    def __init__(self) -> None:
        self.state = RecordState.AVAILABLE
        self.count = 0  # deliveries so far
        self.member: StubShareConsumer | None = None  # the holder, while ACQUIRED
        self.deadline = 0.0  # its lock's end on the broker's clock, while ACQUIRED


class _SharePartition:
    """A share group's state of one partition: the start offset (everything before it is
    done) and the records delivered from it."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.records: dict[int, _InFlight] = {}
        self.held: set[int] = set()  # offsets ACQUIRED now

    def holds(self, offset: int, member: StubShareConsumer) -> bool:
        return offset in self.held and self.records[offset].member is member

    def acquire(self, offset: int, member: StubShareConsumer, deadline: float) -> int:
        record = self.records.setdefault(offset, _InFlight())
        record.state, record.member, record.deadline = RecordState.ACQUIRED, member, deadline
        record.count += 1
        self.held.add(offset)
        return record.count

    def give_back(self, offset: int, limit: int) -> None:
        """Released, expired or left: available again, or archived at the delivery limit."""
        record = self.records[offset]
        at_limit = record.count >= limit
        self.finish(offset, RecordState.ARCHIVED if at_limit else RecordState.AVAILABLE)

    def finish(self, offset: int, state: RecordState) -> None:
        """The hold ends: the record is ``state`` now."""
        record = self.records[offset]
        record.state, record.member = state, None
        self.held.discard(offset)

    def advance(self, end: int, hidden: set[int] | tuple[()]) -> None:
        """Move the start past records done with (and offsets never delivered: markers)."""
        done = (RecordState.ACKNOWLEDGED, RecordState.ARCHIVED)
        while self.start < end:
            record = self.records.get(self.start)
            if self.start not in hidden and (record is None or record.state not in done):
                return
            self.start += 1


class _ShareGroup:
    def __init__(self, name: str) -> None:
        self.name = name
        self.auto_offset_reset = "latest"
        self.lock_ms = DEFAULT_LOCK_MS
        self.delivery_limit = DEFAULT_DELIVERY_LIMIT
        self.isolation_level = "read_uncommitted"  # kept; the stub reads committed anyway
        self.other: dict[str, str] = {}  # accepted, not acted on
        self.members: list[StubShareConsumer] = []
        self.partitions: dict[TP, _SharePartition] = {}
        self.deliveries = self.accepted = self.released = self.rejected = self.expired = 0


class ShareCoordinator:
    """The share groups of one :class:`StubBroker` (``StubBroker.share_consumer`` and friends
    reach it); every method takes the broker's lock."""

    def __init__(
        self,
        broker: StubBroker,
        *,
        lock_ms_range: tuple[int, int] = LOCK_MS_RANGE,
        delivery_limit_range: tuple[int, int] = DELIVERY_LIMIT_RANGE,
    ) -> None:
        self.broker = broker
        self.condition = broker.condition
        self.lock_ms_range = lock_ms_range
        self.delivery_limit_range = delivery_limit_range
        self._groups: dict[str, _ShareGroup] = {}

    def consumer(self, config: dict[str, Any]) -> StubShareConsumer:
        return StubShareConsumer(self, config)

    def alter_config(self, group: str, configs: dict[str, str]) -> None:
        """Set group configs, as ``incremental_alter_configs`` (SET) on the group resource:
        all or none, ConfigError with Kafka's message for an unknown key or a bad value."""
        parsed = {name: self._parse(name, str(value)) for name, value in configs.items()}
        with self.condition:
            g = self._group(group)
            for name, value in parsed.items():
                if name == "share.auto.offset.reset":
                    g.auto_offset_reset = str(value)
                elif name == "share.record.lock.duration.ms":
                    g.lock_ms = int(value)
                elif name == "share.delivery.count.limit":
                    g.delivery_limit = int(value)
                elif name == "share.isolation.level":
                    g.isolation_level = str(value)
                else:
                    g.other[name] = str(value)

    def _parse(self, name: str, value: str) -> str | int:
        if name == "share.auto.offset.reset":
            if value.lower() not in ("earliest", "latest"):
                raise ConfigError(
                    f"Invalid value {value} for configuration {name}: the stub broker takes "
                    "'earliest' or 'latest' (not Kafka's 'by_duration:')"
                )
            return value.lower()
        if name == "share.isolation.level":
            if value not in ("read_committed", "read_uncommitted"):
                raise ConfigError(
                    f"Invalid value {value} for configuration {name}: String must be one of: "
                    "read_committed, read_uncommitted"
                )
            return value
        bounds = {
            "share.record.lock.duration.ms": self.lock_ms_range,
            "share.delivery.count.limit": self.delivery_limit_range,
        }.get(name)
        if bounds is None:
            if name not in _IGNORED_CONFIGS:
                raise ConfigError(f"Unknown group config name: {name}")
            return value
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(
                f"Invalid value {value} for configuration {name}: Not a number of type INT"
            ) from None
        low, high = bounds
        if not low <= number <= high:  # Kafka's GroupConfig.validateIntRange
            raise ConfigError(f"{name} must be in the range {low} to {high} inclusive.")
        return number

    def state(self, group: str) -> ShareGroupState:
        with self.condition:
            g = self._groups.get(group) or _ShareGroup(group)
            self._expire(g)
            return ShareGroupState(
                members=tuple(m.member_id for m in g.members),
                start_offsets={tp: sp.start for tp, sp in g.partitions.items()},
                records={
                    (*tp, offset): ShareRecord(
                        r.state, r.count, r.member.member_id if r.member else None
                    )
                    for tp, sp in g.partitions.items()
                    for offset, r in sorted(sp.records.items())
                },
                deliveries=g.deliveries, accepted=g.accepted, released=g.released,
                rejected=g.rejected, expired=g.expired,
            )  # fmt: skip

    # -- for the members (lock held) --------------------------------------------------------

    def _group(self, name: str) -> _ShareGroup:
        g = self._groups.get(name)
        if g is None:
            g = self._groups[name] = _ShareGroup(name)
        return g

    def join(self, member: StubShareConsumer) -> None:
        g = self._group(member.group_id)
        if member not in g.members:
            g.members.append(member)

    def leave(self, member: StubShareConsumer, *, release: bool) -> None:
        """Take ``member`` out of its group; with ``release``, what it holds is given back."""
        g = self._group(member.group_id)
        if member in g.members:
            g.members.remove(member)
        if not release:
            return
        for sp in g.partitions.values():
            for offset in [o for o in sp.held if sp.records[o].member is member]:
                sp.give_back(offset, g.delivery_limit)
        self._advance(g)
        self.condition.notify_all()

    def locked(self, group: str) -> bool:
        """Whether any record of the group is acquired (its lock may expire while waiting)."""
        g = self._groups.get(group)
        return g is not None and any(sp.held for sp in g.partitions.values())

    def acquire(self, member: StubShareConsumer, topics: list[str], n: int) -> list[Message]:
        """Acquire up to ``n`` available records of ``topics`` for ``member``."""
        g = self._group(member.group_id)
        self._expire(g)
        logs, hidden_of = self.broker._logs, self.broker._hidden
        tps = [(t, p) for t in topics if t in logs for p in range(len(logs[t]))]
        if not tps:
            return []
        start = member._turn % len(tps)
        member._turn += 1
        deadline = self.broker.clock() + g.lock_ms / 1000
        out: list[Message] = []
        for tp in tps[start:] + tps[:start]:
            log = logs[tp[0]][tp[1]]
            sp = g.partitions.get(tp)
            if sp is None:  # the group's first fetch of the partition
                sp = g.partitions[tp] = _SharePartition(
                    0 if g.auto_offset_reset == "earliest" else len(log)
                )
            # Hidden offsets (transaction markers, aborted records) are never delivered: the
            # stub reads committed, which taskstream sets (Kafka's share default does not).
            hidden = hidden_of.get(tp, ())
            for offset in range(sp.start, len(log)):
                if len(out) >= n:
                    break
                record = sp.records.get(offset)
                if offset in hidden or (record and record.state is not RecordState.AVAILABLE):
                    continue
                count = sp.acquire(offset, member, deadline)
                out.append(_delivered(log[offset], count))
            if len(out) >= n:
                break
        g.deliveries += len(out)
        return out

    def acknowledge(
        self, member: StubShareConsumer, tp: TP, acks: dict[int, AcknowledgeType]
    ) -> KafkaException | None:
        """Apply one partition's acknowledgements, all or none (as Kafka rolls them back)."""
        g = self._group(member.group_id)
        self._expire(g)
        sp = g.partitions.get(tp)
        if sp is None or not all(sp.holds(offset, member) for offset in acks):
            return KafkaException(
                KafkaError(KafkaError.INVALID_RECORD_STATE, _INVALID_RECORD_STATE)
            )
        for offset, ack in acks.items():
            if ack is AcknowledgeType.ACCEPT:
                sp.finish(offset, RecordState.ACKNOWLEDGED)
                g.accepted += 1
            elif ack is AcknowledgeType.REJECT:
                sp.finish(offset, RecordState.ARCHIVED)
                g.rejected += 1
            else:
                sp.give_back(offset, g.delivery_limit)
                g.released += 1
        self._advance(g)
        self.condition.notify_all()  # released records wake waiting polls
        return None

    def _expire(self, g: _ShareGroup) -> None:
        """Give back every record whose lock has run out (no timer: checked on each touch)."""
        now = self.broker.clock()
        expired = 0
        for sp in g.partitions.values():
            for offset in [o for o in sp.held if sp.records[o].deadline <= now]:
                sp.give_back(offset, g.delivery_limit)
                expired += 1
        if expired:
            g.expired += expired
            self._advance(g)
            self.condition.notify_all()

    def _advance(self, g: _ShareGroup) -> None:
        for (topic, partition), sp in g.partitions.items():
            log = self.broker._logs[topic][partition]
            sp.advance(len(log), self.broker._hidden.get((topic, partition), ()))


def _delivered(m: Message, count: int) -> Message:
    """A fresh Message for the member, with its delivery count."""
    return Message(
        topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(),
        value=m.value(), headers=m.headers(), timestamp=m.timestamp(), delivery_count=count,
    )  # fmt: skip


class StubShareConsumer(ShareConsumer):
    """A share consumer of a :class:`StubBroker`: confluent-kafka's ``ShareConsumer`` API,
    used from one thread at a time, as librdkafka's is.

    Config keys honoured: ``group.id`` (required), ``share.acknowledgement.mode``
    (``implicit``, the default, or ``explicit``) and ``max.poll.records`` (500); any other
    key (``bootstrap.servers``, ``client.id``, ...) is accepted and ignored. The group's own
    configs are set with ``StubBroker.alter_share_group_config``.
    """

    # confluent's C initialiser is never called (no client, no threads): every method of
    # ShareConsumer is overridden here.
    def __init__(self, coordinator: ShareCoordinator, config: dict[str, Any]) -> None:
        group = config.get("group.id")
        if not group:  # confluent-kafka 2.16.2's words
            raise ValueError("Failed to create consumer: group.id must be set")
        mode = str(config.get("share.acknowledgement.mode", "implicit")).lower()
        if mode not in ("implicit", "explicit"):  # stricter than librdkafka, which takes any
            raise ValueError(f"share.acknowledgement.mode {mode!r}: implicit or explicit")
        self._coordinator = coordinator
        self._condition = coordinator.condition
        self.group_id = str(group)
        self.member_id = str(uuid.uuid4())
        self.explicit = mode == "explicit"
        self._max_records = int(config.get("max.poll.records", DEFAULT_POLL_RECORDS))
        self._subscription: list[str] = []
        self._in_flight: dict[Key, AcknowledgeType | None] = {}  # delivered, not yet sent
        self._on_commit: AckCallback | None = None
        self._turn = 0  # the partition a poll starts from, so partitions interleave
        self.closed = False
        self.crashed = False

    def __repr__(self) -> str:
        state = "crashed" if self.crashed else "closed" if self.closed else "open"
        return f"<StubShareConsumer {self.group_id} {self.member_id[-8:]} {state}>"

    def __enter__(self) -> StubShareConsumer:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, exc_traceback: Any) -> bool | None:
        self.close()
        return None

    # -- membership -------------------------------------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        """Join the share group for ``topics`` (replacing the subscription; [] unsubscribes)."""
        self._check_open()
        if any(not t for t in topics) or len(set(topics)) != len(topics):
            raise ValueError("topics must be non-empty and unique")
        if not topics:
            self.unsubscribe()
            return
        with self._condition:
            self._subscription = list(topics)
            self._coordinator.join(self)

    def unsubscribe(self) -> None:
        """Send what is acknowledged (implicit mode: the last poll's records, accepted) and
        leave the group: the records this member still holds are given back."""
        self._check_open()
        self._send(self._settle())
        with self._condition:
            self._coordinator.leave(self, release=True)
            self._subscription = []
            self._in_flight.clear()

    def subscription(self) -> list[str]:
        self._check_open()
        return list(self._subscription)

    def close(self) -> None:
        """Send pending acknowledgements (the callback runs), leave the group and give back
        the records still held."""
        if self.closed:
            return
        self._send(self._settle())
        with self._condition:
            self._coordinator.leave(self, release=True)
            self._in_flight.clear()
            self.closed = True

    def crash(self) -> None:
        """Die without a word (SIGKILL, a lost network): nothing is sent, and the records this
        member holds stay acquired until their locks expire."""
        with self._condition:
            if self.closed:
                return
            self.closed = self.crashed = True
            self._coordinator.leave(self, release=False)
            self._in_flight.clear()

    def set_sasl_credentials(self, username: str, password: str) -> None:
        self._check_open()

    # -- fetching ---------------------------------------------------------------------------

    def poll(self, timeout: float = -1) -> Messages:
        """Send pending acknowledgements, then acquire available records, waiting up to
        ``timeout`` seconds (-1: forever); an empty Messages on timeout."""
        self._check_open()
        if not self._subscription:
            raise IllegalStateException("Consumer is not subscribed to any topics")
        if self.explicit:
            waiting = sum(1 for ack in self._in_flight.values() if ack is None)
            if waiting:
                raise IllegalStateException(
                    f"{waiting} records from previous poll have not been acknowledged"
                )
        self._send(self._settle())
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._condition:
            while True:
                records = self._coordinator.acquire(self, self._subscription, self._max_records)
                if records:
                    for m in records:
                        self._in_flight[_key(m)] = None
                    return Messages(records)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return Messages()
                if self._coordinator.locked(self.group_id):  # a lock may run out meanwhile
                    remaining = _RECHECK_S if remaining is None else min(remaining, _RECHECK_S)
                self._condition.wait(remaining)  # woken by a produce, a release, a leave

    # -- acknowledging ----------------------------------------------------------------------

    def acknowledge(
        self, message: Message, ack_type: AcknowledgeType = AcknowledgeType.ACCEPT
    ) -> None:
        """Mark a polled record (explicit mode); sent at the next poll, commit or close."""
        if not isinstance(message, Message):
            raise TypeError("message must be a Message")
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("the message has no topic, partition or offset")
        self._acknowledge(topic, partition, offset, ack_type, "message")

    def acknowledge_offset(
        self,
        topic: str,
        partition: int,
        offset: int,
        ack_type: AcknowledgeType = AcknowledgeType.ACCEPT,
    ) -> None:
        self._acknowledge(topic, partition, offset, ack_type, "offset")

    def _acknowledge(
        self, topic: str, partition: int, offset: int, ack_type: AcknowledgeType, what: str
    ) -> None:
        self._check_open()
        ack = AcknowledgeType(ack_type)  # ValueError for anything else
        if partition < 0 or offset < 0:
            raise ValueError("partition and offset must not be negative")
        key = (topic, partition, offset)
        if not self.explicit or key not in self._in_flight:  # librdkafka's words for both
            raise IllegalStateException(f"Failed to acknowledge {what}: Local: Erroneous state")
        self._in_flight[key] = ack

    def commit_sync(self, timeout: float = 60) -> dict[TopicPartition, KafkaException | None]:
        """Send pending acknowledgements (implicit mode: the last poll's records, accepted);
        each partition's outcome, None for success ({} when nothing was pending)."""
        self._check_open()
        return self._send(self._settle())

    def commit_async(self) -> None:
        """As commit_sync; the outcome goes to the acknowledgement commit callback only (which
        the stub runs before returning)."""
        self._check_open()
        self._send(self._settle())

    def set_acknowledgement_commit_callback(self, callback: AckCallback | None) -> None:
        """``callback(offsets, exception)``, run per partition of each send, on the thread
        calling poll/commit/close: ``offsets`` {TopicPartition: offsets}, ``exception`` None
        or a KafkaException (INVALID_RECORD_STATE: a record this member no longer held)."""
        self._check_open()
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable or None")
        self._on_commit = callback

    def _settle(self) -> dict[TP, dict[int, AcknowledgeType]]:
        """Take the acknowledgements due (in implicit mode every record polled is accepted),
        by partition."""
        due: dict[TP, dict[int, AcknowledgeType]] = {}
        with self._condition:
            for key, ack in list(self._in_flight.items()):
                if ack is None and not self.explicit:
                    ack = AcknowledgeType.ACCEPT
                if ack is not None:
                    del self._in_flight[key]
                    topic, partition, offset = key
                    due.setdefault((topic, partition), {})[offset] = ack
        return due

    def _send(
        self, due: dict[TP, dict[int, AcknowledgeType]]
    ) -> dict[TopicPartition, KafkaException | None]:
        with self._condition:
            outcomes = [
                (TopicPartition(*tp), set(acks), self._coordinator.acknowledge(self, tp, acks))
                for tp, acks in due.items()
            ]
        callback = self._on_commit
        if callback is not None:
            for tp, offsets, error in outcomes:
                callback({tp: offsets}, error)
        return {tp: error for tp, _offsets, error in outcomes}

    def _check_open(self) -> None:
        if self.closed:
            raise IllegalStateException("Share consumer closed")


def _key(m: Message) -> Key:
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset
