"""A workflow as a tree of typed nodes, before anything is sent: checked, then frozen.

The Python canvas (taskstream.canvas) and ``POST /v1/workflows`` (taskstream.producer.http)
both build this tree: a :class:`Leaf` is a task with its arguments (encoded later, once its
place says whether its first parameter comes from a parent) and its schemas; :class:`Chain`,
:class:`Group` and :class:`Chord` nest at any depth. Celery's shapes are normalised as
Celery does (:func:`chain_of`, :func:`group_of`): nested chains and groups in a group or a
chord's header are unrolled; a group followed by more steps in a chain runs as a chord
(taskstream.workflows.events starts it so).

**Types follow the nesting** (:func:`check`): what a node returns (a task's result, a chain's
last node's, a chord's body's, a group's list of its members') is checked against the first
parameter of every task that receives it, before anything is sent; a refusal is a
CanvasError naming both tasks, the parameter and, for HTTP, the receiving task's ``path``.

:func:`freeze` turns the tree into taskstream.envelope's Flow, with every task id chosen
(a group member's from the group id, a chord body's from the chord's: :func:`member_id`
and :func:`callback_id`, which taskstream.canvas re-exports), which the events carry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskstream.avro.compat import incompatibility
from taskstream.envelope import Flow, FlowKind, Step
from taskstream.errors import CanvasError
from taskstream.workflows.events import leaves

__all__ = [
    "Chain",
    "Chord",
    "Group",
    "Leaf",
    "Many",
    "Node",
    "One",
    "add_callback",
    "add_errback",
    "callback_id",
    "chain_of",
    "check",
    "check_errback",
    "freeze",
    "group_of",
    "member_id",
    "new_id",
    "returns",
]

# The namespace of the task ids derived from a group's id (uuid5: the same on every host).
_NAMESPACE = uuid.UUID("6f1b3c1e-2a4d-5e8f-9a0b-7c6d5e4f3a2b")


def new_id() -> str:
    return str(uuid.uuid4())


def member_id(group_id: str, index: int) -> str:
    """The task id of a group's member at ``index``."""
    return str(uuid.uuid5(_NAMESPACE, f"{group_id}/{index}"))


def callback_id(group_id: str) -> str:
    """The task id of a chord's body: deterministic, so that a join fired twice (a
    materializer killed between publishing it and recording it) runs under one id."""
    return str(uuid.uuid5(_NAMESPACE, f"{group_id}/callback"))


@dataclass(eq=False)
class Leaf:
    """One task with its arguments. ``parameter``: its first parameter (name, Avro schema),
    where a parent's result lands, or None; ``encode(whole)``: its arguments record, whole
    or without that first parameter; ``path``: where it sits in an HTTP workflow."""

    name: str
    immutable: bool
    parameter: tuple[str, Any] | None
    result: Any
    encode: Callable[[bool], bytes]
    queue: str
    key: str | None = None
    task_id: str | None = None
    link: list[Leaf] = field(default_factory=list)
    link_error: list[Leaf] = field(default_factory=list)
    path: str = ""
    priority: int | None = None  # its event's, once sent (taskstream.kafka.topics.event_topic)


@dataclass(eq=False)
class Chain:
    nodes: list[Node]
    path: str = ""


@dataclass(eq=False)
class Group:
    nodes: list[Node]
    group_id: str | None = None
    path: str = ""


@dataclass(eq=False)
class Chord:
    header: list[Node]
    body: Node
    group_id: str | None = None
    errbacks: list[Leaf] = field(default_factory=list)  # run once: a member or the body fails
    path: str = ""


Node = Leaf | Chain | Group | Chord


def chain_of(nodes: Sequence[Node], path: str = "") -> Chain:
    """A chain, nested chains unrolled; CanvasError if empty or a link does not fit."""
    flat: list[Node] = []
    for node in nodes:
        flat.extend(node.nodes if isinstance(node, Chain) else [node])
    if not flat:
        raise CanvasError("an empty chain")
    made = Chain(flat, path)
    _check_own(made)
    return made


def group_of(nodes: Sequence[Node], group_id: str | None = None, path: str = "") -> Group:
    """A group, nested groups unrolled as Celery does (``group(group(a, b), c)`` is
    ``group(a, b, c)``)."""
    made = Group(_unrolled(nodes), group_id, path)
    _check_own(made)
    return made


