"""Starting a workflow node (taskstream.envelope.Flow), and failing one that will never run.

One recursive rule serves every nesting, wherever a node starts: where a workflow is sent
(taskstream.workflows.tree), in the worker once a task succeeded
(taskstream.consumer.workflow), in the materializer once a group's members are all final
(taskstream.consumer.joins).

:func:`start` turns a node into the task events it begins with, given what it receives
(nothing, a parent's result, the list of a group's results) and its continuation: ``then``,
the nodes after it (the first given its result), and ``join``, the group the end of the
branch is a member of.

- a task: one event, carrying ``then`` and ``join``; when ``then`` is empty the task is the
  end of its branch, so its result is the group member (``group_id``/``group_index``/
  ``group_size``);
- a chain: its first node, with the rest of the chain before ``then``;
- a group: each member, with a :class:`Join` of its own whose ``then`` is the group's
  continuation (Celery's "a group followed by a task is a chord"), and whose ``outer`` is the
  group's own ``join``;
- a chord: a group whose continuation starts with the body (errbacks: the chord's).

:func:`not_run` is the failure side: a FAILURE result for every task of a branch that will
never run, the end of it carrying the branch's join, so that every dependent fails at once
and an enclosing group still completes (and fails) instead of waiting forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from taskstream.envelope import (
    Flow,
    FlowKind,
    Join,
    ParentResult,
    Prepend,
    ResultEvent,
    TaskEvent,
    now_micros,
)

__all__ = [
    "GROUP_RESULT_TASK",
    "Given",
    "as_member",
    "begin",
    "first_id",
    "leaves",
    "not_run",
    "result_id",
    "start",
]

# The task name of a group's list of results stored as one result (a group whose list is a
# member of an enclosing group): its id is the group's, its value taskstream.envelope's
# GroupValue record (app.decode_result decodes it to the list).
GROUP_RESULT_TASK = "taskstream.group"

# Makes the FAILURE result of a task that will never run: (task id, task name, key).
Failure = Callable[[str, str, "str | None"], ResultEvent]


@dataclass(slots=True, frozen=True)
class Given:
    """What a node is started with: ``prepend`` (nothing, a parent's result, the list of a
    group's results) with ``results``, and the ids it is sent under."""

    prepend: Prepend = Prepend.NONE
    results: list[ParentResult] = field(default_factory=list)
    parent_id: str | None = None
    root_id: str | None = None


def begin(node: Flow) -> list[TaskEvent]:
    """The events a workflow is sent as. Their root id: the id of the group or chord it
    starts with, else the first task's own (as Celery's ``root_id``)."""
    first = node
    while first.kind is FlowKind.CHAIN:
        first = first.nodes[0]
    grouped = first.kind in (FlowKind.GROUP, FlowKind.CHORD)
    events = start(node, Given(root_id=first.group_id if grouped else None), [], None)
    for event in events:
        event.root_id = event.root_id or event.id
    return events


def start(node: Flow, given: Given, then: list[Flow], join: Join | None) -> list[TaskEvent]:
    """The task events that begin ``node`` (see the module docstring)."""
    if node.kind is FlowKind.TASK:
        return [_task_event(node, given, then, join)]
    if node.kind is FlowKind.CHAIN:
        first, *rest = node.nodes
        return start(first, given, [*rest, *then], join)
    assert node.group_id is not None
    if node.kind is FlowKind.CHORD:
        assert node.body is not None
        return _members(node, given, [node.body, *then], join)
    return _members(node, given, then, join)


def _members(node: Flow, given: Given, then: list[Flow], join: Join | None) -> list[TaskEvent]:
    members, gid = node.nodes, node.group_id
    assert gid is not None
    if not members:
        # An empty group's list is [] at once: what follows starts with it
        # (taskstream.workflows.tree refuses an empty group whose list nothing receives inside
        # another group).
        if not then:
            assert join is None, "an empty group inside a group with nothing after it"
            return []
        empty = Given(Prepend.LIST, [], gid, given.root_id)
        return start(then[0], empty, then[1:], join)
    errbacks = node.errbacks if node.kind is FlowKind.CHORD else []
    events: list[TaskEvent] = []
    for index, member in enumerate(members):
        own = Join(gid, index, len(members), then, errbacks, join)
        events.extend(start(member, given, [], own))
    return events


def _task_event(node: Flow, given: Given, then: list[Flow], join: Join | None) -> TaskEvent:
    step = node.step
    assert step is not None
    receives = not step.immutable and given.prepend is not Prepend.NONE
    event = TaskEvent(
        id=step.id, task=step.task, queue=step.queue, key=step.key, attempt=1,
        enqueued_at=now_micros(), not_before=None, args=step.args,
        parent_id=given.parent_id, root_id=given.root_id,
        prepend=given.prepend if receives else Prepend.NONE,
        parent_results=given.results if receives else [],
        link=list(node.link), link_error=list(node.link_error), then=list(then),
        priority=step.priority,
    )  # fmt: skip
    if then:
        event.join = join  # the branch's end is a member, not this task
    else:
        as_member(event, join)
    return event


def as_member(event: TaskEvent | ResultEvent, join: Join | None) -> None:
    """Make ``event`` (a task, or its result) the member ``join`` counts."""
    if join is None:
        return
    event.group_id, event.group_index, event.group_size = join.group_id, join.index, join.size
    event.join = join if join.acts() else None


def not_run(nodes: list[Flow], join: Join | None, failure: Failure) -> list[ResultEvent]:
    """A FAILURE for every task of the branch ``nodes``; its end carries ``join``."""
    results: list[ResultEvent] = []
    for i, node in enumerate(nodes):
        results.extend(_not_run(node, join if i == len(nodes) - 1 else None, failure))
    return results


def _not_run(node: Flow, join: Join | None, failure: Failure) -> list[ResultEvent]:
    if node.kind is FlowKind.TASK:
        step = node.step
        assert step is not None
        result = failure(step.id, step.task, step.key)
        as_member(result, join)
        return [result]
    if node.kind is FlowKind.CHAIN:
        return not_run(node.nodes, join, failure)
    results = [r for member in node.nodes for r in _not_run(member, None, failure)]
    if node.kind is FlowKind.CHORD:
        assert node.body is not None
        return results + _not_run(node.body, join, failure)
    if join is not None:  # the group's list was a member of an enclosing group
        assert node.group_id is not None
        result = failure(node.group_id, GROUP_RESULT_TASK, None)
        as_member(result, join)
        results.append(result)
    return results


def result_id(node: Flow) -> str:
    """The id a node's result is stored under: a task's, a chain's last node's, a chord's
    body's, a group's own id (its list, when stored as one result)."""
    if node.kind is FlowKind.TASK:
        assert node.step is not None
        return node.step.id
    if node.kind is FlowKind.CHAIN:
        return result_id(node.nodes[-1])
    if node.kind is FlowKind.CHORD:
        assert node.body is not None
        return result_id(node.body)
    assert node.group_id is not None
    return node.group_id


def leaves(node: Flow) -> Iterator[Flow]:
    """Every task of a node, in order."""
    if node.kind is FlowKind.TASK:
        yield node
        return
    for child in node.nodes:
        yield from leaves(child)
    if node.body is not None:
        yield from leaves(node.body)


def first_id(nodes: list[Flow], fallback: str) -> str:
    """The id of the first task a branch starts (``fallback`` when it starts none)."""
    for node in nodes:
        for leaf in leaves(node):
            assert leaf.step is not None
            return leaf.step.id
    return fallback
