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
from taskstream.avro.compat import incompatibility
from taskstream.envelope import (
    RESULT_EVENT_SCHEMA_FILE,
    TASK_EVENT_SCHEMA_FILE,
    envelope_history,
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
        files[f"tasks/{name}.args.avsc"] = render(task.task_signature.args_schema)
        files[f"tasks/{name}.result.avsc"] = render(task.task_signature.result_schema)
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


def check(app: App, directory: Path) -> list[str]:
    """Raise SchemaDrift naming each file that is missing or differs from the code (saying
    whether the change is backward compatible), and each earlier envelope version
    (schemas/history) whose events the current envelope cannot read. Returns what was proven
    compatible, for the report (with what an earlier version's readers cannot read)."""
    differences = []
    for relative, text in expected_files(app).items():
        path = directory / relative
        if not path.exists():
            differences.append(f"{path}: missing")
        elif not _same(path.read_text(), text):
            problems = compatibility(json.loads(path.read_text()), json.loads(text))
            verdict = "; ".join(problems) if problems else "backward compatible"
            differences.append(f"{path}: differs from the code ({verdict})")
    proven = []
    for name in (TASK_EVENT_SCHEMA_FILE, RESULT_EVENT_SCHEMA_FILE):
        current = load_envelope_schema(name)
        for n, older in enumerate(envelope_history(name), start=1):
            # Required: taskstream reads every event of an earlier version still in a topic.
            backward = incompatibility(older, current)
            if backward is not None:
                differences.append(
                    f"{name} against version {n}: INCOMPATIBLE: a new reader cannot decode "
                    f"older events: {backward}"
                )
                continue
            # Reported: a reader of that version given new events (one that predates a new
            # enum symbol, say, has no default to read it as): upgrade readers first.
            forward = incompatibility(current, older)
            proven.append(
                f"{name}: backward compatible with version {n}"
                + ("" if forward is None else f" (a version {n} reader cannot read every new "
                   f"event: {forward}; upgrade readers before writers)")
            )  # fmt: skip
    if differences:
        raise SchemaDrift(differences)
    return proven


def compatibility(old: Any, new: Any) -> list[str]:
    """Why events of ``new`` cannot be read by readers of ``old``, or the other way round
    (Avro schema resolution); empty when both work."""
    problems = []
    why = incompatibility(new, old)
    if why is not None:
        problems.append(f"INCOMPATIBLE: an older reader cannot decode new events: {why}")
    why = incompatibility(old, new)
    if why is not None:
        problems.append(f"INCOMPATIBLE: a new reader cannot decode older events: {why}")
    return problems


def _same(a: str, b: str) -> bool:
    """Equal as JSON: formatting is free, content is not."""
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False
