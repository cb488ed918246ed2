"""What a worker does for workflows (taskstream.canvas): arguments in, follow-ups out.

In: a step's event may lack its first argument (``prepend``): the parent's result, a chord's
list of results, or a failed parent's id; it is decoded here with the parent task's result
schema and put first.

Out: once a run's outcome is final, the events it sends are part of its outcome, so the
record's offset commits only when they are acknowledged too (a worker killed in between runs
the step again, which sends them again under the same task ids):

- SUCCESS: the chain's next step (carrying the rest) and each ``link`` callback, given the
  result;
- FAILURE: each ``link_error`` errback, given the task's id, and a FAILURE for every chain
  step that will now never run (so ``get()`` on a chain's last result never waits forever);
- ``ignore_result``: no SUCCESS result event at all.
"""

from __future__ import annotations

from typing import Any

from taskstream.app import App
from taskstream.consumer.execution import Outcome, Run
from taskstream.envelope import (
    ParentResult,
    Prepend,
    ResultEvent,
    Step,
    TaskError,
    TaskEvent,
    now_micros,
)
from taskstream.errors import CanvasError
from taskstream.status import Status
from taskstream.task import Task


def arguments(app: App, task: Task[Any, Any], event: TaskEvent) -> dict[str, Any]:
    """The keyword arguments of ``event``, with what ``prepend`` puts first."""
    if event.prepend is Prepend.NONE:
        return task.decode_args(event.args)
    kwargs = task.decode_tail_args(event.args)
    first = task.signature.parameters[0] if task.signature.parameters else None
    if first is None:
        raise CanvasError(f"{task.name} takes no parameter for its parent's result")
    if event.prepend is Prepend.PARENT_ID:
        value: Any = event.parent_id
    elif event.prepend is Prepend.VALUE:
        parent = event.parent_results[0]
        value = app.decode_result(parent.task, parent.result)
    else:
        value = [app.decode_result(p.task, p.result) for p in event.parent_results]
    return {first: value, **kwargs}


def wants_follow_up(event: TaskEvent) -> bool:
    return bool(event.chain or event.link or event.link_error or event.ignore_result)


def follow(run: Run, outcome: Outcome) -> Outcome:
    """``outcome`` with the workflow's follow-up events (see the module docstring)."""
    event, result = run.event, outcome.result
    if result.status is Status.SUCCESS:
        assert result.result is not None
        parent = [ParentResult(event.task, result.result)]
        if event.chain:
            following, *rest = event.chain
            step = _event(following, event, Prepend.VALUE, parent)
            step.chain = rest
            step.link_error = event.link_error  # the chain's errbacks go along
            outcome.follow.append(step)
        outcome.follow.extend(_event(s, event, Prepend.VALUE, parent) for s in event.link)
        if event.ignore_result:
            outcome.publish_result = False
    elif result.status is Status.FAILURE:
        outcome.follow.extend(_event(s, event, Prepend.PARENT_ID, []) for s in event.link_error)
        outcome.more_results.extend(_not_run(s, event, result) for s in event.chain)
    return outcome


def _event(
    step: Step, parent: TaskEvent, prepend: Prepend, results: list[ParentResult]
) -> TaskEvent:
    return TaskEvent(
        id=step.id,
        task=step.task,
        queue=step.queue,
        key=step.key,
        attempt=1,
        enqueued_at=now_micros(),
        not_before=None,
        args=step.args,
        parent_id=parent.id,
        root_id=parent.root_id or parent.id,
        prepend=Prepend.NONE if step.immutable else prepend,
        parent_results=[] if step.immutable else results,
    )


def _not_run(step: Step, parent: TaskEvent, failure: ResultEvent) -> ResultEvent:
    """The FAILURE of a chain step that never runs because ``parent`` failed."""
    error = failure.error
    assert error is not None
    why = f"not run: step {parent.task} ({parent.id}) of its chain failed: {error.message}"
    now = now_micros()
    return ResultEvent(
        id=step.id, task=step.task, status=Status.FAILURE, attempt=0, key=step.key,
        result=None, error=TaskError(error.type, why, error.traceback),
        worker=failure.worker, source_topic=failure.source_topic,
        source_partition=failure.source_partition, source_offset=failure.source_offset,
        enqueued_at=now, started_at=now, finished_at=now,
        parent_id=parent.id, root_id=parent.root_id or parent.id,
    )  # fmt: skip
