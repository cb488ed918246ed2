"""Workflows, with Celery's names: signatures, ``chain``, ``group`` and ``chord``.

Nothing here waits in a process. A workflow is built into the task events it starts with:

- chain: the first step's event carries the steps after it (``chain``); the worker that runs
  a step publishes the next one when it succeeds, carrying the rest. Each step's task id is
  chosen here, so ``chain(...).apply_async()`` returns the last step's result at once.
- link / link_error: callbacks in the event, published by the worker on success / failure.
- group: one event per member, with the group's id, its position and the group's size; the
  members' task ids derive from the group id (:func:`member_id`), so a GroupResult is
  rebuilt from the id and size alone.
- chord: a group whose members also carry the body. The join lives in the results topic
  and the lookup store: the materializer counts the final members of each group (a member
  that ran twice is one row) and, once all are final, publishes the body under a task id
  derived from the group's (:func:`callback_id`), or its FAILURE naming the failed members.

**Typed canvas**: a step's return type must fit the parameter its result lands in (its
first one; a chord body's takes ``list[T]``); otherwise CanvasError names both tasks and the
parameter, before anything is sent. The check is Avro's schema resolution
(taskstream.avro_compat) between the result schema and the parameter's.

What a step receives (Celery's rule): a mutable signature (``add.s(10)``) gets the parent's
result as its first argument (``add(5, 10)``); an immutable one (``add.si(2, 3)``) nothing.
An errback gets the failed task's id (for a chord: the chord's result id).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskstream.avro_compat import incompatibility
from taskstream.envelope import Chord, Step, TaskEvent
from taskstream.errors import CanvasError
from taskstream.group_result import GroupResult
from taskstream.result import AsyncResult
from taskstream.task import new_task_id

if TYPE_CHECKING:
    from taskstream.app import App
    from taskstream.task import Task

__all__ = ["Signature", "callback_id", "chain", "chord", "group", "member_id"]

R = TypeVar("R")

# The namespace of the task ids derived from a group's id (uuid5: the same on every host).
_NAMESPACE = uuid.UUID("6f1b3c1e-2a4d-5e8f-9a0b-7c6d5e4f3a2b")
_OPTIONS = frozenset(("key", "queue", "countdown", "task_id"))


def member_id(group_id: str, index: int) -> str:
    """The task id of a group's member at ``index``."""
    return str(uuid.uuid5(_NAMESPACE, f"{group_id}/{index}"))


def callback_id(group_id: str) -> str:
    """The task id of a chord's body: deterministic, so that a join fired twice (a
    materializer killed between publishing it and recording it) runs under one id."""
    return str(uuid.uuid5(_NAMESPACE, f"{group_id}/callback"))


