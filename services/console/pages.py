"""The console's pages as HTML: each function renders one page's live part from its data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from taskstream.envelope import TaskEvent
from taskstream.status import Status
from taskstream.store import ResultRecord
from taskstream.store.base import Link, OutcomeCount, bucket_start, from_micros

from . import forms
from .console import Arguments
from .dead_letters import Letter
from .html import (
    Html,
    duration,
    esc,
    join,
    pretty_json,
    status_badge,
    table,
    tag,
    task_link,
    when,
)
from .kafka_view import PartitionBacklog

_CHART_STATUSES = (Status.SUCCESS, Status.FAILURE, Status.RETRY)


def section(title: str, content: Html, **attrs: object) -> Html:
    return tag("section", join([tag("h2", title), content]), **attrs)


def problem(text: str) -> Html:
    return tag("p", text, class_="problem")


# --- overview -------------------------------------------------------------------------------


def throughput(counts: Sequence[OutcomeCount], minutes: int, bucket_s: int) -> Html:
    """Totals and a bar per bucket (successes, failures, retries stacked), oldest left."""
    now = datetime.now(UTC)
    first = bucket_start(now - timedelta(minutes=minutes), bucket_s)
    buckets = [first + timedelta(seconds=bucket_s * i) for i in range(minutes * 60 // bucket_s + 1)]
    per: dict[datetime, dict[Status, int]] = defaultdict(dict)
    totals: dict[Status, int] = defaultdict(int)
    for c in counts:
        per[c.bucket][c.status] = per[c.bucket].get(c.status, 0) + c.count
        totals[c.status] += c.count
    last_minute = sum(
        c.count for c in counts if c.status.is_final and c.bucket >= now - timedelta(seconds=60)
    )
    summary = tag(
        "p",
        join(
            [
                tag("span", f"{totals[Status.SUCCESS]} succeeded", class_="ok"),
                " · ",
                tag("span", f"{totals[Status.FAILURE]} failed", class_="bad"),
                " · ",
                tag("span", f"{totals[Status.RETRY]} retrying", class_="warn"),
                f" · {totals[Status.REVOKED]} revoked",
                f" in the last {minutes} minutes; "
                f"{last_minute / 60:.1f} tasks/s over the last minute",
            ]
        ),
        id="throughput-summary",
    )
    return join([summary, _chart(buckets, per, bucket_s)])


def _chart(buckets: list[datetime], per: dict[datetime, dict[Status, int]], bucket_s: int) -> Html:
    width, height, gap = 12, 100, 2
    peak = max([sum(per[b].values()) for b in buckets] + [1])
    bars = []
    for i, b in enumerate(buckets):
        y = float(height)
        for status in _CHART_STATUSES:
            n = per[b].get(status, 0)
            if not n:
                continue
            h = n / peak * height
            y -= h
            bars.append(
                tag(
                    "rect",
                    tag("title", f"{b:%H:%M:%S} {status.value}: {n}"),
                    x=i * (width + gap),
                    y=f"{y:.1f}",
                    width=width,
                    height=f"{h:.1f}",
                    class_=f"bar-{status.value.lower()}",
                )
            )
    view = f"0 0 {len(buckets) * (width + gap)} {height}"
    legend = tag("p", f"one bar per {bucket_s} s; peak {peak}", class_="legend")
    return join([tag("svg", join(bars), viewBox=view, class_="chart", role="img"), legend])


def queues(
    topics: dict[str, str], backlog: Sequence[PartitionBacklog], seconds: dict[str, float]
) -> Html:
    """One row per queue: its backlog in records (from Kafka) and seconds (from workers)."""
    rows = []
    for topic, queue in sorted(topics.items(), key=lambda item: item[1]):
        parts = [p for p in backlog if p.topic == topic]
        records = [p.records for p in parts]
        known = [r for r in records if r is not None]
        lag = sum(known) if known else None
        heads = [p.head_time for p in parts if p.head_time is not None]
        lag_s = seconds.get(topic)
        rows.append(
            [
                queue,
                tag("span", topic, class_="mono"),
                len(parts) or "not created",
                "?" if lag is None else f"{lag}" + ("" if len(known) == len(parts) else "+"),
                "" if lag_s is None else duration(lag_s),
                when(min(heads)) if heads else "",
            ]
        )
    headers = ["queue", "topic", "partitions", "lag (records)", "lag (seconds)", "oldest waiting"]
    return table(headers, rows, "no queues", id="queues")


def workers(found: list[dict[str, object]]) -> Html:
    rows = []
    for w in sorted(found, key=lambda w: str(w.get("worker_id", ""))):
        running = w.get("running")
        tasks = running if isinstance(running, list) else []
        rows.append(
            [
                tag("span", w.get("worker_id"), class_="mono"),
                tag("span", w.get("state"), class_=f"badge badge-{w.get('state')}"),
                w.get("hostname"),
                w.get("pid"),
                w.get("version"),
                _listing(w.get("queues")),
                _count(w.get("partitions")),
                w.get("concurrency"),
                join(
                    join([task_link(str(t.get("task_id"))), " ", t.get("task"), tag("br")])
                    for t in tasks
                    if isinstance(t, dict)
                ),
                _counts(w.get("counts")),
                _moment(w.get("last_beat")),
            ]
        )
    headers = [
        "worker",
        "state",
        "host",
        "pid",
        "version",
        "queues",
        "partitions",
        "concurrency",
        "running now",
        "counts",
        "last beat",
    ]
    return table(headers, rows, "no worker known", id="workers")


def _listing(value: object) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value or "")


def _count(value: object) -> object:
    return len(value) if isinstance(value, list) else value


def _counts(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value or "")


def _moment(value: object) -> Html:
    if isinstance(value, int | float):
        return when(datetime.fromtimestamp(value, tz=UTC))
    if isinstance(value, str):
        try:
            return when(datetime.fromisoformat(value))
        except ValueError:
            return esc(value)
    return esc(value)


# --- tasks ----------------------------------------------------------------------------------


def task_rows(records: Sequence[ResultRecord]) -> Html:
    rows = [
        [
            task_link(r.task_id),
            r.task,
            status_badge(r.status.value),
            r.attempt,
            r.key,
            r.worker,
            when(r.enqueued_at),
            when(r.finished_at),
            _run_time(r),
        ]
        for r in records
    ]
    headers = ["id", "task", "status", "attempt", "key", "worker", "enqueued", "finished", "ran"]
    return table(headers, rows, "no task matches", id="tasks")


def _run_time(r: ResultRecord) -> str:
    if r.started_at is None or r.finished_at is None or not r.status.is_final:
        return ""
    return duration((r.finished_at - r.started_at).total_seconds())


def task_detail(
    record: ResultRecord,
    rendered: dict[str, Any],
    args: Arguments,
    place: Link | None = None,
    children: Sequence[str] = (),
    path: Sequence[tuple[str, bool]] = (),
) -> Html:
    """One task: its facts, its place in a workflow (``place``: parent, root, group; the
    ``path`` of tasks and groups that led to it, root first; and the tasks its outcome
    sent), its arguments, result and error."""
    r = record
    waited = r.started_at - r.enqueued_at if r.started_at and r.enqueued_at else None
    ran = r.finished_at - r.started_at if r.finished_at and r.started_at else None
    facts: list[tuple[str, object]] = [
        ("status", status_badge(r.status.value)),
        ("task", r.task),
        ("attempt", f"{r.attempt} (attempt 1 is the first run; each retry adds one)"),
        ("key", r.key),
        ("worker", r.worker),
        ("enqueued", when(r.enqueued_at)),
        (
            "started",
            join(
                [
                    when(r.started_at),
                    f" (waited {duration(waited.total_seconds())})" if waited else "",
                ]
            ),
        ),
        (
            "finished",
            join([when(r.finished_at), f" (ran {duration(ran.total_seconds())})" if ran else ""]),
        ),
        (
            "task event",
            tag("span", f"{r.source_topic}[{r.source_partition}]@{r.source_offset}", class_="mono"),
        ),
        *_workflow_facts(place, children, path),
    ]
    parts = [
        tag(
            "table",
            join(tag("tr", join([tag("th", k), tag("td", v)])) for k, v in facts),
            class_="facts",
        ),
        section(
            "Arguments",
            join(
                [
                    problem(args.problem) if args.problem else "",
                    _received(args),
                    pretty_json(args.json),
                ]
            ),
        ),
    ]
    if rendered.get("result") is not None or r.status is Status.SUCCESS:
        parts.append(section("Result", pretty_json(rendered.get("result")), id="result"))
    error = rendered.get("error")
    if isinstance(error, dict):
        head = tag("p", join([tag("strong", error.get("type")), ": ", error.get("message")]))
        trace = tag("pre", error.get("traceback"), class_="traceback")
        parts.append(section("Error", join([head, trace]), id="error"))
    return join(parts)


def _received(args: Arguments) -> Html | str:
    """The note that says which argument the worker filled in (a workflow step's first)."""
    if args.received is None:
        return ""
    text = join([tag("code", args.received), f" came from {args.received_from}"])
    return tag("p", text, class_="legend", id="received")


def _workflow_facts(
    place: Link | None, children: Sequence[str], path: Sequence[tuple[str, bool]] = ()
) -> list[tuple[str, object]]:
    facts: list[tuple[str, object]] = []
    if len(path) > 1:  # nested: every step that led here (a parent alone says it already)
        steps: list[Html | str] = []
        for i, (step_id, is_group) in enumerate(path):
            if i:
                steps.append(Html(" &rarr; "))
            steps.append(f"group {step_id}" if is_group else task_link(step_id))
        facts.append(("workflow path", join(steps)))
    if place is not None:
        if place.parent_id:
            facts.append(("parent", task_link(place.parent_id)))
        if place.root_id and place.root_id != place.task_id:
            facts.append(("workflow root", task_link(place.root_id)))
        if place.group_id:
            facts.append(("group", f"{place.group_id} (member {place.group_index})"))
    if children:
        facts.append(("children", join(_spaced_links(children))))
    return facts


def _spaced_links(task_ids: Sequence[str]) -> list[Html | str]:
    out: list[Html | str] = []
    for task_id in task_ids:
        if out:
            out.append(" ")
        out.append(task_link(task_id))
    return out


# --- dead letters ---------------------------------------------------------------------------


def letters(found: Sequence[Letter]) -> Html:
    rows = []
    for x in found:
        d = x.letter
        replay = forms.replay_one(x.position)
        rows.append(
            [
                tag("span", x.position, class_="mono"),
                d.reason,
                d.task,
                task_link(x.task_id) if x.task_id else "",
                status_badge(x.status) if x.task_id else "",
                tag(
                    "span", f"{d.topic}[{d.original_partition}]@{d.original_offset}", class_="mono"
                ),
                when(d.time),
                tag("span", d.error, class_="error-text"),
                replay,
            ]
        )
    headers = ["letter", "reason", "task", "task id", "status now", "origin", "time", "error", ""]
    count = tag("p", f"{len(found)} dead letters", id="letter-count")
    return join([count, table(headers, rows, "no dead letter", id="letters")])


def confirm_replay(chosen: Sequence[Letter], fields: dict[str, str]) -> Html:
    n = len(chosen)
    question = tag(
        "p",
        f"Send {n} dead letter{'s' if n != 1 else ''} back to the topics they came from? "
        "Task events start over at attempt 1.",
    )
    return join([question, letters(chosen), forms.confirm(n, fields)])


# --- delay tiers ----------------------------------------------------------------------------


def delays(
    tiers: dict[str, int], backlog: Sequence[PartitionBacklog], heads: dict[str, Html]
) -> Html:
    """One row per tier: how many records wait in it, since when, and when the next is due."""
    now = datetime.now(UTC)
    rows = []
    for topic, seconds in sorted(tiers.items(), key=lambda item: item[1]):
        parts = [p for p in backlog if p.topic == topic]
        known = [p.records for p in parts if p.records is not None]
        times = [p.head_time for p in parts if p.head_time is not None]
        oldest = min(times) if times else None
        due = oldest + timedelta(seconds=seconds) if oldest else None
        rows.append(
            [
                f"{seconds} s",
                tag("span", topic, class_="mono"),
                sum(known) if known else 0,
                when(oldest),
                when(due, now) if due else "",
                heads.get(topic, ""),
            ]
        )
    headers = ["tier", "topic", "waiting", "oldest written", "next hop due", "first in line"]
    return table(headers, rows, "no delay tier", id="delays")


def waiting_task(event: TaskEvent) -> Html:
    """The task event first in line in a delay tier: its id, task, attempt and due time."""
    due = from_micros(event.not_before)
    return join(
        [
            task_link(event.id), " ", event.task, f" attempt {event.attempt}",
            join([" not before ", when(due)]) if due else "",
        ]
    )  # fmt: skip