def chord_of(
    header: Sequence[Node],
    body: Node,
    group_id: str | None = None,
    errbacks: Sequence[Leaf] = (),
    path: str = "",
) -> Chord:
    """A chord, groups in its header unrolled; CanvasError if the header's list cannot fit
    the body."""
    made = Chord(_unrolled(header), body, group_id, list(errbacks), path)
    _check_own(made)
    return made


def _unrolled(nodes: Sequence[Node]) -> list[Node]:
    flat: list[Node] = []
    for node in nodes:
        flat.extend(_unrolled(node.nodes) if isinstance(node, Group) else [node])
    return flat


# -- types -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class One:
    """What a task returns: its name and result schema."""

    task: str
    schema: Any


@dataclass(frozen=True)
class Many:
    """What a group returns: the list of its members' results."""

    items: tuple[One | Many, ...]

    @property
    def task(self) -> str:
        names = list(dict.fromkeys(_names(self)))
        return "the group of " + ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _names(out: One | Many) -> Iterator[str]:
    if isinstance(out, One):
        yield out.task
    else:
        for item in out.items:
            yield from _names(item)


def returns(node: Node) -> One | Many:
    """What a node gives the next one."""
    if isinstance(node, Leaf):
        return One(node.name, node.result)
    if isinstance(node, Chain):
        return returns(node.nodes[-1])
    if isinstance(node, Chord):
        return returns(node.body)
    return Many(tuple(returns(m) for m in node.nodes))


def receivers(node: Node) -> Iterator[Leaf]:
    """The tasks that get a value given to ``node`` (a chain's first, every member of a group
    or a chord's header), immutable ones left out."""
    if isinstance(node, Leaf):
        if not node.immutable:
            yield node
    elif isinstance(node, Chain):
        yield from receivers(node.nodes[0])
    else:
        for member in node.nodes if isinstance(node, Group) else node.header:
            yield from receivers(member)


def check(node: Node) -> None:
    """Every link of the tree, at any depth (the Python canvas checks each node as it is
    built; HTTP builds the tree at once)."""
    _check_own(node)
    if isinstance(node, Leaf):
        return
    children = [*node.header, node.body] if isinstance(node, Chord) else node.nodes
    for child in children:
        check(child)


def _check_own(node: Node) -> None:
    """The links a node makes itself: a chain's steps, a chord's header to its body, a
    task's callbacks and errbacks."""
    if isinstance(node, Chain):
        for parent, child in zip(node.nodes, node.nodes[1:], strict=False):
            give(returns(parent), child)
    elif isinstance(node, Chord):
        give(Many(tuple(returns(m) for m in node.header)), node.body)
        for errback in node.errbacks:
            check_errback(node, errback)
    if isinstance(node, Group | Chord):
        for member in node.nodes if isinstance(node, Group) else node.header:
            if _ends_in_empty_group(member):
                raise CanvasError(
                    "a group member that ends in an empty group (its list would be [] "
                    "with nothing to run): leave the empty group out",
                    path=member.path,
                )
    elif isinstance(node, Leaf):
        for callback in node.link:
            give(returns(node), callback)
        for errback in node.link_error:
            check_errback(node, errback)


def _ends_in_empty_group(node: Node) -> bool:
    if isinstance(node, Group):
        return not node.nodes
    if isinstance(node, Chain):
        return _ends_in_empty_group(node.nodes[-1])
    if isinstance(node, Chord):
        return _ends_in_empty_group(node.body)
    return False


def give(value: One | Many, node: Node) -> None:
    """CanvasError unless ``value`` fits the first parameter of each task receiving it."""
    for leaf in receivers(node):
        if leaf.parameter is None:
            raise CanvasError(
                f"{leaf.name} takes no parameter for what {value.task} gives it; "
                "use .si() to ignore it",
                value.task,
                leaf.name,
                path=leaf.path,
            )
        name, schema = leaf.parameter
        _fits(value, schema, leaf, name)