class Signature(Generic[R]):
    """A task with its arguments and options, to run later: ``add.s(2, 3)``.

    ``immutable`` (``add.si(...)``): a parent's result is not prepended. Options: ``key``,
    ``queue``, ``countdown``, ``task_id``.
    """

    def __init__(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.options = _checked_options(dict(options or {}))

    def __repr__(self) -> str:
        call = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task.name}{'.si' if self.immutable else '.s'}({', '.join(call)})"

    @property
    def name(self) -> str:
        return self.task.name

    def set(self, **options: Any) -> Signature[R]:
        """Add options (``key``, ``queue``, ``countdown``); returns self, as Celery's."""
        self.options.update(_checked_options(options))
        return self

    def clone(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> Signature[R]:
        """A copy with ``args`` before its own (unless immutable) and ``kwargs`` merged."""
        full_args = self.args if self.immutable else tuple(args) + self.args
        return Signature(
            self.task,
            full_args,
            {**self.kwargs, **(kwargs or {})},
            immutable=self.immutable,
            options=dict(self.options),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run it here, now (partial arguments as in :meth:`clone`)."""
        sig = self.clone(args, kwargs)
        return self.task(*sig.args, **sig.kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[R]:
        """Send it (``args`` go before its own unless immutable); options as
        ``Task.apply_async``'s, over the signature's own."""
        sig = self.clone(args, kwargs)
        return self.task.apply_async(sig.args, sig.kwargs, **{**sig.options, **options})

    def __or__(self, other: Signature[Any] | chain) -> chain:
        return chain(self, other)

    # -- building events --------------------------------------------------------------------

    def step(self, step_id: str | None = None, *, after_parent: bool = True) -> Step:
        """This signature as a step that runs after a parent: its args without the first
        parameter (the parent's result goes there) unless immutable."""
        task, options = self.task, self.options
        whole = self.immutable or not after_parent
        if whole:
            args = task.encode_args(self.args, self.kwargs)
        else:
            args = task.encode_tail_args(self.args, self.kwargs)
        return Step(
            step_id or options.get("task_id") or new_task_id(),
            task.name,
            options.get("queue") or task.queue,
            options.get("key"),
            args,
            whole,
        )

    def event(self, task_id: str | None = None) -> TaskEvent:
        """The task event of this signature run on its own (the first step of a workflow)."""
        options = self.options
        event = self.task.event(
            self.task.encode_args(self.args, self.kwargs),
            key=options.get("key"),
            queue=options.get("queue"),
            task_id=task_id or options.get("task_id"),
        )
        countdown = options.get("countdown")
        if countdown:
            event.not_before = event.enqueued_at + int(countdown * 1_000_000)
        return event


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise CanvasError(f"unknown signature options {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    return options


def as_list(callbacks: Signature[Any] | Sequence[Signature[Any]] | None) -> list[Signature[Any]]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Signature):
        return [callbacks]
    return list(callbacks)


# -- the typed canvas --------------------------------------------------------------------------


def check_link(
    parent: str,
    result_schema: Any,
    child: str,
    args_schema: dict[str, Any],
    *,
    role: str = "step",
) -> None:
    """CanvasError unless a value of ``result_schema`` (what ``parent`` gives) fits the first
    parameter of ``child``'s arguments record. ``role``: ``step`` (a chain step or callback:
    the parent's return value), ``body`` (a chord body: a list of them), ``errback`` (the
    failed task's id, a string)."""
    fields = args_schema["fields"]
    if not fields:
        raise CanvasError(
            f"{child} takes no parameter for what {parent} gives it; use .si() to ignore it",
            parent,
            child,
        )
    parameter, schema = fields[0]["name"], fields[0]["type"]
    if role == "body":
        if not (isinstance(schema, dict) and schema.get("type") == "array"):
            raise CanvasError(
                f"the chord body {child} gets the list of its members' results in its "
                f"parameter {parameter!r}, which is not a list",
                parent,
                child,
                parameter,
            )
        schema = schema["items"]
    why = incompatibility(result_schema, schema)
    if why is None:
        return
    if role == "errback":
        message = (
            f"the errback {child} gets the failed task's id (a str) in its parameter "
            f"{parameter!r}, which cannot take it ({why})"
        )
    else:
        into = "the items of " if role == "body" else ""
        message = (
            f"{parent} returns what {into}{child}'s parameter {parameter!r} cannot take "
            f"({why.replace('the value', 'the result')})"
        )
    raise CanvasError(message, parent, child, parameter)


def check_fits(parent: Task[Any, Any], child: Signature[Any]) -> None:
    """CanvasError unless ``parent``'s return value fits ``child``'s first parameter."""
    if not child.immutable:
        result = parent.signature.result_schema
        check_link(parent.name, result, child.name, child.task.signature.args_schema)


def check_errback(parent: str, errback: Signature[Any]) -> None:
    """An errback's first parameter takes the failed task's id: it must take a string."""
    if not errback.immutable:
        args = errback.task.signature.args_schema
        check_link(parent, "string", errback.name, args, role="errback")


def check_body(members: Sequence[Signature[Any]], body: Signature[Any]) -> None:
    """A chord body's first parameter takes ``list[T]``: every member's return must fit T."""
    if body.immutable:
        return
    for member in {m.task.name: m for m in members}.values():
        result = member.task.signature.result_schema
        check_link(member.name, result, body.name, body.task.signature.args_schema, role="body")


def attach_callbacks(
    event: TaskEvent,
    parent: Task[Any, Any],
    link: Signature[Any] | Sequence[Signature[Any]] | None,
    link_error: Signature[Any] | Sequence[Signature[Any]] | None,
) -> None:
    """``apply_async(link=..., link_error=...)``: checked, then carried in the event."""
    for callback in as_list(link):
        check_fits(parent, callback)
        event.link.append(callback.step())
    for errback in as_list(link_error):
        check_errback(parent.name, errback)
        event.link_error.append(errback.step())


# -- chain -------------------------------------------------------------------------------------


class chain:
    """Steps run one after another, each given the previous one's result:
    ``chain(add.s(2, 3), add.s(10), mul.s(2)).apply_async().get()`` is 30.

    A chain whose first element is a group and second a signature is a chord (as in Celery).
    """

    steps: list[Signature[Any]]

    def __init__(self, *steps: Signature[Any] | chain | Iterable[Signature[Any]]) -> None:
        flat: list[Signature[Any]] = []
        for step in steps:
            if isinstance(step, chain):
                flat.extend(step.steps)
            elif isinstance(step, Signature):
                flat.append(step)
            elif isinstance(step, group):
                raise CanvasError(
                    "a group inside a chain is not supported yet; write chord(group, body)"
                )
            else:
                flat.extend(step)
        if not flat:
            raise CanvasError("an empty chain")
        for parent, child in itertools.pairwise(flat):
            check_fits(parent.task, child)
        self.steps = flat

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.steps)

    def __or__(self, other: Signature[Any] | chain) -> chain:
        return chain(self, other)

    def delay(self) -> AsyncResult[Any]:
        return self.apply_async()

    def apply_async(
        self,
        *,
        link_error: Signature[Any] | Sequence[Signature[Any]] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send the first step; returns the last step's AsyncResult (``.parent`` walks back
        to the first). ``link_error``: run if any step fails. ``options`` (key, queue,
        countdown) apply to the first step."""
        first, *rest = self.steps
        ids = [new_task_id() for _ in self.steps]
        errbacks = as_list(link_error)
        for step in self.steps:
            for errback in errbacks:
                check_errback(step.name, errback)
        event = (first.clone().set(**options) if options else first).event(ids[0])
        event.root_id = ids[0]
        event.chain = [step.step(step_id) for step, step_id in zip(rest, ids[1:], strict=True)]
        event.link_error = [errback.step() for errback in errbacks]
        app = first.task.app
        head = app.publish(event)
        result = head
        for step_id in ids[1:]:
            result = AsyncResult(step_id, app, parent=result)
        return result


# -- group and chord ---------------------------------------------------------------------------


class group:
    """Signatures run in parallel: ``group(add.s(i, i) for i in range(100)).apply_async()``
    returns a GroupResult whose ``get()`` lists the results in the group's order."""

    def __init__(self, *members: Signature[Any] | Iterable[Signature[Any]]) -> None:
        flat: list[Signature[Any]] = []
        for member in members:
            if isinstance(member, Signature):
                flat.append(member)
            elif isinstance(member, (chain, group)):
                raise CanvasError("a chain or group inside a group is not supported yet")
            else:
                flat.extend(member)
        self.members = flat

    def __repr__(self) -> str:
        return f"group({', '.join(repr(m) for m in self.members)})"

    def __len__(self) -> int:
        return len(self.members)

    def __or__(self, body: Signature[Any]) -> chord:
        return chord(self, body)

    def delay(self) -> GroupResult:
        return self.apply_async()

    def apply_async(self, *, group_id: str | None = None) -> GroupResult:
        """Send every member; returns the GroupResult (its id is the group's)."""
        gid = group_id or new_task_id()
        return GroupResult(gid, _publish_members(self.members, gid, None), self._app())

    def _app(self) -> App:
        if not self.members:
            raise CanvasError("an empty group")
        return self.members[0].task.app


def _publish_members(
    members: Sequence[Signature[Any]], gid: str, joined: Chord | None
) -> list[AsyncResult[Any]]:
    results = []
    size = len(members)
    for index, member in enumerate(members):
        event = member.event(member_id(gid, index))
        event.group_id = gid
        event.group_index = index
        event.group_size = size
        event.root_id = event.root_id or gid
        event.chord = joined
        results.append(member.task.app.publish(event))
    return results


class chord:
    """A group and a body run with the list of the group's results, in order, once every
    member succeeded: ``chord(group(add.s(i, i) for i in range(1000)), tsum.s())``.

    If a member fails, the body does not run: the chord's result is a FAILURE naming the
    failed members and their errors, and ``link_error`` runs once, with the chord's id.
    """

    def __init__(self, header: group | Iterable[Signature[Any]], body: Signature[Any]) -> None:
        self.header = header if isinstance(header, group) else group(header)
        if not self.header.members:
            raise CanvasError("a chord with an empty header")
        check_body(self.header.members, body)
        self.body = body

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def delay(self) -> AsyncResult[Any]:
        return self.apply_async()

    def apply_async(
        self,
        *,
        link_error: Signature[Any] | Sequence[Signature[Any]] | None = None,
        group_id: str | None = None,
    ) -> AsyncResult[Any]:
        """Send the header's members; returns the body's AsyncResult (``.parent`` is the
        header's GroupResult)."""
        errbacks = as_list(link_error)
        for errback in errbacks:
            check_errback(self.body.name, errback)
        gid = group_id or new_task_id()
        body = self.body.step(callback_id(gid))
        joined = Chord(body, [e.step() for e in errbacks])
        app = self.header._app()
        members = _publish_members(self.header.members, gid, joined)
        return AsyncResult(body.id, app, parent=GroupResult(gid, members, app))
