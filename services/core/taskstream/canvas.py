"""Workflows, with Celery's names: signatures, ``chain``, ``group`` and ``chord``, nested at
any depth.

Nothing here waits in a process. A workflow is checked and frozen into a tree
(taskstream.workflows.tree), and sent as the task events it starts with
(taskstream.workflows.events):

- chain: its first node starts; each task event carries what runs after it (``then``), and
  the worker that runs a task starts the next node when it succeeds. Every task id is chosen
  here, so ``chain(...).apply_async()`` returns the last node's result at once.
- group: every member starts; the members' result ids derive from the group id
  (:func:`member_id`), so a GroupResult is rebuilt from the id and size alone.
- a group followed by more in a chain, and a chord: the members carry what follows. The join
  lives in the results topic and the lookup store: the materializer counts the final
  members of each group once (a member that ran twice is one row) and, once all are final,
  starts what follows with the list of their results (a chord's body under an id derived
  from the group's, :func:`callback_id`), or fails it, naming the failed members.
- link / link_error: callbacks in the event, sent by the worker on success / failure.

Nesting follows Celery: chains in groups and chord headers, groups and chords in chains (a
chord's result flows into the next step), chord bodies that are chains or groups, chords of
chords; a group in a group or in a chord's header is unrolled. A failed task fails every
dependent at once (taskstream.workflows.events.not_run): nothing waits forever.

**Typed canvas**: what a node returns must fit the first parameter of every task it lands
in (a group's list in a ``list[T]`` parameter); otherwise CanvasError names both tasks and
the parameter, before anything is sent (taskstream.workflows.tree.check).

What a task receives (Celery's rule): a mutable signature (``add.s(10)``) gets the parent's
result as its first argument (``add(5, 10)``); an immutable one (``add.si(2, 3)``) nothing.
An errback gets the failed task's id (for a chord that failed in its header: the chord's
result id).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from taskstream.envelope import Flow, TaskEvent
from taskstream.errors import CanvasError
from taskstream.group_result import GroupResult
from taskstream.result import AsyncResult
from taskstream.task import check_priority
from taskstream.workflows import sending, tree
from taskstream.workflows.tree import callback_id, member_id

if TYPE_CHECKING:
    from taskstream.app import App
    from taskstream.task import Task

__all__ = ["Signature", "callback_id", "chain", "chord", "group", "member_id"]

R = TypeVar("R")

_OPTIONS = frozenset(("key", "queue", "countdown", "task_id", "priority"))


class _Canvas:
    """What every workflow piece does: ``|``, ``~``, calling sends it, errbacks."""

    def _node(self) -> tree.Node:
        raise NotImplementedError

    def _app(self) -> App | None:
        raise NotImplementedError

    def __or__(self, other: _Canvas) -> _Canvas:
        if not isinstance(other, _Canvas):
            raise CanvasError(f"{self!r} | {other!r}: a workflow chains signatures and workflows")
        return chain(self, other)

    def __invert__(self) -> Any:
        """Celery's ``~sig``: send it and wait for its result."""
        return self.apply_async().get()

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's calling a workflow: send it (a signature runs its task here)."""
        return self.apply_async(args, kwargs)


