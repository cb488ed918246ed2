"""``taskstream dev``: broker, topics, worker, materializer and HTTP API in one command.

One supervisor (this process) and its children: the broker (unless bootstrap servers are
configured), ``taskstream worker``, ``taskstream materialize`` and ``taskstream serve``
(unless ``--http-port 0``), and ``taskstream beat`` when the app has periodic tasks.

- **The broker.** ``--broker tansu`` (the default): the embedded Tansu, memory only, which
  starts in a second from PyPI but slows as its data grows (tasks wait over 1 s after
  ~75,000 of them at 100/s, after 3-5 minutes at 1,000/s); dev watches it and warns
  when it slows (``broker_watch.py``). ``--broker kafka``: one Apache Kafka node
  (``apache_kafka.py``; Java and Maven needed), its data in a temporary directory deleted
  at stop, for load tests.

- **Restarting and stopping** (``supervisor.py``). A child that dies is restarted after a
  short backoff, and dev says so; only Ctrl-C, SIGTERM and SIGHUP (the terminal closing)
  stop it, in order: the worker (and the HTTP API and beat) first, which says how long it
  waits for how many tasks, then the materializer, which stores what the worker finished,
  then the broker; a second Ctrl-C stops at once. The children run in sessions of their own,
  so the terminal's signals reach the supervisor alone. If the supervisor is killed outright
  (SIGKILL), the kernel sends its children SIGTERM and the broker SIGKILL (``children.py``).
- **State in** ``.taskstream/``: ``dev.json`` (this process's pid and the broker address,
  which ``send``/``result``/``worker`` in this directory use while that pid lives; a file
  whose pid is dead is ignored and replaced), ``broker.log``, and ``metrics/``, the
  ``PROMETHEUS_MULTIPROC_DIR`` the children share (emptied at start), so every ``/metrics``
  of the run, the HTTP API's included, shows the worker, materializer and HTTP values merged.
- **The store is emptied at start when dev runs its own broker**, and the banner says so: the
  embedded broker keeps nothing across runs, so the previous run's task ids no longer exist
  and its stored offsets would make the materializer skip the new run's first results. With
  an external cluster the store is kept.
- **Metrics ports.** ``TASKSTREAM_METRICS_PORT=P`` gives the worker ``P`` and the materializer
  ``P + 1`` (0: a free port each); the banner prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

from taskstream.app import App
from taskstream.cli.apache_kafka import KafkaCluster
from taskstream.cli.banner import Banner
from taskstream.cli.broker_watch import Watcher, watch_embedded_broker
from taskstream.cli.children import spawn
from taskstream.cli.embedded_broker import EmbeddedBroker, free_port
from taskstream.cli.supervisor import Supervisor, say
from taskstream.config import DEV_STATE_FILE, clear_dev_state, write_dev_state
from taskstream.errors import ConfigError
from taskstream.kafka.topics import band_topics, results_topic
from taskstream.loading import load_app

STATE_DIR = DEV_STATE_FILE.parent
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP arrived: stop everything. A BaseException, as
    KeyboardInterrupt is, so that no library's ``except Exception`` swallows it."""


_stopping: list[str] = []  # the stop signal's name, once one arrived


def _raise_stop(signum: int, _frame: object) -> None:
    _stopping.append(signal.Signals(signum).name)
    raise _Stop(_stopping[-1])


def dev(args: argparse.Namespace) -> int:
    running = _dev_already_running()
    if running is not None and running != os.getpid():
        raise ConfigError(f"taskstream dev is already running here (pid {running})")
    clear_dev_state()  # a stale file from a dev that was killed
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    app: App | None = None
    broker: EmbeddedBroker | KafkaCluster | None = None
    watcher: Watcher | None = None
    supervisor: Supervisor | None = None
    try:
        app = load_app(args.app)
        env = dict(os.environ)
        broker = _start_own_broker(app, args.broker)
        bootstrap = app.settings.bootstrap_servers
        assert bootstrap  # the user's or our own broker's
        env["TASKSTREAM_BOOTSTRAP_SERVERS"] = bootstrap
        _share_metrics_dir(env)
        metrics = _metrics_ports(app)
        created = app.ensure_topics()
        if isinstance(broker, EmbeddedBroker):
            prefix = app.settings.topic_prefix
            topics = [t for q in app.queues for t in band_topics(prefix, q)]
            watcher = watch_embedded_broker(app.settings, bootstrap, topics)

        cli = [sys.executable, "-m", "taskstream.cli", "--log-level", args.log_level]
        commands = _role_commands(cli, args, app, metrics)
        http_port = args.http_port if args.http_port and _port_free(args.http_port) else 0
        if http_port:
            commands["HTTP API"] = [*cli, "serve", args.app, "--port", str(http_port)]
        supervisor = Supervisor(
            commands,
            lambda command: spawn(
                command, env=env, stdin=subprocess.DEVNULL, start_new_session=True
            ),
        )

        banner = Banner(
            app,
            args.app,
            bootstrap,
            embedded=broker is not None,
            broker=args.broker or "tansu",
            created=created,
            http_port=http_port,
            http_port_taken=args.http_port if args.http_port and not http_port else None,
            metrics_ports=metrics,
        )
        print(banner.render(), flush=True)
        supervisor.run()
        return 0
    except _Stop:
        return 0
    except Exception:
        if _stopping:  # the stop interrupted a library call, which reported it its own way
            return 0
        raise
    finally:
        if supervisor is not None:
            _stop(supervisor, app.settings.shutdown_grace_s if app is not None else 5.0)
        for sig in _STOP_SIGNALS:  # let the clean-up run to its end
            signal.signal(sig, signal.SIG_IGN)
        if watcher is not None:
            watcher.stop()
        if app is not None:
            app.close()
        if broker is not None:
            broker.stop()
        clear_dev_state()
        print("taskstream dev: stopped", file=sys.stderr, flush=True)


