"""Hostile text in every user-controlled field: NUL, lone surrogates, over-long strings.

Each store (memory, SQLite, PostgreSQL) takes what the results pipeline hands it and finds
it again by the id it was sent with; the materializer never halts on one record's content (a
record the store refuses goes to the dead letters with the reason, the rest flow); the HTTP
edge answers a 4xx naming the field, never a 5xx.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from taskstream import App
from taskstream.console import Console, NoWorkers, with_console
from taskstream.consumer.dead_letter import HEADER_PREFIX
from taskstream.consumer.materializer import Materializer
from taskstream.consumer.run import describe
from taskstream.envelope import ResultEvent, TaskError
from taskstream.errors import InvalidArguments, StoreRejected
from taskstream.kafka.topics import dead_letter_topic
from taskstream.producer.http import create_app
from taskstream.status import Status
from taskstream.store import GroupMember, Link, MemoryStore, Progress, ResultRow, ResultStore
from taskstream.store.base import TaskQuery, to_micros
from taskstream.text import MAX_ID_CHARS, id_problem, storable
from tests.unit.http_fakes import fake_service
from tests.unit.test_materializer import FakeMessage, FakeProducer, event

NUL = "a\x00b"
SURROGATE = "a\ud800b"
BOTH = "\x00\udfff\x00"
HOSTILE = {"nul": NUL, "surrogate": SURROGATE, "both": BOTH}
T = to_micros(datetime(2026, 1, 2, tzinfo=UTC))
assert T is not None


def overlong() -> str:
    """Text that no compression shrinks below PostgreSQL's btree entry limit (2704 bytes)."""
    return os.urandom(6000).hex()


def hostile_row(text: str, task_id: str | None = None, **columns: Any) -> ResultRow:
    """A FAILURE row with `text` in every text column (the status excepted)."""
    values: dict[str, Any] = dict(
        task_id=task_id or f"id-{text}", task=f"task-{text}", status="FAILURE", attempt=1,
        result=None, error_type=f"E{text}", error_message=f"m{text}", error_traceback=f"tb{text}",
        worker=f"w{text}", key=f"k{text}", enqueued_at=T, started_at=T, finished_at=T,
        source_topic=f"topic{text}", source_partition=0, source_offset=1,
    )  # fmt: skip
    values.update(columns)
    return tuple(values.values())


def same_text(stored: str | None, sent: str) -> bool:
    """What a store keeps of `sent`: itself, or its storable form (taskstream.text)."""
    return stored in (sent, storable(sent), storable(sent, nul=False))


# --- the stores -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_every_store_keeps_hostile_text_and_finds_it_by_what_was_sent(
    store: ResultStore, text: str
) -> None:
    row = hostile_row(text)
    task_id = row[0]
    store.apply_rows(
        [row], {("results", 0): 1},
        [GroupMember(f"g{text}", 0, 1, task_id)],
        [Progress(task_id, f"S{text}", f'"{text}"')],
        [Link(task_id, f"p{text}", f"r{text}", f"g{text}", 0)],
    )  # fmt: skip
    got = store.get(task_id)
    assert got is not None and got.status is Status.FAILURE
    for stored, sent in [
        (got.task_id, task_id), (got.task, row[1]), (got.error_type, row[5]),
        (got.error_message, row[6]), (got.error_traceback, row[7]), (got.worker, row[8]),
        (got.key, row[9]), (got.source_topic, row[13]),
    ]:  # fmt: skip
        assert same_text(stored, sent)
    assert list(store.get_many([task_id, "other"])) == [task_id]
    assert [r.task_id for r in store.search(TaskQuery(key=row[9]))] == [got.task_id]
    assert [r.task_id for r in store.search(TaskQuery(task=row[1]))] == [got.task_id]
    progress = store.progress(task_id)
    assert progress is not None and same_text(progress.state, f"S{text}")
    link = store.link(task_id)
    assert link is not None and same_text(link.parent_id, f"p{text}")
    assert store.children(f"p{text}") == [got.task_id]
    group = store.group(f"g{text}")
    assert group is not None and group.completed == 1
    assert [m.task_id for m in store.member_outcomes(f"g{text}")] == [got.task_id]
    assert store.claim_idempotency_key(f"i{text}", task_id, b"fp", 60) is None
    store.accept_idempotency_key(f"i{text}", task_id)
    claimed = store.claim_idempotency_key(f"i{text}", "another", b"fp2", 60)
    assert claimed is not None and claimed.accepted and same_text(claimed.task_id, task_id)
    assert store.forget([task_id]) == 1 and store.get(task_id) is None
    assert store.offsets("results") == {0: 1}


