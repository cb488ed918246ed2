"""The server's own bounds, as hostile clients on loopback meet them (issue 26, high 3):
huge or too many headers get 431, a body over the server's cap 413 on any route (the
console's open login form too), a head or body sent too slowly 408, an idle connection is
closed, and past the connection cap 503. Meanwhile /healthz answers the other clients.

No timing is asserted: each wait is for a condition, with a generous bound."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BrokerHandle, Scope
from tests.integration.http_server import serve_process

pytestmark = pytest.mark.integration

APP_SPEC = "tests.integration.tasks_app:app"
LIMITS = {
    "TASKSTREAM_HTTP_MAX_HEADER_BYTES": "4096",
    "TASKSTREAM_HTTP_MAX_HEADERS": "20",
    "TASKSTREAM_HTTP_MAX_BODY_BYTES": "10000",
    "TASKSTREAM_HTTP_DRAIN_MAX_BYTES": "100000",
    "TASKSTREAM_HTTP_HEADER_TIMEOUT_S": "1",
    "TASKSTREAM_HTTP_BODY_TIMEOUT_S": "1",
    "TASKSTREAM_HTTP_KEEPALIVE_TIMEOUT_S": "1",
    "TASKSTREAM_HTTP_MAX_CONNECTIONS": "8",
}
WAIT_S = 30.0  # a bound on each wait, never an expectation


@pytest.fixture(scope="module")
def bounds_scope(broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> Scope:
    """One scope, and one server, for the module's tests."""
    store = tmp_path_factory.mktemp("bounds") / "results.db"
    return Scope(broker.bootstrap_servers, f"bounds-{uuid.uuid4().hex[:8]}", f"sqlite:///{store}")


@pytest.fixture(scope="module")
def url(bounds_scope: Scope) -> Iterator[str]:
    with serve_process(bounds_scope, APP_SPEC, **LIMITS) as base:
        yield base


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=WAIT_S)
    return s


def answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset, when it closed
    with bytes of ours unread, ends it too)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def healthy(url: str) -> bool:
    return httpx.get(f"{url}/healthz", timeout=WAIT_S).status_code == 200


def test_a_huge_header_is_refused_with_431_unparsed_and_others_are_served(url: str) -> None:
    with connect(url) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 4 MB, refused after the first 4 KiB
                s.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: the rest was never read
        assert healthy(url)
        assert status_of(answer(s)) == 431


def test_too_many_header_fields_get_431(url: str) -> None:
    with connect(url) as s:
        fields = b"".join(b"X-%d: 1\r\n" % i for i in range(30))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n")
        assert status_of(answer(s)) == 431


def test_a_body_over_the_cap_gets_413_on_any_route_even_the_open_login_form(url: str) -> None:
    for path in ("/ui/login", "/nowhere", "/healthz"):
        with connect(url) as s:
            s.sendall(
                b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200000000\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" % path.encode()
            )
            assert status_of(answer(s)) == 413
    # Under the server's cap, over the form's own limit: the console's 413.
    r = httpx.post(f"{url}/ui/login", content=b"token=" + b"x" * 50_000, timeout=WAIT_S,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 413


def test_slow_heads_slow_bodies_and_idle_connections_are_closed(url: str) -> None:
    with connect(url) as idle, connect(url) as head, connect(url) as body:
        head.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never ends it
        body.sendall(
            b"POST /v1/tasks/itest.add HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a": 1'
        )
        assert healthy(url)
        assert answer(idle) == b""  # closed, nothing to answer: it never sent a byte
        assert status_of(answer(head)) == 408
        assert status_of(answer(body)) == 408
    with connect(url) as kept:  # a keep-alive connection idle after its answer goes too
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(answer(kept)) == 200


def test_past_the_connection_cap_a_request_gets_503_until_connections_go(
    bounds_scope: Scope,
) -> None:
    # Timeouts long enough that the held connections outlive the test's own requests.
    patient = {**LIMITS, "TASKSTREAM_HTTP_HEADER_TIMEOUT_S": "300"}
    with serve_process(bounds_scope, APP_SPEC, **patient) as base:
        held = [connect(base) for _ in range(8)]
        try:
            assert httpx.get(f"{base}/healthz", timeout=WAIT_S).status_code == 503
        finally:
            for s in held:
                s.close()
        checks = 0
        while not healthy(base):  # the server forgets them as it sees them close
            checks += 1
            assert checks < 1000, "the server did not recover"


def test_past_its_own_cap_one_client_is_refused_while_another_is_served(
    bounds_scope: Scope,
) -> None:
    capped = {
        **LIMITS, "TASKSTREAM_HTTP_HEADER_TIMEOUT_S": "300",
        "TASKSTREAM_HTTP_MAX_CONNECTIONS_PER_CLIENT": "3",
    }  # fmt: skip
    with serve_process(bounds_scope, APP_SPEC, **capped) as base:
        host, port = base.removeprefix("http://").split(":")
        held = [connect(base) for _ in range(3)]  # from 127.0.0.1
        try:
            with connect(base) as fourth:
                try:
                    fourth.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed already
                assert answer(fourth) == b""  # closed before a byte was read
            # Another loopback address is another client: served.
            with socket.create_connection((host, int(port)), WAIT_S, ("127.0.0.2", 0)) as other:
                other.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                assert status_of(answer(other)) == 200
        finally:
            for s in held:
                s.close()
