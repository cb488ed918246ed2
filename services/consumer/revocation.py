"""Revoked and expired tasks, in a worker: what never starts, and what is stopped.

:class:`Revocations` is the set of revoked task ids a worker knows, filled by the
:class:`ControlReader` (a handler of the consumer runtime that reads the control topic from
its beginning, then tails it; see taskstream.control) and read on the hot path: one dict
lookup per record, when the worker dispatches it, when its job starts, and when the delay
scheduler moves it on. A task whose ``expires`` has passed is treated alike. Either way its
outcome is REVOKED, with the reason (``revoked``, ``expired``, ``terminated``) as the error
message, and its record's offset commits once that outcome is acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from taskstream.app import App
from taskstream.consumer.offsets import OffsetTracker
from taskstream.consumer.run import EXPIRED, REVOKED
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming, RuntimeOwner
from taskstream.control import Revocation
from taskstream.envelope import TaskEvent, now_micros
from taskstream.errors import CorruptMessage, DeliveryTimeout
from taskstream.kafka.clients import consumer_config
from taskstream.kafka.topics import CONTROL_PARTITIONS, control_readers, control_topic

log = logging.getLogger(__name__)

_FETCH_WAIT_MS = 100  # how long a revocation may wait in the broker for the reader's fetch
_SWEEP_EVERY_S = 60.0  # how often revocations older than revoke_expires_s are forgotten
_START_CHECK_S = 0.05  # how often a starting worker looks whether it was asked to stop
_FRESH_MAX = 10_000  # revocations kept for the delay scheduler's scan, at most


class Revocations:
    """The revoked task ids this worker knows, each with when it was revoked (µs).

    Written by the control reader's thread, read by the worker's and the delay scheduler's:
    an OrderedDict's ``in`` and item assignment are atomic in CPython, so reads take no lock.
    At most ``max_ids`` are kept, the oldest known forgotten first: revocations of invented
    ids cost a bounded memory (a task revoked long ago and still queued past that many
    newer revocations would run).
    """

    def __init__(self, max_ids: int = 50_000) -> None:
        self._at: OrderedDict[str, int] = OrderedDict()
        self._max = max(1, max_ids)
        self.forgotten = 0  # revocations dropped to stay within max_ids
        self.ready = threading.Event()  # every revocation written before the start is known
        # Ids revoked since ready, until the delay scheduler takes them (deque: thread-safe).
        self._fresh: deque[str] = deque(maxlen=_FRESH_MAX)

    def add(self, task_id: str, at: int) -> None:
        self._at[task_id] = at
        self._at.move_to_end(task_id)
        if len(self._at) > self._max:
            self._at.popitem(last=False)
            self.forgotten += 1
            if self.forgotten == 1 or self.forgotten % 10_000 == 0:
                log.warning(
                    "over %d revoked ids (revokes_max): %d oldest forgotten", self._max,
                    self.forgotten,
                )  # fmt: skip
        if self.ready.is_set():
            self._fresh.append(task_id)

    def take_fresh(self) -> set[str]:
        """The ids revoked since the last call (and since ready): the delay scheduler looks
        for them among the tasks waiting in its tiers."""
        taken: set[str] = set()
        while self._fresh:
            taken.add(self._fresh.popleft())
        return taken

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._at

    def __len__(self) -> int:
        return len(self._at)

    def forget_before(self, cutoff: int) -> int:
        """Drop revocations made before ``cutoff`` (µs); returns how many."""
        old = [t for t, at in list(self._at.items()) if at < cutoff]
        for task_id in old:
            self._at.pop(task_id, None)
        return len(old)

    def why_not_run(self, event: TaskEvent) -> str | None:
        """``revoked`` or ``expired`` when ``event`` must not start, else None."""
        if event.id in self._at:
            return REVOKED
        if event.expires is not None and now_micros() >= event.expires:
            return EXPIRED
        return None


class ControlReader(RuntimeOwner):
    """Reads the control topic into ``revocations`` until stopped (a runtime handler).

    Every partition from its beginning, assigned (no group: each worker reads it all).
    ``on_terminate(task_id)`` is called, on this reader's thread, for each revocation with
    ``terminate`` that arrives after the start: a run in progress must stop.
    """

    def __init__(
        self,
        app: App,
        revocations: Revocations,
        on_terminate: Callable[[str], object],
        worker: str,
    ) -> None:
        self.app = app
        self.revocations = revocations
        self.on_terminate = on_terminate
        self.topic = control_topic(app.settings.topic_prefix)
        self.marker = f"{worker}/{uuid.uuid4().hex}"  # unique per start, even for one pid
        self._keep_s = app.settings.revoke_expires_s
        self._last_sweep = 0.0

    def run(self) -> None:
        s = self.app.settings
        fetch: dict[str, Any] = {"fetch.wait.max.ms": max(s.fetch_wait_max_ms, _FETCH_WAIT_MS)}
        consumer = self.app.broker.consumer(
            consumer_config(s, control_readers(s.topic_prefix), **fetch)
        )
        runtime = self._started(
            ConsumerRuntime(consumer, self, OffsetTracker(), timing=LoopTiming(poll_s=0.2))
        )
        runtime.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(CONTROL_PARTITIONS)]
        )
        runtime.run()

    def start(self) -> threading.Thread:
        """Run on a daemon thread, and write this start's marker; :meth:`wait_ready` then
        waits until it is read back (the two overlap the worker's other start-up work)."""
        thread = threading.Thread(target=self.run, name="taskstream-control", daemon=True)
        thread.start()
        marker = Revocation("", at=now_micros(), marker=self.marker)
        self.app.control.send([marker], wait=False)  # reading it back is the proof
        return thread

    def wait_ready(self, timeout: float, stopping: Callable[[], bool] = lambda: False) -> None:
        """Return once every revocation written before :meth:`start` was read (its marker
        came back), or as soon as ``stopping()`` (the worker was asked to stop meanwhile);
        raise DeliveryTimeout after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.revocations.ready.wait(_START_CHECK_S):
            if stopping():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise DeliveryTimeout(self.topic, timeout)
        log.info("%d revocations known", len(self.revocations))

    # -- the runtime's handler --------------------------------------------------------------

    def records(self, batch: list[Message]) -> None:
        revocations = self.revocations
        oldest = now_micros() - int(self._keep_s * 1_000_000)
        for message in batch:
            value = message.value()
            if value is None:
                continue  # a tombstone: nothing to know
            try:
                r = Revocation.decode(value)
            except CorruptMessage as exc:
                log.warning("skipping a control record: %s", exc)
                continue
            if r.marker is not None:
                if r.marker == self.marker:
                    revocations.ready.set()
                continue
            if r.at < oldest:
                continue  # past its retention (a broker that does not enforce it)
            revocations.add(r.task_id, r.at)
            if r.terminate and revocations.ready.is_set():
                self.on_terminate(r.task_id)

    def serve(self, timeout: float) -> None:
        now = now_micros() / 1e6
        if now - self._last_sweep >= _SWEEP_EVERY_S:
            self._last_sweep = now
            self.revocations.forget_before(int((now - self._keep_s) * 1_000_000))

    def room(self) -> int:
        return 1000

    def busy(self) -> bool:
        return False

    def assigned(self, partitions: list[TopicPartition]) -> None:
        pass

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        pass

    def drain(self, grace: float) -> None:
        pass
