"""``taskstream send`` and ``taskstream result``: one task in, one outcome out."""

from __future__ import annotations

import argparse
import json
from typing import Any

from taskstream.app import App
from taskstream.errors import InvalidArguments
from taskstream.loading import load_app
from taskstream.outcome_json import outcome_json
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
        value = app.decode_result(task_name, data)
        task = app.tasks.get(task_name)
        return task.task_signature.result_to_json(value) if task else repr(value)

    out = outcome_json(record, result_json, app.store.progress(args.task_id))
    print(json.dumps(out, indent=2))
    app.close()
    return 0 if record.status not in (Status.FAILURE, Status.REVOKED) else 1
