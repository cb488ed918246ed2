"""Task: a function registered with an app, with Avro schemas derived from its type hints."""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from taskstream.avro.codec import AvroSchema
from taskstream.envelope import TaskEvent, now_micros
from taskstream.errors import (
    InvalidArguments,
    InvalidCall,
    InvalidOption,
    MaxRetriesExceededError,
    NoCurrentTask,
    Retry,
)
from taskstream.kafka.topics import MAX_PRIORITY, MIN_PRIORITY
from taskstream.signature import TaskSignature, derive_signature, tail_signature
from taskstream.text import id_problem

if TYPE_CHECKING:
    from taskstream.app import App
    from taskstream.canvas import Signature, SignatureCall
    from taskstream.eager import EagerResult
    from taskstream.result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskRequest:
    """What a running task knows about its own run: ``current_request()`` inside a task,
    ``self.request`` in a ``bind=True`` task, with Celery's names (``retries``, ``group``,
    ``args``, ``kwargs``, ``hostname``, ``delivery_info``, ``is_eager``, ...)."""

    id: str
    task: str
    attempt: int  # 1 for the first run, +1 per retry
    key: str | None
    parent_id: str | None = None  # the task whose outcome (or apply()) started this one
    root_id: str | None = None  # the first task of the workflow: its own id when top-level
    group_id: str | None = None
    group_index: int | None = None  # position in the group
    # The arguments as a call (``task(*args, **kwargs)`` runs it again): every parameter
    # that can be passed by position is in ``args``, keyword-only ones in ``kwargs``.
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None  # the worker's id (host:pid); this host's name in apply()
    # Where the worker read the event: topic, partition, offset, key (None outside a worker).
    delivery_info: dict[str, Any] | None = None
    is_eager: bool = False  # run by apply()
    time_limit: float | None = None  # seconds: this run's hard limit (call's, else task's)
    soft_time_limit: float | None = None  # seconds
    headers: dict[str, str] | None = None  # apply_async(headers=...), kept across retries
    priority: int | None = None  # apply_async(priority=...) or the task's; also delivery_info's

    @property
    def retries(self) -> int:
        """How many times this task was retried so far (Celery's ``request.retries``)."""
        return self.attempt - 1

    @property
    def group(self) -> str | None:
        """Celery's name for ``group_id``."""
        return self.group_id


@dataclass(slots=True)
class RunInfo:
    """What the running task's request is built from besides its event: the task, its
    decoded arguments (by name), and where it runs; and what its run left for the worker."""

    task: Task[Any, Any]
    kwargs: Mapping[str, Any]
    hostname: str | None = None
    delivery_info: dict[str, Any] | None = None  # topic, partition, offset, key
    is_eager: bool = False
    # What self.retry() raised with the retries used up (the worker dead-letters the event
    # when the run ends with it).
    exhausted: BaseException | None = None


# Task ids are random (version 4) UUIDs as text, made a block at a time: one urandom() call
# and one hex() per 256 ids costs a third of uuid4() each. list.pop() is atomic, so threads
# share the block without a lock; a forked child drops its parent's leftover ids.
_ID_BLOCK = 256
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122: 10xx
_ids: list[str] = []
os.register_at_fork(after_in_child=_ids.clear)


def _id_block() -> list[str]:
    h = os.urandom(16 * _ID_BLOCK).hex()
    return [
        f"{h[o : o + 8]}-{h[o + 8 : o + 12]}-4{h[o + 13 : o + 16]}-"
        f"{_VARIANT[h[o + 16]]}{h[o + 17 : o + 20]}-{h[o + 20 : o + 32]}"
        for o in range(0, 32 * _ID_BLOCK, 32)
    ]


def new_task_id() -> str:
    """A new task id: a random UUID (version 4) as its 36-character text."""
    while True:  # other threads may empty a new block before this one takes from it
        try:
            return _ids.pop()
        except IndexError:
            _ids.extend(_id_block())


# The running task's event (and what else its request says): its TaskRequest is built only
# when a task asks for it.
_current_event: ContextVar[TaskEvent | None] = ContextVar("taskstream_event", default=None)
_current_info: ContextVar[RunInfo | None] = ContextVar("taskstream_run", default=None)