class Signature(_Canvas, Generic[R]):
    """A task with its arguments and options, to run later: ``add.s(2, 3)``.

    ``immutable`` (``add.si(...)``): a parent's result is not prepended. Options: ``key``,
    ``queue``, ``countdown``, ``task_id``. Calling it runs the task here (as Celery's).
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
        self.callbacks: list[Signature[Any]] = []
        self.errbacks: list[Signature[Any]] = []

    def __repr__(self) -> str:
        call = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task.name}{'.si' if self.immutable else '.s'}({', '.join(call)})"

    @property
    def name(self) -> str:
        return self.task.name

    def set(self, **options: Any) -> Signature[R]:
        """Add options (``key``, ``queue``, ``countdown``, ``priority``); returns self, as
        Celery's."""
        self.options.update(_checked_options(options))
        return self

    def link(self, callback: Signature[Any]) -> Signature[Any]:
        """Send ``callback`` with this task's result once it succeeds (Celery's
        ``sig.link``); returns the callback."""
        self.callbacks.append(_signature(callback, "link"))
        tree.check(self._node())
        return callback

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        """Send ``errback`` with this task's id if it fails; returns the errback."""
        self.errbacks.append(_signature(errback, "link_error"))
        tree.check(self._node())
        return errback

    def on_error(self, errback: Signature[Any]) -> Signature[R]:
        """Celery's ``on_error``: :meth:`link_error`, returning this signature."""
        self.link_error(errback)
        return self

    def clone(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> Signature[R]:
        """A copy with ``args`` before its own (unless immutable) and ``kwargs`` merged."""
        full_args = self.args if self.immutable else tuple(args) + self.args
        copy = Signature(
            self.task,
            full_args,
            {**self.kwargs, **(kwargs or {})},
            immutable=self.immutable,
            options=dict(self.options),
        )
        copy.callbacks, copy.errbacks = list(self.callbacks), list(self.errbacks)
        return copy

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
        sig = self.clone(tuple(args), kwargs)
        merged = {**sig.options, **options}
        for name, own in (("link", sig.callbacks), ("link_error", sig.errbacks)):
            if own:
                merged[name] = [*own, *_signatures(merged.get(name), name)]
        return self.task.apply_async(sig.args, sig.kwargs, **merged)

    def _app(self) -> App:
        return self.task.app

    def _node(self) -> tree.Leaf:
        task = self.task
        types = task.task_signature
        fields = types.args_schema["fields"]
        args, kwargs = self.args, self.kwargs

        def encode(whole: bool) -> bytes:
            if whole:
                return task.encode_args(args, kwargs)
            return task.encode_tail_args(args, kwargs)

        return tree.Leaf(
            task.name,
            self.immutable,
            (fields[0]["name"], fields[0]["type"]) if fields else None,
            types.result_schema,
            encode,
            self.options.get("queue") or task.queue,
            self.options.get("key"),
            self.options.get("task_id"),
            priority=self.options.get("priority", task.options.priority),
            link=[c._node() for c in self.callbacks],
            link_error=[e._node() for e in self.errbacks],
        )


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise CanvasError(f"unknown signature options {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    check_priority(options.get("priority"))
    return options


def _signature(value: Any, role: str) -> Signature[Any]:
    if not isinstance(value, Signature):
        raise CanvasError(f"a {role} is a signature (add.s(...)), not {value!r}")
    return value


def _signatures(value: Any, role: str) -> list[Signature[Any]]:
    if value is None:
        return []
    if isinstance(value, Signature):
        return [value]
    if isinstance(value, (list, tuple)):
        return [_signature(v, role) for v in value]
    return [_signature(value, role)]


def as_list(callbacks: Any) -> list[Signature[Any]]:
    """``link=``/``link_error=`` as given to apply_async: None, one signature or several."""
    return _signatures(callbacks, "callback")


def _pieces(parts: Iterable[Any], what: str) -> list[_Canvas]:
    """The workflow pieces given to chain/group/chord: signatures, chains, groups, chords,
    or iterables of them (a list, a tuple, a generator), checked one by one."""
    from taskstream.task import Task

    found: list[_Canvas] = []
    for part in parts:
        if isinstance(part, _Canvas):
            found.append(part)
        elif isinstance(part, Task):  # Celery takes a task for its signature: chord([tsum])
            found.append(part.s())
        elif isinstance(part, (str, bytes, dict)) or not isinstance(part, Iterable):
            raise CanvasError(
                f"a {what} is made of signatures, chains, groups and chords, not {part!r}"
            )
        else:
            found.extend(_pieces(part, what))
    return found


def attach_callbacks(event: TaskEvent, parent: Task[Any, Any], link: Any, link_error: Any) -> None:
    """``apply_async(link=..., link_error=...)``: checked, then carried in the event."""
    node = Signature(parent)._node()
    node.encode = lambda whole: event.args  # the task itself is sent as it is
    node.link = [s._node() for s in as_list(link)]
    node.link_error = [s._node() for s in as_list(link_error)]
    tree.check(node)
    frozen = tree.freeze(node)
    event.link.extend(frozen.link)
    event.link_error.extend(frozen.link_error)


# -- sending -----------------------------------------------------------------------------------


def _send(
    piece: _Canvas, options: dict[str, Any]
) -> tuple[Flow, dict[str, AsyncResult[Any]], App | None]:
    """Check, freeze and send a workflow (taskstream.workflows.sending); returns its frozen
    tree, the published results by task id, and its app (None for an empty group)."""
    countdown, eta = options.pop("countdown", None), options.pop("eta", None)
    key, queue = options.pop("key", None), options.pop("queue", None)
    priority = options.pop("priority", None)
    link_error = options.pop("link_error", None)
    if options:
        raise CanvasError(f"unknown workflow options {sorted(options)}")
    node = piece._node()
    for errback in as_list(link_error):
        tree.add_errback(node, errback._node())
    app = piece._app()
    frozen, published = sending.send(
        node, app, countdown=countdown, eta=eta, key=key, queue=queue, priority=priority
    )
    return frozen, published, app


def _partial(piece: _Canvas, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Canvas:
    """Celery's ``chain(add.s(4), ...).apply_async((2,))``: arguments for the tasks a
    workflow starts with (a chain's first, every member of a group or chord's header)."""
    if not (args or kwargs):
        return piece
    if isinstance(piece, Signature):
        return piece.clone(args, kwargs)
    if isinstance(piece, chain):
        first, *rest = piece.tasks
        made = chain(_partial(first, args, kwargs), *rest)
        made._callbacks, made._errbacks = piece._callbacks, piece._errbacks
        return made
    if isinstance(piece, group):
        grown = group([_partial(m, args, kwargs) for m in piece.tasks])
        grown._errbacks = piece._errbacks
        return grown
    if isinstance(piece, chord):
        made_chord = chord(_partial(piece.header, args, kwargs), piece.body)
        made_chord._errbacks = piece._errbacks
        return made_chord
    raise CanvasError(f"cannot give arguments to {piece!r}")


# -- chain -------------------------------------------------------------------------------------


class chain(_Canvas):
    """Steps run one after another, each given the previous one's result:
    ``chain(add.s(2, 3), add.s(10), mul.s(2)).apply_async().get()`` is 30.

    A step may be a group (its list goes to the next step: a group followed by more steps is
    a chord, as in Celery) or a chord (its body's result goes on); nested chains unroll.
    """

    def __init__(self, *steps: Any) -> None:
        self.tasks: list[_Canvas] = _pieces(steps, "chain")
        self._errbacks: list[Signature[Any]] = []
        self._callbacks: list[Signature[Any]] = []
        self._node()  # CanvasError now, for an empty chain or a link that does not fit

    @property
    def steps(self) -> list[_Canvas]:
        return self.tasks

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.tasks)

    def _app(self) -> App | None:
        return _first_app(self.tasks)

    def _node(self) -> tree.Node:
        node = tree.chain_of([t._node() for t in self.tasks])
        for callback in self._callbacks:
            tree.add_callback(node, callback._node())
        for errback in self._errbacks:
            tree.add_errback(node, errback._node())
        return node

    def link(self, callback: Signature[Any]) -> Signature[Any]:
        """Send ``callback`` with the chain's result (its last task's)."""
        self._callbacks.append(_signature(callback, "link"))
        tree.check(self._node())
        return callback

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        """Send ``errback`` with a failed task's id, whichever step fails."""
        self._errbacks.append(_signature(errback, "link_error"))
        tree.check(self._node())
        return errback

    def on_error(self, errback: Signature[Any]) -> chain:
        self.link_error(errback)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult[Any] | GroupResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any] | GroupResult:
        """Send it; returns the last node's result (``.parent`` walks back to the first).
        Options: ``link_error`` (run if any step fails), ``countdown``/``eta``, ``key``,
        ``queue`` (for the tasks it starts with)."""
        frozen, published, app = _send(_partial(self, tuple(args), kwargs or {}), options)
        assert app is not None
        return sending.results(frozen, app, None, published)


def _first_app(pieces: Sequence[_Canvas]) -> App | None:
    for piece in pieces:
        app = piece._app()
        if app is not None:
            return app
    return None


# -- group and chord ---------------------------------------------------------------------------


class group(_Canvas):
    """Workflows run in parallel: ``group(add.s(i, i) for i in range(100)).apply_async()``
    returns a GroupResult whose ``get()`` lists the results in the group's order. Members
    may be chains and chords; a group in a group unrolls (as in Celery)."""

    def __init__(self, *members: Any) -> None:
        self.tasks: list[_Canvas] = _pieces(members, "group")
        self._errbacks: list[Signature[Any]] = []
        self._callbacks: list[Signature[Any]] = []
        self._node()

    @property
    def members(self) -> list[_Canvas]:
        return self.tasks

    def __repr__(self) -> str:
        return f"group({', '.join(repr(m) for m in self.tasks)})"

    def __len__(self) -> int:
        return len(self.tasks)

    def __or__(self, other: _Canvas) -> _Canvas:
        if isinstance(other, Signature):
            return chord(self, other)
        return super().__or__(other)

    def _app(self) -> App | None:
        return _first_app(self.tasks)

    def _node(self, group_id: str | None = None) -> tree.Group:
        if self._callbacks:
            raise CanvasError("a group with link() inside a workflow: write chord(group, body)")
        return self._members(group_id)

    def _members(self, group_id: str | None = None) -> tree.Group:
        node = tree.group_of([m._node() for m in self.tasks], group_id)
        for errback in self._errbacks:
            tree.add_errback(node, errback._node())
        return node

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        """Send ``errback`` with a failed member's id, for each member that fails."""
        self._errbacks.append(_signature(errback, "link_error"))
        tree.check(self._node())
        return errback

    def on_error(self, errback: Signature[Any]) -> group:
        self.link_error(errback)
        return self

    def link(self, callback: Signature[Any]) -> Signature[Any]:
        """Send ``callback`` once, with the list of the members' results, when all succeeded
        (Celery's ``group.link``); the group's result stays its GroupResult. Only for a group
        sent on its own: inside a workflow, write the chord."""
        self._callbacks.append(_signature(callback, "link"))
        self._sent_node()
        return callback

    def _sent_node(self, group_id: str | None = None) -> tree.Node:
        """The node this group is sent as: a chord when it has callbacks."""
        node = self._members(group_id)
        if not self._callbacks:
            return node
        body = group(self._callbacks)._node() if len(self._callbacks) > 1 else None
        return tree.chord_of(node.nodes, body or self._callbacks[0]._node(), node.group_id)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        group_id: str | None = None,
        **options: Any,
    ) -> GroupResult:
        """Send every member; returns the GroupResult (its id is the group's). An empty
        group sends nothing and its result is ``[]``."""
        grown = _partial(self, tuple(args), kwargs or {})
        assert isinstance(grown, group)
        grown._callbacks = self._callbacks
        frozen, published, app = _send(_Fixed(grown._sent_node(group_id), self._app()), options)
        assert frozen.group_id is not None
        if app is None:
            return GroupResult(frozen.group_id, [], None)
        found = sending.results(frozen, app, None, published)
        if isinstance(found, AsyncResult):  # sent as a chord (link): its header's result
            header = found.parent
            assert header is not None
            found = header
        assert isinstance(found, GroupResult)
        return found


