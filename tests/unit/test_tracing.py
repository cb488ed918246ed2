"""Traces across Kafka on the stub broker: delay() -> the worker's run -> a retry's next
attempt -> a dead letter and its replay, one trace throughout; without OpenTelemetry
installed, nothing of it is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import taskstream.testing
from taskstream import App, Retry, TaskFailed, current_request
from taskstream.consumer.dead_letter_replay import read_dead_letters, replay
from tests.conftest import REPO
from tests.otel_spans import parent_id, span_exporter, spans_of


@pytest.fixture
def app() -> Iterator[App]:
    app = App("traced", bootstrap_servers="stub:9092", topic_prefix="traced", partitions=2)

    @app.task(name="traced.flaky", max_retries=3)
    def flaky(attempts: int) -> int:
        attempt = current_request().attempt
        if attempt < attempts:
            raise Retry(countdown=60)
        return attempt

    @app.task(name="traced.hopeless", max_retries=0)
    def hopeless() -> int:
        raise Retry(countdown=1)

    yield app


def test_a_retried_task_is_one_trace_from_delay_to_its_last_attempt(app: App) -> None:
    exporter = span_exporter()
    with taskstream.testing.run(app) as stub:
        r = app.tasks["traced.flaky"].delay(3)
        stub.join()
        for _ in range(2):
            stub.advance(60)
            stub.join()
        assert r.get(timeout=5) == 3
    send, *runs = spans_of(exporter, r.id)
    assert send.name == "traced.flaky send" and send.kind.name == "PRODUCER"
    assert [s.name for s in runs] == ["traced.flaky process"] * 3
    assert {s.context.trace_id for s in [send, *runs]} == {send.context.trace_id}
    # Each attempt continues from the one before: a chain, not siblings.
    assert [parent_id(s) for s in runs] == [s.context.span_id for s in [send, *runs[:-1]]]
    attrs = [dict(s.attributes or {}) for s in runs]
    assert [a["taskstream.attempt"] for a in attrs] == [1, 2, 3]
    assert [a["taskstream.outcome"] for a in attrs] == ["RETRY", "RETRY", "SUCCESS"]
    for a in attrs:
        assert a["taskstream.task"] == "traced.flaky" and a["taskstream.task_id"] == r.id
        assert isinstance(a["taskstream.partition"], int)
        assert isinstance(a["taskstream.offset"], int) and a["taskstream.offset"] >= 0
    assert all(s.kind.name == "CONSUMER" for s in runs)


def test_a_dead_letter_and_its_replay_keep_the_trace(app: App) -> None:
    exporter = span_exporter()
    with taskstream.testing.run(app) as stub:
        r = app.tasks["traced.hopeless"].delay()
        stub.join()
        with pytest.raises(TaskFailed):
            r.get(timeout=5)
        (letter,) = list(read_dead_letters(app, idle_s=0.2))
        assert [name for name, _ in letter.headers] == ["traceparent"]
        replay(app, [letter])
        stub.join()
    send, first, replayed = spans_of(exporter, r.id)
    assert first.attributes is not None and replayed.attributes is not None
    assert first.attributes["taskstream.outcome"] == "FAILURE"
    assert first.status.status_code.name == "ERROR"
    assert replayed.attributes["taskstream.attempt"] == 1
    assert {s.context.trace_id for s in (send, first, replayed)} == {send.context.trace_id}
    assert parent_id(replayed) == send.context.span_id  # the letter kept the sender's context


@pytest.mark.parametrize("installed", [False, True], ids=["not installed", "no provider"])
def test_without_opentelemetry_or_a_tracer_provider_no_header_is_sent(installed: bool) -> None:
    script = textwrap.dedent(
        """
        import sys
        if sys.argv[1] == "absent":
            sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        import taskstream.testing
        from taskstream import App, tracing
        assert not tracing.active()
        app = App("bare", bootstrap_servers="stub:9092", topic_prefix="bare", partitions=1)

        @app.task(name="bare.add")
        def add(a: int, b: int) -> int:
            return a + b

        with taskstream.testing.run(app) as stub:
            assert add.delay(2, 3).get(timeout=5) == 5
            (record,) = stub.broker.records("bare.tasks.default")
            assert not record.headers(), record.headers()
            assert type(stub.worker.hooks).__name__ == "PrometheusHooks"
        if sys.argv[1] == "absent":
            assert not [m for m in sys.modules if m.startswith("opentelemetry.")]
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "installed" if installed else "absent"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
