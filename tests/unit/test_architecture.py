"""Dependencies point inward: cli -> producer -> core <- consumer <- cli (and testing).

Core is ``services/core`` (the ``taskstream`` package and ``taskstream.store``); the
producer, the consumer, the command line (``services/cli``, ``taskstream.cli``) and the
users' test harness (``services/testing``, ``taskstream.testing``) sit around it. Imports
made only for type checking, or lazily inside a function, count too: they are dependencies
all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

CORE = REPO / "services" / "core"
OUTER = ("taskstream.producer", "taskstream.consumer", "taskstream.cli", "taskstream.testing")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (``from a import b`` counts ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def imported_modules(folder: Path) -> set[str]:
    return {name for path in folder.rglob("*.py") for name in imports_of(path)}


def _outer(names: set[str]) -> set[str]:
    return {m for m in names if m.startswith(OUTER)}


def _core_modules() -> list[object]:
    params: list[object] = []
    for path in sorted(CORE.rglob("*.py")):
        params.append(pytest.param(path, id=str(path.relative_to(CORE))))
    return params


@pytest.mark.parametrize("path", _core_modules())
def test_core_imports_neither_the_producer_nor_the_consumer_nor_the_cli(path: Path) -> None:
    assert not _outer(imports_of(path)), path


def test_the_check_sees_an_outward_import() -> None:
    assert _outer({"taskstream.cli.dev", "taskstream.consumer", "taskstream.producer.result"})
    assert not _outer({"taskstream", "taskstream.config", "taskstream.store.base"})


def test_only_the_cli_imports_the_cli() -> None:
    for folder in ("core", "producer", "consumer"):
        names = imported_modules(REPO / "services" / folder)
        assert not {m for m in names if m.startswith("taskstream.cli")}, folder


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
