"""Issue 20, minor 13: librdkafka's log through Python logging, repeats rate-limited, and a
producer closed while every broker is down says so once instead of waiting it out."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest

from taskstream.config import Settings
from taskstream.kafka import rdkafka_log
from taskstream.kafka.clients import admin_config, consumer_config, producer_config
from taskstream.kafka.producer import EventProducer

REFUSED = "Connect to ipv4#127.0.0.1:9 failed: Connection refused"


def record(text: str, thread: str = "127.0.0.1:9/bootstrap", level: int = logging.ERROR) -> Any:
    return logging.LogRecord(
        "taskstream.librdkafka", level, __file__, 1, "%s [%s] %s",
        ("FAIL", "rdkafka#producer-1",
         f"[thrd:{thread}]: {thread}: {REFUSED} (after 0ms in state CONNECT)"),
        None,
    )  # fmt: skip


def test_every_client_config_logs_through_the_rate_limited_logger() -> None:
    s = Settings.load(bootstrap_servers="k:1")
    configs = [producer_config(s), consumer_config(s, "g"), admin_config(s)]
    assert all(c["logger"] is rdkafka_log.LOGGER for c in configs)
    own = logging.getLogger("mine")
    assert (
        producer_config(Settings.load(bootstrap_servers="k:1", kafka={"logger": own}))["logger"]
        is own
    )


def test_a_repeated_connection_failure_is_logged_once_a_window_then_counted() -> None:
    repeats = rdkafka_log._Repeats(window_s=60.0)
    first = record("a")
    assert repeats.filter(first)
    # the same failure from other clients' threads, a moment later: counted, not logged
    threads = ["GroupCoordinator", "127.0.0.1:9/1", "127.0.0.1:9/bootstrap"]
    assert not any(repeats.filter(record("a", thread=threads[i % 3])) for i in range(20))
    assert repeats.filter(record("a", level=logging.WARNING))  # another level: its own line
    repeats.window_s = 0.0  # the window is over
    later = record("a")
    assert repeats.filter(later)
    assert "20 more like it" in later.getMessage()


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_producer_closed_while_every_broker_is_down_gives_up_soon_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Settings.load(bootstrap_servers=f"127.0.0.1:{refused_port()}")
    errors: list[Any] = []
    producer = EventProducer(producer_config(s, error_cb=errors.append))  # the user's, kept
    producer.produce("t", b"x")
    producer.produce("t", b"y")
    deadline = time.monotonic() + 10
    while not producer._all_down and time.monotonic() < deadline:
        producer.poll(0.1)  # a worker's loop polls while the broker is gone
    assert producer._all_down and errors
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="taskstream.kafka.producer"):
        assert producer.close(30.0, expendable="what they were") == 2
    assert time.monotonic() - started < 5.0  # not the 30 s flush timeout
    lines = [r.getMessage() for r in caplog.records if r.name == "taskstream.kafka.producer"]
    assert lines == ["the broker is gone: 2 events not delivered (what they were)"]


def test_a_clients_producer_closed_while_every_broker_is_down_waits_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its events are tasks: a broker back within the timeout still gets them."""
    s = Settings.load(bootstrap_servers=f"127.0.0.1:{refused_port()}")
    producer = EventProducer(producer_config(s))
    producer.produce("t", b"x")
    deadline = time.monotonic() + 10
    while not producer._all_down and time.monotonic() < deadline:
        producer.poll(0.1)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="taskstream.kafka.producer"):
        assert producer.close(2.0) == 1
    assert time.monotonic() - started >= 1.9
    lines = [r.getMessage() for r in caplog.records if r.name == "taskstream.kafka.producer"]
    assert lines == ["1 events were still undelivered when the producer closed"]