class _Fixed(_Canvas):
    """A node built already (a group or chord with its id chosen)."""

    def __init__(self, node: tree.Node, app: App | None) -> None:
        self.node, self.app = node, app

    def _node(self) -> tree.Node:
        return self.node

    def _app(self) -> App | None:
        return self.app


class chord(_Canvas):
    """A group and a body run with the list of the group's results, in order, once every
    member succeeded: ``chord(group(add.s(i, i) for i in range(1000)), tsum.s())``;
    ``chord(header)(body)`` as in Celery. The body may be a chain, a group or a chord; an
    empty header runs the body with ``[]``.

    If a member fails, the body does not run: the chord's result is a FAILURE naming the
    failed members and their errors. ``link_error`` runs once, whether a member or the body
    failed.
    """

    def __init__(self, header: Any, body: _Canvas | None = None) -> None:
        # A group keeps its own errbacks (each member's); anything else becomes one.
        self.header = header if isinstance(header, group) else group(_pieces([header], "chord"))
        self.body = body
        self._errbacks: list[Signature[Any]] = []
        if body is not None:
            self._node()

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def _app(self) -> App | None:
        pieces: list[_Canvas] = [*self.header.tasks, *([self.body] if self.body else [])]
        return _first_app(pieces)

    def _node(self, group_id: str | None = None) -> tree.Chord:
        if self.body is None:
            raise CanvasError("a chord without a body: chord(header, body) or chord(header)(body)")
        if not isinstance(self.body, _Canvas):
            raise CanvasError(f"a chord's body is a signature or a workflow, not {self.body!r}")
        errbacks = [e._node() for e in self._errbacks]
        header = self.header._members().nodes
        return tree.chord_of(header, self.body._node(), group_id, errbacks)

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        """Send ``errback`` once if a header member or the body fails."""
        self._errbacks.append(_signature(errback, "link_error"))
        if self.body is not None:
            self._node()
        return errback

    def on_error(self, errback: Signature[Any]) -> chord:
        self.link_error(errback)
        return self

    def __call__(
        self, body: _Canvas | None = None, **options: Any
    ) -> AsyncResult[Any] | GroupResult:
        """Celery's ``chord(header)(body)``: send it with this body."""
        if body is not None:
            self.body = body
        return self.apply_async(**options)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        group_id: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any] | GroupResult:
        """Send the header's members; returns the body's result (``.parent`` is the
        header's GroupResult). Options: ``link_error``, ``countdown``/``eta``."""
        grown = _partial(self, tuple(args), kwargs or {})
        assert isinstance(grown, chord)
        frozen, published, app = _send(_Fixed(grown._node(group_id), self._app()), options)
        assert app is not None
        return sending.results(frozen, app, None, published)


class SignatureCall:
    """``task.signature``: Celery's ``task.signature(args, kwargs, **options)`` when called.
    Read as an attribute, it is the task's schemas (``task.task_signature``), deprecated."""

    def __init__(self, task: Task[Any, Any]) -> None:
        self._task = task

    def __call__(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
        **options: Any,
    ) -> Signature[Any]:
        return Signature(
            self._task, tuple(args or ()), kwargs, immutable=immutable, options=options
        )

    def __getattr__(self, name: str) -> Any:
        warnings.warn(
            "task.signature as the task's schemas is deprecated: use task.task_signature "
            "(task.signature(...) is Celery's signature)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self._task.task_signature, name)
