"""The console's endpoints: each renders a page from ``request.app.state.console``.

A request with the ``X-Console-Live`` header gets only the page's live part: console.js
asks for it every few seconds and swaps it in, so pages update without reloading.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from taskstream.errors import TaskstreamError
from taskstream.status import Status
from taskstream.store.base import TaskQuery

from . import forms, pages
from .console import Console
from .dead_letters import LetterFilter
from .html import Html, join, link, page, tag, task_link, url
from .workers import lag_seconds_by_topic

LIVE_HEADER = "x-console-live"
_LATEST = datetime.max.replace(tzinfo=UTC)
PAGE_SIZE = 50
CHART_MINUTES, CHART_BUCKET_S = 15, 30


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _answer(request: Request, title: str, active: str, live: Html, **options: Any) -> Response:
    if request.headers.get(LIVE_HEADER):
        return HTMLResponse(live, headers={"Cache-Control": "no-store"})
    return HTMLResponse(page(title, active, live, **options), headers={"Cache-Control": "no-store"})


async def _kafka(call: Any) -> tuple[Any, Html | None]:
    """`call()` in a thread; a broker error becomes a note on the page, not a failed page."""
    try:
        return await run_in_threadpool(call), None
    except TaskstreamError as exc:
        return None, pages.problem(f"Kafka could not be read: {exc}")


async def overview(request: Request) -> Response:
    console = _console(request)
    counts = await run_in_threadpool(console.outcome_counts, CHART_MINUTES, CHART_BUCKET_S)
    backlog, trouble = await _kafka(console.queue_backlog)
    found = await run_in_threadpool(console.workers_json)
    live = join(
        [
            pages.section(
                "Throughput and failures", pages.throughput(counts, CHART_MINUTES, CHART_BUCKET_S)
            ),
            pages.section(
                "Queues",
                join(
                    [
                        trouble or "",
                        pages.queues(
                            console.queue_topics, backlog or [], lag_seconds_by_topic(found)
                        ),
                    ]
                ),
            ),
            pages.section("Workers", pages.workers(found)),
        ]
    )
    return _answer(request, "Overview", "overview", live)


def _query(request: Request) -> tuple[TaskQuery, dict[str, str]]:
    """The task query of the request's parameters, and the parameters that were valid."""
    q = request.query_params
    kept = {
        k: q[k].strip() for k in ("status", "task", "key", "since", "until") if q.get(k, "").strip()
    }
    status = Status(kept["status"]) if kept.get("status") in Status.__members__ else None
    if status is None:
        kept.pop("status", None)
    since, until = _time(kept, "since"), _time(kept, "until")
    moment, _, last_id = q.get("after", "").partition("|")
    last_time = _parse_time(moment)
    after = (last_time, last_id) if last_time is not None and last_id else None
    query = TaskQuery(
        status=status,
        task=kept.get("task"),
        key=kept.get("key"),
        since=since,
        until=until,
        after=after,
        limit=PAGE_SIZE,
    )
    return query, kept


def _time(kept: dict[str, str], name: str) -> datetime | None:
    moment = _parse_time(kept.get(name, ""))
    if moment is None:
        kept.pop(name, None)
    return moment