def test_a_store_takes_an_overlong_free_text_and_refuses_only_an_overlong_key_for_content(
    store: ResultStore,
) -> None:
    long = overlong()
    free = {"error_message": long, "error_traceback": long, "worker": long}
    store.apply_rows([hostile_row("x", task_id="t1", **free)], {})
    got = store.get("t1")
    assert got is not None and got.error_message == long
    try:
        store.apply_rows([hostile_row("x", task_id="t2", key=long)], {})
    except StoreRejected:
        pass  # PostgreSQL: over its index's entry limit; a StoreError of content, not state
    assert store.count() >= 1


def test_a_lookup_of_hostile_text_never_raises(store: ResultStore) -> None:
    for text in [*HOSTILE.values(), overlong()]:
        assert store.get(text) is None and store.progress(text) is None
        assert store.search(TaskQuery(key=text, task=text)) == []


# --- the materializer ------------------------------------------------------------------------


def materialize(store: ResultStore, events: list[ResultEvent]) -> tuple[Materializer, FakeProducer]:
    app = App("app", topic_prefix="app", store="memory://")
    m = Materializer(app, store=store)
    producer = FakeProducer()
    m._producer = producer  # type: ignore[assignment]
    m._runtime = SimpleNamespace(high_watermark=lambda topic, partition: 100)  # type: ignore[assignment]
    batch = [FakeMessage(0, i, app.envelopes.encode_result(e)) for i, e in enumerate(events)]
    m.records(batch)  # type: ignore[arg-type]
    return m, producer


def test_the_materializer_applies_nul_in_every_field_and_dead_letters_what_the_store_refuses(
    store: ResultStore,
) -> None:
    long = overlong()
    error = TaskError(f"E{NUL}", f"m{NUL}", f"tb{NUL}")
    hostile = event(
        id=f"b{NUL}", task=f"t{NUL}", key=f"k{NUL}", worker=f"w{NUL}", status=Status.FAILURE,
        result=None, error=error, source_topic=f"s{NUL}",
    )  # fmt: skip
    events = [event(id="a"), hostile, event(id="c", key=long), event(id="d")]
    m, producer = materialize(store, events)
    assert store.get("a") is not None and store.get("d") is not None
    b = store.get(f"b{NUL}")
    assert b is not None and same_text(b.error_message, f"m{NUL}") and same_text(b.key, f"k{NUL}")
    assert store.offsets(m.topic) == {0: 4}
    if store.get("c") is None:  # PostgreSQL: the key is over its index's entry limit
        ((topic, value, headers),) = producer.sent
        assert topic == dead_letter_topic("app")
        assert value == m.app.envelopes.encode_result(events[2])
        assert headers[HEADER_PREFIX + "reason"] == b"unstorable"
        assert b"refused" in headers[HEADER_PREFIX + "error"]
        assert m.applied == 3
    else:
        assert producer.sent == [] and m.applied == 4


class RefusingStore(MemoryStore):
    """A store that refuses, for its content, every batch holding a row keyed "refused"."""

    def apply_rows(self, rows: Any, offsets: Any, *more: Any, **kw: Any) -> None:
        if any(r[9] == "refused" for r in rows):
            raise StoreRejected("over the limit")
        super().apply_rows(rows, offsets, *more, **kw)


def test_one_refused_record_goes_to_the_dead_letters_and_the_rest_of_its_batch_flows() -> None:
    store = RefusingStore()
    events = [event(id="a"), event(id="b", key="refused"), event(id="c", status=Status.STARTED)]
    m, producer = materialize(store, events)
    assert [t for t in ("a", "b", "c") if store.get(t)] == ["a", "c"]
    assert [h[HEADER_PREFIX + "reason"] for _, _, h in producer.sent] == [b"unstorable"]
    assert store.offsets(m.topic) == {0: 3} and m.applied == 2


def test_an_exception_text_with_a_lone_surrogate_is_described_in_encodable_text() -> None:
    error = describe(ValueError(f"bad {SURROGATE} {NUL}"))
    assert error.message == "bad a\ufffdb a\x00b"
    (error.message + error.traceback + error.type).encode()


# --- the edges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ok-id_1.2:3", None), ("", "empty"), (NUL, "control"), ("a\nb", "control"),
        (SURROGATE, "surrogate"), ("x" * (MAX_ID_CHARS + 1), "characters"),
        ("😀" * MAX_ID_CHARS, None),
    ],
)  # fmt: skip
def test_ids_and_keys_are_checked_for_what_no_store_or_url_holds(
    value: str, problem: str | None
) -> None:
    found = id_problem(value)
    assert (found is None) if problem is None else (found is not None and problem in found)
    assert id_problem("a/b") is None and id_problem("a/b", slash=False) is not None


def test_a_task_id_or_key_no_store_holds_is_refused_before_sending() -> None:
    app = App("app", topic_prefix="app", store="memory://")

    @app.task(name="t")
    def t() -> None: ...

    for options, path in [({"task_id": "a/b"}, "task_id"), ({"key": NUL}, "key")]:
        with pytest.raises(InvalidArguments) as info:
            t.event(b"", **options)
        assert info.value.path == path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(store: ResultStore) -> AsyncIterator[httpx.AsyncClient]:
    from examples.app import app

    service, _publisher = fake_service(app, store=store)
    console = Console(service, workers=NoWorkers())
    transport = httpx.ASGITransport(app=with_console(create_app(service), console))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


