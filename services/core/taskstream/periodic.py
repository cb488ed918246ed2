"""Periodic tasks: the entries an app schedules, and which of their ticks are due.

``app.add_periodic_task(schedule, task, args, kwargs, name=...)`` (or ``@app.periodic_task``)
adds a :class:`PeriodicTask` entry; ``taskstream beat`` fires its ticks
(taskstream.consumer.beat). Everything here is pure: what a tick's task id is and which
ticks a leader fires, given the last tick it knows was fired, so every replica decides alike.

Catch-up after an outage (no leader, or a failover): when the first missed tick is at most
``beat_catch_up_window_s`` old, every missed tick fires, late but in order, so a failover
skips none. Beyond that window the outage is long and ``beat_catch_up`` decides: ``once``
(the default, as Celery's beat after a downtime) fires the latest missed tick once for the
whole backlog; ``skip`` fires none and waits for the next tick.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal

from taskstream.errors import InvalidSchedule
from taskstream.schedules import Schedule, as_schedule
from taskstream.schedules import schedule as interval

if TYPE_CHECKING:
    from taskstream.task import Task

CatchUp = Literal["once", "skip"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("once", "skip")
_NAMESPACE = uuid.UUID("5f0c7a52-8a57-4c38-9d61-2f9b3c1de0a1")  # taskstream's tick ids
_MAX_TICKS_PER_TURN = 10_000  # missed ticks fired in one go, at most (the rest next turn)

# What add_periodic_task takes as the call: a task, or (task, args) / (task, args, kwargs).
# A Signature (``add.s(2, 3)``) becomes a fourth form in periodic_call.
Call = Any


@dataclass(frozen=True)
class PeriodicTask:
    """One entry of the beat schedule (Celery's ``ScheduleEntry``)."""

    name: str  # the entry's key: its state in Kafka and its tick ids derive from it
    schedule: Schedule
    task: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    encoded_args: bytes  # checked against the task's schema when the entry is added
    queue: str | None = None  # None: the task's own
    key: str | None = None  # ordering key of the events (None: the task id)


def periodic_call(
    call: Call, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None
) -> tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any]]:
    """``(task, args, kwargs)`` from what add_periodic_task was given: a task, a
    ``(task, args, kwargs)`` tuple, or a signature (``add.s(2, 3)``, as in Celery)."""
    from taskstream.canvas import Signature
    from taskstream.task import Task

    if isinstance(call, Signature):
        if args or kwargs:
            raise InvalidSchedule(
                "give the arguments in the signature or as args=/kwargs=, not both"
            )
        return call.task, call.args, dict(call.kwargs)
    if isinstance(call, Task):
        return call, tuple(args), dict(kwargs or {})
    if isinstance(call, tuple) and call and isinstance(call[0], Task) and len(call) <= 3:
        if args or kwargs:
            raise InvalidSchedule("give the arguments in the tuple or as args=/kwargs=, not both")
        task, more = call[0], call[1:]
        return task, tuple(more[0] if more else ()), dict(more[1] if len(more) > 1 else {})
    raise InvalidSchedule(f"a periodic task is a task or (task, args, kwargs), not {call!r}")


def entry_for(
    schedule: float | timedelta | Schedule,
    call: Call,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    queue: str | None = None,
    key: str | None = None,
) -> PeriodicTask:
    """The entry ``add_periodic_task`` adds (its arguments checked by the task's schema)."""
    from taskstream.canvas import Signature

    task, args, kw = periodic_call(call, args, kwargs)
    if isinstance(call, Signature):  # its queue= and key= (set(...)), unless given here
        queue = queue if queue is not None else call.options.get("queue")
        key = key if key is not None else call.options.get("key")
    encoded = task.encode_args(args, kw)  # InvalidArguments now, not at every tick
    if name is None:  # Celery names an entry after its call: the same in every replica
        shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kw.items())]
        name = f"{task.name}({', '.join(shown)})"
    if not name:
        raise InvalidSchedule("a periodic task's name must not be empty")
    return PeriodicTask(name, as_schedule(schedule), task.name, args, kw, encoded, queue, key)


Receiver = Callable[..., Any]


