"""Lost deliveries: a record whose task kills its worker is counted, then dead-lettered.

A task that kills its process (an OOM kill, a segfault in a C extension, ``os._exit``) leaves
its record uncommitted; the group hands its partition to another member, which runs it again
and dies too. To end that loop without a cost per task, the owner of each task partition
keeps a small journal in Kafka, the compacted topic ``<prefix>.deliveries`` keyed by
``topic:partition``; each record there is the whole state of one partition (JSON):

- A worker **claims** a partition it is assigned, then reads the journal up to its own claim:
  the last state before it says how the previous owner left. A clean hand-over (``release``)
  costs nothing more: the partition runs as usual.
- An owner that never released its partition died (or was fenced). Which of its records
  killed it is unknown (nothing per task is written in the steady state), so the new owner
  runs that partition's suspects **carefully**: each alone in the worker (no other task runs
  meanwhile, so a death can only be that run's), its run recorded durably (``running``)
  before it starts. The suspects are what the dead owner could have fetched: from the
  committed offset, at most its ``max_tasks_in_flight`` records, and no further than the
  partition's end at the takeover. Afterwards the partition runs as usual again.
- A careful owner that dies with a run recorded has been killed by that record: it counts a
  lost delivery, plus the death that started the careful mode (then attributed). At
  ``worker_lost_max_deliveries`` the record is not run again: its outcome is FAILURE
  ``WorkerLost`` and it goes to the dead-letter topic as ``worker-lost``; the records behind
  it run.

So a record that kills every worker it runs on ends after that many deaths (the first one
inferred, the others recorded). The journal is internal and JSON, not part of the Avro
contract in ``schemas/``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from taskstream.kafka import EventProducer

log = logging.getLogger(__name__)

CLAIM, OWN, RELEASE = "claim", "own", "release"


@dataclass(frozen=True)
class PartitionState:
    """What the journal holds for one task partition (one record, the latest wins)."""

    owner: str  # worker id
    token: str  # one per assignment of the partition to the owner
    state: str  # claim | own | release
    careful_until: int | None = None  # records below this offset run carefully (-1: to be set)
    inferred: bool = False  # a death not yet attributed to a record
    running: int | None = None  # the offset whose careful run is in progress
    lost: dict[int, int] = field(default_factory=dict)  # offset -> lost deliveries
    window: int = 0  # the owner's max_tasks_in_flight: how far past the commit it may fetch
    suspects: int = 0  # careful: how many records past the first may be suspects

    def encode(self) -> bytes:
        d = asdict(self)
        d["lost"] = {str(k): v for k, v in self.lost.items()}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        d: dict[str, Any] = json.loads(data)
        d["lost"] = {int(k): int(v) for k, v in (d.get("lost") or {}).items()}
        return cls(**d)


def journal_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def takeover(previous: PartitionState | None, me: str, token: str, window: int) -> PartitionState:
    """The state a new owner starts from, given how the previous owner left."""
    if previous is None:
        return PartitionState(me, token, OWN, window=window)
    if previous.state == RELEASE:  # clean: carry an unfinished careful window on
        return replace(previous, owner=me, token=token, state=OWN, running=None, window=window)
    lost = dict(previous.lost)
    if previous.running is not None:  # died during a recorded run, alone: that record did it
        offset = previous.running
        lost[offset] = lost.get(offset, 0) + 1 + (1 if previous.inferred else 0)
        until = max(lost) + 1  # the inferred death is now attributed: only counted ones stay
        return PartitionState(me, token, OWN, until, False, None, lost, window)
    # Died with no run recorded: a record in what it had fetched may have done it.
    suspects = previous.window or window
    return PartitionState(me, token, OWN, -1, True, None, lost, window, suspects)


class _Partition:
    """The journal's view of one assigned partition, in this worker."""

    __slots__ = ("durable", "held", "key", "state", "tp")

    def __init__(self, tp: TopicPartition, key: str, state: PartitionState) -> None:
        self.tp = tp
        self.key = key
        self.state = state
        self.durable = False  # its "own" state is acknowledged: its records may run
        self.held: deque[Message] = deque()  # fetched, waiting: claim unconfirmed, or careful

    @property
    def careful(self) -> bool:
        return self.durable and self.state.careful_until is not None


