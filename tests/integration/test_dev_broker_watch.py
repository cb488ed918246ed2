"""dev's broker watch on a real broker: its probe's round trips, a stall, the recovery.

The decisions are unit-tested on a fake clock (tests/unit/test_dev_broker_watch.py); this
checks the real probe against the session's broker, stalled with SIGSTOP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from taskstream import App
from taskstream.cli.broker_watch import BrokerWatch, KafkaProbe
from taskstream.kafka.admin import ensure_topics
from taskstream.kafka.topics import TopicSpec, dev_probe_topic
from tests.conftest import BrokerHandle, Scope

pytestmark = pytest.mark.integration


class CountingProbe:
    def __init__(self, probe: KafkaProbe) -> None:
        self.probe = probe
        self.back = 0

    def send(self, token: str) -> None:
        self.probe.send(token)

    def received(self, timeout: float) -> list[str]:
        tokens = self.probe.received(timeout)
        self.back += len(tokens)
        return tokens


def test_the_probe_round_trips_and_a_stalled_broker_is_warned_about_then_seen_back(
    broker: BrokerHandle, scope: Scope
) -> None:
    # dev watches its embedded broker only; stalling the shared three-node cluster as a
    # whole would test Apache Kafka's recovery instead, and slow the tests after it.
    embedded = broker.require_tansu("dev watches its embedded broker, Tansu")
    settings: dict[str, Any] = scope.settings()
    app = App("watch", **settings)
    topic = dev_probe_topic(scope.topic_prefix)
    ensure_topics(app.settings, [TopicSpec(topic, 1, scope.replication_factor)])
    probe = CountingProbe(KafkaProbe(scope.bootstrap_servers, topic))
    said: list[str] = []
    watch = BrokerWatch(probe, said.append, interval_s=0.2, stalled_s=3.0)

    def step_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}; the watch said {said}"
            watch.step(0.1)
            if not watch.waiting:
                time.sleep(0.05)  # the watcher thread's pause between probes

    try:
        step_until(lambda: probe.back >= 5, 30, "five round trips")
        assert said == []
        embedded.suspend()
        try:
            step_until(lambda: bool(said), 30, "a warning while the broker is stalled")
        finally:
            embedded.resume()
        assert said[0].startswith("WARNING: the embedded broker is degrading: a probe record")
        assert "--broker kafka" in said[0]
        step_until(lambda: len(said) == 2, 60, "the broker seen back")
        assert said[1].startswith("the embedded broker answers in")
    finally:
        probe.probe.close()
        app.close()
