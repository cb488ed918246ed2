"""The HTTP API's answers, through httpx's ASGI transport and an in-memory publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from taskstream import App
from taskstream.producer.http import create_app
from taskstream.status import Status
from taskstream.store import MemoryStore, ResultRecord
from tests.unit.http_fakes import FakePublisher, fake_service

pytestmark = pytest.mark.anyio  # anyio's pytest plugin comes with starlette and httpx

ADD = "/v1/tasks/examples.app.add"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def example_app() -> App:
    from examples.app import app

    return app


class Api:
    def __init__(self, client: httpx.AsyncClient, publisher: FakePublisher, service: Any) -> None:
        self.client, self.publisher, self.service = client, publisher, service


async def _api(example_app: App, **settings: Any) -> AsyncIterator[Api]:
    service, publisher = fake_service(example_app, **settings)
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield Api(client, publisher, service)


@pytest.fixture
async def api(example_app: App) -> AsyncIterator[Api]:
    async for a in _api(example_app):
        yield a


def _record(
    task_id: str, status: Status, result: bytes | None = None, **extra: Any
) -> ResultRecord:
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    fields: dict[str, Any] = dict(
        task_id=task_id, task="examples.app.add", status=status, attempt=1, result=result,
        error_type=None, error_message=None, error_traceback=None, worker="w:1", key=None,
        enqueued_at=now, started_at=now, finished_at=now, source_topic="t",
        source_partition=0, source_offset=0,
    )  # fmt: skip
    fields.update(extra)
    return ResultRecord(**fields)


async def test_a_valid_task_is_accepted_with_its_id_and_location(
    api: Api, example_app: App
) -> None:
    r = await api.client.post(ADD, json={"a": 2, "b": 3}, params={"key": "k1"})
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "PENDING"
    assert r.headers["location"] == f"/v1/tasks/{body['task_id']}"
    (event,) = api.publisher.events
    assert (event.id, event.task, event.queue, event.key) == (
        body["task_id"],
        "examples.app.add",
        "default",
        "k1",
    )
    assert event.args == example_app.tasks["examples.app.add"].encode_args((2, 3), {})
    assert (await api.client.get(r.headers["location"])).json() == body


async def test_a_task_on_its_own_queue_goes_there(api: Api) -> None:
    order = {
        "order_id": "o1",
        "amount_cents": 100,
        "items": ["a"],
        "placed_at": "2024-01-01T00:00:00Z",
    }
    r = await api.client.post("/v1/tasks/examples.app.process_order", json={"order": order})
    assert r.status_code == 202
    assert api.publisher.events[0].queue == "orders"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"a": 2, "b":', {"content-type": "application/json"}, 400, "malformed_json"),
        (b'{"a": NaN, "b": 1}', {"content-type": "application/json"}, 400, "malformed_json"),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, "malformed_json"),
        (b'{"a": 2, "b": 3}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"a": 2, "b": 3}', {}, 415, "unsupported_media_type"),
        (b'{"a": 2, "b": "3"}', {"content-type": "application/json"}, 422, "invalid_arguments"),
        (b"[1, 2]", {"content-type": "application/json; charset=utf-8"}, 422, "invalid_arguments"),
    ],
)
async def test_bad_requests_get_clear_answers(
    api: Api, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    r = await api.client.post(ADD, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert not api.publisher.events


async def test_a_schema_error_names_the_field_and_what_was_expected(api: Api) -> None:
    order = {
        "order_id": "o1",
        "amount_cents": 100,
        "items": ["a", 3],
        "placed_at": "2024-01-01T00:00:00Z",
    }
    r = await api.client.post("/v1/tasks/examples.app.process_order", json={"order": order})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["path"] == "args.order.items[1]"
    assert error["message"] == "expected str, got int 3"


@pytest.mark.parametrize(("number", "value"), [(b"2.0", 2), (b"1e3", 1000)])
async def test_an_int_argument_takes_an_integral_number_as_delay_does(
    api: Api, example_app: App, number: bytes, value: int
) -> None:
    body = b'{"a": ' + number + b', "b": 1}'
    r = await api.client.post(ADD, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text
    (event,) = api.publisher.events
    assert example_app.get_task("examples.app.add").decode_args(event.args) == {"a": value, "b": 1}


async def test_an_int_argument_refuses_a_fraction_naming_the_field(api: Api) -> None:
    body = b'{"a": 2.5, "b": 1}'
    r = await api.client.post(ADD, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["path"] == "args.a"
    assert error["message"] == "expected int, got float 2.5"
    assert not api.publisher.events


async def test_unknown_tasks_ids_routes_and_queues(api: Api) -> None:
    assert (await api.client.post("/v1/tasks/nope", json={})).json()["error"][
        "code"
    ] == "unknown_task"
    assert (await api.client.post("/v1/tasks/nope", json={})).status_code == 404
    missing = await api.client.get("/v1/tasks/6d1f0e4e-0000-0000-0000-000000000000")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_task_id")
    assert (await api.client.get("/nowhere")).status_code == 404
    r = await api.client.post(ADD, json={"a": 1, "b": 1}, params={"queue": "elsewhere"})
    assert (r.status_code, r.json()["error"]["path"]) == (422, "queue")


async def test_a_body_over_the_limit_gets_413(example_app: App) -> None:
    async for api in _api(example_app, http={"max_body_bytes": 64}):
        r = await api.client.post(ADD, json={"a": 1, "b": 1, "pad": "x" * 100})
        assert r.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for c in [b'{"a": 1,', b' "b": 1', b" " * 100, b"}"]:
                yield c

        streamed = await api.client.post(
            ADD, content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413  # chunked: no Content-Length to trust
        assert not api.publisher.events


async def test_an_unacknowledged_event_gets_503_with_retry_after_never_202(api: Api) -> None:
    for mode in ("hang", "fail"):
        api.publisher.mode = mode
        r = await api.client.post(ADD, json={"a": 1, "b": 1})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "broker_unavailable"


async def test_an_idempotency_key_gives_the_same_task_id_and_no_second_event(api: Api) -> None:
    headers = {"Idempotency-Key": "order-7"}
    first = await api.client.post(ADD, json={"a": 1, "b": 1}, headers=headers)
    again = await api.client.post(ADD, json={"a": 1, "b": 1}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["task_id"] == again.json()["task_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.publisher.events) == 1
    other = await api.client.post(ADD, json={"a": 1, "b": 2}, headers=headers)
    assert (other.status_code, other.json()["error"]["code"]) == (409, "idempotency_key_reused")
    fresh = await api.client.post(
        ADD, json={"a": 1, "b": 1}, headers={"Idempotency-Key": "order-8"}
    )
    assert fresh.json()["task_id"] != first.json()["task_id"]


async def test_a_retry_after_503_with_the_same_key_keeps_the_task_id(api: Api) -> None:
    headers = {"Idempotency-Key": "k"}
    api.publisher.mode = "hang"
    assert (await api.client.post(ADD, json={"a": 1, "b": 1}, headers=headers)).status_code == 503
    api.publisher.mode = "ack"
    retried = await api.client.post(ADD, json={"a": 1, "b": 1}, headers=headers)
    assert retried.status_code == 202
    assert [e.id for e in api.publisher.events] == [retried.json()["task_id"]]


async def test_a_batch_answers_each_item(api: Api) -> None:
    items: list[dict[str, Any]] = [{"args": {"a": i, "b": 1}, "key": f"k{i}"} for i in range(3)]
    r = await api.client.post(
        f"{ADD}:batch", json={"items": [*items, {"args": {"a": "x", "b": 1}}]}
    )
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == 3
    assert [i["status"] for i in body["items"]] == [202, 202, 202, 422]
    assert body["items"][3]["error"]["path"] == "args.a"
    assert [e.key for e in api.publisher.events] == ["k0", "k1", "k2"]
    shape = await api.client.post(
        f"{ADD}:batch", json={"items": [*items, {"args": {}, "key": None}]}
    )
    assert (shape.status_code, shape.json()["error"]["path"]) == (422, "items[3].key")
    assert len(api.publisher.events) == 3  # a malformed batch sends nothing
    all_ok = await api.client.post(f"{ADD}:batch", json={"items": items[:2]})
    assert all_ok.status_code == 202
    assert (await api.client.post(f"{ADD}:batch", json=[1])).status_code == 422
    api.publisher.mode = "hang"
    down = await api.client.post(f"{ADD}:batch", json={"items": items[:2]})
    assert (down.status_code, down.headers["retry-after"]) == (503, "1")


async def test_a_stored_outcome_renders_result_error_and_timestamps(
    api: Api, example_app: App
) -> None:
    add = example_app.tasks["examples.app.add"]
    store = api.service.store
    store.apply([_record("t-ok", Status.SUCCESS, add.encode_result(5))], {})
    store.apply([_record("t-bad", Status.FAILURE, error_type="ValueError", error_message="m",
                         error_traceback="tb")], {})  # fmt: skip
    ok = (await api.client.get("/v1/tasks/t-ok")).json()
    assert (ok["status"], ok["result"], ok["attempt"], ok["error"]) == ("SUCCESS", 5, 1, None)
    assert ok["finished_at"] == "2024-05-06T07:08:09+00:00"
    bad = (await api.client.get("/v1/tasks/t-bad", params={"wait": "1"})).json()
    assert bad["error"] == {"type": "ValueError", "message": "m", "traceback": "tb"}
    assert (await api.client.get("/v1/tasks/t-ok", params={"wait": "-1"})).status_code == 422


async def test_wait_long_polls_until_the_outcome_is_final(api: Api, example_app: App) -> None:
    import asyncio

    add = example_app.tasks["examples.app.add"]

    async def finish_later() -> None:
        await asyncio.sleep(0.2)
        api.service.store.apply([_record("t-late", Status.SUCCESS, add.encode_result(7))], {})

    later = asyncio.ensure_future(finish_later())
    r = await api.client.get("/v1/tasks/t-late", params={"wait": "10"})
    await later
    assert r.json()["result"] == 7


async def test_bearer_tokens_guard_v1_and_openapi_but_not_health_or_metrics(
    example_app: App,
) -> None:
    async for api in _api(example_app, http={"tokens": "s3cret, other"}):
        assert (await api.client.post(ADD, json={"a": 1, "b": 1})).status_code == 401
        assert (await api.client.get("/v1/tasks")).status_code == 401
        wrong = await api.client.get("/v1/tasks", headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.headers["www-authenticate"]) == (401, "Bearer")
        good = await api.client.get("/v1/tasks", headers={"Authorization": "Bearer other"})
        assert good.status_code == 200
        for path in ("/healthz", "/metrics"):
            assert (await api.client.get(path)).status_code == 200
        # The OpenAPI document lists every task and schema, as /v1/tasks does (issue 26, 11).
        assert (await api.client.get("/openapi.json")).status_code == 401
        bearer = {"Authorization": "Bearer s3cret"}
        spec = (await api.client.get("/openapi.json", headers=bearer)).json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    async for api in _api(example_app, http={"tokens": "s3cret", "open_paths": "/healthz"}):
        assert (await api.client.get("/metrics")).status_code == 401


async def test_the_task_list_and_openapi_describe_every_task(api: Api) -> None:
    tasks = {t["name"]: t for t in (await api.client.get("/v1/tasks")).json()["tasks"]}
    assert set(tasks) == {"examples.app.add", "examples.app.divide", "examples.app.process_order"}
    assert tasks["examples.app.process_order"]["queue"] == "orders"
    assert tasks["examples.app.add"]["args_schema"]["fields"][0] == {"name": "a", "type": "long"}
    spec = (await api.client.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0"
    for name in tasks:
        assert f"/v1/tasks/{name}" in spec["paths"] and f"/v1/tasks/{name}:batch" in spec["paths"]
    order = spec["components"]["schemas"]["examples.app.Order"]
    assert order["properties"]["placed_at"] == {"type": "string", "format": "date-time"}
    assert order["required"] == ["order_id", "amount_cents", "items", "placed_at"]


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


async def test_metrics_count_requests_and_accepted_tasks(api: Api) -> None:
    accepted = 'taskstream_http_tasks_accepted_total{task="examples.app.add"}'
    rejected = 'taskstream_http_tasks_rejected_total{reason="invalid_arguments"}'
    before = (await api.client.get("/metrics")).text
    await api.client.post(ADD, json={"a": 1, "b": 1})
    await api.client.post(ADD, json={"a": "x", "b": 1})
    text = (await api.client.get("/metrics")).text
    assert sample(text, accepted) == sample(before, accepted) + 1
    assert sample(text, rejected) == sample(before, rejected) + 1
    assert 'status="202"' in text and 'status="422"' in text


async def test_health_is_open_and_readiness_checks_the_store(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).status_code == 200
    api.service.store.close()
    r = await api.client.get("/readyz")
    assert (r.status_code, r.headers["retry-after"]) == (503, "1")


# --- events over the producer's message.max.bytes -------------------------------------------

ORDER = "/v1/tasks/examples.app.process_order"


def _order(n_items: int, item: str = "sku-0000000000000000") -> dict[str, Any]:
    order = {"order_id": "o1", "amount_cents": 100, "items": [item] * n_items,
             "placed_at": "2024-01-01T00:00:00Z"}  # fmt: skip
    return {"order": order}


async def test_an_event_over_message_max_bytes_gets_413_naming_task_and_size_never_503(
    example_app: App,
) -> None:
    limit = {"message.max.bytes": "600"}  # as TASKSTREAM_KAFKA_MESSAGE_MAX_BYTES=600 gives
    async for api in _api(example_app, kafka=limit):
        assert (await api.client.post(ORDER, json=_order(3))).status_code == 202
        r = await api.client.post(ORDER, json=_order(100))  # a body well under 1 MiB
        assert r.status_code == 413, r.text
        assert "retry-after" not in r.headers
        error = r.json()["error"]
        assert (error["code"], error["task"], error["limit"]) == (
            "message_too_large", "examples.app.process_order", 600,
        )  # fmt: skip
        assert error["size"] > 600 and str(error["size"]) in error["message"]
        assert len(api.publisher.events) == 1


async def test_a_batch_says_which_items_are_too_large(example_app: App) -> None:
    async for api in _api(example_app, kafka={"message.max.bytes": "600"}):
        items = [{"args": _order(1)}, {"args": _order(100)}, {"args": _order(2)}]
        r = await api.client.post(f"{ORDER}:batch", json={"items": items})
        assert r.status_code == 207
        body = r.json()
        assert body["accepted"] == 2
        assert [i["status"] for i in body["items"]] == [202, 413, 202]
        too_large = body["items"][1]["error"]
        assert (too_large["code"], too_large["limit"]) == ("message_too_large", 600)
        assert too_large["size"] > 600
        only = await api.client.post(f"{ORDER}:batch", json={"items": items[1:2]})
        assert (only.status_code, only.json()["items"][0]["status"]) == (207, 413)
        assert len(api.publisher.events) == 2


async def test_an_event_the_publisher_refuses_as_too_large_gets_413(api: Api) -> None:
    api.publisher.mode = "too_large"
    r = await api.client.post(ADD, json={"a": 1, "b": 1})
    assert r.status_code == 413 and "retry-after" not in r.headers
    assert r.json()["error"]["size"] == 2_000_000


# --- oversize bodies ------------------------------------------------------------------------


async def _chunks(n: int, size: int) -> AsyncIterator[bytes]:
    yield b'{"a": 1, "b": 1, "pad": "'
    for _ in range(n):
        yield b"x" * size
    yield b'"}'


async def test_an_oversize_body_is_read_to_its_end_before_the_413_within_the_drain_bound(
    example_app: App,
) -> None:
    async for api in _api(example_app, http={"max_body_bytes": 64, "drain_max_bytes": 10_000}):
        json_ = {"content-type": "application/json"}
        drained = await api.client.post(ADD, content=_chunks(20, 100), headers=json_)
        assert drained.status_code == 413 and "connection" not in drained.headers
        beyond = await api.client.post(ADD, content=_chunks(200, 100), headers=json_)
        assert (beyond.status_code, beyond.headers["connection"]) == (413, "close")
        declared = await api.client.post(ADD, json={"pad": "x" * 20_000})  # Content-Length
        assert (declared.status_code, declared.headers["connection"]) == (413, "close")
        expecting = await api.client.post(
            ADD, json={"pad": "x" * 100}, headers={"Expect": "100-continue"}
        )
        assert (expecting.status_code, expecting.headers["connection"]) == (413, "close")
        assert not api.publisher.events


# --- Idempotency-Keys in the lookup store ---------------------------------------------------


async def test_two_services_sharing_a_store_give_one_idempotency_key_one_task_id(
    example_app: App,
) -> None:
    store = MemoryStore()
    first_service, first = fake_service(example_app, store=store)
    second_service, second = fake_service(example_app, store=store)
    headers = {"Idempotency-Key": "order-9"}
    answers = []
    for service in (first_service, second_service):
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            answers.append(await client.post(ADD, json={"a": 1, "b": 1}, headers=headers))
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json()["task_id"] == answers[1].json()["task_id"]
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert (len(first.events), len(second.events)) == (1, 0)


async def test_a_request_with_a_key_gets_503_while_the_store_is_down_and_others_get_202(
    api: Api,
) -> None:
    api.service.store.close()
    keyed = await api.client.post(ADD, json={"a": 1, "b": 1}, headers={"Idempotency-Key": "k"})
    assert (keyed.status_code, keyed.headers["retry-after"]) == (503, "1")
    assert keyed.json()["error"]["code"] == "store_unavailable"
    assert (await api.client.post(ADD, json={"a": 1, "b": 1})).status_code == 202


async def test_a_key_repeated_within_one_batch_is_published_once(api: Api) -> None:
    items = [{"args": {"a": 1, "b": 1}, "idempotency_key": "same"}] * 3
    r = await api.client.post(f"{ADD}:batch", json={"items": items})
    assert r.status_code == 202
    assert len({i["task_id"] for i in r.json()["items"]}) == 1
    assert len(api.publisher.events) == 1


async def test_a_retry_after_a_crashed_publish_with_the_same_key_does_not_wait_for_it(
    api: Api,
) -> None:
    import asyncio

    headers = {"Idempotency-Key": "k"}
    api.publisher.mode = "crash"
    with pytest.raises(RuntimeError, match="publisher bug"):
        await api.client.post(ADD, json={"a": 1, "b": 1}, headers=headers)
    api.publisher.mode = "ack"
    async with asyncio.timeout(5):
        retried = await api.client.post(ADD, json={"a": 1, "b": 1}, headers=headers)
    assert retried.status_code == 202
    assert [e.id for e in api.publisher.events] == [retried.json()["task_id"]]


async def test_revoke_writes_a_revocation_to_the_control_topic(api: Api) -> None:
    from taskstream.control import Control, Revocation
    from taskstream.kafka.topics import control_topic
    from taskstream.testing.stub_broker import StubBroker

    broker = StubBroker()
    settings = api.service.settings.replace(bootstrap_servers="stub:9092")
    broker.create_topic(control_topic(settings.topic_prefix), 1)
    api.service._control = Control(settings, broker)  # one the test can read back
    r = await api.client.post("/v1/tasks/abc-123:revoke", params={"terminate": "true"})
    assert r.status_code == 202
    assert r.json() == {"task_id": "abc-123", "revoked": True, "terminate": True, "known": False}
    (record,) = broker.records(control_topic(settings.topic_prefix))
    revocation = Revocation.decode(record.value() or b"")
    assert (record.key(), revocation.task_id, revocation.terminate) == (b"abc-123", "abc-123", True)
    bad = await api.client.post("/v1/tasks/abc-123:revoke", params={"terminate": "maybe"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_terminate")


async def test_revoke_refuses_an_id_no_task_can_have_and_says_whether_an_id_is_known(
    api: Api,
) -> None:
    from taskstream.control import Control
    from taskstream.kafka.topics import control_topic
    from taskstream.testing.stub_broker import StubBroker

    broker = StubBroker()
    settings = api.service.settings.replace(bootstrap_servers="stub:9092")
    broker.create_topic(control_topic(settings.topic_prefix), 1)
    api.service._control = Control(settings, broker)
    for bad in ("%00x", "x" * 300, "a%0Ab"):  # as apply_async(task_id=...) refuses them
        r = await api.client.post(f"/v1/tasks/{bad}:revoke")
        assert r.status_code == 422, bad
        assert (r.json()["error"]["code"], r.json()["error"]["path"]) == (
            "invalid_task_id",
            "task_id",
        )
    assert broker.records(control_topic(settings.topic_prefix)) == []
    sent = (await api.client.post(ADD, json={"a": 1, "b": 2})).json()["task_id"]
    api.service.store.apply([_record("t-done", Status.SUCCESS)], {})
    for task_id, known in (("not-a-uuid", False), (sent, True), ("t-done", True)):
        r = await api.client.post(f"/v1/tasks/{task_id}:revoke")  # a custom id is well-formed
        assert (r.status_code, r.json()["revoked"], r.json()["known"]) == (202, True, known)
    api.service.store.close()
    down = await api.client.post("/v1/tasks/t-done:revoke")  # revoked; known cannot be told
    assert (down.status_code, down.json()["known"]) == (202, None)
    assert len(broker.records(control_topic(settings.topic_prefix))) == 4


async def test_a_task_sent_over_http_keeps_its_expires_and_ignore_result_options() -> None:
    app = App("http-options")

    @app.task(name="opts.ping", expires=30, ignore_result=True)
    def ping(n: int) -> int:
        return n

    async for api in _api(app):
        r = await api.client.post("/v1/tasks/opts.ping", json={"n": 1})
        assert r.status_code == 202
        (event,) = api.publisher.events
        assert event.expires == event.enqueued_at + 30_000_000  # as ping.delay(1) sends it
        assert event.ignore_result


async def test_a_chord_answers_its_task_ids_and_a_read_by_id_has_its_own_route_label(
    api: Api,
) -> None:
    """Issue 20, minor 15: a chord's 202 has task_ids as docs/guide.md says (its header's tasks,
    then its body's); GET /v1/tasks/{id} is counted as /v1/tasks/{task_id}, not as a send."""
    from taskstream import metrics

    step = {"task": "examples.app.add", "args": {"a": 1, "b": 2}}
    body = {
        "chord": {
            "header": [step, step],
            "body": {"task": "examples.app.add", "args": {"a": 0, "b": 3}, "immutable": True},
        }
    }
    r = await api.client.post("/v1/workflows", json=body)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert len(answer["task_ids"]) == 3 and answer["task_ids"][-1] == answer["task_id"]
    reads = metrics.HTTP_REQUESTS.labels("/v1/tasks/{task_id}", "GET", "404")
    before = reads._value.get()
    assert (await api.client.get(f"/v1/tasks/{answer['task_id']}")).status_code == 404
    assert reads._value.get() == before + 1
