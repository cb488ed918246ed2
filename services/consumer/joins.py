"""The chord join, run by the materializer: state in Kafka and the store, none in memory.

A chord's members are ordinary tasks whose events carry the group id, their position, the
group's size and the chord (body and errbacks); their result events carry the same. The
materializer hands the final ones to the store with each batch (``apply_rows(members=...)``),
which counts each (group, position) once, in the batch's transaction: a member that ran
twice is one member, and a group whose members are all final becomes ``due`` exactly once
(the SQL stores lock the group's row to count). Then :class:`Joiner` publishes, for each
due chord:

- all members succeeded: the body's task event, under the chord's deterministic callback id
  (taskstream.canvas.callback_id), with the members' results in the group's order;
- some failed: a FAILURE result for the callback id naming the failed members and their
  errors, and each errback's task event (given the callback id);

and marks the chord ``fired`` once the broker acknowledged them. A materializer killed in
between publishes them again at its next start (``due`` is in the store), under the same ids.
Nothing waits in a worker: the join holds no worker slot.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from confluent_kafka import KafkaError, Message

from taskstream.canvas import callback_id
from taskstream.envelope import (
    Envelopes,
    ParentResult,
    Prepend,
    ResultEvent,
    Step,
    TaskError,
    TaskEvent,
    now_micros,
)
from taskstream.errors import DeliveryFailed
from taskstream.kafka import EventProducer
from taskstream.status import Status
from taskstream.store import GroupInfo, GroupMember, Link, MemberOutcome, Progress, ResultStore
from taskstream.topics import results_topic, task_topic

log = logging.getLogger(__name__)

_FINAL = frozenset((Status.SUCCESS.value, Status.FAILURE.value))
_NAMED_FAILURES = 20  # failed members named in a chord's FAILURE message, at most


def workflow_rows(
    d: dict[str, Any],
    value: bytes,
    members: list[GroupMember],
    progress: list[Progress],
    links: list[Link],
) -> None:
    """What a decoded result envelope adds to a batch's joins, progress and links."""
    group_id = d["group_id"]
    if d["parent_id"] is not None or group_id is not None:
        links.append(Link(d["id"], d["parent_id"], d["root_id"], group_id, d["group_index"]))
    if group_id is not None and d["status"] in _FINAL:
        manifest = value if d["chord"] is not None else None
        members.append(GroupMember(group_id, d["group_index"], d["group_size"], d["id"], manifest))
    if d["state"] is not None:
        progress.append(Progress(d["id"], d["state"], d["meta"]))


class Joiner:
    """Publishes the outcome of each due chord (see the module docstring)."""

    def __init__(
        self, store: ResultStore, envelopes: Envelopes, prefix: str, producer: EventProducer
    ) -> None:
        self.store = store
        self.envelopes = envelopes
        self.prefix = prefix
        self.producer = producer
        self.fired = 0  # chords whose outcome this process published

    def fire_due(self, timeout: float = 30.0) -> int:
        """Publish every due chord's outcome; returns how many were fired."""
        fired = 0
        for info in self.store.due_groups():
            self._fire(info, timeout)
            fired += 1
        self.fired += fired
        return fired

    def _fire(self, info: GroupInfo, timeout: float) -> None:
        if self.store.get(callback_id(info.group_id)) is not None:
            # Published before a crash that left it unrecorded, and already run (or failed):
            # publishing again would run the body twice.
            self.store.mark_fired(info.group_id)
            return
        errors: list[str] = []

        def report(err: KafkaError | None, _message: Message) -> None:
            if err is not None:
                errors.append(err.str())

        for topic, value, key in self._outcome(info):
            self.producer.produce(topic, value, key, report)
        if self.producer.flush(timeout) or errors:
            reason = "; ".join(errors) or "not acknowledged in time"
            raise DeliveryFailed(self.prefix, f"chord {info.group_id}: {reason}")
        self.store.mark_fired(info.group_id)
        log.info("chord %s joined (%d members)", info.group_id, info.size)

    def _outcome(self, info: GroupInfo) -> list[tuple[str, bytes, str]]:
        assert info.manifest is not None
        manifest = self.envelopes.decode_result(info.manifest)
        chord = manifest.chord
        assert chord is not None
        records = self.store.member_outcomes(info.group_id)
        failed = [r for r in records if r.status != Status.SUCCESS.value]
        cb = callback_id(info.group_id)
        if not failed and len(records) == info.size:
            results = [ParentResult(r.task, r.result or b"") for r in records]
            body = self._event(chord.body, cb, manifest, Prepend.LIST, results)
            topic = task_topic(self.prefix, body.queue)
            return [(topic, self.envelopes.encode_task(body), body.key or body.id)]
        failure = self._failure(info, cb, chord.body, manifest, failed, len(records))
        parts = [(results_topic(self.prefix), self.envelopes.encode_result(failure), cb)]
        for errback in chord.errbacks:
            event = self._event(errback, errback.id, manifest, Prepend.PARENT_ID, [])
            event.parent_id = cb
            parts.append(
                (task_topic(self.prefix, event.queue), self.envelopes.encode_task(event), event.id)
            )
        return parts

    @staticmethod
    def _event(
        step: Step,
        task_id: str,
        manifest: ResultEvent,
        prepend: Prepend,
        results: list[ParentResult],
    ) -> TaskEvent:
        return TaskEvent(
            id=task_id, task=step.task, queue=step.queue, key=step.key, attempt=1,
            enqueued_at=now_micros(), not_before=None, args=step.args,
            parent_id=manifest.group_id, root_id=manifest.root_id,
            prepend=Prepend.NONE if step.immutable else prepend,
            parent_results=[] if step.immutable else results,
        )  # fmt: skip

    @staticmethod
    def _failure(
        info: GroupInfo,
        cb: str,
        body: Step,
        manifest: ResultEvent,
        failed: list[MemberOutcome],
        found: int,
    ) -> ResultEvent:
        named = "; ".join(
            f"[{r.index}] {r.task_id} {r.task}: {r.error_type}: {r.error_message}"
            for r in failed[:_NAMED_FAILURES]
        )
        more = len(failed) - _NAMED_FAILURES
        message = (
            f"chord {info.group_id}: {len(failed)} of {info.size} members failed: {named}"
            + (f"; and {more} more" if more > 0 else "")
            + ("" if found == info.size else f"; {info.size - found} members have no result")
        )
        now = now_micros()
        return ResultEvent(
            id=cb, task=body.task, status=Status.FAILURE, attempt=0, key=body.key, result=None,
            error=TaskError("ChordError", message, ""), worker=f"{socket.gethostname()}:join",
            source_topic=manifest.source_topic, source_partition=manifest.source_partition,
            source_offset=manifest.source_offset, enqueued_at=now, started_at=now,
            finished_at=now, parent_id=info.group_id, root_id=manifest.root_id,
        )  # fmt: skip
