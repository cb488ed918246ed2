"""The console's pages over the stub broker and the memory store: a real worker, delay
scheduler and materializer (taskstream.testing), the console in front of them through
httpx's ASGI transport, and a fake worker directory."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition

import taskstream.testing
from taskstream import App, clock
from taskstream.console import Console, NoWorkers, with_console
from taskstream.console.kafka_view import backlog
from taskstream.console.workers import lag_seconds_by_topic
from taskstream.kafka.topics import task_topic
from taskstream.producer.http import HttpService, HttpSettings, create_app
from taskstream.producer.http.catalog import Catalog
from taskstream.status import Status
from taskstream.testing import Stub
from taskstream.testing.stub_broker import StubBroker
from tests.unit.http_fakes import FakePublisher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeDirectory:
    """What the heartbeat-fed worker directory answers: dicts of the agreed shape."""

    def __init__(self, workers: list[dict[str, object]]) -> None:
        self.workers = workers

    def workers_json(self) -> list[dict[str, object]]:
        return self.workers


def build_app(marker: Path) -> App:
    app = App("unit-console", topic_prefix="uc", partitions=3)

    @app.task(name="uc.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="uc.divide")
    def divide(a: float, b: float) -> float:
        return a / b

    @app.task(name="uc.total")
    def total(xs: list[int]) -> int:
        return sum(xs)

    @app.task(name="uc.fragile", autoretry_for=(FileNotFoundError,), max_retries=0)
    def fragile(tag: str) -> str:
        """Fails (retries exhausted: a dead letter) until `marker` exists."""
        return marker.read_text() + tag

    return app


WORKER = {
    "worker_id": "host-a:4242",
    "hostname": "host-a",
    "pid": 4242,
    "version": "0.1.0",
    "queues": ["default"],
    "partitions": [["uc.tasks.default", 0], ["uc.tasks.default", 1]],
    "concurrency": 4,
    "running": [{"task_id": "run-1", "task": "uc.add", "started_at": "2026-11-29T12:00:00+00:00"}],
    "counts": {"succeeded": 10, "failed": 1},
    "lag": [
        {"topic": "uc.tasks.default", "partition": 0, "records": 3, "seconds": 2.5},
        {"topic": "uc.tasks.default", "partition": 1, "records": 0, "seconds": 0.0},
    ],
    "state": "online",
    "last_beat": "2026-11-29T12:00:01+00:00",
}


class Ui:
    def __init__(self, client: httpx.AsyncClient, stub: Stub, app: App, marker: Path) -> None:
        self.client, self.stub, self.app, self.marker = client, stub, app, marker

    async def page(self, path: str, **params: Any) -> str:
        r = await self.client.get(path, params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        return r.text


@pytest.fixture
def stubbed(tmp_path: Path) -> Iterator[tuple[Stub, App, Path]]:
    marker = tmp_path / "fixed"
    app = build_app(marker)
    with taskstream.testing.run(app, concurrency=2) as stub:
        yield stub, app, marker


def console_of(app: App, **http: Any) -> tuple[Console, HttpService]:
    limits = HttpSettings.load(settings=app.settings, **http)
    service = HttpService(
        Catalog.from_app(app), app.settings, FakePublisher(), app.store, http=limits
    )
    return Console(service, app, FakeDirectory([WORKER])), service


@pytest.fixture
async def ui(stubbed: tuple[Stub, App, Path]) -> AsyncIterator[Ui]:
    stub, app, marker = stubbed
    console, service = console_of(app)
    transport = httpx.ASGITransport(app=with_console(create_app(service), console))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield Ui(client, stub, app, marker)


async def test_the_overview_shows_outcomes_queues_lag_and_workers(ui: Ui) -> None:
    ui.app.tasks["uc.add"].delay(2, 3)
    ui.app.tasks["uc.divide"].delay(1.0, 0.0)
    ui.stub.join()
    html = await ui.page("/ui")
    assert "1 succeeded" in html and "1 failed" in html
    queues = html[html.index('id="queues"') :]
    assert "uc.tasks.default" in queues
    row = re.search(r"<tr><td>default</td>(.*?)</tr>", queues)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[1:4] == ["3", "0", "2.5 s"]  # partitions, lag in records, lag in seconds
    assert "host-a:4242" in html and "/ui/tasks/run-1" in html and "badge-online" in html


async def test_a_task_is_found_by_id_and_its_page_shows_arguments_and_result(ui: Ui) -> None:
    task_id = ui.app.tasks["uc.add"].delay(2, 3).id
    ui.stub.join()
    found = await ui.page("/ui/tasks", id=task_id)
    assert f'href="/ui/tasks/{task_id}"' in found and "SUCCESS" in found
    detail = await ui.page(f"/ui/tasks/{task_id}")
    args = re.search(r"<h2>Arguments</h2>.*?<pre[^>]*>(.*?)</pre>", detail, re.S)
    result = re.search(r'id="result"><h2>Result</h2><pre[^>]*>(.*?)</pre>', detail, re.S)
    assert args is not None and result is not None
    assert json.loads(unescape(args.group(1))) == {"a": 2, "b": 3}
    assert result.group(1) == "5"
    assert await ui.page("/ui/tasks", id="no-such-id") and "no task matches" in await ui.page(
        "/ui/tasks", id="no-such-id"
    )


async def test_a_chain_steps_page_links_its_parent_and_its_parents_page_its_child(
    ui: Ui,
) -> None:
    add = ui.app.tasks["uc.add"]
    last = (add.s(2, 3) | add.s(10)).delay()
    ui.stub.join()
    assert last.get(timeout=5) == 15
    parent = last.parent
    assert parent is not None
    detail = await ui.page(f"/ui/tasks/{last.id}")
    assert "<th>parent</th>" in detail and f'href="/ui/tasks/{parent.id}"' in detail
    first = await ui.page(f"/ui/tasks/{parent.id}")
    assert "<th>children</th>" in first and f'href="/ui/tasks/{last.id}"' in first
    # The step ran add(5, 10): its page shows both, and says where a came from.
    args = re.search(r"<h2>Arguments</h2>.*?<pre[^>]*>(.*?)</pre>", detail, re.S)
    assert args is not None and json.loads(unescape(args.group(1))) == {"a": 5, "b": 10}
    received = re.search(r'id="received">(.*?)</p>', detail)
    assert received is not None
    assert (
        unescape(received.group(1)) == "<code>a</code> came from the result of its parent (uc.add)"
    )
    assert 'id="received"' not in first  # a task sent with all its arguments


async def test_a_chord_bodys_page_shows_the_list_of_results_it_ran_with(ui: Ui) -> None:
    from taskstream.canvas import chord

    add = ui.app.tasks["uc.add"]
    body = chord([add.s(1, 1), add.s(2, 2)], ui.app.tasks["uc.total"].s()).apply_async()
    ui.stub.join()
    assert body.get(timeout=5) == 6
    detail = await ui.page(f"/ui/tasks/{body.id}")
    args = re.search(r"<h2>Arguments</h2>.*?<pre[^>]*>(.*?)</pre>", detail, re.S)
    assert args is not None and json.loads(unescape(args.group(1))) == {"xs": [2, 4]}
    received = re.search(r'id="received">(.*?)</p>', detail)
    assert received is not None
    assert unescape(received.group(1)) == (
        "<code>xs</code> came from the results of the group before it, in order"
    )


async def test_a_nested_workflows_task_page_shows_the_path_that_led_to_it(ui: Ui) -> None:
    from taskstream import chain, chord

    add = ui.app.tasks["uc.add"]
    # a chord inside a chain: its body's parent is the group, whose join started it
    last = chain(add.s(1, 1), add.s(1), chord([add.s(1), add.s(2)], add.si(0, 0)), add.s(1))()
    ui.stub.join()
    assert last.get(timeout=5) == 1
    body = last.parent
    assert body is not None
    header = body.parent
    detail = await ui.page(f"/ui/tasks/{last.id}")
    path = re.search(r"<th>workflow path</th><td>(.*?)</td>", detail, re.S)
    assert path is not None
    assert f'href="/ui/tasks/{body.id}"' in path.group(1)
    assert f"group {header.id}" in path.group(1)  # type: ignore[union-attr]


async def test_a_failed_task_page_shows_the_error_and_its_traceback(ui: Ui) -> None:
    task_id = ui.app.tasks["uc.divide"].delay(1.0, 0.0).id
    ui.stub.join()
    detail = await ui.page(f"/ui/tasks/{task_id}")
    assert "<strong>ZeroDivisionError</strong>" in detail
    assert "Traceback (most recent call last)" in detail and "return a / b" in detail


async def test_tasks_filter_by_status_task_and_key_and_page_with_a_cursor(
    ui: Ui, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskstream.console.endpoints.PAGE_SIZE", 4)
    add = ui.app.tasks["uc.add"]
    ids = {add.apply_async((i, 1), key=f"k{i % 2}").id for i in range(10)}
    failed = ui.app.tasks["uc.divide"].delay(1.0, 0.0).id
    ui.stub.join()
    only_failures = await ui.page("/ui/tasks", status="FAILURE")
    assert failed in only_failures and not any(i in only_failures for i in ids)
    seen: list[str] = []
    params: dict[str, str] = {"task": "uc.add"}
    for _ in range(5):
        html = await ui.page("/ui/tasks", **params)
        seen += re.findall(r'href="/ui/tasks/([0-9a-f-]{36})"', html)
        following = re.search(r'href="/ui/tasks\?([^"]+)" id="next-page"', html)
        if following is None:
            break
        params = dict(httpx.QueryParams(following.group(1).replace("&amp;", "&")))
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    keyed = await ui.page("/ui/tasks", key="k1", task="uc.add")
    assert len(re.findall(r'href="/ui/tasks/[0-9a-f-]{36}"', keyed)) == 4  # a first page of 5


async def test_a_dead_letter_is_replayed_after_a_confirmation_and_its_task_succeeds(
    ui: Ui,
) -> None:
    result = ui.app.tasks["uc.fragile"].delay("!")
    ui.stub.join()
    assert result.status == "FAILURE"
    listed = await ui.page("/ui/dead-letters")
    assert "retries-exhausted" in listed and result.id in listed and "1 dead letters" in listed
    position = re.search(r'name="letter" value="([0-9]+:[0-9]+)"', listed)
    assert position is not None
    ui.marker.write_text("fixed")  # the cause is fixed: the replay will succeed
    asked = await ui.client.post("/ui/dead-letters/replay", data={"letter": position.group(1)})
    assert asked.status_code == 200 and 'id="confirm-replay"' in asked.text
    ui.stub.join()
    assert ui.app.result(result.id).status == "FAILURE"  # nothing replayed without the yes
    sent = ui.app.store.get(result.id)
    replayed_after = datetime.fromtimestamp(clock.now(), UTC)  # taskstream's clock
    assert sent is not None and sent.enqueued_at is not None
    assert sent.enqueued_at <= replayed_after
    done = await ui.client.post(
        "/ui/dead-letters/replay", data={"letter": position.group(1), "confirm": "yes"}
    )
    assert "Replayed 1 dead letters." in done.text
    ui.stub.join()
    assert result.get(timeout=5) == "fixed!"
    # Its wait is measured from the replay: the time it spent as a dead letter is not waiting.
    rerun = ui.app.store.get(result.id)
    assert rerun is not None and rerun.enqueued_at is not None and rerun.started_at is not None
    assert sent.enqueued_at < replayed_after <= rerun.enqueued_at <= rerun.started_at
    relisted = await ui.page("/ui/dead-letters", reason="retries-exhausted")
    assert "badge-success" in relisted  # the letter stays; its task now succeeded


async def test_a_filtered_set_of_dead_letters_is_replayed(ui: Ui) -> None:
    fragile = ui.app.tasks["uc.fragile"]
    results = [fragile.delay(str(i)) for i in range(3)]
    ui.stub.join()
    ui.marker.write_text("ok")
    asked = await ui.client.post("/ui/dead-letters/replay", data={"task": "uc.fragile"})
    assert "Replay 3" in asked.text
    listed = re.search(r'name="letters" value="([0-9:,]+)"', asked.text)
    assert listed is not None and len(listed.group(1).split(",")) == 3
    fragile.delay("late")  # a letter that arrives after the list was shown ...
    ui.marker.unlink()
    ui.stub.join()
    ui.marker.write_text("ok")
    confirmed = {"letters": listed.group(1), "confirm": "yes"}
    done = await ui.client.post("/ui/dead-letters/replay", data=confirmed)
    assert "Replayed 3 dead letters." in done.text  # ... is not replayed: only what was listed
    ui.stub.join()
    assert sorted(r.get(timeout=5) for r in results) == ["ok0", "ok1", "ok2"]
    again = await ui.client.post("/ui/dead-letters/replay", data=confirmed)
    assert "Replayed 0 dead letters. 3 had been replayed before: skipped." in again.text
    assert "0 dead letters" in await ui.page("/ui/dead-letters", reason="unknown-task")


async def test_the_delay_tiers_show_what_waits_and_when_it_is_due(ui: Ui) -> None:
    waiting = ui.app.tasks["uc.add"].apply_async((1, 2), countdown=300)
    ui.stub.join()
    html = await ui.page("/ui/delays")
    row = re.search(r"<tr><td>60 s</td>(.*?)</tr>", html)
    assert row is not None and waiting.id in row.group(1)
    assert re.findall(r"<td>(.*?)</td>", row.group(1))[1] == "1"  # one record waits
    assert "not before" in row.group(1)


async def test_the_live_part_alone_is_answered_to_the_pages_script(ui: Ui) -> None:
    r = await ui.client.get("/ui/tasks", headers={"X-Console-Live": "1"})
    assert r.status_code == 200 and "<html" not in r.text and "no task matches" in r.text
    full = await ui.page("/ui/tasks")
    assert '<div id="live" data-refresh="2000">' in full
    script = await ui.client.get("/ui/static/console.js")
    assert script.status_code == 200 and "X-Console-Live" in script.text


async def test_with_tokens_a_browser_logs_in_and_the_api_still_wants_a_bearer_token(
    stubbed: tuple[Stub, App, Path],
) -> None:
    _stub, app, _marker = stubbed
    console, service = console_of(app, tokens="s3cret")
    transport = httpx.ASGITransport(app=with_console(create_app(service), console))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        first = await client.get("/ui/tasks?status=FAILURE")
        assert first.status_code == 303
        assert first.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%3Fstatus%3DFAILURE"
        assert (await client.get("/ui", headers={"X-Console-Live": "1"})).status_code == 401
        assert (await client.post("/ui/dead-letters/replay", data={})).status_code == 401
        assert (await client.get("/ui/login")).status_code == 200
        assert (await client.get("/ui/static/console.css")).status_code == 200
        wrong = await client.post("/ui/login", data={"token": "nope", "next": "/ui"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        good = await client.post("/ui/login", data={"token": "s3cret", "next": "/ui/tasks"})
        assert good.status_code == 303 and good.headers["location"] == "/ui/tasks"
        assert "httponly" in good.headers["set-cookie"].lower()
        assert (await client.get("/ui/tasks")).status_code == 200  # the cookie
        away = await client.post("/ui/login", data={"token": "s3cret", "next": "//evil.example"})
        assert away.headers["location"] == "/ui"
        assert (await client.get("/v1/tasks")).status_code == 401  # the cookie is the console's
        bearer = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/tasks", headers=bearer)).status_code == 200
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as script:
        assert (await script.get("/ui/delays", headers=bearer)).status_code == 200


def test_the_backlog_of_a_group_is_its_committed_offsets_against_the_partition_ends() -> None:
    broker = StubBroker()
    app = App("probe", broker=broker, bootstrap_servers="stub:9092", topic_prefix="p")
    topic = task_topic("p", "default")
    broker.create_topic(topic, 2)
    producer = broker.producer({})
    for i in range(5):
        producer.produce(topic, f"v{i}".encode(), partition=0)
    producer.flush()
    committer = broker.consumer({"group.id": "g", "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()
    found = {p.partition: p for p in backlog(app, "g", [topic, "p.tasks.missing"], timeout_s=2)}
    assert set(found) == {0, 1}
    assert (found[0].committed, found[0].end, found[0].records) == (2, 5, 3)
    assert found[0].head is not None and found[0].head.value() == b"v2"
    assert (found[1].committed, found[1].records, found[1].head) == (None, 0, None)


def test_lag_in_seconds_is_the_worst_an_online_worker_reports_per_topic() -> None:
    lost = {**WORKER, "state": "lost", "lag": [{"topic": "t", "partition": 0, "seconds": 99}]}
    other = {**WORKER, "lag": [{"topic": "uc.tasks.default", "partition": 2, "seconds": 7.0}]}
    assert lag_seconds_by_topic([WORKER, other, lost]) == {"uc.tasks.default": 7.0}
    assert NoWorkers().workers_json() == []
    assert Status.SUCCESS.is_final


async def test_a_store_that_fails_gives_a_503_page_not_a_crash(tmp_path: Path) -> None:
    from taskstream.store import MemoryStore

    app = build_app(tmp_path / "marker")
    store = MemoryStore()
    service = HttpService(Catalog.from_app(app), app.settings, FakePublisher(), store)
    store.close()  # every query now raises StoreError
    transport = httpx.ASGITransport(app=with_console(create_app(service), Console(service, app)))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        r = await client.get("/ui/tasks")
    assert r.status_code == 503 and "<html" in r.text
    # The store's own message (its host, database, schema) is logged, not shown.
    assert "lookup store is unavailable" in r.text and "closed" not in r.text


async def test_a_refreshing_task_page_reads_its_task_event_from_kafka_once(
    ui: Ui, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskstream.console import console as module
    from taskstream.console.kafka_view import read_record as real

    reads: list[tuple[str, int, int]] = []

    def counted(app: App, topic: str, partition: int, offset: int, timeout_s: float = 5.0) -> Any:
        reads.append((topic, partition, offset))
        return real(app, topic, partition, offset, timeout_s)

    monkeypatch.setattr(module, "read_record", counted)
    task_id = ui.app.tasks["uc.add"].delay(4, 5).id
    ui.stub.join()
    for _ in range(3):
        r = await ui.client.get(f"/ui/tasks/{task_id}", headers={"X-Console-Live": "1"})
        assert "&quot;a&quot;: 4" in r.text
    assert len(reads) == 1


async def test_a_console_served_from_schema_files_alone_renders_stored_results() -> None:
    from datetime import UTC, datetime

    from taskstream.config import Settings
    from taskstream.store import MemoryStore, ResultRecord
    from tests.conftest import REPO

    catalog = Catalog.from_schemas(REPO / "schemas")
    store = MemoryStore()
    settings = Settings.load(environ={}, bootstrap_servers="127.0.0.1:9")
    service = HttpService(catalog, settings, FakePublisher(), store)
    console = Console(service)  # no app: one is made from the service's settings and codec
    assert console.app.settings is settings and console.app.codec is catalog.codec
    spec = catalog.tasks["examples.app.add"]
    now = datetime.now(UTC)
    store.apply(
        [
            ResultRecord(
                "t-1", "examples.app.add", Status.SUCCESS, 1, catalog.codec.encode(spec.result, 5),
                None, None, None, "w:1", None, now, now, now, None, None, None,
            )
        ],
        {},
    )  # fmt: skip
    transport = httpx.ASGITransport(app=with_console(create_app(service), console))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        page = (await client.get("/ui/tasks/t-1")).text
        assert 'id="result"><h2>Result</h2><pre class="json">5</pre>' in page
        assert "does not say which event it came from" in page  # no source: no arguments
        assert "examples.app.add" in (await client.get("/ui/tasks")).text


# --- hostile pages (issue 26): cross-origin writes, rebinding, framing ----------------------

CROSS = [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost:9999"},  # another port: another origin on the same site
    {"Origin": "null"},  # a sandboxed frame, a data: URL
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://a.localhost"},  # a sibling subdomain
]


@pytest.mark.parametrize("tokens", ["", "s3cret"], ids=["no tokens", "tokens"])
async def test_a_cross_origin_replay_login_or_revoke_is_refused_in_both_modes(
    stubbed: tuple[Stub, App, Path], tokens: str
) -> None:
    stub, app, marker = stubbed
    result = app.tasks["uc.fragile"].delay("!")
    stub.join()
    console, service = console_of(app, tokens=tokens)
    transport = httpx.ASGITransport(app=with_console(create_app(service), console))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        if tokens:
            await client.post("/ui/login", data={"token": tokens, "next": "/ui"})
        listed = (await client.get("/ui/dead-letters")).text
        position = re.search(r'name="letter" value="([0-9]+:[0-9]+)"', listed)
        assert position is not None
        marker.write_text("fixed")
        confirmed = {"letters": position.group(1), "confirm": "yes"}
        for headers in CROSS:
            for path, data in [
                ("/ui/dead-letters/replay", confirmed),
                ("/ui/login", {"token": tokens or "x", "next": "/ui"}),
                (f"/v1/tasks/{result.id}:revoke", {}),
            ]:
                r = await client.post(path, data=data, headers=headers)
                assert r.status_code == 403, (path, headers, r.text)
                assert r.json()["error"]["code"] == "cross_origin"
        stub.join()
        assert app.result(result.id).status == "FAILURE"  # nothing was replayed
        same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
        done = await client.post("/ui/dead-letters/replay", data=confirmed, headers=same)
        assert "Replayed 1 dead letters." in done.text
        stub.join()
        assert result.get(timeout=5) == "fixed!"


async def test_without_tokens_only_loopback_host_names_are_served(
    stubbed: tuple[Stub, App, Path],
) -> None:
    _stub, app, _marker = stubbed
    for tokens, hosts, served, refused in [
        ("", "", ["localhost", "127.0.0.1:8000", "[::1]:8000"], ["rebound.example", "10.0.0.2"]),
        ("s3cret", "", ["rebound.example:8000", "localhost"], []),
        ("", "tasks.internal", ["tasks.internal:80"], ["localhost", "rebound.example"]),
        ("", "*", ["rebound.example"], []),
    ]:
        console, service = console_of(app, tokens=tokens, allowed_hosts=hosts)
        transport = httpx.ASGITransport(app=with_console(create_app(service), console))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            for host in served:
                assert (await c.get("/healthz", headers={"Host": host})).status_code == 200
            for host in refused:
                for path in ("/v1/tasks", "/openapi.json", "/ui/tasks", "/v1/tasks/x"):
                    r = await c.get(path, headers={"Host": host})
                    assert r.status_code == 421 and r.json()["error"]["path"] == "Host"
                # Probes and scrapers name the pod's address: the open paths hold no secret.
                for path in ("/healthz", "/metrics"):
                    assert (await c.get(path, headers={"Host": host})).status_code == 200


async def test_console_pages_forbid_framing_inline_script_and_sniffing(ui: Ui) -> None:
    for path in ("/ui", "/ui/tasks", "/ui/login", "/ui/static/console.js", "/ui/nope"):
        r = await ui.client.get(path)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"


async def test_the_login_cookie_is_an_expiring_hmac_not_the_token_and_logout_removes_it(
    stubbed: tuple[Stub, App, Path],
) -> None:
    from taskstream.console.auth import session_value, valid_session

    _stub, app, _marker = stubbed
    token = "a-long-enough-token-for-the-test"
    console, service = console_of(app, tokens=token, session_s=3600)
    transport = httpx.ASGITransport(app=with_console(create_app(service), console))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        good = await client.post("/ui/login", data={"token": token, "next": "/ui"})
        cookie = good.headers["set-cookie"]
        assert token not in cookie and "Max-Age=3600" in cookie
        assert (await client.get("/ui/tasks")).status_code == 200
        out = await client.post("/ui/logout")
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert (await client.get("/ui/tasks")).status_code == 303  # to the login page
    tokens = frozenset({token})
    assert valid_session(session_value(token, 2_000), tokens, now=1_999)
    assert not valid_session(session_value(token, 2_000), tokens, now=2_000)  # expired
    assert not valid_session(session_value("other", 2_000), tokens, now=1_000)
    assert not valid_session(token, tokens, now=1_000)  # the raw token is no session


async def test_failed_logins_are_limited_per_client_and_logged(
    stubbed: tuple[Stub, App, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from taskstream.console import auth

    _stub, app, _marker = stubbed
    console, service = console_of(app, tokens="the-right-token-0123456789")
    transport = httpx.ASGITransport(app=with_console(create_app(service), console))
    auth._ATTEMPTS = auth.LoginAttempts(limit=3, window_s=600)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        statuses = [
            (await client.post("/ui/login", data={"token": f"guess{i}"})).status_code
            for i in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        right = await client.post("/ui/login", data={"token": "the-right-token-0123456789"})
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
    assert caplog.text.count("failed console login from") == 3
    limiter = auth.LoginAttempts(limit=2, window_s=10)
    limiter.failed("a", now=0)
    limiter.failed("a", now=1)
    assert limiter.wait_s("a", now=5) == 5 and limiter.wait_s("a", now=10) == 0
    assert limiter.wait_s("b", now=5) == 0
    auth._ATTEMPTS = auth.LoginAttempts()
