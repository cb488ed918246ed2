"""`taskstream schemas export/check` keep schemas/ in step with the code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from taskstream import App
from taskstream.cli.schema_files import check, compatibility, export
from taskstream.errors import SchemaDrift
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
    path = tmp_path / "schemas" / "tasks" / "examples.app.add.args.avsc"
    assert drift.value.differences == [
        f"{path}: differs from the code (INCOMPATIBLE: an older reader cannot decode new "
        "events: b: double cannot be read as long)"
    ]


def test_the_envelopes_are_proven_backward_compatible_with_every_earlier_version() -> None:
    proven = check(example_app(), REPO / "schemas")
    for version in (1, 2, 3):
        assert f"task_event.avsc: backward compatible with version {version}" in proven
    assert "result_event.avsc: backward compatible with version 2" in proven
    # Version 1's status enum had no default: its readers cannot read a REVOKED outcome.
    (v1,) = [
        p for p in proven if p.startswith("result_event.avsc: backward compatible with version 1")
    ]
    assert "REVOKED" in v1 and "upgrade readers before writers" in v1


def test_compatibility_of_envelope_changes() -> None:
    old = json.loads((REPO / "schemas" / "history" / "task_event.v1.avsc").read_text())
    added = {**old, "fields": [*old["fields"], {"name": "x", "type": "int", "default": 0}]}
    assert compatibility(old, added) == []
    no_default = {**old, "fields": [*old["fields"], {"name": "x", "type": "int"}]}
    assert compatibility(old, no_default) == [
        "INCOMPATIBLE: a new reader cannot decode older events: x: the reader needs it and "
        "the writer has no such field"
    ]
    reordered = {**old, "fields": list(reversed(old["fields"]))}
    assert compatibility(old, reordered) == []  # resolution goes by name


def test_an_enum_symbol_needs_a_default_for_older_readers() -> None:
    old = {"type": "enum", "name": "S", "symbols": ["A", "B"]}
    new = {"type": "enum", "name": "S", "symbols": ["A", "B", "C"]}
    assert compatibility(old, new) == [
        "INCOMPATIBLE: an older reader cannot decode new events: the value: the reader's "
        "enum lacks ['C'] and has no default"
    ]
    assert compatibility({**old, "default": "A"}, new) == []


def test_checked_in_schemas_are_plain_avro_any_library_can_read() -> None:
    from fastavro import parse_schema

    for path in (REPO / "schemas").rglob("*.avsc"):
        parse_schema(json.loads(path.read_text()))