def _parse_time(text: str) -> datetime | None:
    """An ISO time; without an offset it is taken as UTC (what the pages show)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def tasks(request: Request) -> Response:
    console = _console(request)
    task_id = request.query_params.get("id", "").strip()
    query, kept = _query(request)
    if task_id:
        found = await run_in_threadpool(console.task, task_id)
        records = [found] if found is not None else []
        more = None
    else:
        records = await run_in_threadpool(console.search, query)
        more = records[-1] if len(records) == query.limit else None
    paging = []
    if query.after is not None:
        paging.append(link(url("/ui/tasks", **kept), "first page"))
    if more is not None and more.finished_at is not None:
        cursor = f"{more.finished_at.isoformat()}|{more.task_id}"
        paging.append(link(url("/ui/tasks", **kept, after=cursor), "next page", id="next-page"))
    live = join([pages.task_rows(records), tag("p", join(_spaced(paging)), class_="paging")])
    form = forms.task_search(task_id, kept, console.task_names)
    # Only the first page moves: a later page stays as it was when opened.
    every = 2000 if query.after is None else 0
    return _answer(request, "Tasks", "tasks", live, before=form, live_every_ms=every)


def _spaced(parts: list[Html]) -> list[Html | str]:
    out: list[Html | str] = []
    for part in parts:
        out += [part, " "]
    return out


async def task(request: Request) -> Response:
    console = _console(request)
    task_id: str = request.path_params["task_id"]
    record = await run_in_threadpool(console.task, task_id)
    if record is None:
        live = pages.problem(
            f"No outcome of task {task_id} is stored (yet): it is PENDING or unknown."
        )
        return _answer(request, f"Task {task_id}", "tasks", live)
    rendered = await run_in_threadpool(console.render, record)
    args = await run_in_threadpool(console.arguments, record)
    place, children, path = await run_in_threadpool(console.workflow, task_id)
    live = pages.task_detail(record, rendered, args, place, children, path)
    # Even a final outcome can change: a replayed dead letter runs the task again.
    return _answer(request, f"Task {task_id}", "tasks", live)


def _letter_filter(params: dict[str, str]) -> tuple[LetterFilter, dict[str, str]]:
    kept = {k: params[k].strip() for k in ("task", "reason", "since") if params.get(k, "").strip()}
    since = _time(kept, "since")
    return LetterFilter(kept.get("task"), kept.get("reason"), since), kept


async def dead_letters(request: Request) -> Response:
    console = _console(request)
    where, kept = _letter_filter(dict(request.query_params))
    found, trouble = await _kafka(lambda: console.dead_letters.matching(where))
    live = trouble or pages.letters(found)
    before = forms.letter_filters(kept)
    return _answer(request, "Dead letters", "dead-letters", live, before=before)


async def replay(request: Request) -> Response:
    """POST: the letters chosen (one, or a filter) and a confirmation page listing them;
    then, confirmed, the replay of exactly the letters listed, each once (issue 26: a
    "replay all" that re-read the filter replayed what had failed again since, doubling)."""
    console = _console(request)
    form = await forms.posted(request, console.service.http)
    listed = [p for p in form.get("letters", form.get("letter", "")).split(",") if p]
    if form.get("confirm") == "yes" and listed:
        chosen = await run_in_threadpool(console.dead_letters.at, listed)
        sent, skipped = await run_in_threadpool(console.dead_letters.replay, chosen)
        ids = [x.task_id for x in chosen if x.task_id]
        note = f" {skipped} had been replayed before: skipped." if skipped else ""
        done = join(
            [
                tag("p", f"Replayed {sent} dead letters.{note}", id="replayed"),
                tag("ul", join(tag("li", task_link(i)) for i in ids)),
                link("/ui/dead-letters", "Back to the dead letters"),
            ]
        )
        return HTMLResponse(page("Replayed", "dead-letters", done, live_every_ms=0))
    position = form.get("letter")
    if position:
        one = await run_in_threadpool(console.dead_letters.find, position)
        chosen = [one] if one is not None else []
    else:
        where, _kept = _letter_filter(form)
        chosen = await run_in_threadpool(console.dead_letters.matching, where)
    fields = {"letters": ",".join(x.position for x in chosen)}
    live = pages.confirm_replay(chosen, fields)
    return HTMLResponse(page("Replay dead letters?", "dead-letters", live, live_every_ms=0))


async def delays(request: Request) -> Response:
    console = _console(request)
    backlog, trouble = await _kafka(console.delay_backlog)
    heads: dict[str, Html] = {}
    for part in sorted(backlog or [], key=lambda p: p.head_time or _LATEST):
        if part.head is not None and part.topic not in heads:
            try:
                event = console.service.catalog.envelopes.decode_task(part.head.value() or b"")
            except TaskstreamError:
                continue  # not a task event: nothing to say about it
            heads[part.topic] = pages.waiting_task(event)
    live = join([trouble or "", pages.delays(console.delay_topics, backlog or [], heads)])
    return _answer(request, "Delay tiers", "delays", live)
