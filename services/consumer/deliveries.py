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
  killed it is unknown (nothing per task is written in the steady state). Most deaths are
  not a record's doing (an OOM kill of the pod, a node lost), so the new owner first runs
  that partition's suspects **on probation**: as usual, concurrently, once a state saying so
  is durable. Only if it dies too before they end does the next owner run them
  **carefully**: each alone in the worker (no other task runs meanwhile, so a death can only
  be that run's), its run recorded durably (``running``) before it starts. (Run carefully
  at once, a crash cost one durable write and one lone run per suspect: minutes for a
  thousand suspects on a replicated cluster, with every other partition waiting.) The
  suspects are what the dead owner could have fetched: from the committed offset, at most
  its ``max_tasks_in_flight`` records, and no further than the partition's end at the
  takeover. Afterwards the partition runs as usual again. Probation is skipped when
  ``worker_lost_max_deliveries`` is below 3 (it costs one death more before a record is
  caught).
- A careful owner that dies with a run recorded has been killed by that record: it counts a
  lost delivery, plus the death that started the careful mode (then attributed). At
  ``worker_lost_max_deliveries`` the record is not run again: its outcome is FAILURE
  ``WorkerLost`` and it goes to the dead-letter topic as ``worker-lost``; the records behind
  it run.

A partition moved by a rebalance while its tasks run (a long task, say) is **handed over
running**: the releasing owner names in its ``release`` the offsets it still runs (with
their keys) and those it finished above the committed offset, and it keeps running them,
reporting under the key ``topic:partition@token`` as each one's outcome is acknowledged
(and every ``HANDOVER_BEAT_S`` meanwhile). The new owner skips what was finished, holds the
records of the keys still running there, runs the other keys at once, and runs the held
ones in order once their reports say done. A report that stops for the lease (the releasing
worker died) leaves its runs as suspects, run carefully like a dead owner's.

So a record that kills every worker it runs on ends after that many deaths (the first one
or two inferred, the others recorded). The journal is internal and JSON, not part of the Avro
contract in ``schemas/``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from taskstream.kafka import EventProducer

log = logging.getLogger(__name__)

CLAIM, OWN, RELEASE = "claim", "own", "release"
HANDOVER_BEAT_S = 1.0  # a releasing owner reports on the runs it still has at least this often


@dataclass(frozen=True)
class PartitionState:
    """What the journal holds for one task partition (one record, the latest wins)."""

    owner: str  # worker id
    token: str  # one per assignment of the partition to the owner
    state: str  # claim | own | release
    careful_until: int | None = None  # records below this offset run carefully (-1: to be set)
    inferred: int = 0  # deaths not yet attributed to a record (JSON true from older journals: 1)
    running: int | None = None  # the offset whose careful run is in progress
    lost: dict[int, int] = field(default_factory=dict)  # offset -> lost deliveries
    window: int = 0  # the owner's max_tasks_in_flight: how far past the commit it may fetch
    suspects: int = 0  # careful: how many records past the first may be suspects
    handed: dict[int, str | None] = field(default_factory=dict)  # release: still running (key hex)
    done: list[int] = field(default_factory=list)  # release: finished above the committed offset
    probation: bool = False  # the suspects below careful_until run as usual, once

    def encode(self) -> bytes:
        d = asdict(self)
        d["lost"] = {str(k): v for k, v in self.lost.items()}
        d["handed"] = {str(k): v for k, v in self.handed.items()}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        d: dict[str, Any] = json.loads(data)
        d["lost"] = {int(k): int(v) for k, v in (d.get("lost") or {}).items()}
        d["handed"] = {int(k): v for k, v in (d.get("handed") or {}).items()}
        d["inferred"] = int(d.get("inferred") or 0)  # older journals: a bool
        return cls(**d)


@dataclass(frozen=True)
class HandoverReport:
    """A releasing owner's runs of a partition it handed over: those still running, and
    those whose outcome is acknowledged. A handed run in neither was abandoned (its worker
    stopped): the new owner runs it."""

    running: frozenset[int]
    done: frozenset[int]

    def encode(self) -> bytes:
        d = {"running": sorted(self.running), "done": sorted(self.done)}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> HandoverReport:
        d: dict[str, Any] = json.loads(data)
        return cls(frozenset(map(int, d["running"])), frozenset(map(int, d["done"])))


