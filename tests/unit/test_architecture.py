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


# Commands and the embedded broker are on their way out of core (to their own package).
_LEAVING_CORE = {"commands.py", "cli.py", "embedded_broker.py"}


def test_core_never_imports_the_producer_or_the_consumer() -> None:
    outward: set[str] = set()
    for path in (REPO / "services/core").rglob("*.py"):
        if path.name in _LEAVING_CORE and path.parent == REPO / "services/core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports in functions too
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            outward.update(
                f"{path.relative_to(REPO)}: {name}"
                for name in names
                if name.startswith(("taskstream.producer", "taskstream.consumer"))
            )
    assert not outward


def test_only_the_codec_touches_fastavros_reader_and_writer() -> None:
    for path in (REPO / "services").rglob("*.py"):
        if path.name == "codec.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "fastavro":
                names = {a.name for a in node.names}
                assert not names & {"schemaless_reader", "schemaless_writer"}, path