ADD = "/v1/tasks/examples.app.add"
ORDER = "/v1/tasks/examples.app.process_order"


def post_json(client: httpx.AsyncClient, url: str, body: Any) -> Any:
    """POST `body` as ASCII JSON: a lone surrogate travels as its escape, as any client's."""
    headers = {"content-type": "application/json"}
    return client.post(url, content=json.dumps(body), headers=headers)


def expect_422(r: httpx.Response, path: str) -> None:
    assert r.status_code == 422, r.text
    assert r.json()["error"]["path"] == path


@pytest.mark.anyio
async def test_hostile_text_at_the_http_edge_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    ok = {"a": 1, "b": 2}
    expect_422(await client.post(ADD, json=ok, params={"key": NUL}), "key")
    expect_422(await client.post(ADD, json=ok, params={"key": overlong()}), "key")
    expect_422(await client.post(ADD, json=ok, headers={"Idempotency-Key": "k" * 2000}),
               "idempotency_key")  # fmt: skip
    for item, path in [({"key": SURROGATE}, "items[1].key"), ({"idempotency_key": NUL},
                       "items[1].idempotency_key"), ({"key": ""}, "items[1].key")]:  # fmt: skip
        batch = {"items": [{"args": ok}, {"args": ok, **item}]}
        expect_422(await post_json(client, f"{ADD}:batch", batch), path)
    order = {"order": {"order_id": SURROGATE, "amount_cents": 1, "items": [],
                       "placed_at": "2026-01-02T00:00:00+00:00"}}  # fmt: skip
    r = await post_json(client, ORDER, order)
    assert r.status_code == 422 and r.json()["error"]["path"] == "args.order.order_id"
    # Overlong UTF-8 in a body is not JSON text (400); an encoded surrogate, which Python's
    # JSON reader lets through, is refused where it lands (422 naming the field).
    for raw, status in [(b"\xc0\x80", 400), (b"\xed\xa0\x80", 422)]:
        body = b'{"order": {"order_id": "' + raw + b'", "amount_cents": 1, "items": [], '
        body += b'"placed_at": "2026-01-02T00:00:00+00:00"}}'
        r = await client.post(ORDER, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert r.json()["error"].get("path", "args.order.order_id") == "args.order.order_id"
    # A lone surrogate in a field name (issue 26, item 13): 422, the name escaped in JSON.
    r = await post_json(client, ADD, {"a": 1, "b": 2, SURROGATE: 3})
    assert r.status_code == 422 and r.json()["error"]["path"] == f"args.{SURROGATE}"


@pytest.mark.anyio
async def test_a_hostile_task_id_in_a_path_or_query_is_a_4xx_on_every_store(
    client: httpx.AsyncClient,
) -> None:
    for task_id in ["a%00b", "a%0Ab", "a%2Fb", "x" * 3000]:
        for r in [
            await client.get(f"/v1/tasks/{task_id}"),
            await client.get(f"/v1/tasks/{task_id}", params={"wait": "0"}),
            await client.post(f"/v1/tasks/{task_id}:revoke"),
        ]:
            assert 400 <= r.status_code < 500, r.text
            assert "127.0.0.1" not in r.text and "schema" not in r.text


@pytest.mark.anyio
async def test_hostile_text_in_the_consoles_search_and_task_page_is_never_a_5xx(
    client: httpx.AsyncClient,
) -> None:
    for text in ["a%00b", "%ED%A0%80", "%C0%80", "x" * 3000]:  # NUL, a surrogate, overlong
        for name in ["key", "task", "id", "status", "since"]:
            r = await client.get(f"/ui/tasks?{name}={text}")
            assert r.status_code < 500, (name, text, r.text)
    for path in ["a%00b", "%ED%A0%80", "%C0%80", "x" * 3000]:
        r = await client.get(f"/ui/tasks/{path}")
        assert r.status_code < 500 and "127.0.0.1" not in r.text


@pytest.mark.anyio
async def test_a_stored_id_with_a_slash_has_a_console_page_that_its_list_links_to(
    client: httpx.AsyncClient, store: ResultStore
) -> None:
    unread = {"source_topic": None, "source_partition": None, "source_offset": None}
    store.apply_rows([hostile_row("x", task_id="from/elsewhere?#", key="k-slash", **unread)], {})
    listed = (await client.get("/ui/tasks", params={"key": "k-slash"})).text
    assert 'href="/ui/tasks/from%2Felsewhere%3F%23"' in listed
    page = await client.get("/ui/tasks/from%2Felsewhere%3F%23")
    assert page.status_code == 200 and "from/elsewhere?#" in page.text and "FAILURE" in page.text
