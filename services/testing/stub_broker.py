"""An in-memory Kafka for tests: :class:`StubBroker` and its clients, with librdkafka's semantics.

In the spirit of dramatiq's ``StubBroker``: the same code that runs on a cluster runs on it,
because :class:`StubConsumer` and :class:`StubProducer` subclass confluent-kafka's ``Consumer``
and ``Producer`` (never initialising the C client) and records are confluent ``Message``
objects. What it mimics, because taskstream's correctness rests on it:

- a producer's record is in the log at once, but its delivery report runs only inside that
  producer's ``poll()``/``flush()``, on the calling thread; an oversized record raises
  ``MSG_SIZE_TOO_LARGE`` synchronously (librdkafka's size formula: value + key + headers +
  36 bytes); a keyed record goes to ``crc32(key) % partitions`` (librdkafka's default
  ``consistent_random`` partitioner, so the same partition as on a real cluster), or
  Java's murmur2 with ``partitioner=murmur2_random``;
- consumer groups: a membership change (subscribe, close, kill) makes every member's *next*
  ``poll``/``consume`` run its rebalance callbacks on the calling thread. ``range`` and
  ``roundrobin`` are eager (revoke all, then assign all once every partition is released,
  as the join barrier does); ``cooperative-sticky`` revokes and assigns only what moves. A
  partition moves only after its previous owner released it, so two members never fetch
  one partition at once; a new owner starts at the group's committed offset, else at
  ``auto.offset.reset``;
- ``kill()`` is SIGKILL: no revoke, no commit, the partitions go to the others, which
  redeliver every uncommitted record;
- a paused partition stays paused when unassigned and assigned again (eager or
  incremental), as librdkafka's does: only ``resume()`` fetches it again.

- transactions (``transactional.id``): a transaction's records reach the log together at
  ``commit_transaction()`` (so readers see what ``read_committed`` shows) and never after
  ``abort_transaction()``; ``init_transactions()`` fences the older producers of the same
  transactional id, whose next transactional call raises ``PRODUCER_FENCED`` (fatal);
  ``send_offsets_to_transaction()`` commits the group's offsets with the transaction, and
  raises ``ILLEGAL_GENERATION`` (abortable) when the consumer's group metadata is of an
  older generation than the group's or of a member that left it (KIP-447's fencing);
- transaction markers: a transaction's end writes a control record (its commit or abort
  marker) to each partition it wrote to, and an aborted transaction's records keep their
  offsets too (as if sent before the abort: librdkafka purges those still queued, which
  leave no trace). Neither is ever delivered, but both count in the high watermark, and a
  consumer's ``position()`` moves past them when it reads on (librdkafka's app position);
  so "high watermark minus committed offset" overstates what waits, as on a cluster;
- share groups (KIP-932): ``share_consumer()`` gives a ``StubShareConsumer`` (record locks,
  delivery counts, acknowledgements: see ``taskstream.testing.stub_share``).

Not mimicked: auto-commit (``enable.auto.commit`` must be false, as taskstream sets it),
compaction and retention, session timeouts (a member that stops polling keeps
its partitions, and an eager rebalance waits for it), ``on_lost`` (never called), commits
rejected for a stale generation, fetch latency and batching. Watermarks are always exact,
``cached=True`` or not.
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin._metadata import (  # the classes list_topics() returns
    BrokerMetadata,
    ClusterMetadata,
    PartitionMetadata,
    TopicMetadata,
)

from taskstream.config import Settings
from taskstream.errors import ConfigError
from taskstream.kafka.broker import Access
from taskstream.kafka.share_groups import refused
from taskstream.kafka.topics import TopicSpec

if TYPE_CHECKING:
    from confluent_kafka import ShareConsumer

    from taskstream.testing.stub_share import ShareCoordinator, ShareGroupState

__all__ = ["StubBroker", "StubConsumer", "StubProducer"]

TP = tuple[str, int]  # (topic, partition)
Rebalance = Callable[[Any, list[TopicPartition]], None]
Delivery = Callable[[KafkaError | None, Message], None]

DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes default
_RECORD_OVERHEAD = 36  # bytes librdkafka adds to key + value when checking the size
_OFFSET_INVALID = -1001
_EAGER = frozenset({"range", "roundrobin"})


def _truthy(value: object) -> bool:
    return str(value).lower() in ("true", "1", "yes")


def _bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def _varint_size(n: int) -> int:
    """Bytes of a zigzag varint (Kafka's record format) holding ``n >= 0``."""
    n <<= 1
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def murmur2(data: bytes) -> int:
    """Kafka's (Java client's) murmur2 hash of a key, as a signed 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def _copy(m: Message, error: KafkaError | None = None) -> Message:
    """A fresh Message for each reader (confluent's are mutable: set_value, set_headers)."""
    return Message(
        topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(),
        value=m.value(), headers=m.headers(), error=error, timestamp=m.timestamp(),
    )  # fmt: skip


class _Group:
    """A consumer group: members, the target assignment of the current generation, which
    member holds each partition now, and the committed offsets."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[StubConsumer] = []
        self.generation = 0
        self.target: dict[StubConsumer, set[TP]] = {}
        self.owner: dict[TP, StubConsumer] = {}
        self.committed: dict[TP, int] = {}

    @property
    def strategy(self) -> str:
        return self.members[0].strategy if self.members else "range"


class _GroupMetadata:
    """A consumer's group metadata (``consumer_group_metadata()``), for a transaction."""

    def __init__(self, group: str, member: StubConsumer, generation: int) -> None:
        self.group, self.member, self.generation = group, member, generation


class StubBroker:
    """An in-memory broker implementing :class:`taskstream.kafka.Broker`.

    ``clock`` gives the create time of records and the end of share-group record locks
    (seconds since the epoch). One condition variable guards everything; clients wait on it
    and every change wakes them. ``share_lock_ms_range`` and ``share_delivery_limit_range``
    bound the share groups' ``share.record.lock.duration.ms`` and
    ``share.delivery.count.limit`` (Kafka's ``group.share.{min,max}.*`` broker configs), so a
    test may use locks of a few milliseconds.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        share_lock_ms_range: tuple[int, int] = (15_000, 60_000),
        share_delivery_limit_range: tuple[int, int] = (2, 10),
    ) -> None:
        self.clock = clock
        self._share_bounds = share_lock_ms_range, share_delivery_limit_range
        self._share: ShareCoordinator | None = None  # made at first use (see _shares)
        self.condition = threading.Condition(threading.RLock())
        self._logs: dict[str, list[list[Message]]] = {}
        self._groups: dict[str, _Group] = {}
        self._next_keyless: dict[str, int] = {}
        self._failures: deque[tuple[int, str | None]] = deque()  # (code, topic or any)
        self._producer_epochs: dict[str, int] = {}  # transactional.id -> current epoch
        self._hidden: dict[TP, set[int]] = {}  # offsets never delivered: markers, aborted

    def __repr__(self) -> str:
        return f"<StubBroker topics={len(self._logs)} groups={len(self._groups)}>"

    # -- the Broker protocol ----------------------------------------------------------------

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return StubConsumer(self, config)

    def producer(self, config: dict[str, Any]) -> Producer:
        return StubProducer(self, config)

    def share_consumer(self, config: dict[str, Any]) -> ShareConsumer:
        """A member of the share group ``config["group.id"]`` (see stub_share)."""
        return self._shares().consumer(config)

    def alter_share_group_config(self, group: str, configs: dict[str, str]) -> None:
        """Set a share group's configs, as ``incremental_alter_configs`` on
        ``ConfigResource(ResourceType.GROUP, group)`` does: ``share.auto.offset.reset``
        (``earliest``/``latest``, default latest), ``share.record.lock.duration.ms`` (default
        30000), ``share.delivery.count.limit`` (default 5), ``share.isolation.level``; a value
        out of range raises ConfigError with Kafka's message, and nothing changes."""
        self._shares().alter_config(group, configs)

    def alter_share_group(
        self, settings: Settings, group: str, entries: dict[str, str], timeout: float = 30.0
    ) -> None:
        """The Broker protocol's: :meth:`alter_share_group_config`, a refusal raised as the
        real cluster's is (SharedQueueError, with the broker's message)."""
        try:
            self.alter_share_group_config(group, entries)
        except ConfigError as exc:
            raise refused(group, entries, str(exc)) from exc

    def share_group_state(self, group: str) -> ShareGroupState:
        """A share group's members, start offsets, delivered records and totals, now."""
        return self._shares().state(group)

    def ensure_topics(
        self, settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0
    ) -> list[str]:
        """Create the topics that do not exist yet; returns the names created."""
        return [s.name for s in specs if self.create_topic(s.name, s.partitions)]

    def check_access(self, settings: Settings, access: Access, timeout: float = 30.0) -> None:
        """Everything is allowed here: no credentials, no ACLs."""

    def partition_counts(
        self, settings: Settings, names: Iterable[str], timeout: float = 30.0
    ) -> dict[str, int]:
        """The partition count of each of ``names`` that exists."""
        topics = self.topics()
        return {n: topics[n] for n in names if n in topics}

    # -- set-up, faults and introspection for tests -----------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> bool:
        """Create a topic; False if it exists (its partition count is left alone)."""
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        with self.condition:
            if name in self._logs:
                return False
            self._logs[name] = [[] for _ in range(partitions)]
            for group in self._groups.values():  # members subscribed to it rebalance
                if any(name in (m.subscription or ()) for m in group.members):
                    self._rebalance(group)
            self.condition.notify_all()
            return True

    def topics(self) -> dict[str, int]:
        """Every topic and its partition count."""
        with self.condition:
            return {name: len(log) for name, log in self._logs.items()}

    def records(self, topic: str, partition: int | None = None) -> list[Message]:
        """A topic's records (of one partition, or of all, partition by partition), without
        transaction markers and aborted records (what a consumer reads)."""
        with self.condition:
            log = self._logs[topic]
            chosen = range(len(log)) if partition is None else [partition]
            return [
                _copy(m)
                for p in chosen
                for m in log[p]
                if m.offset() not in self._hidden.get((topic, p), ())
            ]

    def end_offset(self, topic: str, partition: int) -> int:
        """The high watermark: the offset the next record of the partition gets."""
        with self.condition:
            return len(self._logs[topic][partition])

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The group's committed offset of a partition, None if it has none."""
        with self.condition:
            g = self._groups.get(group)
            return None if g is None else g.committed.get((topic, partition))

    def members(self, group: str) -> list[StubConsumer]:
        with self.condition:
            g = self._groups.get(group)
            return list(g.members) if g is not None else []

    def fail_deliveries(
        self, n: int = 1, code: int = KafkaError._MSG_TIMED_OUT, topic: str | None = None
    ) -> None:
        """Make the next ``n`` produces (by any producer; to ``topic`` only, if given) fail:
        their delivery report carries ``KafkaError(code)`` and the record is not appended."""
        with self.condition:
            self._failures.extend([(code, topic)] * n)

    def caught_up(
        self,
        group: str,
        topics: Iterable[str],
        *,
        not_due: Callable[[Message], bool] | None = None,
    ) -> bool:
        """Whether the group committed the end of every partition of ``topics``.

        With ``not_due``, a partition whose record at the committed offset is not due yet
        (``not_due(record)`` is true) counts as caught up: it waits, and so does all that
        follows it in the partition (delay tiers, whose records ripen in order).
        """
        with self.condition:
            g = self._groups.get(group)
            committed = g.committed if g is not None else {}
            for topic in topics:
                for partition, log in enumerate(self._logs.get(topic, ())):
                    position = self._next_record(
                        (topic, partition), log, committed.get((topic, partition), 0)
                    )
                    if position >= len(log):
                        continue  # nothing but markers (not records) past the commit
                    if not_due is None or not not_due(log[position]):
                        return False
            return True

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Block until ``predicate()`` (checked under the broker's lock at every change) is
        true; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"not reached within {timeout}s")
                # Re-check now and then: a predicate may depend on time (a record falls due).
                self.condition.wait(min(remaining, 0.05))

    def join(
        self,
        group: str,
        topics: Iterable[str],
        timeout: float = 10.0,
        *,
        not_due: Callable[[Message], bool] | None = None,
    ) -> None:
        """Block until ``group`` committed every record of ``topics`` (see :meth:`caught_up`),
        like dramatiq's ``StubBroker.join``; TimeoutError otherwise."""
        names = list(topics)
        try:
            self.wait_until(lambda: self.caught_up(group, names, not_due=not_due), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"group {group!r} did not catch up on {names} in {timeout}s"
            ) from None

    # -- inside the clients (called with the lock held) -------------------------------------

    def _shares(self) -> ShareCoordinator:
        # Imported here: ShareConsumer is in confluent-kafka 2.16 and later only, and the rest
        # of the stub broker works with older ones.
        from taskstream.testing.stub_share import ShareCoordinator

        with self.condition:
            if self._share is None:
                lock_ms, limit = self._share_bounds
                self._share = ShareCoordinator(
                    self, lock_ms_range=lock_ms, delivery_limit_range=limit
                )
            return self._share

    def _group(self, name: str) -> _Group:
        g = self._groups.get(name)
        if g is None:
            g = self._groups[name] = _Group(name)
        return g

    def _metadata(self, topic: str | None) -> ClusterMetadata:
        """What ``list_topics`` returns: one broker (id 0) leading every partition."""
        with self.condition:
            md: Any = ClusterMetadata()  # its attributes are typed by their None defaults
            md.cluster_id, md.controller_id, md.orig_broker_id = "stub", 0, 0
            md.orig_broker_name = "stub:9092/0"
            node: Any = BrokerMetadata()
            node.id, node.host, node.port = 0, "stub", 9092
            md.brokers = {0: node}
            for name in [topic] if topic is not None else sorted(self._logs):
                tm: Any = TopicMetadata()
                tm.topic = name
                log = self._logs.get(name)
                if log is None:
                    tm.error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
                for i in range(len(log or ())):
                    pm: Any = PartitionMetadata()
                    pm.id, pm.leader, pm.replicas, pm.isrs = i, 0, [0], [0]
                    tm.partitions[i] = pm
                md.topics[name] = tm
            result: ClusterMetadata = md
            return result

    def share_caught_up(self, group: str, topics: Iterable[str]) -> bool:
        """Whether share group ``group`` ended every record of ``topics`` (acknowledged or
        archived), from each partition's start offset (0 before its first fetch: the start
        of an ``earliest`` group, as taskstream's are)."""
        from taskstream.testing.stub_share import RecordState

        ended = (RecordState.ACKNOWLEDGED, RecordState.ARCHIVED)
        with self.condition:
            state = self.share_group_state(group)
            for topic in topics:
                for partition, log in enumerate(self._logs.get(topic, ())):
                    tp = (topic, partition)
                    offset = self._next_record(tp, log, state.start_offsets.get(tp, 0))
                    while offset < len(log):
                        record = state.records.get((topic, partition, offset))
                        if record is None or record.state not in ended:
                            return False
                        offset = self._next_record(tp, log, offset + 1)
            return True

    def _next_record(self, tp: TP, log: list[Message], offset: int) -> int:
        """The offset of the first deliverable record at or after ``offset``, or the end."""
        hidden = self._hidden.get(tp, ())
        while offset < len(log) and offset in hidden:
            offset += 1
        return offset

    def _append_hidden(self, topic: str, partition: int, value: bytes | None = None) -> None:
        """Take an offset with a record no consumer gets: a transaction marker (``value``
        None) or an aborted transaction's record."""
        part = self._logs[topic][partition]
        offset = len(part)
        stamp = (TIMESTAMP_CREATE_TIME, int(self.clock() * 1000))
        part.append(
            Message(topic=topic, partition=partition, offset=offset, value=value, timestamp=stamp)
        )
        self._hidden.setdefault((topic, partition), set()).add(offset)
        self.condition.notify_all()

    def _partition_for(self, topic: str, key: bytes | None, count: int, murmur: bool) -> int:
        if key is None:  # keyless: spread round-robin
            n = self._next_keyless.get(topic, 0)
            self._next_keyless[topic] = n + 1
            return n % count
        if murmur:
            return (murmur2(key) & 0x7FFFFFFF) % count
        return zlib.crc32(key) % count

    def _join_group(self, member: StubConsumer) -> None:
        g = self._group(member.group_id)
        if member not in g.members:
            g.members.append(member)
        self._rebalance(g)

    def _leave_group(self, member: StubConsumer) -> None:
        g = self._groups.get(member.group_id)
        if g is None or member not in g.members:
            return
        g.members.remove(member)
        for tp in [tp for tp, owner in g.owner.items() if owner is member]:
            del g.owner[tp]
        g.target.pop(member, None)
        self._rebalance(g)

    def _rebalance(self, g: _Group) -> None:
        """A new generation: the target assignment every member picks up at its next poll."""
        g.generation += 1
        subscribed = {m: [t for t in (m.subscription or ()) if t in self._logs] for m in g.members}
        partitions = {t: len(self._logs[t]) for ts in subscribed.values() for t in ts}
        strategy = g.strategy
        if strategy == "cooperative-sticky":
            g.target = _sticky(subscribed, partitions, g.target)
        elif strategy == "roundrobin":
            g.target = _roundrobin(subscribed, partitions)
        else:
            g.target = _range(subscribed, partitions)
        self.condition.notify_all()


def _range(
    subscribed: dict[StubConsumer, list[str]], counts: dict[str, int]
) -> dict[StubConsumer, set[TP]]:
    """Kafka's RangeAssignor: per topic, consecutive partitions to members by member id."""
    target: dict[StubConsumer, set[TP]] = {m: set() for m in subscribed}
    for topic, count in counts.items():
        members = sorted((m for m, ts in subscribed.items() if topic in ts), key=_member_key)
        share, extra = divmod(count, len(members))
        start = 0
        for i, m in enumerate(members):
            n = share + (1 if i < extra else 0)
            target[m].update((topic, p) for p in range(start, start + n))
            start += n
    return target


def _roundrobin(
    subscribed: dict[StubConsumer, list[str]], counts: dict[str, int]
) -> dict[StubConsumer, set[TP]]:
    """Kafka's RoundRobinAssignor: every partition in order, dealt to members in turn."""
    target: dict[StubConsumer, set[TP]] = {m: set() for m in subscribed}
    members = sorted(subscribed, key=_member_key)
    turn = 0
    for topic in sorted(counts):
        for p in range(counts[topic]):
            for _ in range(len(members)):
                m = members[turn % len(members)]
                turn += 1
                if topic in subscribed[m]:
                    target[m].add((topic, p))
                    break
    return target


def _sticky(
    subscribed: dict[StubConsumer, list[str]],
    counts: dict[str, int],
    previous: dict[StubConsumer, set[TP]],
) -> dict[StubConsumer, set[TP]]:
    """A cooperative-sticky assignment: members keep what they had, balanced to within one."""
    valid = {(t, p) for t, n in counts.items() for p in range(n)}
    target: dict[StubConsumer, set[TP]] = {}
    taken: set[TP] = set()
    for m, topics in subscribed.items():
        kept = {tp for tp in previous.get(m, ()) if tp in valid and tp[0] in topics} - taken
        target[m] = kept
        taken |= kept
    members = sorted(subscribed, key=_member_key)
    for tp in sorted(valid - taken):
        eligible = [m for m in members if tp[0] in subscribed[m]]
        target[min(eligible, key=lambda m: len(target[m]))].add(tp)
    for _ in range(len(valid)):  # move one partition at a time from the fullest member
        most = max(members, key=lambda m: len(target[m]))
        least = min(members, key=lambda m: len(target[m]))
        if len(target[most]) - len(target[least]) <= 1:
            break
        movable = sorted(tp for tp in target[most] if tp[0] in subscribed[least])
        if not movable:
            break
        target[most].discard(movable[-1])
        target[least].add(movable[-1])
    return target


def _member_key(m: StubConsumer) -> str:
    return m.member_id


class StubConsumer(Consumer):
    """A consumer of a :class:`StubBroker`: confluent-kafka's ``Consumer`` API (the part
    taskstream uses), used from one thread at a time, as librdkafka's is.

    Config keys honoured: ``group.id``, ``partition.assignment.strategy`` (its first entry:
    ``range`` and ``roundrobin`` eager, ``cooperative-sticky`` incremental),
    ``auto.offset.reset`` (``earliest``/``latest``, default ``latest`` as in librdkafka),
    ``enable.auto.offset.store`` and ``on_commit``. ``enable.auto.commit`` must be false.
    """

    # confluent's C initialiser is never called: no client, no threads, no sockets. Every
    # method taskstream uses is overridden; any other one raises "Consumer closed".
    def __init__(self, broker: StubBroker, config: dict[str, Any]) -> None:
        if _truthy(config.get("enable.auto.commit", True)):
            raise ValueError(
                "StubConsumer does not implement enable.auto.commit=true (librdkafka's "
                "default): set it to False and commit explicitly, as taskstream does"
            )
        strategy = str(config.get("partition.assignment.strategy", "range,roundrobin"))
        self.strategy = strategy.split(",")[0].strip()
        if self.strategy not in ("range", "roundrobin", "cooperative-sticky"):
            raise ValueError(f"unknown partition.assignment.strategy {strategy!r}")
        self._broker = broker
        self.group_id = str(config.get("group.id") or "")
        self.member_id = f"rdkafka-{uuid.uuid4()}"
        self._earliest = str(config.get("auto.offset.reset", "latest")).lower() in (
            "earliest", "smallest", "beginning",
        )  # fmt: skip
        self._auto_store = _truthy(config.get("enable.auto.offset.store", True))
        self._on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = (
            config.get("on_commit")
        )
        self.subscription: list[str] | None = None
        self._on_assign: Rebalance | None = None
        self._on_revoke: Rebalance | None = None
        self._generation = 0  # the group generation whose rebalance this member has run
        self._owned: set[TP] = set()  # partitions the group lets this member hold
        self._awaiting: set[TP] = set()  # its target partitions still held by another
        self._assign_due = False  # on_assign of the current generation not yet called
        self._called_assign = False  # the rebalance callback assigned by itself
        self._positions: dict[TP, int] = {}  # the fetch assignment: next offset to read
        self._consumed: set[TP] = set()  # partitions with a position() (read or seeked)
        self._paused: set[TP] = set()
        self._stored: dict[TP, int] = {}
        self._reports: list[tuple[KafkaError | None, list[TopicPartition]]] = []
        self._turn = 0  # which partition a fetch starts from, so partitions interleave
        self.closed = False
        self.killed = False

    def __repr__(self) -> str:
        state = "killed" if self.killed else "closed" if self.closed else "open"
        return f"<StubConsumer {self.group_id} {self.member_id[-8:]} {state}>"

    def __enter__(self) -> StubConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- membership -------------------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: Rebalance | None = None,
        on_revoke: Rebalance | None = None,
        on_lost: Rebalance | None = None,
    ) -> None:
        """Join the group; the assignment arrives in a later poll(). ``on_lost`` is kept but
        never called: the stub has no session timeout."""
        self._check_open()
        if not self.group_id:
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "group.id is not set"))
        if any(t.startswith("^") for t in topics):
            raise ValueError("StubConsumer does not support regex subscriptions")
        with self._broker.condition:
            self.subscription = list(topics)
            self._on_assign, self._on_revoke = on_assign, on_revoke
            self._broker._join_group(self)

    def unsubscribe(self) -> None:
        self._check_open()
        self._leave()

    def close(self) -> None:
        """Leave cleanly: the revoke callback runs (it may commit), then the group rebalances."""
        if self.closed:
            return
        self._leave()
        with self._broker.condition:
            self.closed = True
            self._positions.clear()

    def kill(self) -> None:
        """Die as with SIGKILL: no revoke callback, no commit. The group's other members take
        the partitions at their next poll and read them from the committed offsets."""
        with self._broker.condition:
            if self.closed:
                return
            self.closed = self.killed = True
            self._broker._leave_group(self)
            self._owned.clear()
            self._positions.clear()
            self._reports.clear()

    def consumer_group_metadata(self) -> object:
        """What a transaction's offsets are checked against: group, member, generation."""
        return _GroupMetadata(self.group_id, self, self._generation)

    def memberid(self) -> str:
        return self.member_id

    def _leave(self) -> None:
        if self.subscription is None:
            return
        with self._broker.condition:  # a pending rebalance is moot: revoke what it holds
            owned = sorted(self._owned)
        if owned:
            self._revoke(owned)
        with self._broker.condition:
            self._broker._leave_group(self)
            self.subscription = None
            self._owned.clear()
            self._awaiting.clear()
            self._assign_due = False
            self._positions.clear()

    # -- fetching ---------------------------------------------------------------------------

    def poll(self, timeout: float | None = -1) -> Message | None:
        """The next record, waiting up to ``timeout`` seconds (None or -1: forever). Runs due
        rebalance and commit callbacks first, on this thread."""
        batch = self._take(1, timeout)
        return batch[0] if batch else None

    def consume(self, num_messages: int = 1, timeout: float | None = -1) -> list[Message]:
        """Up to ``num_messages`` records; as librdkafka's, it waits for all of them or the
        timeout (``consume(n, 0)`` takes what is ready)."""
        if not 0 <= num_messages <= 1_000_000:
            raise ValueError("num_messages must be between 0 and 1000000 (1M)")
        return self._take(num_messages, timeout) if num_messages else []

    def _take(self, n: int, timeout: float | None) -> list[Message]:
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        condition = self._broker.condition
        out: list[Message] = []
        while True:
            self._serve()
            with condition:
                self._check_open()
                if self._reports or self._next_action(dry_run=True):
                    continue  # a change arrived since _serve(): run its callbacks first
                out.extend(self._fetch(n - len(out)))
                if len(out) >= n:
                    return out
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return out
                condition.wait(remaining)  # woken by any produce, commit or rebalance

    def _fetch(self, n: int) -> list[Message]:
        """Up to ``n`` records from the unpaused partitions (lock held)."""
        out: list[Message] = []
        ready = [tp for tp in self._positions if tp not in self._paused]
        if not ready:
            return out
        start = self._turn % len(ready)
        self._turn += 1
        logs, hidden_of = self._broker._logs, self._broker._hidden
        for tp in ready[start:] + ready[:start]:
            log = logs.get(tp[0])
            if log is None or tp[1] >= len(log):
                continue
            part = log[tp[1]]
            hidden = hidden_of.get(tp, ())
            position = self._positions[tp]
            while position < len(part) and len(out) < n:
                if position not in hidden:  # markers and aborted records: read past
                    out.append(_copy(part[position]))
                position += 1
            if position != self._positions[tp]:
                self._positions[tp] = position
                self._consumed.add(tp)
                if self._auto_store:
                    self._stored[tp] = position
            if len(out) >= n:
                break
        return out

    # -- rebalancing ------------------------------------------------------------------------

    def _serve(self) -> None:
        """Run what is due, outside the lock: commit callbacks, then rebalance steps."""
        condition = self._broker.condition
        while True:
            with condition:
                if self.closed:
                    return
                reports, self._reports = self._reports, []
                action = self._next_action(dry_run=False)
            if self._on_commit is not None:
                for err, partitions in reports:
                    self._on_commit(err, partitions)
            if action is None and not reports:
                return
            if action is not None:
                action()

    def _next_action(self, *, dry_run: bool) -> Callable[[], None] | None:
        """The next rebalance step of this member, if one is due (lock held)."""
        if self.subscription is None or self.closed:
            return None
        group = self._broker._group(self.group_id)
        eager = self.strategy in _EAGER
        if self._generation != group.generation:
            if dry_run:
                return _NOTHING
            target = set(group.target.get(self, ()))
            leaving = set(self._owned) if eager else self._owned - target
            self._generation = group.generation
            self._awaiting = target if eager else target - self._owned
            self._assign_due = True
            if leaving:
                revoked = sorted(leaving)
                return lambda: self._revoke(revoked)
        if not (self._assign_due or self._awaiting):
            return None
        free = {tp for tp in self._awaiting if group.owner.get(tp) in (None, self)}
        if eager and free != self._awaiting:
            return None  # the join barrier: wait until every old owner has revoked
        if not free and not self._assign_due:
            return None
        if dry_run:
            return _NOTHING
        for tp in free:
            group.owner[tp] = self
        self._owned |= free
        self._awaiting -= free
        self._assign_due = False
        assigned = sorted(free)
        return lambda: self._assign(assigned)

    def _revoke(self, partitions: list[TP]) -> None:
        if self._on_revoke is not None:
            self._on_revoke(self, [TopicPartition(t, p) for t, p in partitions])
        with self._broker.condition:
            group = self._broker._group(self.group_id)
            for tp in partitions:  # unassigned after the callback, as confluent-kafka does
                self._positions.pop(tp, None)  # a pause stays, as librdkafka's does
                self._consumed.discard(tp)
                self._stored.pop(tp, None)
                if group.owner.get(tp) is self:
                    del group.owner[tp]
            self._owned.difference_update(partitions)
            self._broker.condition.notify_all()

    def _assign(self, partitions: list[TP]) -> None:
        tps = [TopicPartition(t, p) for t, p in partitions]
        self._called_assign = False
        if self._on_assign is not None:
            self._on_assign(self, tps)
        if not self._called_assign:  # confluent-kafka assigns when the callback did not
            if self.strategy in _EAGER:
                self.assign(tps)
            else:
                self.incremental_assign(tps)

    # -- assignment and positions -----------------------------------------------------------

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Replace the fetch assignment; each starts at its offset (a logical one resolved)."""
        self._check_open()
        with self._broker.condition:
            self._called_assign = True
            self._positions.clear()
            self._consumed.clear()
            for tp in partitions:
                self._positions[(tp.topic, tp.partition)] = self._start(tp)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self._check_open()
        with self._broker.condition:
            self._called_assign = True
            for tp in partitions:
                self._positions[(tp.topic, tp.partition)] = self._start(tp)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self._check_open()
        with self._broker.condition:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._positions.pop(key, None)
                self._consumed.discard(key)

    def unassign(self) -> None:
        self._check_open()
        with self._broker.condition:
            self._positions.clear()
            self._consumed.clear()

    def assignment(self) -> list[TopicPartition]:
        self._check_open()
        with self._broker.condition:
            return [TopicPartition(t, p) for t, p in self._positions]

    def _start(self, tp: TopicPartition) -> int:
        """Where reading a partition starts (lock held): an explicit offset, else the
        group's committed one, else ``auto.offset.reset``; out of range resets too."""
        log = self._broker._logs.get(tp.topic)
        end = len(log[tp.partition]) if log is not None and tp.partition < len(log) else 0
        reset = 0 if self._earliest else end
        offset = tp.offset
        if offset == OFFSET_BEGINNING:
            return 0
        if offset == OFFSET_END:
            return end
        if offset < 0:  # OFFSET_STORED, OFFSET_INVALID: the committed offset
            group = self._broker._groups.get(self.group_id)
            committed = group.committed.get((tp.topic, tp.partition)) if group else None
            if committed is None:
                return reset
            offset = committed
        return offset if offset <= end else reset

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._check_open()
        with self._broker.condition:
            self._paused.update(
                (tp.topic, tp.partition)
                for tp in partitions
                if (tp.topic, tp.partition) in self._positions
            )

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._check_open()
        with self._broker.condition:
            self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)
            self._broker.condition.notify_all()

    def seek(self, partition: TopicPartition) -> None:
        """Move an assigned partition's fetch position (paused or not)."""
        self._check_open()
        key = (partition.topic, partition.partition)
        with self._broker.condition:
            if key not in self._positions:
                raise KafkaException(
                    KafkaError(KafkaError._UNKNOWN_PARTITION, f"{key} is not assigned")
                )
            self._positions[key] = self._start(partition)
            self._consumed.add(key)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The next offset to read of each: OFFSET_INVALID before a read or seek, as in
        librdkafka."""
        self._check_open()
        with self._broker.condition:
            out = []
            for tp in partitions:
                key = (tp.topic, tp.partition)
                known = key in self._consumed and key in self._positions
                out.append(TopicPartition(*key, self._positions[key] if known else _OFFSET_INVALID))
            return out

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = -1, cached: bool = False
    ) -> tuple[int, int]:
        """``(low, high)``: always exact here, cached or not."""
        self._check_open()
        with self._broker.condition:
            log = self._broker._logs.get(partition.topic)
            if log is None or not 0 <= partition.partition < len(log):
                raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
            return 0, len(log[partition.partition])

    def list_topics(self, topic: str | None = None, timeout: float | None = -1) -> ClusterMetadata:
        self._check_open()
        return self._broker._metadata(topic)

    # -- offsets ----------------------------------------------------------------------------

    def store_offsets(
        self, message: Message | None = None, offsets: list[TopicPartition] | None = None
    ) -> None:
        self._check_open()
        with self._broker.condition:
            if message is not None:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                assert topic is not None and partition is not None and offset is not None
                self._stored[(topic, partition)] = offset + 1
            for tp in offsets or ():
                self._stored[(tp.topic, tp.partition)] = tp.offset

    def commit(  # type: ignore[override]  # one signature for confluent's six overloads
        self,
        message: Message | None = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition] | None:
        """Commit a message's next offset, the given offsets, or else the stored offsets.
        Synchronous: returns the committed partitions or raises KafkaException; either way
        ``on_commit(err, partitions)`` runs at the next poll."""
        self._check_open()
        if message is not None and offsets is not None:
            raise ValueError("message and offsets are mutually exclusive")
        if not self.group_id:
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "group.id is not set"))
        broker = self._broker
        with broker.condition:
            group = broker._group(self.group_id)
            if message is not None:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                assert topic is not None and partition is not None and offset is not None
                parts = [TopicPartition(topic, partition, offset + 1)]
            elif offsets is not None:
                parts = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]
            else:
                parts = [
                    TopicPartition(t, p, o)
                    for (t, p), o in self._stored.items()
                    if (t, p) in self._positions and group.committed.get((t, p)) != o
                ]
            parts = [tp for tp in parts if tp.offset >= 0]
            err = None if parts else KafkaError(KafkaError._NO_OFFSET)
            for tp in parts:
                group.committed[(tp.topic, tp.partition)] = tp.offset
            if self._on_commit is not None:
                self._reports.append((err, parts))
            broker.condition.notify_all()
        if asynchronous:
            return None
        if err is not None:
            raise KafkaException(err)
        return parts

    def committed(
        self, partitions: list[TopicPartition], timeout: float | None = -1
    ) -> list[TopicPartition]:
        self._check_open()
        with self._broker.condition:
            group = self._broker._groups.get(self.group_id)
            found = group.committed if group is not None else {}
            return [
                TopicPartition(tp.topic, tp.partition, found.get((tp.topic, tp.partition), -1001))
                for tp in partitions
            ]

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("Consumer closed")


def _nothing() -> None:
    return None


_NOTHING = _nothing  # a dry run's "something is due"


class StubProducer(Producer):
    """A producer of a :class:`StubBroker`: confluent-kafka's ``Producer`` API (the part
    taskstream uses), safe to share between threads.

    A record is in the log as soon as ``produce`` returns; its delivery report (``callback``
    or ``on_delivery``) waits for a ``poll``/``flush`` of this producer, on whichever thread
    calls it. Config keys honoured: ``message.max.bytes``, ``partitioner``
    (``murmur2``/``murmur2_random``: Java's hash; else librdkafka's crc32), ``on_delivery``.
    """

    def __init__(self, broker: StubBroker, config: dict[str, Any]) -> None:
        self._broker = broker
        self._max_bytes = int(config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        self._murmur = str(config.get("partitioner", "consistent_random")).startswith("murmur2")
        self._default_callback: Delivery | None = config.get("on_delivery")
        self._reports: deque[tuple[Delivery | None, KafkaError | None, Message]] = deque()
        self._transactional_id: str | None = config.get("transactional.id")
        self._epoch: int | None = None  # set by init_transactions()
        self._transaction: list[tuple[Any, ...]] | None = None  # produce() calls held back
        self._offsets: list[tuple[str, TopicPartition]] = []  # the transaction's, by group

    def __repr__(self) -> str:
        return f"<StubProducer reports={len(self._reports)}>"

    # -- transactions -----------------------------------------------------------------------

    def init_transactions(self, timeout: float | None = None) -> None:
        """Take the transactional id: every older producer with it is fenced from now on."""
        if self._transactional_id is None:
            raise KafkaException(KafkaError(KafkaError._NOT_CONFIGURED, "no transactional.id"))
        with self._broker.condition:
            epochs = self._broker._producer_epochs
            self._epoch = epochs[self._transactional_id] = (
                epochs.get(self._transactional_id, -1) + 1
            )

    def begin_transaction(self) -> None:
        self._check_epoch()
        self._transaction = []
        self._offsets = []

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: object, timeout: float | None = None
    ) -> None:
        """The group's offsets, committed with the transaction (or raise: the member's
        generation is over, and the transaction must be aborted)."""
        assert isinstance(group_metadata, _GroupMetadata)
        with self._broker.condition:
            self._check_epoch()
            if self._transaction is None:
                raise KafkaException(KafkaError(KafkaError._STATE, "no transaction begun"))
            group = self._broker._groups.get(group_metadata.group)
            if (
                group is None
                or group_metadata.member not in group.members
                or group.generation != group_metadata.generation
            ):
                raise KafkaException(
                    KafkaError(
                        KafkaError.ILLEGAL_GENERATION,
                        "the consumer group's generation is over",
                        txn_requires_abort=True,
                    )
                )
            self._offsets += [(group_metadata.group, tp) for tp in positions]

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Append the transaction's records to the log, all at once, then a commit marker
        to each partition written to (or raise if fenced)."""
        broker = self._broker
        with broker.condition:
            self._check_epoch()
            held, self._transaction = self._transaction or [], None
            written = [self._append(*call) for call in held]
            for topic, partition in dict.fromkeys(tp for tp in written if tp is not None):
                broker._append_hidden(topic, partition)
            for group, tp in self._offsets:
                broker._group(group).committed[(tp.topic, tp.partition)] = tp.offset
            self._offsets = []
            broker.condition.notify_all()

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Drop the transaction: its records keep offsets no consumer reads, and each
        partition written to gets an abort marker."""
        broker = self._broker
        with broker.condition:
            held, self._transaction = self._transaction or [], None
            self._offsets = []
            touched: dict[TP, None] = {}
            for topic, value, key, partition, *_rest in held:
                log = broker._logs.get(topic)
                if log is None or partition >= len(log):
                    continue
                if partition < 0:
                    partition = broker._partition_for(topic, key, len(log), self._murmur)
                broker._append_hidden(topic, partition, value or b"")
                touched[(topic, partition)] = None
            for topic, partition in touched:
                broker._append_hidden(topic, partition)

    def _check_epoch(self) -> None:
        if self._epoch is None or self._transactional_id is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "init_transactions() first"))
        if self._broker._producer_epochs[self._transactional_id] != self._epoch:
            self._transaction = None
            raise KafkaException(
                KafkaError(
                    KafkaError.PRODUCER_FENCED,
                    "There is a newer producer with the same transactionalId",
                    fatal=True,
                )
            )

    def __len__(self) -> int:
        """Delivery reports not served yet."""
        return len(self._reports)

    def __bool__(self) -> bool:
        return True

    def __enter__(self) -> StubProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Delivery | None = None,
        on_delivery: Delivery | None = None,
        timestamp: int = 0,
        headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Append a record now; its delivery report runs in a later poll()/flush().

        Raises KafkaException(MSG_SIZE_TOO_LARGE) over ``message.max.bytes`` and
        KafkaException(_UNKNOWN_PARTITION) for a partition the topic does not have; an
        unknown topic is reported (``_UNKNOWN_TOPIC``) to the delivery callback.
        """
        report = on_delivery or callback or self._default_callback
        value_b, key_b = _bytes(value), _bytes(key)
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        header_list: list[tuple[str, str | bytes | None]] = [(n, _bytes(v)) for n, v in items]
        size = _RECORD_OVERHEAD + len(value_b or b"") + len(key_b or b"")
        for name, v in header_list:
            n, m = len(name.encode()), len(_bytes(v) or b"")
            size += n + m + _varint_size(n) + _varint_size(m)
        if size > self._max_bytes:
            raise KafkaException(
                KafkaError(
                    KafkaError.MSG_SIZE_TOO_LARGE,
                    "Unable to produce message: Broker: Message size too large",
                )
            )
        if self._transaction is not None:  # in the log at commit_transaction()
            self._transaction.append(
                (topic, value_b, key_b, partition, report, timestamp, header_list)
            )
            return
        self._append(topic, value_b, key_b, partition, report, timestamp, header_list)

    def _append(
        self,
        topic: str,
        value_b: bytes | None,
        key_b: bytes | None,
        partition: int,
        report: Delivery | None,
        timestamp: int,
        header_list: list[tuple[str, str | bytes | None]],
    ) -> TP | None:
        """Append a record; returns where it went (None: not appended)."""
        broker = self._broker
        with broker.condition:
            log = broker._logs.get(topic)
            stamp = (TIMESTAMP_CREATE_TIME, timestamp or int(broker.clock() * 1000))
            error: KafkaError | None = None
            offset = _OFFSET_INVALID
            if log is None:
                error = KafkaError(KafkaError._UNKNOWN_TOPIC)
            elif partition >= len(log):
                raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
            else:
                if partition < 0:
                    partition = broker._partition_for(topic, key_b, len(log), self._murmur)
                failure = broker._failures[0] if broker._failures else None
                if failure is not None and failure[1] in (None, topic):
                    error = KafkaError(broker._failures.popleft()[0])
                else:
                    offset = len(log[partition])
            record = Message(
                topic=topic, partition=partition, offset=offset, key=key_b, value=value_b,
                headers=header_list or None, error=error, timestamp=stamp,
            )  # fmt: skip
            appended: TP | None = None
            if log is not None and error is None:
                log[partition].append(record)
                record = _copy(record)
                appended = (topic, partition)
            self._reports.append((report, error, record))
            broker.condition.notify_all()
            return appended

    def poll(self, timeout: float | None = -1) -> int:
        """Serve the delivery reports queued now (waiting up to ``timeout`` for one);
        returns how many were served."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        condition = self._broker.condition
        with condition:
            while not self._reports:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return 0
                condition.wait(remaining)
            due = len(self._reports)  # not those that the callbacks below produce
        served = 0
        for _ in range(due):
            with condition:
                if not self._reports:  # another thread polls this producer too
                    break
                report, error, record = self._reports.popleft()
            if report is not None:
                report(error, record)
            served += 1
        return served

    def flush(self, timeout: float | None = -1) -> int:
        """Serve every delivery report; returns how many are left (0 unless callbacks keep
        producing past the timeout)."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        while self._reports:
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.poll(0)
        return len(self._reports)

    def close(self) -> bool:
        self.flush()
        return True

    def list_topics(self, topic: str | None = None, timeout: float | None = -1) -> ClusterMetadata:
        return self._broker._metadata(topic)