def current_request() -> TaskRequest:
    """The request of the task running on this thread (or in this coroutine)."""
    event = _current_event.get()
    if event is None:
        raise NoCurrentTask()
    info = _current_info.get()
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    hostname = delivery_info = None
    is_eager = False
    soft, hard = event_time_limits(event, None if info is None else info.task)
    if info is not None:
        args, kwargs = info.task.as_call(info.kwargs)
        hostname, delivery_info, is_eager = info.hostname, info.delivery_info, info.is_eager
    if event.priority is not None and delivery_info is not None:  # as Celery's delivery_info
        delivery_info = {**delivery_info, "priority": event.priority}
    return TaskRequest(
        event.id, event.task, event.attempt, event.key,
        event.parent_id, event.root_id or event.id, event.group_id, event.group_index,
        args, kwargs, hostname, delivery_info, is_eager, hard, soft,
        dict(event.headers) if event.headers else None, event.priority,
    )  # fmt: skip


def event_time_limits(
    event: TaskEvent, task: Task[Any, Any] | None
) -> tuple[float | None, float | None]:
    """(soft, hard) time limits of a run in seconds: the call's (``apply_async(time_limit=,
    soft_time_limit=)``), else the task's."""
    soft, hard = event.soft_time_limit, event.time_limit
    if task is not None:
        if soft is None:
            soft = task.options.soft_time_limit
        if hard is None:
            hard = task.options.time_limit
    return soft, hard


def set_current_event(event: TaskEvent | None, info: RunInfo | None = None) -> None:
    """Make ``event`` the one ``current_request()`` describes on this thread (or coroutine),
    with ``info``'s arguments and whereabouts."""
    _current_event.set(event)
    _current_info.set(info)


# Where the running task's update_state() goes: (state, meta as JSON) -> published. The
# worker sets it with each run; outside a worker there is none.
ProgressSink = Callable[[str, "str | None"], None]
_progress_sink: ContextVar[ProgressSink | None] = ContextVar("taskstream_progress", default=None)


def set_progress_sink(sink: ProgressSink | None) -> None:
    _progress_sink.set(sink)


_RETRY_KWARGS = ("countdown", "max_retries")  # what TaskOptions.retry_kwargs may set


@dataclass(frozen=True)
class TaskOptions:
    """How a task is retried and limited, as in Celery.

    A task is retried when it raises ``Retry`` or one of ``autoretry_for``, at most
    ``max_retries`` times; then its outcome is FAILURE and its event goes to the dead-letter
    topic. The wait before a retry: ``Retry(countdown=...)`` when given, else with
    ``retry_backoff`` set, ``retry_backoff * 2 ** retries`` capped at ``retry_backoff_max``
    (with ``retry_jitter``, a random share of that: "full jitter"), else
    ``default_retry_delay``.
    """

    max_retries: int = 3
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: float = 0.0  # seconds; 0: no exponential backoff
    retry_backoff_max: float = 600.0  # seconds
    retry_jitter: bool = True
    default_retry_delay: float = 180.0  # seconds
    time_limit: float | None = None  # seconds; past it the run is a FAILURE TimeLimitExceeded
    soft_time_limit: float | None = None  # seconds; SoftTimeLimitExceeded raised in the task
    track_started: bool = False  # publish a STARTED status when a worker begins the task
    expires: float | None = None  # seconds after sending; picked up later: REVOKED (expired)
    bind: bool = False  # the function's first parameter is the task (self.request, ...)
    ignore_result: bool = False  # store no SUCCESS result (failures are still stored)
    # Celery's "10/s", "100/m", "1000/h" or a number per second: how often the task may
    # start, across the cluster (taskstream.consumer.rate_limits). None: no limit.
    rate_limit: float | str | None = None
    # Celery's priority: 0 (lowest) to 9 (highest), the default of apply_async(priority=).
    # 5 and above go to the queue's high band, drained first (taskstream.kafka.topics). None: none.
    priority: int | None = None
    # How autoretry_for retries (Celery's): {"max_retries": n, "countdown": seconds}, over
    # the task's max_retries and backoff.
    retry_kwargs: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise InvalidOption("max_retries", self.max_retries, "must be >= 0")
        if self.expires is not None and self.expires <= 0:
            raise InvalidOption("expires", self.expires, "must be positive (seconds)")
        check_time_limits(self.soft_time_limit, self.time_limit)
        rate_per_s(self.rate_limit)  # InvalidOption when it is no rate
        check_priority(self.priority)
        for option, value in self.retry_kwargs.items():
            if option not in _RETRY_KWARGS:
                raise InvalidOption(
                    "retry_kwargs", {option: value}, f"keys are {', '.join(_RETRY_KWARGS)}"
                )
            if not isinstance(value, int | float) or value < 0:
                raise InvalidOption("retry_kwargs", {option: value}, "must be a number >= 0")

    @classmethod
    def of(cls, options: dict[str, Any]) -> TaskOptions:
        """TaskOptions from ``@app.task``'s keyword arguments; InvalidOption for unknown ones.

        Celery's ``acks_late=True`` is accepted and changes nothing: a worker commits a task's
        offset only once its outcome is acknowledged, which is acks-late already (a task whose
        worker dies runs again). ``acks_late=False`` (ack on receipt) is not offered."""
        options = dict(options)
        if options.pop("acks_late", True) is not True:
            raise InvalidOption(
                "acks_late", False, "a task is always acknowledged after its outcome (acks late)"
            )
        known = {f.name for f in fields(cls)}
        for option, value in options.items():
            if option not in known:
                raise InvalidOption(
                    option, value, f"unknown; options are {', '.join(sorted(known))}"
                )
        return cls(**options)

    @property
    def rate_per_s(self) -> float | None:
        """``rate_limit`` in starts per second (None: no limit)."""
        return rate_per_s(self.rate_limit)

    @property
    def time_limited(self) -> bool:
        """Whether a run has a soft or hard time limit (so needs a thread it can abandon)."""
        return self.time_limit is not None or self.soft_time_limit is not None


