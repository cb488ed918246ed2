"""Dependencies point inward: producer -> core <- consumer."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def imported_modules(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return names


def test_the_producer_never_imports_the_consumer() -> None:
    assert not {
        m
        for m in imported_modules(REPO / "services/producer")
        if m.startswith("taskstream.consumer")
    }


def test_the_consumer_never_imports_the_producer() -> None:
    assert not {
        m
        for m in imported_modules(REPO / "services/consumer")
        if m.startswith("taskstream.producer")
    }


def test_only_the_codec_touches_fastavros_reader_and_writer() -> None:
    for path in (REPO / "services").rglob("*.py"):
        if path.name == "codec.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "fastavro":
                names = {a.name for a in node.names}
                assert not names & {"schemaless_reader", "schemaless_writer"}, path
