"""`taskstream schemas export/check` keep schemas/ in step with the code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from taskstream import App
from taskstream.errors import SchemaDrift
from taskstream.schema_files import check, export
from tests.conftest import REPO


def example_app() -> App:
    from examples.app import app

    return app


def test_the_checked_in_schemas_match_the_example_app() -> None:
    check(example_app(), REPO / "schemas")


def test_export_writes_every_task_schema_and_the_envelopes(tmp_path: Path) -> None:
    written = export(example_app(), tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert "task_event.avsc" in names and "result_event.avsc" in names
    assert "tasks/examples.app.add.args.avsc" in names
    assert export(example_app(), tmp_path) == []  # nothing changed the second time
    check(example_app(), tmp_path)


def test_check_names_each_file_that_drifted(tmp_path: Path) -> None:
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    app = App("drift", bootstrap_servers="unused:1", store="memory://")

    @app.task(name="examples.app.add")
    def add(a: int, b: float) -> int:  # b changed type
        return a

    with pytest.raises(SchemaDrift) as drift:
        check(app, tmp_path / "schemas")
    assert drift.value.differences == [
        f"{tmp_path / 'schemas' / 'tasks' / 'examples.app.add.args.avsc'}: differs from the code"
    ]


def test_checked_in_schemas_are_plain_avro_any_library_can_read() -> None:
    from fastavro import parse_schema

    for path in (REPO / "schemas").rglob("*.avsc"):
        parse_schema(json.loads(path.read_text()))
