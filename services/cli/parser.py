"""The ``taskstream`` command line: its subcommands and their options."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskstream", description="Background tasks on Kafka.")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    # --log-level also after the subcommand (taskstream worker app --log-level DEBUG); its
    # SUPPRESS default leaves the one given before the subcommand alone.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING (default INFO)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    w = command("worker", help="run tasks from the app's queues (a consumer-group member)")
    w.add_argument("app", help="the app, as module:attribute (e.g. examples.app:app)")
    w.add_argument("--concurrency", type=int, help="tasks run at once (threads / async slots)")
    w.add_argument("--queues", help="comma-separated queues (default: every queue of the app)")
    w.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    w.add_argument(
        "--max-tasks-in-flight", type=int, help="fetched, unfinished tasks before fetching pauses"
    )

    m = command("materialize", help="apply the results topic to the lookup store")
    m.add_argument("--app", help="module:attribute; settings from the environment when omitted")
    m.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    m.add_argument(
        "--rebuild",
        action="store_true",
        help="drop the store's rows and offsets, then re-read the results topic from the start",
    )

    b = command("beat", help="fire the app's periodic tasks (any replicas: one leads)")
    b.add_argument("app", help="module:attribute")
    b.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")

    d = command("dev", help="embedded broker + worker + materializer, for development")
    d.add_argument("app", help="module:attribute")
    d.add_argument("--concurrency", type=int, default=4, help="the worker's tasks run at once (4)")
    d.add_argument("--http-port", type=int, default=8000, help="port of the HTTP API (0: none)")
    d.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        help="the broker dev starts: tansu (default; embedded, starts in a second, holds ~100k "
        "tasks) or kafka (Apache Kafka, one node; needs java and mvn; for load tests)",
    )

    s = command("send", help="send a task by name with JSON arguments; prints its id")
    s.add_argument("task", help="task name, e.g. examples.app.add")
    s.add_argument("arguments", nargs="?", default="{}", help="JSON object, e.g. '{\"a\": 2}'")
    s.add_argument("--app", required=True, help="module:attribute")
    s.add_argument("--key", help="ordering key: one key, one partition, in order")
    s.add_argument("--queue", help="queue (default: the task's)")
    s.add_argument("--wait", type=float, metavar="SECONDS", help="also wait for the result")

    r = command("result", help="print a task's stored outcome as JSON")
    r.add_argument("task_id")
    r.add_argument(
        "--app",
        help="module:attribute (to decode return values by type); without it, by the"
        " schema files in schemas_dir, else the value is shown as stored (base64)",
    )
    r.add_argument("--wait", type=float, metavar="SECONDS", help="wait for a final outcome")

    rv = command("revoke", help="revoke tasks: they never start; --terminate stops runs")
    rv.add_argument("task_ids", nargs="+", metavar="task_id")
    rv.add_argument("--app", help="module:attribute; settings from the environment when omitted")
    rv.add_argument(
        "--terminate", action="store_true", help="also stop a run in progress (sync tasks)"
    )

    h = command("serve", help="the HTTP API: send tasks and read results over HTTP")
    h.add_argument("app", nargs="?", help="module:attribute (or --schemas DIR without task code)")
    h.add_argument("--schemas", metavar="DIR", help="serve the tasks whose schemas are in DIR")
    h.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="TASK=QUEUE",
        help="with --schemas: the queue of a task (default: the default queue)",
    )
    h.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    h.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    h.add_argument("--workers", type=int, default=1, help="service processes")
    h.add_argument(
        "--allow-open",
        action="store_true",
        help="serve without TASKSTREAM_HTTP_TOKENS on a non-loopback --host (refused otherwise: "
        "anyone who reaches the port could send, read and revoke tasks)",
    )

    dl = command("dlq", help="list or replay the dead-letter topic")
    dl.add_argument("action", choices=["list", "replay"])
    dl.add_argument("--app", help="module:attribute; settings from the environment when omitted")
    dl.add_argument("--task", help="only letters of this task")
    dl.add_argument("--reason", help="only letters with this reason (e.g. unknown-task)")
    dl.add_argument("--since", help="only records first written at or after this ISO time")
    dl.add_argument("--json", action="store_true", help="list: one JSON object per line")

    wk = command("workers", help="the workers, from their heartbeats: state, tasks, lag")
    wk.add_argument("--app", help="module:attribute; settings from the environment when omitted")
    wk.add_argument("--json", action="store_true", help="a JSON list, one object per worker")
    wk.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to read the heartbeats (default 10)"
    )

    sc = command("schemas", help="export or check the task schemas in schemas/")
    sc.add_argument("action", choices=["export", "check"])
    sc.add_argument("app", help="module:attribute")
    sc.add_argument("--dir", help="schemas directory (default: TASKSTREAM_SCHEMAS_DIR or schemas)")
    return p
