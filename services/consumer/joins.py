"""The joins of groups something follows (chords, nested workflows), run by the
materializer: state in Kafka and the store; memory only spares reading it back.

A joined group's members are ordinary tasks (or the ends of branches: taskstream.workflows.events)
whose events carry the group id, their position, the group's size and the join (what runs
once the group is complete, the errbacks, the enclosing join: ``join``; an older chord: the
``chord`` field, body and errbacks); their result events carry the same. The materializer
hands the final ones to the store with each batch (``apply_rows(members=...)``), which counts
each (group, position) once, in the batch's transaction: a member that ran twice is one
member, and a group whose members are all final becomes ``due`` exactly once (the SQL stores
lock the group's row to count). Then :class:`Joiner` publishes, for each due group:

- all members succeeded: what follows, started with the members' results in the group's
  order (taskstream.workflows.events.start: a chord's body under its deterministic callback id,
  taskstream.canvas.callback_id); or, when nothing follows inside an enclosing group, the
  group's list as one result under the group's id, a member of that enclosing group;
- some failed: a FAILURE for every task that would have followed, naming the failed members
  and their errors (the last one counted by the enclosing join, so it fails too), and each
  errback's task event (given the chord's result id);

and marks the join ``fired`` once the broker acknowledged them. A materializer killed in
between publishes them again at its next start (``due`` is in the store), under the same ids,
unless the first of them is stored already. Nothing waits in a worker: the join holds no
worker slot.

The members' results come from the store, unless this process applied every one of them
itself (:class:`MemberResults`, filled as batches are applied): reading 10,000 of them back
was the largest part of a chord's join latency. A member seen by another materializer, a
restart, or a failed member sends the join to the store, which is always right.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message

from taskstream.canvas import callback_id
from taskstream.envelope import (
    Envelopes,
    Join,
    ParentResult,
    Prepend,
    ResultEvent,
    Step,
    TaskError,
    TaskEvent,
    now_micros,
)
from taskstream.errors import DeliveryFailed
from taskstream.kafka.producer import EventProducer
from taskstream.kafka.topics import event_topic, results_topic
from taskstream.status import Status
from taskstream.store import (
    GroupInfo,
    GroupJoins,
    GroupMember,
    Link,
    MemberOutcome,
    Progress,
    ResultReader,
)
from taskstream.workflows.events import (
    GROUP_RESULT_TASK,
    Given,
    as_member,
    first_id,
    not_run,
    result_id,
    start,
)

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
        join = d["join"]
        acts = join is not None and bool(join["then"] or join["errbacks"] or join["outer"])
        manifest = value if d["chord"] is not None or acts else None
        members.append(GroupMember(group_id, d["group_index"], d["group_size"], d["id"], manifest))
    if d["state"] is not None:
        progress.append(Progress(d["id"], d["state"], d["meta"]))


class JoinStore(GroupJoins, ResultReader, Protocol):
    """What the joiner uses of the store: the groups, and whether a chord's body ran."""


class MemberResults:
    """The successful results of open groups' members, as this process applied them, by
    group and position. Bounded: past ``limit`` results in all it forgets them all (the joins
    then read the store, as after a restart)."""

    def __init__(self, limit: int = 200_000) -> None:
        self._groups: dict[str, dict[int, ParentResult]] = {}
        self._failed: set[str] = set()  # groups with a failed member: the store names them
        self._count = 0
        self._limit = limit

    def applied(self, d: dict[str, Any]) -> None:
        """A result envelope (decoded) that the store has applied."""
        group_id = d["group_id"]
        if group_id is None or d["status"] not in _FINAL or group_id in self._failed:
            return
        if d["status"] != Status.SUCCESS.value:
            self.forget(group_id)
            self._failed.add(group_id)
            return
        if self._count >= self._limit:
            self.clear()
        members = self._groups.setdefault(group_id, {})
        if d["group_index"] not in members:
            self._count += 1
        members[d["group_index"]] = ParentResult(d["task"], d["result"] or b"")

    def results(self, group_id: str, size: int) -> list[ParentResult] | None:
        """Every member's result in the group's order, if all ``size`` succeeded here."""
        members = self._groups.get(group_id)
        if members is None or len(members) != size:
            return None
        try:
            return [members[i] for i in range(size)]
        except KeyError:  # a position past the size: the store settles it
            return None

    def clear(self) -> None:
        self._groups.clear()
        self._failed.clear()
        self._count = 0

    def forget(self, group_id: str) -> None:
        self._count -= len(self._groups.pop(group_id, {}))
        self._failed.discard(group_id)


