"""A worker's stop signals: the kernel's repeated parent-death signal is one request."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from taskstream import App
from taskstream.consumer import worker as worker_module
from taskstream.consumer.worker import Worker
from taskstream.testing.stub_broker import StubBroker


@pytest.fixture
def worker() -> Iterator[Worker]:
    app = App("sig", bootstrap_servers="stub:9092", topic_prefix="sig", broker=StubBroker())
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield Worker(app)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        app.close()


def test_a_sigterm_repeated_by_the_kernel_at_once_is_one_stop_not_a_stop_at_once(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: dev SIGKILLed sent its worker SIGTERM twice, 10 ms apart (one per dying
    thread), and the second stopped it at once, without its releases and last heartbeat."""
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)  # never reached, if right
    worker.install_signal_handlers()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # the repeat, within _SIGNAL_REPEAT_S
    assert worker._stop_requested and exits == []
    # An operator's second signal, later, still means "at once".
    monkeypatch.setattr(worker_module, "_SIGNAL_REPEAT_S", 0.0)
    assert not worker._repeated_signal()


def test_a_stop_signal_while_the_worker_starts_ends_it_at_once(worker: Worker) -> None:
    """A CI run: dev SIGKILLed while its worker was still asking a broker, gone with dev,
    for its topics; the worker lived on 15 s, waiting for the call to time out."""
    worker.install_signal_handlers()
    worker._starting = True  # inside run(), before anything is read from Kafka
    with pytest.raises(SystemExit) as exited:
        os.kill(os.getpid(), signal.SIGTERM)
    assert exited.value.code == 0