class Signal:
    """Celery's app signal as periodic tasks use it: ``@app.on_after_configure.connect``.

    Its receivers run once, called with ``sender=app``, when the beat schedule is first read
    (``app.periodic_tasks``: by ``taskstream beat`` or ``dev``), so that they may name tasks
    defined further down their module, as in Celery's documentation. A receiver connected
    after that runs at once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[Receiver] = []
        self._sent_to: object | None = None

    def connect(self, receiver: Receiver | None = None, **_options: Any) -> Any:
        """Connect ``receiver``; usable as ``@signal.connect`` or ``@signal.connect(weak=False)``
        (Celery's options are accepted and ignored)."""

        def add(r: Receiver) -> Receiver:
            self._receivers.append(r)
            if self._sent_to is not None:
                r(sender=self._sent_to)
            return r

        return add(receiver) if receiver is not None else add

    def send_once(self, sender: object) -> None:
        if self._sent_to is None:
            self._sent_to = sender
            for receiver in self._receivers:
                receiver(sender=sender)


def tick_id(prefix: str, entry: str, tick_us: int, secret: str = "") -> str:
    """The task id of one tick: the same in every replica, so a tick fired twice is one task
    id twice (a UUID, version 5, of the topic prefix, the entry and the tick time). With a
    `secret` (``TASKSTREAM_BEAT_ID_SECRET``, the same in every replica) it is a UUID of their
    HMAC instead: nobody without the secret can compute a future tick's id to revoke it."""
    text = f"{prefix}\x00{entry}\x00{tick_us}"
    if not secret:
        return str(uuid.uuid5(_NAMESPACE, text))
    mac = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=mac[:16], version=4))


def next_tick(schedule: Schedule, after_us: int, tz: tzinfo) -> int:
    """The first tick strictly after ``after_us`` (epoch microseconds)."""
    if isinstance(schedule, interval):  # whole microseconds: the same sum in every replica
        return after_us + max(1, round(schedule.seconds * 1_000_000))
    tick = round(schedule.next_after(after_us / 1_000_000, tz) * 1_000_000)
    return max(tick, after_us + 1)


@dataclass(frozen=True)
class Plan:
    """What a leader does for one entry now: fire these ticks, then record ``last``."""

    fire: list[int]  # tick times (epoch microseconds), in order
    last: int  # the entry's last tick after this turn (fired or, by the policy, skipped)
    skipped: int = 0  # missed ticks not fired (long outage)


def plan(
    schedule: Schedule,
    last_us: int,
    now_us: int,
    tz: tzinfo,
    *,
    catch_up: CatchUp = "once",
    window_s: float = 300.0,
) -> Plan:
    """The ticks due at ``now_us`` after the last fired (or skipped) tick ``last_us``."""
    first = next_tick(schedule, last_us, tz)
    if first > now_us:
        return Plan([], last_us)
    if now_us - first <= window_s * 1_000_000:
        ticks = _ticks(schedule, first, now_us, tz)
        return Plan(ticks, ticks[-1])
    # A long outage: the policy decides; count what is skipped for the log.
    missed = _ticks(schedule, first, now_us, tz)
    if len(missed) < _MAX_TICKS_PER_TURN:
        latest, count = missed[-1], len(missed)
    else:
        latest = _latest(schedule, last_us, now_us, tz)
        count = _MAX_TICKS_PER_TURN  # at least
    if catch_up == "once":
        return Plan([latest], latest, skipped=count - 1)
    return Plan([], latest, skipped=count)


def _ticks(schedule: Schedule, first: int, now_us: int, tz: tzinfo) -> list[int]:
    ticks = [first]
    while len(ticks) < _MAX_TICKS_PER_TURN:
        tick = next_tick(schedule, ticks[-1], tz)
        if tick > now_us:
            break
        ticks.append(tick)
    return ticks


def _latest(schedule: Schedule, last_us: int, now_us: int, tz: tzinfo) -> int:
    """The latest tick at or before ``now_us`` when there are too many to count."""
    if isinstance(schedule, interval):  # ticks are the last one plus whole periods
        period = round(schedule.seconds * 1_000_000)
        return last_us + (now_us - last_us) // period * period
    span = 60_000_000  # a calendar schedule's ticks do not depend on the last: search back
    while True:
        tick = next_tick(schedule, now_us - span, tz)
        if tick <= now_us:
            return _ticks(schedule, tick, now_us, tz)[-1]
        span *= 2
