"""The console's forms: the task search, the dead-letter filters and replay buttons.

Forms sit outside a page's live part, so a refresh never loses what the user typed.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from taskstream.producer.http.body import read_body
from taskstream.producer.http.settings import HttpSettings
from taskstream.status import Status

from .html import Html, esc, join, link, tag


def text_input(name: str, value: str = "", **attrs: object) -> Html:
    extra = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
    return Html(f'<input name="{name}" value="{esc(value)}"{extra}>')


def hidden(name: str, value: object) -> Html:
    return Html(f'<input type="hidden" name="{name}" value="{esc(value)}">')


def field(label: str, control: Html) -> Html:
    return tag("label", join([label, " ", control]))


def task_search(task_id: str, kept: dict[str, str], task_names: list[str]) -> Html:
    statuses = join(
        tag("option", s or "any", value=s, selected=kept.get("status") == s)
        for s in ["", *Status.__members__]
    )
    controls = [
        field("id", text_input("id", task_id, placeholder="task id", size="38", id="search-id")),
        field("status", tag("select", statuses, name="status")),
        field("task", text_input("task", kept.get("task", ""), list="task-names")),
        tag("datalist", join(tag("option", value=n) for n in task_names), id="task-names"),
        field("key", text_input("key", kept.get("key", ""))),
        field("finished from", text_input("since", kept.get("since", ""), placeholder="UTC, ISO")),
        field("to", text_input("until", kept.get("until", ""), placeholder="UTC, ISO")),
        tag("button", "Search", type="submit", id="search"),
    ]
    return tag("form", join(controls), method="get", action="/ui/tasks", class_="filters")


def letter_filters(kept: dict[str, str]) -> Html:
    """The filters of the dead-letter list, and a button that replays every letter shown."""
    controls = [field(n, text_input(n, kept.get(n, ""))) for n in ("task", "reason", "since")]
    controls.append(tag("button", "Filter", type="submit"))
    filters = tag("form", join(controls), method="get", action="/ui/dead-letters", class_="filters")
    every = [hidden(k, v) for k, v in kept.items()]
    every.append(tag("button", "Replay every letter shown", type="submit", id="replay-all"))
    return join([filters, replay_form(join(every))])


def replay_form(content: Html) -> Html:
    return tag("form", content, method="post", action="/ui/dead-letters/replay")


def replay_one(position: str) -> Html:
    return replay_form(join([hidden("letter", position), tag("button", "Replay", type="submit")]))


def confirm(count: int, fields: dict[str, str]) -> Html:
    controls: list[Html | str] = [hidden(k, v) for k, v in fields.items()]
    controls += [
        hidden("confirm", "yes"),
        tag("button", f"Replay {count}", type="submit", id="confirm-replay"),
        " ",
        link("/ui/dead-letters", "Cancel"),
    ]
    return replay_form(join(controls))


async def posted(request: Request, http: HttpSettings) -> dict[str, str]:
    """A form's fields, its body bounded as the API's are (ApiError 413 past
    ``http.max_body_bytes``: a huge POST to the open login page holds no memory)."""
    return dict(parse_qsl((await read_body(request, http)).decode("utf-8", "replace")))
