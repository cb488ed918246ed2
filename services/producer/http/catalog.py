"""The tasks an HTTP service accepts: name, queue, argument and result schemas.

Built from an app (``Catalog.from_app``) or from the ``schemas/`` files alone
(``Catalog.from_schemas``), so the web tier need not import worker code. Either way a request
body is converted by the Avro argument schema (taskstream.avro.json): one path for both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskstream.app import DEFAULT_QUEUE, App, queues_of, task_named
from taskstream.avro.codec import AvroSchema, Codec
from taskstream.avro.json import JsonConverter
from taskstream.envelope import Envelopes
from taskstream.errors import ConfigError

ARGS_SUFFIX = ".args.avsc"
RESULT_SUFFIX = ".result.avsc"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    queue: str
    args: AvroSchema
    result: AvroSchema
    converter: JsonConverter
    doc: str | None = None
    # The task's own options, as task.delay() applies them (an app's tasks only: schema
    # files do not carry them).
    expires_s: float | None = None
    ignore_result: bool = False
    priority: int | None = None  # @app.task(priority=...): the default of a request's


class Catalog:
    """Task specs by name, sharing one codec and envelope set with the publisher."""

    def __init__(self, codec: Codec, tasks: dict[str, TaskSpec]) -> None:
        self.codec = codec
        self.envelopes = Envelopes(codec)
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, name: str) -> TaskSpec:
        return task_named(self.tasks, name)

    @property
    def queues(self) -> list[str]:
        return queues_of(t.queue for t in self.tasks.values())

    @classmethod
    def from_app(cls, app: App) -> Catalog:
        tasks = {
            name: TaskSpec(
                name=name,
                queue=task.queue,
                args=task.args_schema,
                result=task.result_schema,
                converter=JsonConverter(task.task_signature.args_schema),
                doc=task.__doc__,
                expires_s=task.options.expires,
                ignore_result=task.options.ignore_result,
                priority=task.options.priority,
            )
            for name, task in sorted(app.tasks.items())
        }
        return cls(app.codec, tasks)

    @classmethod
    def from_schemas(cls, directory: str | Path, queues: dict[str, str] | None = None) -> Catalog:
        """Every ``tasks/<name>.args.avsc`` with its ``.result.avsc`` under `directory`.

        The files do not say which queue a task belongs to: `queues` maps task names to
        queues, and the rest go to the default queue.
        """
        folder = Path(directory) / "tasks"
        if not folder.is_dir():
            raise ConfigError(
                f"{folder} does not exist (write it with `taskstream schemas export`)"
            )
        codec = Codec()
        queues = dict(queues or {})
        tasks = {}
        for args_path in sorted(folder.glob(f"*{ARGS_SUFFIX}")):
            name = args_path.name[: -len(ARGS_SUFFIX)]
            result_path = folder / f"{name}{RESULT_SUFFIX}"
            if not result_path.exists():
                raise ConfigError(f"{args_path} has no {result_path.name} beside it")
            args_schema, result_schema = _read(args_path), _read(result_path)
            tasks[name] = TaskSpec(
                name=name,
                queue=queues.pop(name, DEFAULT_QUEUE),
                args=codec.register(args_schema),
                result=codec.register(result_schema),
                converter=JsonConverter(args_schema),
                doc=args_schema.get("doc") if isinstance(args_schema, dict) else None,
            )
        if queues:
            raise ConfigError(
                f"queues given for tasks without schemas: {', '.join(sorted(queues))}"
            )
        return cls(codec, tasks)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read schema {path}: {exc}") from exc