def _fits(value: One | Many, schema: Any, leaf: Leaf, parameter: str, into: str = "") -> None:
    if isinstance(value, Many):
        if not (isinstance(schema, dict) and schema.get("type") == "array"):
            raise CanvasError(
                f"{leaf.name} gets the list of the results of {value.task} in {into}its "
                f"parameter {parameter!r}, which is not a list",
                value.task,
                leaf.name,
                parameter,
                path=leaf.path,
            )
        for item in value.items:
            _fits(item, schema["items"], leaf, parameter, "the items of " + into)
        return
    why = incompatibility(value.schema, schema)
    if why is not None:
        raise CanvasError(
            f"{value.task} returns what {into}{leaf.name}'s parameter {parameter!r} cannot "
            f"take ({why.replace('the value', 'the result')})",
            value.task,
            leaf.name,
            parameter,
            path=leaf.path,
        )


def check_errback(parent: Node, errback: Leaf) -> None:
    """An errback's first parameter takes the failed task's id: it must take a string."""
    if errback.immutable:
        return
    what = returns(parent).task
    if errback.parameter is None:
        raise CanvasError(
            f"the errback {errback.name} takes no parameter for the failed task's id; "
            "use .si() to ignore it",
            what,
            errback.name,
            path=errback.path,
        )
    name, schema = errback.parameter
    why = incompatibility("string", schema)
    if why is not None:
        raise CanvasError(
            f"the errback {errback.name} gets the failed task's id (a str) in its parameter "
            f"{name!r}, which cannot take it ({why})",
            what,
            errback.name,
            name,
            path=errback.path,
        )


# -- freezing ----------------------------------------------------------------------------------


def freeze(node: Node, receives: bool = False, result: str | None = None) -> Flow:
    """The envelope form of ``node``, every id chosen. ``receives``: a parent's value comes
    in (so a mutable task's arguments leave out their first parameter); ``result``: the id
    for the task whose result is the node's (a group member's)."""
    if isinstance(node, Leaf):
        return _leaf(node, receives, result)
    if isinstance(node, Chain):
        last = len(node.nodes) - 1
        return Flow(
            FlowKind.CHAIN,
            nodes=[
                freeze(n, receives if i == 0 else True, result if i == last else None)
                for i, n in enumerate(node.nodes)
            ],
        )
    gid = node.group_id or new_id()
    members = node.nodes if isinstance(node, Group) else node.header
    frozen = [freeze(m, receives, member_id(gid, i)) for i, m in enumerate(members)]
    if isinstance(node, Group):
        return Flow(FlowKind.GROUP, nodes=frozen, group_id=gid)
    errbacks = [_step(e, True) for e in node.errbacks]
    body = freeze(node.body, True, callback_id(gid))
    # The chord's errbacks also run if the body fails: each body task carries them.
    for leaf in leaves(body):
        leaf.link_error.extend(errbacks)
    return Flow(FlowKind.CHORD, nodes=frozen, body=body, group_id=gid, errbacks=errbacks)


def _leaf(leaf: Leaf, receives: bool, result: str | None) -> Flow:
    step = _step(leaf, receives, leaf.task_id or result)
    link = [_step(c, True) for c in leaf.link]
    return Flow(
        FlowKind.TASK, step, link=link, link_error=[_step(e, True) for e in leaf.link_error]
    )


def _step(leaf: Leaf, receives: bool, task_id: str | None = None) -> Step:
    whole = leaf.immutable or not receives
    return Step(
        task_id or leaf.task_id or new_id(),
        leaf.name,
        leaf.queue,
        leaf.key,
        leaf.encode(whole),
        whole,
        leaf.priority,
    )


# -- callbacks ---------------------------------------------------------------------------------


def add_errback(node: Node, errback: Leaf) -> None:
    """An errback for every task of ``node`` (Celery's chain/group ``link_error``); a
    chord's own errbacks run once, for its header or its body."""
    if isinstance(node, Leaf):
        node.link_error.append(errback)
    elif isinstance(node, Chord):
        node.errbacks.append(errback)
    else:
        for child in node.nodes:
            add_errback(child, errback)


def add_callback(node: Node, callback: Leaf) -> None:
    """A callback on the task whose result is the node's."""
    if isinstance(node, Leaf):
        node.link.append(callback)
    elif isinstance(node, Chain):
        add_callback(node.nodes[-1], callback)
    elif isinstance(node, Chord):
        add_callback(node.body, callback)
    else:
        raise CanvasError("a callback on a group's list is a chord: chord(group, callback)")
