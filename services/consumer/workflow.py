"""What a worker does for workflows (taskstream.canvas): arguments in, follow-ups out.

In: a step's event may lack its first argument (``prepend``): the parent's result, a chord's
list of results, or a failed parent's id; it is decoded here with the parent task's result
schema and put first.

Out: once a run's outcome is final, the events it sends are part of its outcome, so the
record's offset commits only when they are acknowledged too (a worker killed in between runs
the step again, which sends them again under the same task ids):

- SUCCESS: what ``then`` starts (taskstream.workflows.events.start: the chain's next step, a
  group's members, a chord's header), carrying the rest, and each ``link`` callback, given
  the result;
- FAILURE: each ``link_error`` errback, given the task's id, and a FAILURE for every task of
  ``then`` that will now never run, the last one counted by the branch's join (so ``get()``
  on any dependent never waits forever);
- ``ignore_result``: no SUCCESS result event at all.
"""

from __future__ import annotations

from typing import Any

from taskstream.app import App
from taskstream.consumer.run import Outcome, Run
from taskstream.envelope import (
    Flow,
    FlowKind,
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
from taskstream.workflows.events import Given, not_run, start


def arguments(app: App, task: Task[Any, Any], event: TaskEvent) -> dict[str, Any]:
    """The keyword arguments of ``event``, with what ``prepend`` puts first."""
    if event.prepend is Prepend.NONE:
        return task.decode_args(event.args)
    kwargs = task.decode_tail_args(event.args)
    first = task.task_signature.parameters[0] if task.task_signature.parameters else None
    if first is None:
        raise CanvasError(f"{task.name} takes no parameter for its parent's result")
    if event.prepend is Prepend.PARENT_ID:
        value: Any = event.parent_id
    elif event.prepend is Prepend.VALUE:
        parent = event.parent_results[0]
        value = app.decode_result(parent.task, parent.result)
    else:
        value = app.decode_results(event.parent_results)
    return {first: value, **kwargs}


def wants_follow_up(event: TaskEvent) -> bool:
    return bool(event.chain or event.then or event.link or event.link_error or event.ignore_result)


def _then(event: TaskEvent) -> list[Flow]:
    """What runs after the task: ``then``, or an older event's chain of steps (whose
    errbacks went along with each step)."""
    if event.then or not event.chain:
        return event.then
    return [Flow(FlowKind.TASK, s, link_error=list(event.link_error)) for s in event.chain]


def follow(run: Run, outcome: Outcome) -> Outcome:
    """``outcome`` with the workflow's follow-up events (see the module docstring)."""
    event, result = run.event, outcome.result
    then = _then(event)
    if result.status is Status.SUCCESS:
        assert result.result is not None
        parent = [ParentResult(event.task, result.result)]
        if then:
            given = Given(Prepend.VALUE, parent, event.id, event.root_id or event.id)
            outcome.follow.extend(start(then[0], given, then[1:], event.join))
        outcome.follow.extend(_event(s, event, Prepend.VALUE, parent) for s in event.link)
        # ignore_result stores no SUCCESS, unless a join counts it (else it would wait forever).
        counted = event.group_id is not None and not event.then
        if event.ignore_result and not (counted and (event.join or event.chord)):
            outcome.publish_result = False
    elif result.status is Status.FAILURE:
        outcome.follow.extend(_event(s, event, Prepend.PARENT_ID, []) for s in event.link_error)
        error = result.error
        assert error is not None
        why = f"not run: step {event.task} ({event.id}) of its chain failed: {error.message}"

        def failure(task_id: str, task: str, key: str | None) -> ResultEvent:
            return _not_run(
                task_id, task, key, event, result, TaskError(error.type, why, error.traceback)
            )

        outcome.more_results.extend(not_run(then, event.join, failure))
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
        priority=step.priority,
    )


def _not_run(
    task_id: str,
    task: str,
    key: str | None,
    parent: TaskEvent,
    failure: ResultEvent,
    error: TaskError,
) -> ResultEvent:
    """The FAILURE of a task that never runs because ``parent`` failed."""
    now = now_micros()
    return ResultEvent(
        id=task_id, task=task, status=Status.FAILURE, attempt=0, key=key,
        result=None, error=error,
        worker=failure.worker, source_topic=failure.source_topic,
        source_partition=failure.source_partition, source_offset=failure.source_offset,
        enqueued_at=now, started_at=now, finished_at=now,
        parent_id=parent.id, root_id=parent.root_id or parent.id,
    )  # fmt: skip
