"""HTML building blocks of the console's pages: escaping, times, tables, the layout.

Pages are rendered on the server as plain HTML (no template engine, no build step); the
layout's ``<div id="live">`` is what ``console.js`` refreshes in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

NAV = (
    ("overview", "/ui", "Overview"),
    ("tasks", "/ui/tasks", "Tasks"),
    ("dead-letters", "/ui/dead-letters", "Dead letters"),
    ("delays", "/ui/delays", "Delay tiers"),
)


class Html(str):
    """Markup that is already safe: never escaped again."""

    __slots__ = ()


NOTHING = Html("")


def esc(value: object) -> Html:
    """`value` as text in HTML: markup passes through, None is an empty cell."""
    if isinstance(value, Html):
        return value
    return Html("" if value is None else escape(str(value)))


def join(parts: Iterable[object]) -> Html:
    return Html("".join(esc(p) for p in parts))


def tag(name: str, content: object = "", /, **attrs: object) -> Html:
    """``<name attrs>content</name>``; attribute names' underscores become dashes
    (``class_`` is ``class``); False/None attributes are left out, True ones bare."""
    rendered = []
    for key, value in attrs.items():
        key = key.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        rendered.append(f" {key}" if value is True else f' {key}="{escape(str(value))}"')
    return Html(f"<{name}{''.join(rendered)}>{esc(content)}</{name}>")


def link(href: str, text: object, **attrs: object) -> Html:
    return tag("a", text, href=href, **attrs)


def task_link(task_id: str) -> Html:
    return link(f"/ui/tasks/{quote(task_id, safe='')}", task_id, class_="mono")


def url(path: str, **params: object) -> str:
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def status_badge(status: str | None) -> Html:
    text = status or "PENDING"
    return tag("span", text, class_=f"badge badge-{text.lower()}")


def when(moment: datetime | None, now: datetime | None = None) -> Html:
    """A time as UTC text with how long ago it was, for tables."""
    if moment is None:
        return Html("")
    now = now or datetime.now(UTC)
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return tag("time", f"{text} ({ago(now - moment)})", datetime=moment.isoformat())


def ago(delta: Any) -> str:
    seconds = delta.total_seconds()
    if seconds < 0:
        return f"in {duration(-seconds)}"
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str, **attrs: object
) -> Html:
    body = [tag("tr", join(tag("td", cell) for cell in row)) for row in rows]
    if not body:
        return tag("p", empty, class_="empty")
    head = tag("thead", tag("tr", join(tag("th", h) for h in headers)))
    return tag("table", join([head, tag("tbody", join(body))]), **attrs)


def pretty_json(value: Any) -> Html:
    return tag("pre", json.dumps(value, indent=2, ensure_ascii=False), class_="json")


def page(
    title: str, active: str, live: Html, *, before: Html = NOTHING, live_every_ms: int = 2000
) -> Html:
    """The whole document: navigation, `before` (forms: never refreshed, so typing is not
    lost), then the live part, which console.js re-fetches every `live_every_ms` (0: never)."""
    nav = join(
        link(href, text, class_="active" if key == active else None) for key, href, text in NAV
    )
    refresh = live_every_ms if live_every_ms > 0 else None
    body = join(
        [
            tag("header", join([tag("strong", "taskstream"), tag("nav", nav)])),
            tag(
                "main",
                join([tag("h1", title), before, tag("div", live, id="live", data_refresh=refresh)]),
            ),
        ]
    )
    return Html(
        "<!doctype html>"
        + tag(
            "html",
            join(
                [
                    Html(
                        '<head><meta charset="utf-8">'
                        '<meta name="viewport" content="width=device-width, initial-scale=1">'
                        f"<title>{escape(title)} · taskstream</title>"
                        '<link rel="stylesheet" href="/ui/static/console.css">'
                        '<script src="/ui/static/console.js" defer></script></head>'
                    ),
                    tag("body", body),
                ]
            ),
            lang="en",
        )
    )
