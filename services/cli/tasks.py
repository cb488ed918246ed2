"""``taskstream send`` and ``taskstream result``: one task in, one outcome out."""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

from taskstream.app import App
from taskstream.errors import InvalidArguments, InvalidSchema, UnknownSchema, UnknownTask
from taskstream.loading import load_app
from taskstream.outcome_json import outcome_json
from taskstream.remote_task import RemoteTask, jsonable
from taskstream.status import Status

UNKNOWN_TASK_ID = {
    "code": "unknown_task_id",
    "message": "no outcome stored: not started yet, unknown, expired (result_expires) or forgotten",
}


def send(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    task = app.get_task(args.task)
    try:
        payload = json.loads(args.arguments)
    except ValueError as exc:
        raise InvalidArguments(task.name, "args", f"not JSON: {exc}") from exc
    kwargs = task.task_signature.args_from_json(payload)
    result = task.apply_async((), kwargs, key=args.key, queue=args.queue)
    result.wait_delivered(app.settings.delivery_timeout_ms / 1000)
    print(result.id)
    if args.wait is not None:
        value = result.get(timeout=args.wait)
        print(json.dumps(task.task_signature.result_to_json(value)))
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
    record = handle.record
    if record is None:
        # As GET /v1/tasks/{id} answers a task id it did not accept itself (404): the store
        # cannot tell an id not run yet from an unknown, expired or forgotten one.
        print(json.dumps({"task_id": args.task_id, "error": UNKNOWN_TASK_ID}))
        return 1

    def result_json(task_name: str, data: bytes) -> Any:
        task = app.tasks.get(task_name)
        if task is None:
            _register_result_schema(app, task_name)
        try:
            value = app.decode_result(task_name, data)
        except UnknownSchema:
            # No code and no schema file: the value as stored, and where a schema would help.
            return {
                "avro_base64": base64.b64encode(data).decode("ascii"),
                "note": f"no schema for {task_name!r}: pass --app, or put its "
                f"tasks/{task_name}.result.avsc in {app.settings.schemas_dir!r} "
                "(taskstream schemas export; TASKSTREAM_SCHEMAS_DIR)",
            }
        return task.task_signature.result_to_json(value) if task else jsonable(value)

    out = outcome_json(record, result_json, app.store.progress(args.task_id))
    print(json.dumps(out, indent=2, default=str))
    app.close()
    return 0 if record.status not in (Status.FAILURE, Status.REVOKED) else 1


def _register_result_schema(app: App, task_name: str) -> None:
    """A task without code here: its result decodes by the schema files in the schemas
    directory (``schemas/`` by default), when they are there."""
    try:
        RemoteTask.from_schemas(app, task_name, app.settings.schemas_dir)
    except (UnknownTask, InvalidSchema):
        pass