def journal_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def takeover(
    previous: PartitionState | None,
    me: str,
    token: str,
    window: int,
    *,
    mine: bool = False,
    probation: bool = True,
) -> PartitionState:
    """The state a new owner starts from, given how the previous owner left. ``mine``: the
    previous assignment was this very process's (it lost the partition, to a session timeout
    or a lost coordinator, and got it back): nobody died, whatever the state says.
    ``probation``: a first death leaves its suspects on probation rather than careful."""
    if previous is None:
        return PartitionState(me, token, OWN, window=window)
    if previous.state == RELEASE or mine:  # clean: carry an unfinished careful window on
        return replace(
            previous, owner=me, token=token, state=OWN, running=None, window=window,
            handed={}, done=[],
        )  # fmt: skip
    lost = dict(previous.lost)
    if previous.running is not None:  # died during a recorded run, alone: that record did it
        offset = previous.running
        lost[offset] = lost.get(offset, 0) + 1 + int(previous.inferred)
        until = max(lost) + 1  # the inferred deaths are now attributed: only counted ones stay
        return PartitionState(me, token, OWN, until, 0, None, lost, window)
    # Died with no run recorded: a record in what it had fetched may have done it.
    suspects = previous.window or window
    first = previous.careful_until is None and not lost and not previous.inferred
    if first and probation:  # most likely not a record's doing: run them as usual once
        return PartitionState(me, token, OWN, -1, 1, None, lost, window, suspects, probation=True)
    # Died again with its suspects on probation (a second death to attribute), or careful.
    inferred = int(previous.inferred) + 1 if previous.probation else max(1, previous.inferred)
    return PartitionState(me, token, OWN, -1, inferred, None, lost, window, suspects)


def report_key(key: str, token: str) -> str:
    """Where the owner of assignment ``token`` reports on the runs it handed over."""
    return f"{key}@{token}"


class _Partition:
    """The journal's view of one assigned partition, in this worker."""

    __slots__ = (
        "awaited", "awaited_keys", "deadline", "durable", "held", "key", "passed", "probing",
        "report", "state", "tp",
    )  # fmt: skip

    def __init__(self, tp: TopicPartition, key: str, state: PartitionState) -> None:
        self.tp = tp
        self.key = key
        self.state = state
        self.durable = False  # its "own" state is acknowledged: its records may run
        self.held: deque[Message] = deque()  # fetched, waiting: claim unconfirmed, or careful
        # Handed over running: offset -> key of the runs the previous owner still has
        self.awaited: dict[int, bytes | None] = {}
        self.awaited_keys: set[bytes] = set()
        self.report = ""  # the previous owner's report key
        self.deadline = 0.0  # monotonic: no report by then, the previous owner is dead
        self.probing: set[int] = set()  # on probation: suspects dispatched, not finished yet
        self.passed = False  # on probation: the last suspect was fetched

    @property
    def careful(self) -> bool:
        return self.durable and self.state.careful_until is not None and not self.state.probation


class _Handing:
    """A partition this worker released with runs in progress, which it reports on."""

    __slots__ = (
        "beat_at", "deadline", "done", "partition", "relayed", "report", "running", "source",
        "topic",
    )  # fmt: skip

    def __init__(self, topic: str, partition: int, report: str, running: Iterable[int]) -> None:
        self.topic = topic
        self.partition = partition
        self.report = report
        self.running = set(running)
        self.done: set[int] = set()
        self.beat_at = 0.0
        # Runs of an earlier owner this worker was still waiting for: its reports are relayed
        self.relayed: set[int] = set()
        self.source = ""  # that owner's report key
        self.deadline = 0.0  # monotonic: no report from it by then, it is taken for dead