def _start_own_broker(app: App, choice: str | None) -> EmbeddedBroker | KafkaCluster | None:
    """Unless the app has bootstrap servers: start dev's broker (``choice``, default Tansu),
    point this directory's commands and the app at it, and empty the store (the broker
    starts empty). None: the app's own cluster."""
    if app.settings.bootstrap_servers:
        if choice:
            raise ConfigError(
                f"--broker {choice} starts a broker of dev's own, but bootstrap servers are "
                f"set ({app.settings.bootstrap_servers}, e.g. TASKSTREAM_BOOTSTRAP_SERVERS): "
                "drop one of the two"
            )
        return None
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | KafkaCluster
    if choice == "kafka":
        say("starting Apache Kafka (one node; the first run resolves its jars with Maven)")
        broker = KafkaCluster().start()
    else:
        broker = EmbeddedBroker(log_path=STATE_DIR / "broker.log").start()
    try:
        write_dev_state(broker.bootstrap_servers)
        app.settings = app.settings.replace(bootstrap_servers=broker.bootstrap_servers)
        app.store.reset(results_topic(app.settings.topic_prefix))
    except BaseException:
        broker.stop()
        raise
    return broker


def _role_commands(
    cli: list[str], args: argparse.Namespace, app: App, metrics: dict[str, int]
) -> dict[str, list[str]]:
    """The worker's and the materializer's command lines, and the beat's if the app has
    periodic tasks (one replica: it leads at once)."""
    worker = [*cli, "worker", args.app, "--concurrency", str(args.concurrency)]
    materializer = [*cli, "materialize", "--app", args.app]
    if "worker" in metrics:
        worker += ["--metrics-port", str(metrics["worker"])]
        materializer += ["--metrics-port", str(metrics["materializer"])]
    commands = {"worker": worker, "materializer": materializer}
    if app.periodic_tasks:
        commands["beat"] = [*cli, "beat", args.app]
    return commands


def _dev_already_running() -> int | None:
    try:
        pid = int(json.loads(DEV_STATE_FILE.read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def _share_metrics_dir(env: dict[str, str]) -> None:
    """One PROMETHEUS_MULTIPROC_DIR for the children (the user's own if set, kept as is)."""
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = STATE_DIR / "metrics"
    shutil.rmtree(directory, ignore_errors=True)  # values of a previous run's processes
    directory.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


def _metrics_ports(app: App) -> dict[str, int]:
    """The worker's and the materializer's /metrics ports: P and P + 1 (0: free ones)."""
    port = app.settings.metrics_port
    if port is None:
        return {}
    if port == 0:
        return {"worker": free_port(), "materializer": free_port()}
    ports = {"worker": port, "materializer": port + 1}
    for name, p in ports.items():
        if not _port_free(p):
            raise ConfigError(f"TASKSTREAM_METRICS_PORT: port {p} (the {name}'s) is taken")
    return ports


def _port_free(port: int) -> bool:
    """Nothing listens on `port`. With SO_REUSEADDR, as uvicorn and prometheus-client bind:
    connections of a server that just stopped (TIME_WAIT) do not make the port look taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop(supervisor: Supervisor, grace: float) -> None:
    """Stop the children in order; a second stop signal meanwhile stops them at once."""
    say(
        f"stopping: the worker finishes its tasks in flight (up to {grace:g}s), then the "
        "materializer stores their results; Ctrl-C again to stop at once"
    )
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    try:
        supervisor.stop(grace)
    except _Stop:
        pass  # stopped at once
