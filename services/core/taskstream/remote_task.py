"""A task this app has no code for, known by its published schemas: ``app.send_task``.

Celery's ``send_task(name, args, kwargs)`` is how a web app sends work to workers that have
the code. Here the arguments are still checked before sending: by the task's argument record
in the schemas directory (``taskstream schemas export`` writes ``tasks/<name>.args.avsc`` and
``.result.avsc``; ``Settings.schemas_dir``, ``TASKSTREAM_SCHEMAS_DIR``). A task without
schema files there is an UnknownTask saying where they were looked for.

Arguments are matched to the record's fields in order (positional) and by name, then
converted by the one schema-driven converter (taskstream.avro.json), which takes what
Celery's JSON serializer sends: numbers, strings, lists, dicts, and here also datetimes,
dates, UUIDs, Decimals, bytes, enums and dataclasses, turned into their JSON forms first.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from taskstream.avro.codec import AvroSchema
from taskstream.avro.json import JsonConverter
from taskstream.envelope import TaskEvent, now_micros
from taskstream.errors import InvalidArguments, InvalidSchema, UnknownTask
from taskstream.task import call_args, new_task_id, set_call_options

if TYPE_CHECKING:
    from taskstream.app import App
    from taskstream.result import AsyncResult

ARGS_SUFFIX = ".args.avsc"
RESULT_SUFFIX = ".result.avsc"


class RemoteTask:
    """A task by name and schemas only: sends, never runs."""

    def __init__(self, app: App, name: str, args_schema: Any, result_schema: Any) -> None:
        if not (isinstance(args_schema, dict) and args_schema.get("type") == "record"):
            raise InvalidSchema(f"{name}: an args schema must be a record")
        self.app = app
        self.name = name
        self.fields: tuple[str, ...] = tuple(f["name"] for f in args_schema["fields"])
        self.args_schema: AvroSchema = app.codec.register(args_schema)
        # Registered so that a result decodes by its fingerprint (as a plain Avro datum).
        self.result_schema: AvroSchema = app.codec.register(result_schema)
        self._converter = JsonConverter(args_schema)

    def __repr__(self) -> str:
        return f"<RemoteTask {self.name}>"

    @classmethod
    def from_schemas(cls, app: App, name: str, directory: str | Path) -> RemoteTask:
        """The task's schemas from ``directory/tasks``; UnknownTask when they are not there."""
        folder = Path(directory) / "tasks"
        args_path, result_path = folder / f"{name}{ARGS_SUFFIX}", folder / f"{name}{RESULT_SUFFIX}"
        if not args_path.is_file() or not result_path.is_file():
            raise UnknownTask(
                name,
                f"app {app.name!r} has no code for it and no schema in {folder} "
                f"({args_path.name} and {result_path.name}: write them with `taskstream "
                "schemas export` where the task's code is, or set TASKSTREAM_SCHEMAS_DIR)",
            )
        return cls(app, name, _read(args_path), _read(result_path))

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """The args record of a call, checked against the schema (InvalidArguments)."""
        if len(args) > len(self.fields):
            raise InvalidArguments(
                self.name, "args", f"takes {len(self.fields)} arguments, {len(args)} given"
            )
        record = dict(zip(self.fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in self.fields:
                raise InvalidArguments(self.name, f"args.{name}", "unexpected argument")
            if name in record:
                raise InvalidArguments(self.name, f"args.{name}", "given twice")
            record[name] = value
        datum = self._converter.to_datum(jsonable(record), task=self.name, root="args")
        return self.app.codec.encode(self.args_schema, datum)

    def apply_async(
        self,
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send it, with ``Task.apply_async``'s options (but ``link``/``link_error``: they
        need the tasks' code). ``queue``: the task's queue (default: the default queue; the
        schema files do not say)."""
        from taskstream.app import DEFAULT_QUEUE

        for option in ("link", "link_error"):
            if options.get(option) is not None:
                raise InvalidArguments(self.name, option, "needs the task's code in this app")
            options.pop(option, None)
        event = TaskEvent(
            id=task_id or new_task_id(), task=self.name, queue=queue or DEFAULT_QUEUE, key=key,
            attempt=1, enqueued_at=now_micros(), not_before=None,
            args=self.encode_args(*call_args(args, kwargs)),
        )  # fmt: skip
        set_call_options(event, None, **options)
        result = self.app.publish(event)
        result.ignored = event.ignore_result
        return result


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidSchema(f"cannot read {path}: {exc}") from exc


def jsonable(value: Any) -> Any:
    """A Python value as the JSON taskstream.avro.json reads (Celery's JSON serializer's
    forms for datetimes, UUIDs and Decimals)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value  # the converter says what it expected
