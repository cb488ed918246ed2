"""`taskstream dev` without a broker: its banner, its children's ports, its supervision."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from taskstream import App
from taskstream.cli.banner import Banner, example_task
from taskstream.cli.dev import _metrics_ports
from taskstream.config import read_dev_bootstrap, write_dev_state
from taskstream.errors import ConfigError


def test_the_banner_example_is_add_when_the_app_has_one() -> None:
    app = App("banner", bootstrap_servers="127.0.0.1:1", store="memory://")

    @app.task(name="demo.a_divide")
    def a_divide(a: float, b: float) -> float:
        return a / b

    @app.task(name="demo.add")
    def add(a: int, b: int) -> int:
        return a + b

    assert example_task(app) == "demo.add"


def test_the_banner_example_is_not_a_task_whose_name_says_it_fails() -> None:
    app = App("banner", bootstrap_servers="127.0.0.1:1", store="memory://")

    @app.task(name="demo.always_fails")
    def always_fails(reason: str) -> None:
        raise RuntimeError(reason)

    @app.task(name="demo.greet")
    def greet(name: str) -> str:
        return f"hello {name}"

    assert example_task(app) == "demo.greet"


def test_the_banner_says_the_store_was_emptied_and_where_each_metrics_port_is() -> None:
    app = App("banner", bootstrap_servers="127.0.0.1:1", store="memory://")

    @app.task(name="demo.add")
    def add(a: int, b: int) -> int:
        return a + b

    text = Banner(
        app, "m:app", "127.0.0.1:1", embedded=True, created=[], http_port=0,
        http_port_taken=8000, metrics_ports={"worker": 9464, "materializer": 9465},
    ).render()  # fmt: skip
    assert "memory:// (emptied: the embedded broker starts empty)" in text
    assert "none: port 8000 is taken" in text
    assert "worker http://127.0.0.1:9464/metrics" in text
    assert "materializer http://127.0.0.1:9465/metrics" in text
    assert """send demo.add '{"a": 2, "b": 2}' --app m:app""" in text


def test_dev_gives_the_worker_and_the_materializer_a_metrics_port_each() -> None:
    app = App("ports", bootstrap_servers="127.0.0.1:1", store="memory://", metrics_port=0)
    ports = _metrics_ports(app)
    assert set(ports) == {"worker", "materializer"}
    assert ports["worker"] != ports["materializer"]
    assert _metrics_ports(App("none", bootstrap_servers="127.0.0.1:1", store="memory://")) == {}


def test_dev_refuses_a_metrics_port_that_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App("ports", bootstrap_servers="127.0.0.1:1", store="memory://", metrics_port=port)
        with pytest.raises(ConfigError, match=f"port {port} .the worker's. is taken"):
            _metrics_ports(app)


def test_the_state_of_a_dev_whose_process_is_gone_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / ".taskstream" / "dev.json"
    write_dev_state("127.0.0.1:9092", state)
    assert read_dev_bootstrap(state) == "127.0.0.1:9092"  # ours: this process is alive
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    state.write_text(json.dumps({"bootstrap_servers": "127.0.0.1:9092", "pid": gone.pid}))
    assert read_dev_bootstrap(state) is None


def test_serve_refuses_an_open_api_beyond_loopback_unless_allowed_and_warns_of_short_tokens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from taskstream.cli.roles import _check_exposure

    with pytest.raises(ConfigError, match="--allow-open"):
        _check_exposure("0.0.0.0", frozenset(), allow_open=False)
    _check_exposure("0.0.0.0", frozenset(), allow_open=True)
    assert "WARNING: no TASKSTREAM_HTTP_TOKENS" in capsys.readouterr().err
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        _check_exposure(host, frozenset(), allow_open=False)
    _check_exposure("0.0.0.0", frozenset({"s3cret"}), allow_open=False)
    assert "shorter than 16 characters" in capsys.readouterr().err


def test_every_option_of_the_long_running_commands_has_help_and_log_level_goes_anywhere() -> None:
    from taskstream.cli.parser import build_parser

    parser = build_parser()
    assert parser.parse_args(["worker", "x:app", "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "WARNING", "beat", "x:app"]).log_level == "WARNING"
    assert parser.parse_args(["dev", "x:app"]).log_level == "INFO"
    group = parser._subparsers
    assert group is not None
    commands: dict[str, argparse.ArgumentParser] = group._group_actions[0].choices  # type: ignore[assignment]
    for name in ("worker", "materialize", "beat", "dev", "serve"):
        for action in commands[name]._actions:
            assert not action.option_strings or action.help, (name, action.option_strings)


def test_dlq_since_takes_an_iso_time_or_an_age_and_says_what_it_wants_otherwise() -> None:
    from datetime import UTC, datetime, timedelta

    from taskstream.cli.dlq import parse_since, table

    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("1d", now) == now - timedelta(days=1)
    assert parse_since("2026-12-05T10:00:00+00:00", now) == datetime(2026, 12, 5, 10, tzinfo=UTC)
    for bad in ("yesterday", "2026-12-05T10:00:00"):
        with pytest.raises(ConfigError, match="an ISO time with its timezone"):
            parse_since(bad, now)
    row = {"dlq_offset": "0:7", "reason": "undecodable", "task": None, "from": "t[0]@1",
           "time": "2026-12-06T11:00:00+00:00", "error": "not Avro"}  # fmt: skip
    header, line = table([row])
    assert header.split() == ["DLQ", "REASON", "TASK", "FROM", "TIME", "ERROR"]
    assert line.split() == ["0:7", "undecodable", "-", "t[0]@1", "2026-12-06T11:00:00+00:00",
                            "not", "Avro"]  # fmt: skip


def test_an_app_with_celery_include_loads_its_tasks_and_one_without_tasks_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Celery's proj/celery.py layout (issue 20, minor 12): the app module defines no task,
    App(include=[...]) names the modules that do; without them, a warning and a banner
    that says what to do instead of `send TASK '{}'`."""
    from taskstream.loading import load_app

    proj = tmp_path / "incproj"
    proj.mkdir()
    (proj / "__init__.py").write_text("")
    (proj / "celery.py").write_text(
        "from taskstream import App\n"
        "app = App('incproj', include=['incproj.tasks'])\n"
        "bare = App('bare')\n"
    )
    (proj / "tasks.py").write_text(
        "from incproj.celery import app\n\n@app.task\ndef add(a: int, b: int) -> int:\n"
        "    return a + b\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = load_app("incproj.celery:app")
    assert list(app.tasks) == ["incproj.tasks.add"]
    with caplog.at_level("WARNING"):
        bare = load_app("incproj.celery:bare")
    assert "defines no tasks" in caplog.text and "include=" in caplog.text
    text = Banner(bare, "incproj.celery:bare", "127.0.0.1:1", embedded=True, created=[]).render()
    assert "send TASK" not in text and "include=" in text


def test_the_banner_states_the_embedded_brokers_limit_and_the_way_out_only_for_tansu() -> None:
    app = App("banner", bootstrap_servers="127.0.0.1:1", store="memory://")

    def render(broker: str) -> str:
        return Banner(app, "m:app", "127.0.0.1:1", embedded=True, created=[],
                      broker=broker).render()  # fmt: skip

    tansu = render("tansu")
    assert "limit:   Tansu slows as data grows: waits pass 1 s in ~12 min at 100/s" in tansu
    assert "--broker kafka" in tansu and "restarting dev empties it" in tansu
    kafka = render("kafka")
    assert "(Apache Kafka, one node, data in a temporary directory)" in kafka
    assert "limit:" not in kafka


def test_dev_with_broker_kafka_names_java_and_maven_when_they_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskstream.cli.apache_kafka import KafkaCluster
    from taskstream.errors import BrokerNotStarted

    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    cluster = KafkaCluster()
    with pytest.raises(BrokerNotStarted, match=r"missing: java and mvn \(or use --broker tansu"):
        cluster.start()
    assert not cluster.directory.exists()  # its temporary directory went with it
    (tmp_path / "java").write_text("#!/bin/sh\n")
    (tmp_path / "java").chmod(0o755)
    with pytest.raises(BrokerNotStarted, match=r"missing: mvn \("):
        KafkaCluster().start()


def test_dev_refuses_broker_when_the_app_already_has_bootstrap_servers() -> None:
    from taskstream.cli.dev import _start_own_broker
    from taskstream.cli.parser import build_parser

    assert build_parser().parse_args(["dev", "x:app"]).broker is None  # Tansu, unless asked
    app = App("own", bootstrap_servers="10.0.0.1:9092", store="memory://")
    assert _start_own_broker(app, None) is None  # the app's cluster, as before
    with pytest.raises(ConfigError, match="--broker kafka starts a broker of dev's own"):
        _start_own_broker(app, "kafka")
