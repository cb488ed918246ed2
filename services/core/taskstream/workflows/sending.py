"""Sending a workflow tree (taskstream.workflows.tree): checked, frozen, its first events published
(taskstream.workflows.events.begin), and the result objects Celery users get back."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskstream.envelope import Flow, FlowKind, now_micros
from taskstream.errors import InvalidOption
from taskstream.group_result import GroupResult
from taskstream.result import AsyncResult
from taskstream.task import check_priority
from taskstream.workflows import tree
from taskstream.workflows.events import begin

if TYPE_CHECKING:
    from taskstream.app import App

__all__ = ["results", "send"]


def send(
    node: tree.Node,
    app: App | None,
    *,
    countdown: float | None = None,
    eta: datetime | None = None,
    key: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
) -> tuple[Flow, dict[str, AsyncResult[Any]]]:
    """Check and freeze ``node``, then publish the events it starts with (``countdown`` or
    ``eta``, ``key``, ``queue`` and ``priority`` apply to them); returns the frozen tree and
    the published results by task id. ``app`` is None only for a workflow that sends
    nothing."""
    check_priority(priority)
    if countdown and eta is not None:
        raise InvalidOption("eta", eta, "give countdown or eta, not both")
    tree.check(node)
    frozen = tree.freeze(node)
    events = begin(frozen)
    not_before = _not_before(countdown, eta)
    published: dict[str, AsyncResult[Any]] = {}
    for event in events:
        event.key = key or event.key
        event.queue = queue or event.queue
        if priority is not None:
            event.priority = priority
        if not_before is not None:
            event.not_before = not_before
        assert app is not None
        published[event.id] = app.publish(event)
    return frozen, published


def _not_before(countdown: float | None, eta: datetime | None) -> int | None:
    if countdown:
        return now_micros() + int(countdown * 1_000_000)
    if eta is not None:
        if eta.tzinfo is None:
            raise InvalidOption("eta", eta, "an aware datetime (with a timezone)")
        return int(eta.timestamp() * 1_000_000)
    return None


def results(
    frozen: Flow,
    app: App,
    parent: AsyncResult[Any] | GroupResult | None,
    published: dict[str, AsyncResult[Any]],
) -> AsyncResult[Any] | GroupResult:
    """The result object of a frozen node (Celery's shapes: a chain's is its last node's,
    with ``.parent`` walking back; a group's a GroupResult; a chord's its body's, whose
    parent is the header's GroupResult)."""
    if frozen.kind is FlowKind.TASK:
        assert frozen.step is not None
        found = published.get(frozen.step.id)
        if found is not None:
            return found
        return AsyncResult(frozen.step.id, app, parent=parent)
    if frozen.kind is FlowKind.CHAIN:
        result = parent
        for child in frozen.nodes:
            result = results(child, app, result, published)
        assert result is not None
        return result
    assert frozen.group_id is not None
    members = [_member(results(m, app, parent, published), app) for m in frozen.nodes]
    group_result = GroupResult(frozen.group_id, members, app, parent=parent)
    if frozen.kind is FlowKind.GROUP:
        return group_result
    assert frozen.body is not None
    return results(frozen.body, app, group_result, published)


def _member(result: AsyncResult[Any] | GroupResult, app: App) -> AsyncResult[Any]:
    """A group member's result: a nested group's list is stored as one result, by its id."""
    if isinstance(result, GroupResult):
        return AsyncResult(result.id, app, parent=result.parent)
    return result
