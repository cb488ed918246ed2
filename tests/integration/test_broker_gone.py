"""A worker whose broker died stops quietly: issue 20, minor 13 (a SIGKILLed ``dev`` takes
its embedded broker with it, and its worker gets SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from taskstream.cli.embedded_broker import EmbeddedBroker
from tests.conftest import REPO, BrokerHandle, Scope
from tests.integration.running import APP_SPEC, wait_until

pytestmark = pytest.mark.integration


def test_a_worker_stopped_after_its_broker_died_says_so_once_without_waiting_it_out(
    broker: BrokerHandle, scope: Scope
) -> None:
    broker.require_embedded()  # a broker of its own, killed like dev's: the embedded kind
    own = EmbeddedBroker().start()
    lines: list[str] = []
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", "worker", APP_SPEC],
        env=scope.env(TASKSTREAM_BOOTSTRAP_SERVERS=own.bootstrap_servers),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(worker.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("assigned" in line for line in lines), 120, "an assignment")
        os.killpg(own.pid, signal.SIGKILL)  # as dev's death kills its broker
        wait_until(lambda: any("brokers are down" in line for line in lines), 60,
                   "the worker to notice")  # fmt: skip
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        took = time.monotonic() - stopping
    finally:
        if worker.poll() is None:
            worker.kill()
        own.stop()
    reader.join(10)
    worker.stderr.close()
    gone = [line for line in lines if "the broker is gone:" in line]
    refused = [line for line in lines if "Connection refused" in line]
    print(f"\nworker stop with its broker gone: {took:.1f} s, {len(refused)} refused lines")
    assert len(gone) == 1 and "dead owner" in gone[0], lines
    assert not any("still undelivered" in line for line in lines)
    assert took < 4.0  # the close gives up after a second without a delivery, not 5 s
    assert len(refused) <= 10, refused  # one a shape and process, then counted
