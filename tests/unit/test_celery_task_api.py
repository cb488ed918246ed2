"""Celery's task API in Celery's own forms (issue 28), on the stub broker and in apply()."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import taskstream.testing
from taskstream import App


@pytest.fixture
def app() -> Iterator[App]:
    app = App("celeryapi", bootstrap_servers=None, topic_prefix="celeryapi", partitions=2)

    @app.task(name="celeryapi.add")
    def add(x: int, y: int, z: int | None = None) -> int:
        return x + y + (z or 0)

    yield app
    app.close()


# -- 1. args as any sequence -----------------------------------------------------------------


def test_apply_async_takes_a_list_of_args_as_celery_does(app: App) -> None:
    add = app.tasks["celeryapi.add"]
    with taskstream.testing.run(app):
        assert add.apply_async([1, 2]).get(timeout=10) == 3
        assert add.apply_async(args=[5, 6]).get(timeout=10) == 11
        assert add.apply_async(args=[5, 6], kwargs={"z": 1}).get(timeout=10) == 12
        assert app.send_task("celeryapi.add", [2, 2]).get(timeout=10) == 4
        assert add.s(1).apply_async([2]).get(timeout=10) == 3
    assert add.apply([1, 2]).get() == 3
    assert add.apply(args=[1, 2], kwargs={"z": 3}).get() == 6


def test_args_that_are_not_a_sequence_are_a_type_error_as_in_celery(app: App) -> None:
    add = app.tasks["celeryapi.add"]
    with pytest.raises(TypeError, match="list or tuple"):
        add.apply_async("12")
    with pytest.raises(TypeError, match="list or tuple"):
        add.apply_async(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        add.apply_async((1, 2), [("z", 1)])  # type: ignore[arg-type]


# -- 2. ignored results ----------------------------------------------------------------------


def test_a_per_call_ignore_result_stores_nothing_and_get_returns_none_at_once(app: App) -> None:
    add = app.tasks["celeryapi.add"]
    with taskstream.testing.run(app) as stub:
        result = add.apply_async((1, 2), ignore_result=True)
        assert result.ignored is True
        assert result.get() is None  # no timeout: it would wait forever for a result
        stub.join()  # the task ran
        assert result.result is None
        assert app.store.get(result.id) is None
        kept = add.apply_async((1, 2), ignore_result=False)
        assert kept.ignored is False and kept.get(timeout=10) == 3


def test_a_task_declared_with_ignore_result_gives_ignored_results(app: App) -> None:
    @app.task(name="celeryapi.add_ignore_result", ignore_result=True)
    def add_ignore_result(x: int, y: int) -> int:
        return x + y

    with taskstream.testing.run(app) as stub:
        result = add_ignore_result.delay(1, 2)
        assert result.ignored is True
        assert result.get() is None
        stub.join()
        assert app.store.get(result.id) is None
        # The call overrides the task's option.
        assert add_ignore_result.apply_async((1, 2), ignore_result=False).get(timeout=10) == 3
    assert app.AsyncResult(result.id).ignored is False  # an id from elsewhere: not known