class DeliveryJournal:
    """Claims, releases and careful runs of one worker's task partitions.

    Driven from the worker's consumer loop (one thread): ``admit`` each fetched record,
    ``serve`` every loop turn, ``finished`` when a record's outcome is acknowledged.
    ``dispatch(message, lost)`` hands a record to the worker: ``lost`` is None for a record
    that runs as usual, else its lost deliveries so far (a careful run, which the worker
    must run alone). While ``isolating``, the worker starts no usual run.
    """

    def __init__(
        self,
        topic: str,
        reader: Consumer,
        producer: EventProducer,
        worker: str,
        window: int,
        dispatch: Callable[[Message, int | None], None],
        high_watermark: Callable[[str, int], int | None],
    ) -> None:
        self.topic = topic
        self._reader = reader
        self._producer = producer
        self._worker = worker
        self._window = window  # this worker's max_tasks_in_flight: what a death leaves
        self._dispatch = dispatch
        self._high_watermark = high_watermark
        self._settled: dict[str, PartitionState] = {}  # key -> last own/release state read
        self._claims: dict[str, _Partition] = {}  # token -> partition waiting for its claim
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._confirmed: set[tuple[str, int]] = set()  # runs as usual
        self._running: tuple[_Partition, int] | None = None  # the careful run in progress

    def start(self, partitions: int) -> None:
        """Read the journal from its beginning (the latest state per key is what counts),
        only while a claim waits: the reader is paused otherwise, so that an idle journal
        costs the broker no fetches."""
        self._journal_partitions = [TopicPartition(self.topic, p) for p in range(partitions)]
        self._reader.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._reader.pause(self._journal_partitions)
        self._reading = False

    def close(self) -> None:
        self._reader.close()

    # -- assignment -------------------------------------------------------------------------

    def claim(self, tp: TopicPartition) -> None:
        key = journal_key(tp.topic, tp.partition)
        token = uuid.uuid4().hex
        state = PartitionState(self._worker, token, CLAIM, window=self._window)
        part = _Partition(TopicPartition(tp.topic, tp.partition), key, state)
        self._partitions[(tp.topic, tp.partition)] = part
        self._claims[token] = part
        self._write(part)

    def release(self, topic: str, partition: int) -> list[Message]:
        """A clean hand-over; returns the held records (not run: the next owner will)."""
        part = self._drop(topic, partition)
        if part is None:
            return []
        if part.state.state == OWN:
            part.state = replace(part.state, state=RELEASE, running=None)
            self._write(part)
        return list(part.held)

    def lost(self, topic: str, partition: int) -> list[Message]:
        """Lost (fenced): another member may own it; write nothing."""
        part = self._drop(topic, partition)
        return list(part.held) if part is not None else []

    def _drop(self, topic: str, partition: int) -> _Partition | None:
        part = self._partitions.pop((topic, partition), None)
        self._confirmed.discard((topic, partition))
        if part is not None:
            self._claims.pop(part.state.token, None)
            if self._running is not None and self._running[0] is part:
                self._running = None  # its run goes on; the next owner is told by release
        return part

    # -- records ----------------------------------------------------------------------------

    def admit(self, message: Message) -> bool:
        """True: run it as usual now. False: the journal holds it for later."""
        key = (message.topic(), message.partition())
        if key in self._confirmed:
            return True
        part = self._partitions.get(key)  # type: ignore[arg-type]
        if part is None:
            return True  # not a claimed partition (cannot happen with subscribe)
        part.held.append(message)
        self._settle(part)
        return False

    def finished(self, topic: str, partition: int, offset: int) -> None:
        running = self._running
        if running is None or running[0].tp.topic != topic or running[0].tp.partition != partition:
            return
        part, careful_offset = running
        if careful_offset != offset:
            return
        self._running = None
        lost = {k: v for k, v in part.state.lost.items() if k > offset}
        part.state = replace(part.state, running=None, lost=lost)
        self._write(part)  # not waited for: the next run's record follows it in order
        self._settle(part)

    def held_in(self, topic: str, partition: int) -> int:
        """Records of the partition fetched but held (not running)."""
        part = self._partitions.get((topic, partition))
        return len(part.held) if part is not None else 0

    def held(self) -> int:
        return sum(len(p.held) for p in self._partitions.values())

    @property
    def isolating(self) -> bool:
        """A careful run is due or in progress: no usual run may start."""
        if self._running is not None:
            return True
        if len(self._confirmed) == len(self._partitions):  # the steady state: at once
            return False
        return any(p.careful and p.held for p in self._partitions.values())

    def serve(self, idle: Callable[[], bool]) -> None:
        """Read what the journal has new while a claim waits for its record (others' states
        matter only then; the client prefetches meanwhile); start the next careful run when
        nothing else runs (``idle``)."""
        if self._claims:
            if not self._reading:
                self._reader.resume(self._journal_partitions)
                self._reading = True
            for message in self._reader.consume(500, 0):
                self._read(message)
        elif self._reading:
            self._reader.pause(self._journal_partitions)
            self._reading = False
        if len(self._confirmed) == len(self._partitions):
            return
        if self._running is None and self.isolating and idle():
            for part in self._partitions.values():
                if part.careful and part.held:
                    self._start_careful(part)
                    return

    def _read(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("deliveries journal: %s", error)
            return
        key, value = message.key(), message.value()
        if not key or not value:
            return
        try:
            state = PartitionState.decode(value)
        except (ValueError, TypeError) as exc:
            log.warning("deliveries journal: unreadable record skipped: %s", exc)
            return
        name = key.decode() if isinstance(key, bytes) else str(key)
        if state.state != CLAIM:
            self._settled[name] = state
            return
        part = self._claims.pop(state.token, None)
        if part is not None:
            self._confirm(part, self._settled.get(name))

    def _confirm(self, part: _Partition, previous: PartitionState | None) -> None:
        state = takeover(previous, self._worker, part.state.token, self._window)
        if previous is not None and previous.state != RELEASE:
            log.warning(
                "%s: its last owner %s died with it; its suspects run one at a time "
                "(lost deliveries so far: %s)", part.key, previous.owner, state.lost or "none",
            )  # fmt: skip
        part.state = state
        # Nothing runs before this state is durable: a worker that dies on its first record
        # must leave an owner behind that never handed over, or its death would go unseen.
        self._write(part, lambda: self._owned(part))

    def _owned(self, part: _Partition) -> None:
        tp = part.tp
        if self._partitions.get((tp.topic, tp.partition)) is not part:
            return  # revoked meanwhile
        part.durable = True
        if part.state.careful_until is None:  # the usual case: nothing to be careful about
            self._confirmed.add((tp.topic, tp.partition))
        self._settle(part)

    def _settle(self, part: _Partition) -> None:
        """Owned: fix the careful window's end at the first record; past it, run as usual."""
        state = part.state
        if state.state != OWN or not part.durable or not part.held:
            return
        first = part.held[0].offset()
        assert first is not None
        if state.careful_until == -1:  # what the dead owner could have fetched
            high = self._high_watermark(part.tp.topic, part.tp.partition)
            end = first + (state.suspects or self._window)
            reach = min(end, high) if high is not None and high > first else end
            last_lost = max(state.lost, default=-1)  # a counted record stays inside
            state = part.state = replace(state, careful_until=max(reach, last_lost + 1))
            self._write(part)
        until = state.careful_until
        if until is not None and first < until:
            return  # careful: serve() runs its head when nothing else runs
        if until is not None:
            part.state = replace(state, careful_until=None, inferred=False, lost={})
            self._write(part)
            log.info("%s: careful runs done", part.key)
        self._confirmed.add((part.tp.topic, part.tp.partition))
        while part.held:
            self._dispatch(part.held.popleft(), None)

    def _start_careful(self, part: _Partition) -> None:
        head = part.held.popleft()
        offset = head.offset()
        assert offset is not None
        self._running = (part, offset)
        lost = part.state.lost.get(offset, 0)
        part.state = replace(part.state, running=offset)
        # The run starts only once its record is durable: if it kills this process, the
        # next owner knows which record did.
        self._write(part, lambda: self._run_if_owned(part, head, lost))

    def _run_if_owned(self, part: _Partition, message: Message, lost: int) -> None:
        tp = part.tp
        if self._partitions.get((tp.topic, tp.partition)) is part:
            self._dispatch(message, lost)

    def _write(self, part: _Partition, then: Callable[[], None] | None = None) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                log.error("deliveries journal write failed (%s): writing it again", err)
                self._write(part, then)
            elif then is not None:
                then()

        self._producer.produce(self.topic, part.state.encode(), part.key, delivered)


class UncountedDeliveries(DeliveryJournal):
    """``worker_lost_max_deliveries = 0``: lost deliveries are not counted; every record runs
    as usual (a task that kills its worker is delivered again and again)."""

    def __init__(self) -> None:
        pass

    def start(self, partitions: int) -> None: ...
    def close(self) -> None: ...
    def claim(self, tp: TopicPartition) -> None: ...

    def release(self, topic: str, partition: int) -> list[Message]:
        return []

    def lost(self, topic: str, partition: int) -> list[Message]:
        return []

    def admit(self, message: Message) -> bool:
        return True

    def finished(self, topic: str, partition: int, offset: int) -> None: ...

    def held_in(self, topic: str, partition: int) -> int:
        return 0

    def held(self) -> int:
        return 0

    @property
    def isolating(self) -> bool:
        return False

    def serve(self, idle: Callable[[], bool]) -> None: ...