_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def rate_per_s(value: object) -> float | None:
    """Celery's ``rate_limit`` in starts per second: ``"10/s"``, ``"100/m"``, ``"1000/h"`` or
    a number per second; None, 0 or ``""`` for no limit. InvalidOption for anything else."""
    if value is None or value == "" or value == 0:
        return None
    number: float | None = None
    unit = "s"
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        text, _, unit = value.strip().partition("/")
        unit = unit.strip() or "s"
        try:
            number = float(text)
        except ValueError:
            number = None
    if number is None or unit not in _RATE_UNITS:
        raise InvalidOption("rate_limit", value, "a rate is 'N/s', 'N/m', 'N/h' or N per second")
    if not 0 <= number < float("inf"):
        raise InvalidOption("rate_limit", value, "a rate is a finite number >= 0")
    return number / _RATE_UNITS[unit] if number else None


def check_priority(value: object) -> None:
    """InvalidOption (a ValueError) for a priority that is not None nor an int from 0 to 9:
    Celery's range, where a higher number is served first (its RabbitMQ sense)."""
    if value is None:
        return
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not MIN_PRIORITY <= value <= MAX_PRIORITY
    ):
        raise InvalidOption(
            "priority",
            value,
            f"a priority is an int from {MIN_PRIORITY} (lowest) to {MAX_PRIORITY} (highest), "
            "higher served first",
        )


def check_time_limits(soft: float | None, hard: float | None) -> None:
    """InvalidOption (a ValueError) for a limit that is not positive, or a soft limit above
    the hard one (Celery's ValueError: the soft limit would never come first)."""
    for option, value in (("soft_time_limit", soft), ("time_limit", hard)):
        if value is not None and value <= 0:
            raise InvalidOption(option, value, "a time limit must be positive (seconds)")
    if soft is not None and hard is not None and soft > hard:
        raise InvalidOption(
            "soft_time_limit",
            soft,
            f"soft_time_limit must be less than or equal to time_limit ({hard})",
        )


def _micros(option: str, when: datetime) -> int:
    """µs since the epoch of an aware datetime; InvalidOption for a naive one (its instant is
    unknowable: guessing would shift it by hours)."""
    if when.utcoffset() is None:
        raise InvalidOption(option, when, "must be timezone-aware (e.g. datetime.now(UTC))")
    return (when - _EPOCH) // _MICROSECOND


