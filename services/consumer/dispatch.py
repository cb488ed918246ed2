"""What becomes of a fetched task record: one decision, computed here, applied by the handler.

:meth:`Dispatcher.decide` decodes a record and says what to do with it, without publishing
anything, so that every case is a plain value a test can look at:

- a :class:`~taskstream.consumer.run.Run`: run it (the common case, no wrapper);
- :class:`Delay`: not due yet, forwarded unchanged to its delay tier;
- :class:`Revoked`: revoked or expired, never runs (a REVOKED result);
- :class:`UnknownTask`: a task the app does not define (a FAILURE result, dead-lettered);
- :class:`Lost`: a careful run after too many workers died running it (dead-lettered);
- :class:`DeadLetter`: undecodable, of an unknown schema, or with invalid arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from taskstream import tracing
from taskstream.app import App
from taskstream.consumer import workflow
from taskstream.consumer.dead_letter import Reason
from taskstream.consumer.record import Record
from taskstream.consumer.revocation import Revocations
from taskstream.consumer.run import Outcome, Run, revoked, unknown_task
from taskstream.envelope import ResultEvent, TaskEvent, now_micros
from taskstream.errors import UnknownSchema
from taskstream.kafka.clients import header_pairs

log = logging.getLogger(__name__)

_EARLY_TOLERANCE_US = 5_000  # an event due within this is run now, not delayed again


@dataclass(frozen=True, slots=True)
class Delay:
    """Not due yet: the record goes on, unchanged, to ``topic`` (its delay tier)."""

    topic: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """Revoked or expired (``why``) before it ran: never runs."""

    task: str
    why: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class UnknownTask:
    """The app defines no such task."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Lost:
    """Its runs took ``worker_lost_max_deliveries`` workers down: not run again."""

    run: Run
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Never a task event to run: the record goes to the dead-letter topic as it is."""

    reason: Reason
    error: str
    task: str | None = None


Decision = Run | Delay | Revoked | UnknownTask | Lost | DeadLetter


class Dispatcher:
    """Decides what becomes of each record, for one worker."""

    __slots__ = (
        "_app", "_destination", "_lost_max", "_max_bytes", "_on_progress", "_revocations",
        "_traced", "_worker",
    )  # fmt: skip

    def __init__(
        self,
        app: App,
        revocations: Revocations,
        worker_id: str,
        *,
        message_max_bytes: int,
        lost_max: int,
        destination: Callable[[TaskEvent], str],
        on_progress: Callable[[ResultEvent], None],
        traced: bool = False,
    ) -> None:
        self._app = app
        self._revocations = revocations
        self._worker = worker_id
        self._max_bytes = message_max_bytes  # what a result may take
        self._lost_max = lost_max  # worker_lost_max_deliveries (0: not counted)
        self._destination = destination  # where a task event goes next (Outcomes')
        self._on_progress = on_progress
        self._traced = traced  # OpenTelemetry active: a run carries the record's context

    def decide(self, record: Record, lost: int | None) -> Decision:
        """What to do with ``record`` (``lost``: a careful run, after that many lost
        deliveries)."""
        app = self._app
        try:
            event = app.envelopes.decode_task(record.message.value() or b"")
        except UnknownSchema as exc:
            return DeadLetter(Reason.UNKNOWN_SCHEMA, str(exc))
        except Exception as exc:
            return DeadLetter(Reason.UNDECODABLE, str(exc))
        topic, partition, offset = record.topic, record.partition, record.offset
        task = app.tasks.get(event.task)
        if task is None:
            undefined = f"task {event.task!r} is not defined by app {app.name!r}"
            return UnknownTask(
                unknown_task(event, topic, partition, offset, self._worker, undefined)
            )
        why = self._revocations.why_not_run(event)
        if why is not None:
            outcome = revoked(event, topic, partition, offset, self._worker, why)
            return Revoked(event.task, why, outcome)
        if event.not_before and event.not_before - now_micros() > _EARLY_TOLERANCE_US:
            return Delay(self._destination(event))
        try:
            kwargs = workflow.arguments(app, task, event)
        except Exception as exc:
            return DeadLetter(Reason.INVALID_ARGUMENTS, str(exc), event.task)
        run = Run(
            task, event, kwargs, topic, partition, offset, self._worker,
            message_max_bytes=self._max_bytes, on_progress=self._on_progress,
        )  # fmt: skip
        if self._traced:
            run.trace = tracing.extract(header_pairs(record.message))
        if lost is not None and lost >= self._lost_max:
            log.error("task %s (%s) lost %d workers: dead-lettered", event.id, event.task, lost)
            outcome = run.worker_lost(lost)
            if workflow.wants_follow_up(event):
                outcome = workflow.follow(run, outcome)
            return Lost(run, outcome)
        return run