class Joiner:
    """Publishes the outcome of each due chord (see the module docstring)."""

    def __init__(
        self,
        store: JoinStore,
        envelopes: Envelopes,
        prefix: str,
        producer: EventProducer,
        members: MemberResults | None = None,
    ) -> None:
        """``members``: what the materializer remembers of the members it applied."""
        self.store = store
        self.envelopes = envelopes
        self.prefix = prefix
        self.producer = producer
        self.fired = 0  # chords whose outcome this process published
        self.members = members if members is not None else MemberResults()

    def fire_due(self, timeout: float = 30.0) -> int:
        """Publish every due chord's outcome; returns how many were fired."""
        fired = 0
        for info in self.store.due_groups():
            self._fire(info, timeout)
            fired += 1
        self.fired += fired
        return fired

    def _fire(self, info: GroupInfo, timeout: float) -> None:
        assert info.manifest is not None
        manifest = self.envelopes.decode_result(info.manifest)
        join = manifest.join
        probe = callback_id(info.group_id) if join is None else first_id(join.then, info.group_id)
        if self.store.get(probe) is not None:
            # Published before a crash that left it unrecorded, and already run (or failed):
            # publishing again would run the body twice.
            self.store.mark_fired(info.group_id)
            self.members.forget(info.group_id)
            return
        errors: list[str] = []

        def report(err: KafkaError | None, _message: Message) -> None:
            if err is not None:
                errors.append(err.str())

        parts = (
            self._outcome(info, manifest) if join is None else self._joined(info, manifest, join)
        )
        for topic, value, key in parts:
            self.producer.produce(topic, value, key, report)
        if self.producer.flush(timeout) or errors:
            reason = "; ".join(errors) or "not acknowledged in time"
            raise DeliveryFailed(self.prefix, f"chord {info.group_id}: {reason}")
        self.store.mark_fired(info.group_id)
        self.members.forget(info.group_id)
        log.info("chord %s joined (%d members)", info.group_id, info.size)

    def _joined(
        self, info: GroupInfo, manifest: ResultEvent, join: Join
    ) -> list[tuple[str, bytes, str]]:
        """A nested workflow's join: start ``join.then`` with the members' results (or store
        the group's list as one result, a member of ``join.outer``); else fail the branch."""
        gid = info.group_id
        results, records, failed = self._member_results(info)
        parts: list[tuple[str, bytes, str]] = []
        if results is not None:
            if join.then:
                given = Given(Prepend.LIST, results, gid, manifest.root_id)
                for event in start(join.then[0], given, join.then[1:], join.outer):
                    parts.append(self._task_part(event))
                return parts
            value = self.envelopes.encode_group_value(results)
            whole = self._result(gid, GROUP_RESULT_TASK, None, manifest, Status.SUCCESS)
            whole.result = value
            as_member(whole, join.outer)
            return [self._result_part(whole)]
        error = TaskError("ChordError", self._message(info, failed, len(records)), "")

        def failure(task_id: str, task: str, key: str | None) -> ResultEvent:
            result = self._result(task_id, task, key, manifest, Status.FAILURE)
            result.error = error
            return result

        if join.then:
            not_started = not_run(join.then, join.outer, failure)
        else:
            not_started = [failure(gid, GROUP_RESULT_TASK, None)]
            as_member(not_started[0], join.outer)
        parts.extend(self._result_part(r) for r in not_started)
        chord_id = result_id(join.then[0]) if join.then else gid
        for errback in join.errbacks:
            event = self._event(errback, errback.id, manifest, Prepend.PARENT_ID, [])
            event.parent_id = chord_id
            parts.append(self._task_part(event))
        return parts

    def _member_results(
        self, info: GroupInfo
    ) -> tuple[list[ParentResult] | None, list[MemberOutcome], list[MemberOutcome]]:
        """The members' results in order when all succeeded (else None), with the stored
        outcomes and the failed ones the failure names (empty when memory had them all)."""
        results = self.members.results(info.group_id, info.size)
        if results is not None:
            return results, [], []
        records = self.store.member_outcomes(info.group_id)
        failed = [r for r in records if r.status != Status.SUCCESS.value]
        if not failed and len(records) == info.size:
            return [ParentResult(r.task, r.result or b"") for r in records], records, failed
        return None, records, failed

    def _task_part(self, event: TaskEvent) -> tuple[str, bytes, str]:
        topic = event_topic(self.prefix, event.queue, event.priority)
        return (topic, self.envelopes.encode_task(event), event.key or event.id)

    def _result_part(self, result: ResultEvent) -> tuple[str, bytes, str]:
        return (results_topic(self.prefix), self.envelopes.encode_result(result), result.id)

    @staticmethod
    def _result(
        task_id: str, task: str, key: str | None, manifest: ResultEvent, status: Status
    ) -> ResultEvent:
        now = now_micros()
        return ResultEvent(
            id=task_id, task=task, status=status, attempt=0, key=key, result=None,
            error=None, worker=f"{socket.gethostname()}:join",
            source_topic=manifest.source_topic, source_partition=manifest.source_partition,
            source_offset=manifest.source_offset, enqueued_at=now, started_at=now,
            finished_at=now, parent_id=manifest.group_id, root_id=manifest.root_id,
        )  # fmt: skip

    @staticmethod
    def _message(info: GroupInfo, failed: list[MemberOutcome], found: int) -> str:
        named = "; ".join(
            f"[{r.index}] {r.task_id} {r.task}: {r.error_type}: {r.error_message}"
            for r in failed[:_NAMED_FAILURES]
        )
        more = len(failed) - _NAMED_FAILURES
        return (
            f"chord {info.group_id}: {len(failed)} of {info.size} members failed: {named}"
            + (f"; and {more} more" if more > 0 else "")
            + ("" if found == info.size else f"; {info.size - found} members have no result")
        )

    def _outcome(self, info: GroupInfo, manifest: ResultEvent) -> list[tuple[str, bytes, str]]:
        """An older chord's join (its body a single step in the ``chord`` field)."""
        chord = manifest.chord
        assert chord is not None
        results, records, failed = self._member_results(info)
        cb = callback_id(info.group_id)
        if results is not None:
            body = self._event(chord.body, cb, manifest, Prepend.LIST, results)
            return [self._task_part(body)]
        failure = self._result(cb, chord.body.task, chord.body.key, manifest, Status.FAILURE)
        failure.error = TaskError("ChordError", self._message(info, failed, len(records)), "")
        failure.parent_id = info.group_id
        parts = [self._result_part(failure)]
        for errback in chord.errbacks:
            event = self._event(errback, errback.id, manifest, Prepend.PARENT_ID, [])
            event.parent_id = cb
            parts.append(self._task_part(event))
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
            parent_results=[] if step.immutable else results, priority=step.priority,
        )  # fmt: skip
