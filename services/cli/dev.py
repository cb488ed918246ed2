"""What each ``taskstream`` subcommand does (argument parsing is in cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from taskstream.app import App
from taskstream.config import DEV_STATE_FILE, clear_dev_state, write_dev_state
from taskstream.errors import ConfigError, InvalidArguments
from taskstream.loading import load_app
from taskstream.status import Status
from taskstream.topics import results_topic


def _serve_metrics(flag: int | None, app: App) -> None:
    """Prometheus /metrics on --metrics-port, else TASKSTREAM_METRICS_PORT, else nowhere."""
    port = flag if flag is not None else app.settings.metrics_port
    if port is not None:
        from taskstream.metrics import serve_metrics

        serve_metrics(port)


def worker(args: argparse.Namespace) -> int:
    from taskstream.consumer.worker import Worker

    app = load_app(args.app)
    _serve_metrics(args.metrics_port, app)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    w = Worker(
        app,
        queues=queues,
        concurrency=args.concurrency,
        max_tasks_in_flight=args.max_tasks_in_flight,
    )
    w.install_signal_handlers()
    w.run()
    return 0


def materialize(args: argparse.Namespace) -> int:
    from taskstream.consumer.materializer import Materializer

    app = load_app(args.app) if args.app else App("taskstream")
    _serve_metrics(args.metrics_port, app)
    m = Materializer(app, rebuild=args.rebuild)

    def handle(_signum: int, _frame: object) -> None:
        m.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    m.run()
    app.close()
    return 0


def send(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    task = app.get_task(args.task)
    try:
        payload = json.loads(args.arguments)
    except ValueError as exc:
        raise InvalidArguments(task.name, "args", f"not JSON: {exc}") from exc
    kwargs = task.signature.args_from_json(payload)
    result = task.apply_async((), kwargs, key=args.key, queue=args.queue)
    result.wait_delivered(app.settings.delivery_timeout_ms / 1000)
    print(result.id)
    if args.wait is not None:
        value = result.get(timeout=args.wait)
        print(json.dumps(task.signature.result_to_json(value)))
    app.close()
    return 0


def result(args: argparse.Namespace) -> int:
    app = load_app(args.app) if args.app else App("taskstream")
    handle = app.result(args.task_id)
    if args.wait is not None:
        try:
            handle.get(timeout=args.wait)
        except Exception:
            pass
    record = handle.info
    if record is None:
        print(json.dumps({"task_id": args.task_id, "status": Status.PENDING.value}))
        return 1
    out: dict[str, Any] = {
        "task_id": record.task_id,
        "task": record.task,
        "status": record.status.value,
        "attempt": record.attempt,
        "worker": record.worker,
        "enqueued_at": record.enqueued_at.isoformat() if record.enqueued_at else None,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
    }
    if record.status is Status.SUCCESS:
        value = app.decode_result(record.task, record.result)
        task = app.tasks.get(record.task)
        out["result"] = task.signature.result_to_json(value) if task else repr(value)
    if record.error_type is not None:
        out["error"] = {
            "type": record.error_type,
            "message": record.error_message,
            "traceback": record.error_traceback,
        }
    print(json.dumps(out, indent=2))
    app.close()
    return 0 if record.status is not Status.FAILURE else 1


def serve(args: argparse.Namespace) -> int:
    from taskstream.producer.http.server import Source
    from taskstream.producer.http.server import serve as run

    if (args.app is None) == (args.schemas is None):
        raise ConfigError("serve takes an app (module:attribute) or --schemas DIR, one of them")
    queues = {}
    for pair in args.queue:
        task, sep, queue = pair.partition("=")
        if not sep or not task or not queue:
            raise ConfigError(f"--queue {pair!r}: use TASK=QUEUE")
        queues[task] = queue
    if queues and args.app:
        raise ConfigError("--queue applies to --schemas only (an app knows its queues)")
    run(Source(args.app, args.schemas, queues), args.host, args.port, args.workers)
    return 0


def dlq(args: argparse.Namespace) -> int:
    from datetime import datetime

    from taskstream.consumer.dlq import read_dead_letters, replay

    app = load_app(args.app) if args.app else App("taskstream")
    since = datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        raise ConfigError("--since needs a timezone, e.g. 2026-11-25T10:00:00+00:00")
    letters = [
        letter
        for letter in read_dead_letters(app)
        if (args.task is None or letter.task == args.task)
        and (args.reason is None or letter.reason == args.reason)
        and (since is None or letter.time >= since)
    ]
    if args.action == "replay":
        print(f"replayed {replay(app, letters)} dead letters")
        return 0
    for letter in letters:
        row = {
            "dlq_offset": f"{letter.partition}:{letter.offset}",
            "reason": letter.reason,
            "task": letter.task,
            "from": f"{letter.topic}[{letter.original_partition}]@{letter.original_offset}",
            "time": letter.time.isoformat(),
            "error": letter.error,
        }
        if args.json:
            print(json.dumps(row))
        else:
            print("  ".join(f"{v}" for v in row.values()))
    if not args.json:
        print(f"{len(letters)} dead letters", file=sys.stderr)
    return 0


def schemas(args: argparse.Namespace) -> int:
    from taskstream import schema_files

    app = load_app(args.app)
    directory = Path(args.dir or app.settings.schemas_dir)
    if args.action == "export":
        for path in schema_files.export(app, directory):
            print(f"wrote {path}")
        return 0
    schema_files.check(app, directory)
    print(f"{directory}: up to date with {args.app} ({len(app.tasks)} tasks)")
    return 0


# -- dev ------------------------------------------------------------------------------------


def _dev_already_running() -> int | None:
    try:
        pid = int(json.loads(DEV_STATE_FILE.read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def dev(args: argparse.Namespace) -> int:
    from taskstream.embedded_broker import EmbeddedBroker

    running = _dev_already_running()
    if running is not None and running != os.getpid():
        raise ConfigError(f"taskstream dev is already running here (pid {running})")
    clear_dev_state()  # a stale file from a dev that was killed
    app = load_app(args.app)
    broker: EmbeddedBroker | None = None
    env = dict(os.environ)
    bootstrap = app.settings.bootstrap_servers
    if not bootstrap:
        DEV_STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(log_path=DEV_STATE_FILE.parent / "broker.log").start()
        bootstrap = broker.bootstrap_servers
        write_dev_state(bootstrap)
        app.settings = app.settings.replace(bootstrap_servers=bootstrap)
        # The embedded broker starts empty: results and offsets of an earlier run would make
        # the materializer skip the new run's first results.
        app.store.reset(results_topic(app.settings.topic_prefix))
    env["TASKSTREAM_BOOTSTRAP_SERVERS"] = bootstrap
    children: list[subprocess.Popen[bytes]] = []
    try:
        created = app.ensure_topics()
        cli = [sys.executable, "-m", "taskstream", "--log-level", args.log_level]
        children.append(
            subprocess.Popen(
                [*cli, "worker", args.app, "--concurrency", str(args.concurrency)], env=env
            )
        )
        children.append(subprocess.Popen([*cli, "materialize", "--app", args.app], env=env))
        http_port = args.http_port if args.http_port and _port_free(args.http_port) else 0
        if args.http_port and not http_port:
            print(f"taskstream dev: port {args.http_port} is taken; no HTTP API (use --http-port)")
        if http_port:
            serve_cmd = [*cli, "serve", args.app, "--port", str(http_port)]
            children.append(subprocess.Popen(serve_cmd, env=env))
        _print_banner(app, args.app, bootstrap, broker is not None, created, http_port)
        return _wait_for(children)
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(app.settings.shutdown_grace_s + 5)
            except subprocess.TimeoutExpired:
                child.kill()
        app.close()
        if broker is not None:
            broker.stop()
            clear_dev_state()
        print("taskstream dev: stopped", file=sys.stderr)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for(children: list[subprocess.Popen[bytes]]) -> int:
    stop = False

    def handle(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handle)
    while not stop:
        for child in children:
            if child.poll() is not None:
                print(
                    f"taskstream dev: {child.args[4]} exited with {child.returncode}",
                    file=sys.stderr,
                )
                return 1
        time.sleep(0.2)
    return 0


def _own_command() -> str:
    """How the user ran us: `taskstream` when it is on PATH, else the path they typed."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) != "taskstream" or shutil.which("taskstream") == argv0:
        return "taskstream"
    return os.path.relpath(argv0)


