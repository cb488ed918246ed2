"""The journal's I/O in one worker: claims, releases, careful runs and hand-overs.

:class:`OwnershipJournal` writes each task partition's state to the compacted journal topic,
reads it back through its :class:`JournalReader` (the previous owner's last state decides how
the partition starts, by :func:`taskstream.consumer.ownership.state.takeover`), holds the
records that must wait (for a claim, for a previous owner's runs, for a careful run that must
run alone), and runs the careful ones alone. Leases are on :func:`taskstream.clock.monotonic`,
so tests move them with ``clock.advance`` instead of sleeping."""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from confluent_kafka import KafkaError, Message, TopicPartition

from taskstream import clock
from taskstream.consumer.ownership.reader import JournalReader
from taskstream.consumer.ownership.state import (
    CLAIM,
    OWN,
    RELEASE,
    HandoverReport,
    PartitionState,
    journal_key,
    report_key,
    takeover,
)
from taskstream.kafka.producer import EventProducer

log = logging.getLogger(__name__)

HANDOVER_BEAT_S = 1.0  # a releasing owner reports on the runs it still has at least this often


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


class OwnershipJournal:
    """Claims, releases and careful runs of one worker's task partitions.

    Driven from the worker's consumer loop (one thread), as :class:`Ownership` says:
    ``admit`` each fetched record, ``serve`` every loop turn, ``finished`` when a record's
    outcome is acknowledged. ``dispatch(message, lost)`` hands a record it held to the
    worker: ``lost`` is None for a record that runs as usual, else its lost deliveries so far
    (a careful run). While ``isolating`` (a careful run due or in progress) no usual run
    starts: the journal holds those records too, in ``_waiting``, and dispatches them once
    the careful runs end. ``skip(message)``: the record's outcome was published by the
    previous owner; it is done without a run.
    ``reader``: the journal topic's reader (whose topic it writes too), read during
    ``serve`` only while a claim or a hand-over waits.
    ``lease_s``: how long a previous owner's hand-over report may stay silent before its
    runs are taken for lost. ``probation``: a first death's suspects run as usual once
    (False when ``worker_lost_max_deliveries`` is below 3).
    """

    def __init__(
        self,
        reader: JournalReader,
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
        self.topic = reader.topic  # read and written
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
        # May run as usual (their partition is confirmed, or released them), but a careful
        # run must run alone first: dispatched in order once none is due.
        self._waiting: deque[Message] = deque()
        # Journal writes acknowledged (or failed), appended on whichever thread served the
        # producer's reports (a task thread does, after producing its outcome): what follows
        # them (_owned, _run_if_owned, a write again) runs on the loop's thread at serve().
        self._acked: deque[Callable[[], None]] = deque()
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

    def assigned(self, topic: str, partition: int) -> None:
        """Claims the partition: its records wait until the claim is read back."""
        key = journal_key(topic, partition)
        token = uuid.uuid4().hex
        self._tokens.add(token)
        state = PartitionState(self._worker, token, CLAIM, window=self._window)
        part = _Partition(TopicPartition(topic, partition), key, state)
        self._partitions[(topic, partition)] = part
        self._claims[token] = part
        self._write(part)

    def revoked(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
        *,
        lost: bool = False,
    ) -> int:
        """Drops the partition's held records (not run: the next owner will) and returns how
        many. Revoked: a clean hand-over, ``running`` (offset -> key of the records in flight
        here, held ones included: those this worker still runs, finishes and reports on) and
        ``done`` (offsets finished above the committed one) written in its release. Lost
        (fenced): another member may own it; nothing is written."""
        waiting = self._drop_waiting(topic, partition)
        part = self._drop(topic, partition)
        if part is None:
            return len(waiting)
        if not lost and part.state.state == OWN:
            held = {m.offset() for m in part.held} | waiting
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
        return len(part.held) + len(waiting)

    def _drop_waiting(self, topic: str, partition: int) -> set[int | None]:
        """The partition's records waiting for a careful run, dropped: their offsets."""
        if not self._waiting:
            return set()
        dropped: set[int | None] = set()
        kept: deque[Message] = deque()
        for message in self._waiting:
            if message.topic() == topic and message.partition() == partition:
                dropped.add(message.offset())
            else:
                kept.append(message)
        self._waiting = kept
        return dropped

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
        """True: run it as usual now. False: the journal holds it for later (or skipped it)."""
        key = (message.topic(), message.partition())
        if self._skips and self._skipped(key, message):  # type: ignore[arg-type]
            return False
        if key not in self._confirmed:
            part = self._partitions.get(key)  # type: ignore[arg-type]
            if part is not None:
                part.held.append(message)
                self._settle(part)
                return False
            # else not a claimed partition (cannot happen with subscribe): as usual
        if not self.isolating:
            return True
        self._waiting.append(message)
        return False

    def _usual(self, message: Message) -> None:
        """A held record may run as usual: now, unless a careful run must run alone first."""
        if self.isolating:
            self._waiting.append(message)
        else:
            self._dispatch(message, None)

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

    def held(self, topic: str, partition: int) -> int:
        """Records of the partition fetched but held (not running)."""
        part = self._partitions.get((topic, partition))
        count = len(part.held) if part is not None else 0
        if self._waiting:
            key = (topic, partition)
            count += sum(1 for m in self._waiting if (m.topic(), m.partition()) == key)
        return count

    def _holding(self) -> int:
        """Records held, of every partition."""
        return sum(len(p.held) for p in self._partitions.values()) + len(self._waiting)

    def describe(self) -> str:
        """Its state, for a diagnosis."""
        unconfirmed = sorted(
            f"{k[1]}:{'durable' if p.durable else 'claim'}"
            f"{'/careful' if p.state.careful_until is not None else ''}"
            f"{'/awaited' if p.awaited else ''} held={len(p.held)}"
            for k, p in list(self._partitions.items())
            if k not in self._confirmed
        )
        return (
            f"partitions={len(self._partitions)} confirmed={len(self._confirmed)} "
            f"claims={len(self._claims)} awaited={len(self._awaited)} "
            f"handing={len(self._handing)} running={self._running is not None} "
            f"waiting={len(self._waiting)} reading={self._reader.reading} "
            f"unconfirmed={unconfirmed}"
        )

    @property
    def isolating(self) -> bool:
        """A careful run is due or in progress: no usual run may start."""
        if self._running is not None:
            return True
        if len(self._confirmed) == len(self._partitions):  # the steady state: at once
            return False
        return any(p.careful and p.held for p in self._partitions.values())

    def serve(self, in_flight: int) -> None:
        """Read what the journal has new while a claim waits for its record or a hand-over
        for its report (others' states matter only then; the client prefetches meanwhile);
        start the next careful run when nothing else runs (the worker's ``in_flight`` records
        are all held here); once none is due, dispatch the records that waited for it."""
        acked = self._acked
        while acked:
            acked.popleft()()
        if self._handing:
            self.keep_alive()
        if self._awaited:
            self._expire()
        if self._relays:
            self._expire_relays()
        if self._claims or self._awaited or self._relays:
            for message in self._reader.read_new():
                self._read(message)
        elif self._reader.reading:
            self._reader.stop_reading()
        if self._running is None and len(self._confirmed) != len(self._partitions):
            due = next((p for p in self._partitions.values() if p.careful and p.held), None)
            if due is not None and in_flight == self._holding():  # nothing else runs
                self._start_careful(due)
        if self._waiting and not self.isolating:
            waiting, self._waiting = self._waiting, deque()
            while waiting:
                self._dispatch(waiting.popleft(), None)

    # -- runs handed over -------------------------------------------------------------------

    def keep_alive(self) -> None:
        """Report on the runs still handed over, when due (also from the runtime's keeper,
        while a task holds the loop's thread)."""
        now = clock.monotonic()
        for handing in self._handing.values():
            if now >= handing.beat_at:
                self._report(handing)

    def _report(self, handing: _Handing) -> None:
        report = HandoverReport(frozenset(handing.running), frozenset(handing.done))
        handing.beat_at = clock.monotonic() + HANDOVER_BEAT_S
        self._producer.produce(self.topic, report.encode(), handing.report, self._reported)

    @staticmethod
    def _reported(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:  # the next beat carries the same or newer news
            log.warning("ownership journal: hand-over report failed (%s)", err)

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
        part.deadline = clock.monotonic() + self._lease_s
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
        part.deadline = clock.monotonic() + self._lease_s
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
        now = clock.monotonic()
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
                log.warning("ownership journal: %s", error)
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
            log.warning("ownership journal: unreadable record skipped: %s", exc)
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
            log.warning("ownership journal: unreadable report skipped: %s", exc)
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
        handing.deadline = clock.monotonic() + self._lease_s
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
        now = clock.monotonic()
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
                self._usual(message)
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
            self._usual(part.held.popleft())

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
                self._usual(message)
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
        """Write the partition's state; ``then`` once it is durable, on the loop's thread.
        (Run where the report is served, a task thread's _settle would take the records
        admit() is adding to on the loop's thread: one could stay held for good.)"""

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                log.error("ownership journal write failed (%s): writing it again", err)
                self._acked.append(lambda: self._write(part, then))
            elif then is not None:
                self._acked.append(then)

        self._producer.produce(self.topic, part.state.encode(), part.key, delivered)