def call_args(
    args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``apply_async``'s ``args``/``kwargs`` as a call's: any list or tuple (Celery takes
    both; ported code passes lists), and any mapping. InvalidCall (a TypeError) otherwise,
    as in Celery."""
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise InvalidCall(f"task args must be a list or tuple, not {type(args).__name__}")
        args = tuple(args)
    if kwargs is None:
        return args, {}
    if not isinstance(kwargs, Mapping):
        raise InvalidCall(f"task kwargs must be a mapping, not {type(kwargs).__name__}")
    return args, dict(kwargs)


def set_call_options(
    event: TaskEvent,
    options: TaskOptions | None,
    *,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: float | timedelta | datetime | None = None,
    ignore_result: bool | None = None,
    headers: Mapping[str, str] | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    priority: int | None = None,
) -> None:
    """Apply ``apply_async``'s options to a new event (``options``: the task's, when this
    app has its code; see Task.apply_async)."""
    if priority is not None:
        check_priority(priority)
        event.priority = priority
    if countdown and eta is not None:
        raise InvalidOption("eta", eta, "give countdown or eta, not both")
    if countdown:
        event.not_before = event.enqueued_at + int(countdown * 1_000_000)
    elif eta is not None:
        event.not_before = _micros("eta", eta)
    if expires is None and options is not None:
        expires = options.expires
    if expires is not None:
        event.expires = _expiry(expires, event.enqueued_at)
    if ignore_result is not None:
        event.ignore_result = ignore_result
    if headers:
        event.headers = _text_headers(headers)
    if time_limit is not None or soft_time_limit is not None:
        event.time_limit, event.soft_time_limit = time_limit, soft_time_limit
        soft, hard = event.soft_time_limit, event.time_limit
        if options is not None:
            soft = options.soft_time_limit if soft is None else soft
            hard = options.time_limit if hard is None else hard
        check_time_limits(soft, hard)


def _text_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """apply_async's ``headers``, checked: they travel as an Avro map of strings."""
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidOption("headers", {name: value}, "header names and values are str")
    return dict(headers)