_PLACEHOLDERS: dict[str, Any] = {"long": 2, "double": 1.5, "string": "text", "boolean": True}


def _print_banner(
    app: App, spec: str, bootstrap: str, embedded: bool, created: list[str], http_port: int = 0
) -> None:
    first = sorted(app.tasks)[0] if app.tasks else "TASK"
    example = {}
    if app.tasks:
        for field in app.tasks[first].signature.args_schema["fields"]:
            example[field["name"]] = _PLACEHOLDERS.get(str(field["type"]), None)
    where = "embedded Tansu broker, memory only" if embedded else "external cluster"
    command = _own_command()
    http = ""
    if http_port:
        url = f"http://127.0.0.1:{http_port}"
        body = json.dumps(example)
        http = f"""
Or over HTTP ({url}, API description at {url}/openapi.json):
  curl -s -X POST {url}/v1/tasks/{first} -H 'Content-Type: application/json' -d '{body}'
  curl -s '{url}/v1/tasks/<task-id>?wait=10'
"""
    print(
        f"""
taskstream dev is running {spec} ({len(app.tasks)} tasks, queues {", ".join(app.queues)})
  broker: {bootstrap} ({where}); {len(created)} topics created
  store:  {app.settings.store}

In another terminal, in this directory:
  {command} send {first} '{json.dumps(example)}' --app {spec} --wait 10
  {command} result <task-id> --app {spec}
{http}
Ctrl-C stops everything.
""",
        flush=True,
    )
