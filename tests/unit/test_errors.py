"""One error tree: what taskstream raises is a TaskstreamError, drawn in errors.py."""

from __future__ import annotations

import ast
import builtins
import inspect
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from taskstream import App, current_request, errors
from taskstream.avro.codec import Codec
from taskstream.errors import (
    BrokerError,
    InvalidOption,
    InvalidSchema,
    MessageTooLarge,
    NoCurrentTask,
    TaskstreamError,
)
from taskstream.kafka.producer import EventProducer
from taskstream.producer.publisher import TaskPublisher
from tests.conftest import REPO

# Files whose errors are being reworked elsewhere (the worker runtime, the HTTP service, the
# commands leaving core); take each off this list once it raises only TaskstreamErrors.
NOT_YET = {
    # The in-memory fake of confluent-kafka's clients raises what the real clients raise.
    "services/testing/stub_broker.py",
    "services/testing/stub_share.py",
}
FOREIGN = {name for name, v in vars(builtins).items() if isinstance(v, type)} | {"KafkaException"}
ALLOWED = {"SystemExit", "NotImplementedError"}


def error_classes() -> list[type]:
    return [
        cls
        for cls in vars(errors).values()
        if inspect.isclass(cls) and issubclass(cls, TaskstreamError)
    ]


def test_every_error_class_is_drawn_in_the_tree() -> None:
    tree = errors.__doc__ or ""
    assert tree.splitlines()[2] == "TaskstreamError"
    undrawn = [c.__name__ for c in error_classes() if f"── {c.__name__} " not in tree]
    assert undrawn == ["TaskstreamError"]


def test_services_raise_only_taskstream_errors() -> None:
    found = []
    for path in sorted((REPO / "services").rglob("*.py")):
        where = str(path.relative_to(REPO))
        if where in NOT_YET:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in FOREIGN - ALLOWED:
                    found.append(f"{where}:{node.lineno}: {name}")
    assert found == []


def test_a_broker_error_is_still_a_kafka_exception_carrying_the_kafka_error() -> None:
    error = KafkaError(KafkaError._TRANSPORT, "down", fatal=True)
    exc = BrokerError.wrap(KafkaException(error), "listing topics")
    assert (exc.code, exc.name, exc.fatal) == (KafkaError._TRANSPORT, "_TRANSPORT", True)
    assert isinstance(exc, KafkaException)
    assert exc.args[0] is error
    assert str(exc) == "listing topics: down (_TRANSPORT)"
    assert BrokerError.wrap(KafkaException("no error object"), "x").code == KafkaError._FAIL


class _RefusingProducer:
    """A confluent Producer that refuses every message with `code`."""

    def __init__(self, code: int) -> None:
        self.code = code

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        raise KafkaException(KafkaError(self.code))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class _RefusingBroker:
    def __init__(self, code: int) -> None:
        self.code = code

    def producer(self, _config: dict[str, Any]) -> Any:
        return _RefusingProducer(self.code)

    def ensure_topics(self, _settings: Any, _specs: Any, _timeout: float = 30.0) -> list[str]:
        return []  # the topics exist


@pytest.mark.parametrize(
    ("code", "raised"),
    [(KafkaError.MSG_SIZE_TOO_LARGE, MessageTooLarge), (KafkaError._FATAL, BrokerError)],
)
def test_a_refused_event_raises_a_taskstream_error_naming_it(
    code: int, raised: type[Exception]
) -> None:
    app = App("t", store="memory://", bootstrap_servers="127.0.0.1:9")

    @app.task
    def echo(text: str) -> str:
        return text

    broker: Any = _RefusingBroker(code)  # the producer half of a Broker is all it needs
    publisher = TaskPublisher(app.settings, app.envelopes, broker)
    try:
        with pytest.raises(raised) as info:
            publisher.publish(echo.event(echo.encode_args(("x" * 100,), {})))
    finally:
        publisher.close(0)
    assert isinstance(info.value.__cause__, KafkaException)
    if isinstance(info.value, MessageTooLarge):
        assert info.value.task == echo.name
        assert info.value.size > 100
        assert info.value.limit == 1_000_000


def test_a_producer_error_is_a_broker_error() -> None:
    broker: Any = _RefusingBroker(KafkaError._FATAL)
    producer = EventProducer({}, broker=broker)
    with pytest.raises(BrokerError, match="producing to 'topic'"):
        producer.produce("topic", b"x")


def test_current_request_outside_a_task_is_a_no_current_task_error() -> None:
    with pytest.raises(NoCurrentTask):
        current_request()
    assert issubclass(NoCurrentTask, RuntimeError)


def test_unknown_or_out_of_range_task_options_are_named() -> None:
    app = App("t", store="memory://")
    with pytest.raises(InvalidOption, match="max_retrys") as info:
        app.task(max_retrys=3)
    assert info.value.option == "max_retrys"
    with pytest.raises(InvalidOption) as info:
        app.task(time_limit=0)
    assert (info.value.option, info.value.value) == ("time_limit", 0)


def test_a_schema_fastavro_cannot_parse_is_an_invalid_schema() -> None:
    with pytest.raises(InvalidSchema):
        Codec().register({"type": "record", "name": "R", "fields": [{"name": "x"}]})
    with pytest.raises(InvalidSchema):
        Codec().register({"type": "nope"})


def test_every_error_the_readme_names_is_importable_from_taskstream() -> None:
    """``from taskstream import InvalidOption`` works for each error the README or the
    pages of docs/ name."""
    import re
    from pathlib import Path

    import taskstream
    import taskstream.errors

    repo = Path(__file__).parents[2]
    docs = [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
    readme = "\n".join(page.read_text() for page in docs)
    named = set(re.findall(r"`([A-Z][A-Za-z]+)`", readme))
    root = taskstream.errors.TaskstreamError
    errors = {
        n
        for n in named
        if isinstance(e := getattr(taskstream.errors, n, None), type) and issubclass(e, root)
    }
    assert "InvalidOption" in errors
    assert sorted(n for n in errors if not hasattr(taskstream, n)) == []
