"""``taskstream schemas export/check``: the task schemas as checked-in .avsc files.

Layout under the schemas directory::

    task_event.avsc, result_event.avsc      the envelopes
    tasks/<task name>.args.avsc             a task's arguments record
    tasks/<task name>.result.avsc           a task's return value
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taskstream.app import App
from taskstream.envelope import (
    RESULT_EVENT_SCHEMA_FILE,
    TASK_EVENT_SCHEMA_FILE,
    load_envelope_schema,
)
from taskstream.errors import SchemaDrift


def render(schema: Any) -> str:
    return json.dumps(schema, indent=2) + "\n"


def expected_files(app: App) -> dict[str, str]:
    """Relative path -> file text, for everything the app's schemas directory should hold."""
    files = {
        name: render(load_envelope_schema(name))
        for name in (TASK_EVENT_SCHEMA_FILE, RESULT_EVENT_SCHEMA_FILE)
    }
    for name, task in sorted(app.tasks.items()):
        files[f"tasks/{name}.args.avsc"] = render(task.signature.args_schema)
        files[f"tasks/{name}.result.avsc"] = render(task.signature.result_schema)
    return files


def export(app: App, directory: Path) -> list[Path]:
    """Write the app's schemas; returns the files written or changed."""
    written = []
    for relative, text in expected_files(app).items():
        path = directory / relative
        if path.exists() and _same(path.read_text(), text):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def check(app: App, directory: Path) -> None:
    """Raise SchemaDrift naming each file that is missing or differs from the code."""
    differences = []
    for relative, text in expected_files(app).items():
        path = directory / relative
        if not path.exists():
            differences.append(f"{path}: missing")
        elif not _same(path.read_text(), text):
            differences.append(f"{path}: differs from the code")
    if differences:
        raise SchemaDrift(differences)


def _same(a: str, b: str) -> bool:
    """Equal as JSON: formatting is free, content is not."""
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False
