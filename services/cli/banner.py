"""What ``taskstream dev`` prints once it runs: where things are, and how to send a task."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from taskstream.app import App
from taskstream.store.base import redacted_url

# Example values by Avro type, for the banner's sample arguments.
_PLACEHOLDERS: dict[str, Any] = {"long": 2, "int": 2, "double": 1.5, "float": 1.5,
                                 "string": "text", "boolean": True}  # fmt: skip
# The broker line's words for dev's own broker, by --broker.
_BROKERS = {
    "tansu": "embedded Tansu broker, memory only",
    "kafka": "Apache Kafka, one node, data in a temporary directory",
}
# The embedded broker's limit, measured (issue 27; the README's quick start says the same).
_TANSU_LIMIT = "Tansu slows as data grows: waits pass 1 s in ~12 min at 100/s, 2-5 min at 1,000/s"
_TANSU_WAYS_OUT = "for load tests: --broker kafka (needs java, mvn); restarting dev empties it"
# Task names that suggest the task is there to fail (a demo of errors): not the example.
_FAILING_WORDS = ("fail", "error", "raise", "boom", "crash", "poison", "explode")


def example_arguments(app: App, task: str) -> tuple[dict[str, Any], int]:
    """Sample arguments for `task` and how many of them have no usable placeholder."""
    example: dict[str, Any] = {}
    unknown = 0
    for f in app.tasks[task].task_signature.args_schema["fields"]:
        if "default" in f:
            continue  # optional: leave it out
        kind = f["type"]
        if isinstance(kind, str) and kind in _PLACEHOLDERS:
            example[f["name"]] = _PLACEHOLDERS[kind]
        elif isinstance(kind, list) and "null" in kind:
            example[f["name"]] = None
        else:
            example[f["name"]] = None
            unknown += 1
    return example, unknown


def example_task(app: App) -> str | None:
    """The task the banner shows: one likely to succeed with placeholder arguments.

    ``add`` first (the README's example), then tasks whose name does not suggest a failure,
    then those whose every argument gets a placeholder; then by name.
    """

    def rank(name: str) -> tuple[bool, bool, int, str]:
        short = name.rsplit(".", 1)[-1].lower()
        failing = any(word in short for word in _FAILING_WORDS)
        return (short != "add", failing, example_arguments(app, name)[1], name)

    return min(app.tasks, key=rank, default=None)


def own_command() -> str:
    """How the user ran us: `taskstream` when it is on PATH, else the path they typed."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) != "taskstream" or shutil.which("taskstream") == argv0:
        return "taskstream"
    return os.path.relpath(argv0)


@dataclass
class Banner:
    app: App
    spec: str  # module:attribute
    bootstrap: str
    embedded: bool  # dev runs its own broker (and emptied the store)
    created: list[str]  # topics created at start
    broker: str = "tansu"  # dev's own broker: "tansu" or "kafka" (unused when not embedded)
    http_port: int = 0  # 0: no HTTP API
    http_port_taken: int | None = None  # the HTTP port asked for, when it was taken
    metrics_ports: dict[str, int] = field(default_factory=dict)  # child -> /metrics port

    def render(self) -> str:
        app, spec, command = self.app, self.spec, own_command()
        task = example_task(app) or "TASK"
        example = json.dumps(example_arguments(app, task)[0] if app.tasks else {})
        where = _BROKERS[self.broker] if self.embedded else "external cluster"
        store = redacted_url(app.settings.store)
        if self.embedded:
            which = "embedded broker" if self.broker == "tansu" else "Kafka of dev"
            store += f" (emptied: the {which} starts empty)"
        lines = [
            "",
            f"taskstream dev is running {spec} "
            f"({len(app.tasks)} tasks, queues {', '.join(app.queues)})",
            f"  broker:  {self.bootstrap} ({where}); {len(self.created)} topics created",
            f"  store:   {store}",
        ]
        if self.embedded and self.broker == "tansu":
            lines += [f"  limit:   {_TANSU_LIMIT}", f"           {_TANSU_WAYS_OUT}"]
        if app.periodic_tasks:
            lines.append(f"  beat:    {len(app.periodic_tasks)} periodic tasks (taskstream beat)")
        url = f"http://127.0.0.1:{self.http_port}"
        if self.http_port:
            lines.append(f"  HTTP:    {url} (/openapi.json; /metrics of every process)")
            lines.append(f"  console: {url}/ui")
        elif self.http_port_taken:
            lines.append(
                f"  HTTP:    none: port {self.http_port_taken} is taken (--http-port P to choose)"
            )
        if self.metrics_ports:
            where_metrics = ", ".join(
                f"{name} http://127.0.0.1:{port}/metrics"
                for name, port in self.metrics_ports.items()
            )
            lines.append(f"  metrics: {where_metrics}")
        if not app.tasks:
            lines += [
                "",
                f"{spec} defines no tasks: import the modules that define them there, or",
                "list them as App(..., include=['proj.tasks']) (Celery's include=).",
                "",
                "Ctrl-C stops everything.",
                "",
            ]
            return "\n".join(lines)
        lines += [
            "",
            "In another terminal, in this directory:",
            f"  {command} send {task} '{example}' --app {spec} --wait 10",
            f"  {command} result <task-id> --app {spec}",
        ]
        if self.http_port:
            lines += [
                "",
                "Or over HTTP:",
                f"  curl -s -X POST {url}/v1/tasks/{task} "
                f"-H 'Content-Type: application/json' -d '{example}'",
                f"  curl -s '{url}/v1/tasks/<task-id>?wait=10'",
            ]
        lines += ["", "Ctrl-C stops everything.", ""]
        return "\n".join(lines)
