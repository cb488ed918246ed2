"""Dependencies point inward: cli -> producer -> core <- consumer <- cli (and testing).

Core is ``services/core/taskstream`` (the ``taskstream`` package and ``taskstream.store``; its
other subpackages are symlinks to the services around it, which the scans below skip); the
producer, the consumer, the console, the command line (``services/cli``, ``taskstream.cli``)
and the users' test harness (``services/testing``, ``taskstream.testing``) sit around it.
Imports made only for type checking, or lazily inside a function, count too: they are
dependencies all the same.

And one loop reads Kafka: only the consumer runtime calls ``poll``/``consume`` on a Kafka
Consumer, but for the hand-written readers listed in HAND_WRITTEN_READS.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

SERVICES = REPO / "services"
CORE = SERVICES / "core" / "taskstream"  # (rglob does not follow its symlinked subpackages)
OUTER = (
    "taskstream.producer",
    "taskstream.consumer",
    "taskstream.console",
    "taskstream.cli",
    "taskstream.testing",
)
RUNTIME = "services/consumer/runtime.py"  # the one poll / batch / commit / stop loop
# The loops that still read a Kafka Consumer by hand, by file::function, each with why it is
# not on the runtime. A new one fails the test below; take one off when it moves.
HAND_WRITTEN_READS = {
    "services/consumer/ownership/reader.py::JournalReader.read_new":
        "the ownership journal, by assignment in no group, without waiting, from the worker "
        "loop's turn (what it reads must apply on that thread) and only while a claim or a "
        "hand-over waits: the runtime would add a loop, a thread and a queue back",
    "services/core/taskstream/worker_directory.py::WorkerDirectory.poll":
        "tails the heartbeats topic by assignment, in no group; core may not import the runtime",
    "services/console/kafka_view.py::_heads":
        "a page's one-shot probe: each partition's first record, or its end, then it stops",
    "services/console/kafka_view.py::read_record":
        "a page's one-shot read of the record at one offset",
    "services/consumer/tier_scan.py::TierScan._read":
        "a bounded scan of the delay tiers to their ends for revoked ids, in no group",
    "services/cli/broker_watch.py::KafkaProbe.received":
        "taskstream dev's round trip to its broker, one record at a time, on plain clients",
    "services/cli/broker_watch.py::TaskTail._read":
        "taskstream dev's tail of its task topics, from their ends, in no group: timestamps only",
}  # fmt: skip


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
def test_core_imports_nothing_outward(path: Path) -> None:
    """Neither the producer, the consumer, the console, the CLI nor the testing package."""
    assert not _outer(imports_of(path)), path


def test_the_check_sees_an_outward_import() -> None:
    assert _outer({"taskstream.cli.dev", "taskstream.consumer", "taskstream.producer.result"})
    assert _outer({"taskstream.console.kafka_view"})
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


def _is_consumer_type(annotation: ast.expr | None) -> bool:
    return (
        annotation is not None and re.search(r"\bConsumer\b", ast.unparse(annotation)) is not None
    )


def _consumer_names(tree: ast.Module) -> set[str]:
    """What a module binds to a Kafka Consumer, as source text (``consumer``,
    ``self._reader``): made by ``Consumer(...)``, ``broker.consumer(...)`` or a function
    annotated to return one, annotated ``Consumer``, or assigned from such a name."""
    makers = {"Consumer", "consumer"} | {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _is_consumer_type(node.returns)
    }
    names: set[str] = set()

    def is_consumer(value: ast.expr | None) -> bool:
        if isinstance(value, ast.Call):
            func = value.func
            made = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            return made in makers
        return value is not None and ast.unparse(value) in names

    while True:  # until no assignment adds a name (``self.consumer = consumer``)
        before = len(names)
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and _is_consumer_type(node.annotation):
                names.add(node.arg)
            elif isinstance(node, ast.AnnAssign) and (
                _is_consumer_type(node.annotation) or is_consumer(node.value)
            ):
                names.add(ast.unparse(node.target))
            elif isinstance(node, ast.Assign) and is_consumer(node.value):
                names.update(ast.unparse(t) for t in node.targets)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                if is_consumer(node.context_expr):
                    names.add(ast.unparse(node.optional_vars))
        if len(names) == before:
            return names


def consumer_reads(source: str) -> set[str]:
    """The functions (``Class.method``) of a module that read a Kafka Consumer: any
    ``consume()`` call (a Producer has none), and ``poll()`` on a name the module binds to a
    Consumer. A producer's or admin client's ``poll()`` only serves callbacks: not a read."""
    tree = ast.parse(source)
    names = _consumer_names(tree)
    found: set[str] = set()

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, (*scope, child.name))
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                method, receiver = child.func.attr, ast.unparse(child.func.value)
                if method == "consume" or (method == "poll" and receiver in names):
                    found.add(".".join(scope) or "<module>")
            visit(child, scope)

    visit(tree, ())
    return found


def test_only_the_consumer_runtime_reads_a_kafka_consumer() -> None:
    found: set[str] = set()
    for path in sorted(SERVICES.rglob("*.py")):
        where = str(path.relative_to(REPO))
        if where != RUNTIME:
            found.update(f"{where}::{f}" for f in consumer_reads(path.read_text()))
    assert found == set(HAND_WRITTEN_READS)
    assert consumer_reads((REPO / RUNTIME).read_text())  # the check still sees the runtime


def test_the_check_sees_a_hand_written_read_loop() -> None:
    made = "def tail(app):\n    c = app.broker.consumer({})\n    while True:\n        c.poll(1)\n"
    handed = (
        "class Reader:\n"
        "    def __init__(self, reader: Consumer | None) -> None:\n"
        "        self._reader = reader\n"
        "    def read(self):\n"
        "        return self._reader.poll(0.1)\n"
    )
    opened = "def _open() -> Consumer: ...\ndef f():\n    c = _open()\n    c.poll(0)\n"
    consumed = "def f(anything):\n    anything.consume(10, 0)\n"
    callbacks = "def f(app):\n    p = app.broker.producer({})\n    p.poll(0)\n    admin.poll(0)\n"
    assert consumer_reads(made) == {"tail"}
    assert consumer_reads(handed) == {"Reader.read"}
    assert consumer_reads(opened) == {"f"}
    assert consumer_reads(consumed) == {"f"}
    assert consumer_reads(callbacks) == set()
