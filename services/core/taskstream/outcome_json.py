"""A stored outcome as JSON: the one rendering the CLI (`taskstream result`) and the HTTP
service (GET /v1/tasks/{id}) both answer with."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from taskstream.status import Status
from taskstream.store import Progress, ResultRecord

ResultJson = Callable[[str, bytes], Any]  # (task name, Avro bytes) -> the return value as JSON


def outcome_json(
    record: ResultRecord, result_json: ResultJson, progress: Progress | None = None
) -> dict[str, Any]:
    """Every field of ``record``; ``result`` (SUCCESS) through ``result_json``, ``error``
    (FAILURE, RETRY) as type, message and traceback; absent ones are null. ``state`` is the
    status, or while the task runs the custom state of its latest ``update_state()``
    (``progress``), whose ``meta`` comes along."""
    out: dict[str, Any] = {
        "task_id": record.task_id,
        "task": record.task,
        "status": record.status.value,
        "attempt": record.attempt,
        "key": record.key,
        "worker": record.worker,
        "enqueued_at": _iso(record.enqueued_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "result": None,
        "error": None,
        "state": record.status.value,
        "meta": None,
    }
    if progress is not None and record.status is Status.STARTED:
        out["state"] = progress.state
        out["meta"] = None if progress.meta is None else json.loads(progress.meta)
    if record.status is Status.SUCCESS and record.result is not None:
        out["result"] = result_json(record.task, record.result)
    if record.error_type is not None:
        out["error"] = {
            "type": record.error_type,
            "message": record.error_message or "",
            "traceback": record.error_traceback or "",
        }
    return out


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
