"""Result records for store tests: every field None but the ones a test names."""

from __future__ import annotations

import dataclasses
from typing import Any

from taskstream.status import Status
from taskstream.store import ResultRecord


def record(task_id: str = "t1", status: Status = Status.SUCCESS, **fields: Any) -> ResultRecord:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(ResultRecord)}
    values.update(task_id=task_id, task="add", status=status, attempt=1)
    values.update(fields)
    return ResultRecord(**values)