class DeliveryJournal:
    """Claims, releases and careful runs of one worker's task partitions.

    Driven from the worker's consumer loop (one thread): ``admit`` each fetched record,
    ``serve`` every loop turn, ``finished`` when a record's outcome is acknowledged.
    ``dispatch(message, lost)`` hands a record to the worker: ``lost`` is None for a record
    that runs as usual, else its lost deliveries so far (a careful run, which the worker
    must run alone). While ``isolating``, the worker starts no usual run. ``skip(message)``:
    the record's outcome was published by the previous owner; it is done without a run.
    ``lease_s``: how long a previous owner's hand-over report may stay silent before its
    runs are taken for lost. ``probation``: a first death's suspects run as usual once
    (False when ``worker_lost_max_deliveries`` is below 3).
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
        *,
        skip: Callable[[Message], None],
        lease_s: float,
        probation: bool = True,
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
        self._skip = skip
        self._lease_s = lease_s
        self._probation = probation
        self._handing: dict[str, _Handing] = {}  # report key -> runs this worker handed over
        self._awaited: dict[str, _Partition] = {}  # report key -> partition waiting on it
        self._reports: dict[str, HandoverReport] = {}  # read, for a hand-over not claimed yet
        self._skips: dict[tuple[str, int], set[int]] = {}  # done by the previous owner
        self._relays: dict[str, _Handing] = {}  # an earlier owner's report key -> relayed by
        # The tokens of this process's own claims: a partition lost and assigned back finds
        # its last state written by this process, which is alive (the worker id alone can
        # recur: a container restarted in its pod keeps host name and pid).
        self._tokens: set[str] = set()

    def start(self, partitions: int) -> None:
        """Read the journal from its beginning (the latest state per key is what counts),
        only while a claim waits: the reader is unassigned otherwise, so that an idle journal
        costs the broker no fetches. Unassigned, not paused: librdkafka resumes a paused
        partition's fetching only about 500 ms later, where an assignment fetches at once
        (each rebalance held this worker's new partitions that long)."""
        self._positions = {p: OFFSET_BEGINNING for p in range(partitions)}  # next to read
        self._reading = False

    def close(self) -> None:
        """Runs still handed over are abandoned with this worker: say so, so that the new
        owners run them now rather than after the lease."""
        for handing in self._handing.values():
            handing.running.clear()
            self._report(handing)
        self._handing.clear()
        self._relays.clear()
        self._reader.close()

    @property
    def handing(self) -> bool:
        """Runs of released partitions are still in progress here."""
        return bool(self._handing)

    # -- assignment -------------------------------------------------------------------------

    def claim(self, tp: TopicPartition) -> None:
        key = journal_key(tp.topic, tp.partition)
        token = uuid.uuid4().hex
        self._tokens.add(token)
        state = PartitionState(self._worker, token, CLAIM, window=self._window)
        part = _Partition(TopicPartition(tp.topic, tp.partition), key, state)
        self._partitions[(tp.topic, tp.partition)] = part
        self._claims[token] = part
        self._write(part)

    def release(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
    ) -> list[Message]:
        """A clean hand-over; returns the held records (not run: the next owner will).

        ``running``: offset -> key of the records still running here (this worker finishes
        them and reports); ``done``: offsets finished above the committed one."""
        part = self._drop(topic, partition)
        if part is None:
            return []
        if part.state.state == OWN:
            held = {m.offset() for m in part.held}
            runs = {o: k for o, k in (running or {}).items() if o not in held}
            runs.update(part.awaited)  # still running at an earlier owner: relayed
            part.state = replace(
                part.state, state=RELEASE, running=None, done=sorted(done),
                handed={o: (k.hex() if k is not None else None) for o, k in runs.items()},
            )  # fmt: skip
            self._write(part)
            if runs:
                key = report_key(part.key, part.state.token)
                self._handing[key] = handing = _Handing(topic, partition, key, runs)
                if part.awaited:  # moved again before an earlier owner's runs ended
                    handing.relayed = set(part.awaited)
                    handing.source, handing.deadline = part.report, part.deadline
                    self._relays[part.report] = handing
                self._report(handing)
        return list(part.held)

    def lost(self, topic: str, partition: int) -> list[Message]:
        """Lost (fenced): another member may own it; write nothing."""
        part = self._drop(topic, partition)
        return list(part.held) if part is not None else []

    def _drop(self, topic: str, partition: int) -> _Partition | None:
        part = self._partitions.pop((topic, partition), None)
        self._confirmed.discard((topic, partition))
        self._skips.pop((topic, partition), None)
        if part is not None:
            self._claims.pop(part.state.token, None)
            if part.awaited:
                self._awaited.pop(part.report, None)
            if self._running is not None and self._running[0] is part:
                self._running = None  # its run goes on; the next owner is told by release
        return part

    # -- records ----------------------------------------------------------------------------

    def admit(self, message: Message) -> bool:
        """True: run it as usual now. False: the journal holds it for later."""
        key = (message.topic(), message.partition())
        if self._skips and self._skipped(key, message):  # type: ignore[arg-type]
            return False
        if key in self._confirmed:
            return True
        part = self._partitions.get(key)  # type: ignore[arg-type]
        if part is None:
            return True  # not a claimed partition (cannot happen with subscribe)
        part.held.append(message)
        self._settle(part)
        return False

    def _skipped(self, key: tuple[str, int], message: Message) -> bool:
        offsets = self._skips.get(key)
        offset = message.offset()
        if offsets is None or offset is None:
            return False
        found = offset in offsets
        offsets.discard(offset)
        if not offsets or offset >= max(offsets):  # records come in order: none can follow
            del self._skips[key]
        if found:
            self._skip(message)
        return found

    def finished(self, topic: str, partition: int, offset: int) -> None:
        if self._handing:
            self._handed_finished(topic, partition, offset)
        if len(self._confirmed) != len(self._partitions):
            part = self._partitions.get((topic, partition))
            if part is not None and part.probing:
                part.probing.discard(offset)
                self._end_probation(part)
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
        """Read what the journal has new while a claim waits for its record or a hand-over
        for its report (others' states matter only then; the client prefetches meanwhile);
        start the next careful run when nothing else runs (``idle``)."""
        if self._handing:
            self.keep_alive()
        if self._awaited:
            self._expire()
        if self._relays:
            self._expire_relays()
        if self._claims or self._awaited or self._relays:
            if not self._reading:
                self._reader.assign(
                    [TopicPartition(self.topic, p, o) for p, o in self._positions.items()]
                )
                self._reading = True
            for message in self._reader.consume(500, 0):
                self._read(message)
        elif self._reading:
            self._stop_reading()
        if len(self._confirmed) == len(self._partitions):
            return
        if self._running is None and self.isolating and idle():
            for part in self._partitions.values():
                if part.careful and part.held:
                    self._start_careful(part)
                    return

    def _stop_reading(self) -> None:
        """Unassign the reader, keeping where it got to: the next claim reads on from there."""
        for tp in self._reader.position([TopicPartition(self.topic, p) for p in self._positions]):
            if tp.offset >= 0:  # OFFSET_INVALID: nothing read there yet
                self._positions[tp.partition] = tp.offset
        self._reader.unassign()
        self._reading = False

    # -- runs handed over -------------------------------------------------------------------

    def keep_alive(self) -> None:
        """Report on the runs still handed over, when due (also from the runtime's keeper,
        while a task holds the loop's thread)."""
        now = time.monotonic()
        for handing in self._handing.values():
            if now >= handing.beat_at:
                self._report(handing)

    def _report(self, handing: _Handing) -> None:
        report = HandoverReport(frozenset(handing.running), frozenset(handing.done))
        handing.beat_at = time.monotonic() + HANDOVER_BEAT_S
        self._producer.produce(self.topic, report.encode(), handing.report, self._reported)

    @staticmethod
    def _reported(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:  # the next beat carries the same or newer news
            log.warning("deliveries journal: hand-over report failed (%s)", err)

    def _handed_finished(self, topic: str, partition: int, offset: int) -> None:
        for key, handing in self._handing.items():
            if handing.topic == topic and handing.partition == partition:
                if offset in handing.running:
                    handing.running.discard(offset)
                    handing.done.add(offset)
                    self._report(handing)
                    if not handing.running:
                        del self._handing[key]
                    return

    def _await(self, part: _Partition, previous: PartitionState) -> None:
        """The previous owner released ``part`` with runs in progress (or finished above the
        committed offset): skip the finished, wait for the running."""
        if previous.done:  # (held: fetched while the claim waited)
            self._skip_held(part, set(previous.done))
        if not previous.handed:
            return
        part.awaited = {
            o: bytes.fromhex(k) if k is not None else None for o, k in previous.handed.items()
        }
        part.awaited_keys = {k for k in part.awaited.values() if k is not None}
        part.report = report_key(part.key, previous.token)
        part.deadline = time.monotonic() + self._lease_s
        self._awaited[part.report] = part
        log.info(
            "%s: handed over with %d runs in progress at %s; their keys wait for them",
            part.key, len(part.awaited), previous.owner,
        )  # fmt: skip
        report = self._reports.pop(part.report, None)
        if report is not None:
            self._apply(part, report)

    def _apply(self, part: _Partition, report: HandoverReport) -> None:
        """A report on the runs ``part`` waits for: the finished are skipped, the abandoned
        run here, the running wait on."""
        part.deadline = time.monotonic() + self._lease_s
        finished = {o for o in part.awaited if o in report.done}
        for offset in [o for o in part.awaited if o not in report.running]:
            del part.awaited[offset]
        if finished:
            self._skip_held(part, finished)
        part.awaited_keys = {k for k in part.awaited.values() if k is not None}
        if not part.awaited:
            self._awaited.pop(part.report, None)
            self._producer.produce(self.topic, None, part.report)  # done with: a tombstone
            log.info("%s: the runs handed over are done", part.key)
        self._settle(part)

    def _skip_held(self, part: _Partition, offsets: set[int]) -> None:
        """Records done by the previous owner: skipped now if held, else when fetched."""
        kept: deque[Message] = deque()
        for message in part.held:
            offset = message.offset()
            if offset in offsets:
                offsets.discard(offset)
                self._skip(message)
            else:
                kept.append(message)
        part.held = kept
        if offsets:
            self._skips.setdefault((part.tp.topic, part.tp.partition), set()).update(offsets)

    def _expire(self) -> None:
        """A previous owner silent for the lease died with its runs: they are suspects."""
        now = time.monotonic()
        for key, part in list(self._awaited.items()):
            if now < part.deadline:
                continue
            del self._awaited[key]
            until = max(part.awaited) + 1
            log.warning(
                "%s: no report on the runs handed over for %.0fs: their worker is taken for "
                "dead; they run one at a time", part.key, self._lease_s,
            )  # fmt: skip
            part.awaited.clear()
            part.awaited_keys.clear()
            careful = max(until, part.state.careful_until or 0)
            inferred = max(1, part.state.inferred)
            part.state = replace(
                part.state, careful_until=careful, inferred=inferred, probation=False
            )
            self._write(part)
            self._settle(part)

    def _read(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("deliveries journal: %s", error)
            return
        key, value = message.key(), message.value()
        if not key:
            return
        name = key.decode() if isinstance(key, bytes) else str(key)
        if "@" in name:
            return self._read_report(name, value)
        if not value:
            return
        try:
            state = PartitionState.decode(value)
        except (ValueError, TypeError) as exc:
            log.warning("deliveries journal: unreadable record skipped: %s", exc)
            return
        if state.state != CLAIM:
            self._settled[name] = state
            return
        part = self._claims.pop(state.token, None)
        if part is not None:
            self._confirm(part, self._settled.get(name))

    def _read_report(self, name: str, value: bytes | None) -> None:
        if not value:  # a tombstone: that hand-over is over
            self._reports.pop(name, None)
            return
        try:
            report = HandoverReport.decode(value)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("deliveries journal: unreadable report skipped: %s", exc)
            return
        part = self._awaited.get(name)
        if part is not None:
            self._apply(part, report)
        elif name in self._relays:
            self._relay(self._relays[name], report)
        else:
            self._reports[name] = report

    def _relay(self, handing: _Handing, report: HandoverReport) -> None:
        """An earlier owner's report on runs this worker handed on: passed to the next."""
        handing.deadline = time.monotonic() + self._lease_s
        for offset in list(handing.relayed):
            if offset in report.done:
                handing.done.add(offset)
            elif offset in report.running:
                continue
            handing.relayed.discard(offset)  # done, or abandoned: the new owner runs it
            handing.running.discard(offset)
        self._end_relay(handing, tombstone=not report.running)

    def _end_relay(self, handing: _Handing, tombstone: bool) -> None:
        if not handing.relayed:
            self._relays.pop(handing.source, None)
            if tombstone:
                self._producer.produce(self.topic, None, handing.source)
        self._report(handing)
        if not handing.running:
            self._handing.pop(handing.report, None)

    def _expire_relays(self) -> None:
        """An earlier owner silent for the lease: its runs are abandoned (run by the next)."""
        now = time.monotonic()
        for handing in list(self._relays.values()):
            if now >= handing.deadline:
                log.warning("%s: no report for %.0fs: runs relayed as abandoned",
                            handing.source, self._lease_s)  # fmt: skip
                handing.running -= handing.relayed
                handing.relayed.clear()
                self._end_relay(handing, tombstone=False)

    def _confirm(self, part: _Partition, previous: PartitionState | None) -> None:
        mine = previous is not None and previous.token in self._tokens
        state = takeover(
            previous, self._worker, part.state.token, self._window,
            mine=mine, probation=self._probation,
        )  # fmt: skip
        if previous is not None and previous.state != RELEASE and not mine:
            how = "run as usual, on probation" if state.probation else "run one at a time"
            log.warning(
                "%s: its last owner %s died with it; its suspects %s (lost deliveries so far: "
                "%s)", part.key, previous.owner, how, state.lost or "none",
            )  # fmt: skip
        part.state = state
        if previous is not None and previous.state == RELEASE:
            self._await(part, previous)
        # Nothing runs before this state is durable: a worker that dies on its first record
        # must leave an owner behind that never handed over, or its death would go unseen.
        self._write(part, lambda: self._owned(part))

    def _owned(self, part: _Partition) -> None:
        tp = part.tp
        if self._partitions.get((tp.topic, tp.partition)) is not part:
            return  # revoked meanwhile
        part.durable = True
        if part.state.careful_until is None and not part.awaited:  # the usual case
            self._confirmed.add((tp.topic, tp.partition))
        self._settle(part)

    def _settle(self, part: _Partition) -> None:
        """Owned: fix the careful window's end at the first record; past it, run as usual."""
        state = part.state
        if state.state != OWN or not part.durable or not part.held:
            return
        if part.awaited:
            self._hold_awaited(part)
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
        if until is not None and state.probation:
            while part.held:  # as usual; the suspects' ends are awaited
                message = part.held.popleft()
                offset = message.offset()
                assert offset is not None
                if offset < until:
                    part.probing.add(offset)
                if offset >= until - 1:  # the last suspect: all of them are dispatched
                    part.passed = True
                self._dispatch(message, None)
            self._end_probation(part)
            return
        if until is not None and first < until:
            return  # careful: serve() runs its head when nothing else runs
        if until is not None:
            part.state = replace(state, careful_until=None, inferred=0, lost={})
            self._write(part)
            log.info("%s: careful runs done", part.key)
        self._confirmed.add((part.tp.topic, part.tp.partition))
        while part.held:
            self._dispatch(part.held.popleft(), None)

    def _end_probation(self, part: _Partition) -> None:
        """The suspects on probation all ended (and the records past them come): the death
        was not theirs; the partition runs as usual."""
        if part.probing or not part.passed:
            return  # (an idle partition stays on probation: harmless, it runs as usual)
        part.state = replace(part.state, careful_until=None, inferred=0, probation=False, lost={})
        self._write(part)
        log.info("%s: the suspects on probation ran; the partition runs as usual", part.key)
        self._confirmed.add((part.tp.topic, part.tp.partition))

    def _hold_awaited(self, part: _Partition) -> None:
        """Records of the keys the previous owner still runs wait for it (so a key's records
        still run in order); the other keys run now, unless the partition is careful."""
        if part.state.careful_until is not None:
            return  # careful runs, which must run alone, wait for the hand-over to end
        awaited, keys = part.awaited, part.awaited_keys
        kept: deque[Message] = deque()
        for message in part.held:
            if message.offset() in awaited or message.key() in keys:
                kept.append(message)
            else:
                self._dispatch(message, None)
        part.held = kept

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


class Deliveries(Protocol):
    """What the worker asks of its deliveries journal (DeliveryJournal, or
    UncountedDeliveries when crash counting is off)."""

    @property
    def handing(self) -> bool: ...
    @property
    def isolating(self) -> bool: ...
    def close(self) -> None: ...
    def keep_alive(self) -> None: ...
    def claim(self, tp: TopicPartition) -> None: ...
    def release(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
    ) -> list[Message]: ...
    def lost(self, topic: str, partition: int) -> list[Message]: ...
    def admit(self, message: Message) -> bool: ...
    def finished(self, topic: str, partition: int, offset: int) -> None: ...
    def held_in(self, topic: str, partition: int) -> int: ...
    def held(self) -> int: ...
    def serve(self, idle: Callable[[], bool]) -> None: ...


class UncountedDeliveries:
    """``worker_lost_max_deliveries = 0``: lost deliveries are not counted; every record runs
    as usual (a task that kills its worker is delivered again and again), and a partition
    moved while its tasks run is run again by its new owner."""

    def close(self) -> None: ...
    def claim(self, tp: TopicPartition) -> None: ...

    @property
    def handing(self) -> bool:
        return False

    def keep_alive(self) -> None: ...

    def release(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
    ) -> list[Message]:
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