def _expiry(expires: float | timedelta | datetime, now: int) -> int:
    """The expiry in µs since the epoch, from seconds or a timedelta after ``now``, or a
    datetime."""
    if isinstance(expires, datetime):
        return _micros("expires", expires)
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else float(expires)
    return now + int(seconds * 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Task(Generic[P, R]):
    """A registered task. Call it to run it here; ``delay`` to run it on a worker."""

    def __init__(
        self,
        app: App,
        func: Callable[P, R],
        *,
        name: str,
        queue: str,
        options: TaskOptions | None = None,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.queue = queue
        self.options = options or TaskOptions()
        self.is_async = inspect.iscoroutinefunction(func)
        # The argument record and result schema (``task.signature`` is Celery's method).
        self.task_signature: TaskSignature = derive_signature(func, name, bound=self.options.bind)
        codec = app.codec
        self.args_schema: AvroSchema = codec.register(self.task_signature.args_schema)
        self.result_schema: AvroSchema = codec.register(self.task_signature.result_schema)
        parameters = list(inspect.signature(func).parameters.values())[int(self.options.bind) :]
        self._positional_only = tuple(
            p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_ONLY
        )
        self._keyword_only = frozenset(
            p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY
        )
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here. Outside a worker's run, ``current_request()`` (and
        ``self.request``) describe this call: a new id, attempt 1, no key."""
        if _current_event.get() is None:
            event = self.event(b"")
            return contextvars.copy_context().run(self._call_as, event, *args, **kwargs)
        if self.options.bind:
            bound: Callable[..., R] = self.func
            return bound(self, *args, **kwargs)
        return self.func(*args, **kwargs)

    def _call_as(self, event: TaskEvent, *args: Any, **kwargs: Any) -> R:
        set_current_event(event)
        func: Callable[..., R] = self.func
        return func(self, *args, **kwargs) if self.options.bind else func(*args, **kwargs)

    def invoke(self, kwargs: dict[str, Any]) -> Any:
        """Run the function with decoded arguments (by name, positional-only ones by place)."""
        func: Callable[..., R] = self.func  # P cannot type values decoded into a dict
        if self.options.bind:
            func = functools.partial(func, self)
        if self._positional_only:
            args = [kwargs[name] for name in self._positional_only]
            rest = {k: v for k, v in kwargs.items() if k not in self._positional_only}
            return func(*args, **rest)
        return func(**kwargs)

    def as_call(self, kwargs: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decoded arguments (by name) as Celery's ``request.args``/``request.kwargs``:
        every parameter that can be passed by position in ``args``, in order; keyword-only
        ones in ``kwargs``."""
        names = self.task_signature.parameters
        args = tuple(kwargs[n] for n in names if n not in self._keyword_only and n in kwargs)
        return args, {n: kwargs[n] for n in names if n in self._keyword_only and n in kwargs}

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task to a worker; returns at once. Arguments are checked against the
        task's schema here, before anything is sent (InvalidArguments)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        link: Signature[Any] | Sequence[Signature[Any]] | None = None,
        link_error: Signature[Any] | Sequence[Signature[Any]] | None = None,
        ignore_result: bool | None = None,
        headers: Mapping[str, str] | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        priority: int | None = None,
    ) -> AsyncResult[R]:
        """Send the task with options. ``key``: events with one key go to one partition and
        run in order. ``queue``: another queue than the task's own. ``countdown``: run it no
        sooner than this many seconds from now; ``eta``: no sooner than this (aware)
        datetime. ``expires``: seconds from now (or a timedelta, or an aware datetime) after
        which it must not start: a worker that picks it up later records it as REVOKED
        (reason ``expired``) without running it (default: the task's ``expires`` option).
        ``link``: signatures sent with the result once it succeeds; ``link_error``: sent
        with its id if it fails (CanvasError here, before sending, when a result cannot fit
        a callback's parameter). ``ignore_result``: store no SUCCESS result for this call
        (default: the task's option); the AsyncResult is then ``ignored`` and its ``get()``
        returns None at once, as in Celery. ``headers``: text the task reads as
        ``self.request.headers`` (kept across its retries). ``time_limit`` /
        ``soft_time_limit``: this call's limits in seconds, over the task's (InvalidOption,
        a ValueError, for a soft limit above the hard one). ``priority``: Celery's, 0
        (lowest) to 9 (highest), over the task's ``priority`` option: 5 and above go to
        the queue's high band, which its workers drain first (InvalidOption, a ValueError,
        outside 0-9)."""
        event = self.event(
            self.encode_args(*call_args(args, kwargs)), key=key, queue=queue, task_id=task_id
        )
        set_call_options(
            event, self.options, countdown=countdown, eta=eta, expires=expires,
            ignore_result=ignore_result, headers=headers, time_limit=time_limit,
            soft_time_limit=soft_time_limit, priority=priority,
        )  # fmt: skip
        if link is not None or link_error is not None:
            from taskstream.canvas import attach_callbacks

            attach_callbacks(event, self, link, link_error)
        result = self.app.publish(event)
        result.ignored = event.ignore_result
        return result

    # -- Celery's task API ------------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature: this task with (partial) arguments, for chains, groups and chords.
        In a chain it gets the previous step's result as its first argument."""
        from taskstream.canvas import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """An immutable signature: it ignores the previous step's result."""
        from taskstream.canvas import Signature

        return Signature(self, args, kwargs, immutable=True)

    @property
    def signature(self) -> SignatureCall:
        """Celery's ``task.signature(args, kwargs, **options)``. (Its schemas, which this
        name used to hold, are ``task_signature``; reading them here still works, with a
        DeprecationWarning.)"""
        from taskstream.canvas import SignatureCall

        return SignatureCall(self)

    def apply(
        self,
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task here and now (eager), through its Avro schemas as on a worker;
        returns an EagerResult (``get()``, ``state``, ``result``, ``traceback``)."""
        from taskstream.eager import apply

        return apply(self, *call_args(args, kwargs), **options)

    @property
    def request(self) -> TaskRequest:
        """The running task's request (``self.request`` in a ``bind=True`` task)."""
        return current_request()

    def update_state(
        self, task_id: str | None = None, state: str = "PROGRESS", meta: Any = None
    ) -> None:
        """Publish a custom state of the running task (Celery's ``update_state``): it shows
        as ``r.state`` and its ``meta`` (anything JSON can hold) as ``r.info`` until the final
        outcome replaces it. Only inside a running task (NoCurrentTask otherwise); in a task
        run by ``apply()`` it is accepted and goes nowhere, as in Celery's eager mode."""
        sink = _progress_sink.get()
        request = current_request()
        if sink is None or (task_id is not None and task_id != request.id):
            raise NoCurrentTask()
        sink(state, None if meta is None else json.dumps(meta, default=str))

    def retry(
        self,
        *,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
        expires: float | timedelta | datetime | None = None,
        **_celery_options: Any,
    ) -> Retry:
        """Retry the running task, as Celery's ``self.retry()``: raises Retry (``raise
        self.retry(...)`` reads as Celery) to run it again, with the same arguments, after
        ``countdown`` seconds or at ``eta`` (else the task's backoff policy). Once
        ``max_retries`` (this call's, else the task's) retries are used up it raises ``exc``
        when given, else MaxRetriesExceededError, here in the task, which may catch it.
        ``expires``: the next attempt's, as apply_async's. Other Celery options (priority,
        ...) are accepted and ignored."""
        request = current_request()
        limit = self.options.max_retries if max_retries is None else max_retries
        if request.retries >= limit:
            error = (
                exc if exc is not None else MaxRetriesExceededError(self.name, request.id, limit)
            )
            info = _current_info.get()
            if info is not None:
                info.exhausted = error
            raise error
        if countdown is None and eta is not None:
            countdown = max(0.0, (_micros("eta", eta) - now_micros()) / 1_000_000)
        until = None if expires is None else _expiry(expires, now_micros())
        raise Retry(countdown=countdown, exc=exc, max_retries=max_retries, expires=until)

    def event(
        self,
        encoded_args: bytes,
        *,
        key: str | None = None,
        queue: str | None = None,
        task_id: str | None = None,
    ) -> TaskEvent:
        for path, value, slash in (("task_id", task_id, False), ("key", key, True)):
            problem = None if value is None else id_problem(value, slash=slash)
            if problem is not None:
                raise InvalidArguments(self.name, path, problem)
        return TaskEvent(
            id=task_id or new_task_id(),
            task=self.name,
            queue=queue or self.queue,
            key=key,
            attempt=1,
            enqueued_at=now_micros(),
            not_before=None,
            args=encoded_args,
            ignore_result=self.options.ignore_result,
            priority=self.options.priority,
        )

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return self.app.codec.encode(
            self.args_schema, self.task_signature.args_to_avro(args, kwargs)
        )

    def decode_args(self, data: bytes) -> dict[str, Any]:
        return self.task_signature.args_from_avro(self.app.codec.decode_as(self.args_schema, data))

    @functools.cached_property
    def tail_signature(self) -> TaskSignature:
        """The arguments without the first parameter (a workflow step's, before the parent's
        result is prepended)."""
        return tail_signature(self.task_signature)

    @functools.cached_property
    def tail_args_schema(self) -> AvroSchema:
        return self.app.codec.register(self.tail_signature.args_schema)

    def encode_tail_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        sig = self.tail_signature
        return self.app.codec.encode(self.tail_args_schema, sig.args_to_avro(args, kwargs))

    def decode_tail_args(self, data: bytes) -> dict[str, Any]:
        datum = self.app.codec.decode_as(self.tail_args_schema, data)
        return self.tail_signature.args_from_avro(datum)

    def encode_result(self, value: Any) -> bytes:
        return self.app.codec.encode(self.result_schema, self.task_signature.result_to_avro(value))

    def decode_result(self, data: bytes) -> Any:
        return self.task_signature.result_from_avro(
            self.app.codec.decode_as(self.result_schema, data)
        )

    def decode_results(self, data: list[bytes]) -> list[Any]:
        """:meth:`decode_result` of each (a chord's members'), read in one pass."""
        from_avro = self.task_signature.result_from_avro
        return [from_avro(d) for d in self.app.codec.decode_many(self.result_schema, data)]
