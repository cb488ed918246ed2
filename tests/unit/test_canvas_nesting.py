"""Nested workflows and Celery's call forms, through the real worker and materializer on the
stub broker (taskstream.testing): every shape Celery composes, its results, its failures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import taskstream.testing
from taskstream import (
    App,
    AsyncResult,
    CanvasError,
    GroupResult,
    Task,
    TaskFailed,
    chain,
    chord,
    group,
)
from taskstream.canvas import callback_id
from taskstream.kafka.topics import task_topic

CALLS: list[Any] = []


@pytest.fixture
def app() -> Iterator[App]:
    CALLS.clear()
    app = App("nest", bootstrap_servers=None, topic_prefix="nest", partitions=3)

    @app.task(name="nest.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="nest.tsum")
    def tsum(values: list[int]) -> int:
        CALLS.append(("tsum", values))
        return sum(values)

    @app.task(name="nest.flat")
    def flat(values: list[list[int]]) -> list[int]:
        return [v for vs in values for v in vs]

    @app.task(name="nest.ident")
    def ident(values: list[int]) -> list[int]:
        return values

    @app.task(name="nest.fail")
    def fail(a: int) -> int:
        raise ValueError(f"fail {a}")

    @app.task(name="nest.report")
    def report(task_id: str) -> None:
        CALLS.append(("report", task_id))

    @app.task(name="nest.shout")
    def shout(text: str) -> str:
        return text.upper()

    @app.task(name="nest.quiet", ignore_result=True)
    def quiet(a: int) -> int:
        return a

    @app.task(name="nest.flaky", bind=True, max_retries=2)
    def flaky(self: Task[Any, Any], a: int) -> int:
        if self.request.retries < 1:
            raise self.retry(countdown=0)
        return a

    yield app
    app.close()


def t(app: App, name: str) -> Task[Any, Any]:
    return app.tasks[f"nest.{name}"]


def reports() -> list[Any]:
    return [c for c in CALLS if c[0] == "report"]


def test_a_group_followed_by_steps_in_a_chain_is_a_chord(app: App) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    with taskstream.testing.run(app):
        res = chain(group(add.s(1, 1), add.s(2, 2)), tsum.s()).apply_async()
        assert res.get(timeout=10) == 6
        assert isinstance(res.parent, GroupResult) and res.parent.get(timeout=1) == [2, 4]
        # the previous step's result goes to every member, the list on to the next steps
        mid = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), add.s(10))()
        assert mid.get(timeout=10) == 17
        # a group at the end: the chain's result is the GroupResult
        last = (add.s(1, 1) | group(add.s(1), add.s(2))).apply_async()
        assert isinstance(last, GroupResult) and last.get(timeout=10) == [3, 4]


def test_chains_in_groups_and_groups_in_groups(app: App) -> None:
    add = t(app, "add")
    with taskstream.testing.run(app):
        res = group(chain(add.s(1, 1), add.s(1), add.s(1)), add.s(5, 5)).apply_async()
        assert res.get(timeout=10) == [4, 10]
        unrolled = group(group(add.s(1, 1), add.s(2, 2)), add.s(3, 3))()
        assert unrolled.get(timeout=10) == [2, 4, 6]
        # members given as a list or tuple go through the same checks
        assert group([chain(add.s(1, 1), add.s(1))]).apply_async().get(timeout=10) == [3]
        assert group(
            (add.s(i, i) for i in range(3)),
        )().get(timeout=10) == [0, 2, 4]


def test_chords_in_chains_pass_their_result_on(app: App) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    with taskstream.testing.run(app) as stub:
        res = chain(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(1)).apply_async()
        assert res.get(timeout=10) == 7
        stub.join()
        header = res.parent.parent  # type: ignore[union-attr]
        assert isinstance(header, GroupResult)
        place = app.store.link(res.id)  # one root for the whole workflow: the first group
        assert place is not None and place.root_id == header.id
        two = chain(
            chord([add.s(1, 1), add.s(2, 2)], tsum.s()),
            chord([add.s(1), add.s(2)], tsum.s()),
            add.s(100),
        )()
        assert two.get(timeout=10) == (6 + 1) + (6 + 2) + 100


def test_chord_bodies_that_are_chains_groups_and_chords(app: App) -> None:
    add, tsum, ident = t(app, "add"), t(app, "tsum"), t(app, "ident")
    with taskstream.testing.run(app):
        body_chain = chord([add.s(1, 1), add.s(2, 2)], chain(tsum.s(), add.s(1)))()
        assert body_chain.get(timeout=10) == 7
        body_group = chord([add.s(1, 1), add.s(2, 2)], group(tsum.s(), ident.s()))()
        assert isinstance(body_group, GroupResult)
        assert body_group.get(timeout=10) == [6, [2, 4]]
        body_chord = chord([add.s(1, 1)], chord([tsum.s(), tsum.s()], tsum.s()))()
        assert body_chord.get(timeout=10) == 4


def test_chords_of_chords_and_groups_of_chords(app: App) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    with taskstream.testing.run(app):
        inner = [chord([add.s(i, i) for i in range(n)], tsum.s()) for n in (2, 3)]
        assert chord(inner, tsum.s())().get(timeout=10) == (0 + 2) + (0 + 2 + 4)
        both = group(chord([add.s(1, 1)], tsum.s()), chord([add.s(2, 2)], tsum.s()))()
        assert both.get(timeout=10) == [2, 4]


def test_a_chain_of_chords_of_groups_of_chains_three_deep(app: App) -> None:
    add, tsum, flat = t(app, "add"), t(app, "tsum"), t(app, "flat")
    with taskstream.testing.run(app):
        deep = chain(
            chord(group(chain(add.s(i, 0), add.s(1)) for i in range(4)), tsum.s()),
            group(add.s(1), add.s(2)),
            tsum.s(),
        )()
        # members 1, 2, 3, 4 -> 10; then [11, 12] -> 23
        assert deep.get(timeout=10) == 23
        # a group's list as a member of an enclosing group (a chain ending in a group)
        lists = chord(
            [chain(add.s(1, 1), group(add.s(1), add.s(2))), chain(add.s(0, 0), group(add.s(0)))],
            flat.s(),
        )
        assert lists().get(timeout=10) == [3, 4, 0]
        whole = group(chain(add.s(1, 1), group(add.s(1), add.s(2))), add.s(1, 1))()
        assert whole.get(timeout=10) == [[3, 4], 2]


def test_empty_groups_and_empty_chord_headers(app: App) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    with taskstream.testing.run(app) as stub:
        empty = group([]).apply_async()
        assert isinstance(empty, GroupResult) and empty.get(timeout=1) == [] and empty.ready()
        assert chord([], tsum.s()).apply_async().get(timeout=10) == 0
        assert chain(add.s(1, 1), chord([], tsum.si([5]))).apply_async().get(timeout=10) == 5
        stub.join()
        assert ("tsum", []) in CALLS


def test_a_failed_member_fails_every_dependent_at_once(app: App) -> None:
    add, tsum, fail, report = t(app, "add"), t(app, "tsum"), t(app, "fail"), t(app, "report")
    with taskstream.testing.run(app) as stub:
        res = chain(
            chord([chain(fail.s(1), add.s(1)), add.s(2, 2)], tsum.s()),
            group(add.s(1), add.s(2)),
            tsum.s(),
        ).apply_async(link_error=report.s())
        with pytest.raises(TaskFailed) as failed:
            res.get(timeout=10)
        assert "fail 1" in failed.value.message
        chord_result = res.parent.parent  # type: ignore[union-attr]
        assert isinstance(chord_result, AsyncResult)
        with pytest.raises(TaskFailed, match="1 of 2 members failed"):
            chord_result.get(timeout=10)
        stub.join()
        assert len(reports()) == 1  # the chain's errback, for the one task that ran and failed
        assert not [c for c in CALLS if c[0] == "tsum"]


def test_a_chords_errback_runs_once_whether_a_member_or_the_body_fails(app: App) -> None:
    add, fail, report, tsum = t(app, "add"), t(app, "fail"), t(app, "report"), t(app, "tsum")
    with taskstream.testing.run(app) as stub:
        header_fails = chord([fail.s(1), fail.s(2), add.s(1, 1)], tsum.s())
        res = header_fails.apply_async(link_error=report.s())
        with pytest.raises(TaskFailed):
            res.get(timeout=10)
        stub.join()
        assert reports() == [("report", res.id)]
        CALLS.clear()
        body_fails = chord([add.s(1, 1)], chain(tsum.s(), fail.s()))
        body_fails.link_error(report.s())
        failed = body_fails()
        with pytest.raises(TaskFailed, match="fail 2"):
            failed.get(timeout=10)
        stub.join()
        assert reports() == [("report", failed.id)]  # the failed task's id


def test_group_link_error_runs_for_each_failed_member(app: App) -> None:
    add, fail, report = t(app, "add"), t(app, "fail"), t(app, "report")
    with taskstream.testing.run(app) as stub:
        g = group(fail.s(1), add.s(1, 1), fail.s(2))
        g.link_error(report.s())
        res = g()
        with pytest.raises(TaskFailed):
            res.get(timeout=10)
        stub.join()
        assert sorted(r[1] for r in reports()) == sorted([res[0].id, res[2].id])
        CALLS.clear()
        header = group(fail.s(3), add.s(1, 1))
        header.link_error(report.s())  # kept when the group is a chord's header
        joined = chord(header, t(app, "tsum").s())()
        with pytest.raises(TaskFailed):
            joined.get(timeout=10)
        stub.join()
        assert len(reports()) == 1


def test_celerys_call_forms(app: App) -> None:
    add, tsum, report, fail = t(app, "add"), t(app, "tsum"), t(app, "report"), t(app, "fail")
    with taskstream.testing.run(app) as stub:
        assert chain(add.s(1, 1), add.s(1))().get(timeout=10) == 3
        assert chain(add.s(1), add.s(1)).apply_async((5,)).get(timeout=10) == 7
        assert group(add.s(1, 1), add.s(2, 2))().get(timeout=10) == [2, 4]
        assert chord([add.s(1, 1)], tsum.s())().get(timeout=10) == 2
        assert chord([add.s(1, 1), add.s(2, 2)])(tsum.s()).get(timeout=10) == 6
        assert ~add.s(2, 2) == 4
        assert ~chain(add.s(2, 2), add.s(1)) == 5
        assert add.signature((2, 3)).delay().get(timeout=10) == 5
        assert add.signature((2,), immutable=True, countdown=0).immutable
        sig = add.s(1, 1)
        sig.link(add.s(100))
        sig.link_error(report.s())
        assert sig.apply_async().get(timeout=10) == 2
        bad = fail.s().on_error(report.s())
        failed = chain(add.s(1, 1), bad, add.s(1))()
        with pytest.raises(TaskFailed):
            failed.get(timeout=10)
        stub.join()
        assert reports() == [("report", failed.parent.id)]  # type: ignore[union-attr]
        assert app.store.count() > 0


def test_eta_and_countdown_on_workflows(app: App) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    with taskstream.testing.run(app) as stub:
        later = datetime.now(UTC) + timedelta(seconds=30)
        res = chain(add.s(1, 1), add.s(1)).apply_async(eta=later)
        grouped = group(add.s(1, 1)).apply_async(countdown=30)
        chorded = chord([add.s(1, 1)], tsum.s()).apply_async(eta=later)
        stub.join()
        assert not res.ready() and not grouped.ready() and not chorded.ready()
        stub.advance(31)
        assert res.get(timeout=10) == 3 and grouped.get(timeout=10) == [2]
        assert chorded.get(timeout=10) == 2


def test_the_deprecated_schema_name_still_reads(app: App) -> None:
    add = t(app, "add")
    with pytest.warns(DeprecationWarning, match="task_signature"):
        assert add.signature.parameters == ("a", "b")
    assert add.task_signature.parameters == ("a", "b")


def test_every_refusal_is_a_canvas_error_before_anything_is_sent(app: App) -> None:
    add, tsum, shout, report = t(app, "add"), t(app, "tsum"), t(app, "shout"), t(app, "report")
    with taskstream.testing.run(app) as stub:
        linked = group(add.s(1))
        linked.link(tsum.s())
        refused: list[Any] = [
            lambda: group(1),
            lambda: group([add.s(1, 1), "x"]),
            lambda: chain(add.s(1, 1), 5),
            lambda: chain(),
            lambda: chain([]),
            lambda: chord([add.s(1, 1)], "body"),  # type: ignore[arg-type]
            lambda: chord([add.s(1, 1)])(),
            lambda: add.s(1, 1).link("x"),  # type: ignore[arg-type]
            lambda: add.s(1, 1).set(nope=1),
            # typed checks follow the nesting
            lambda: chain(group(add.s(1, 1)), shout.s()),
            lambda: chain(chord([add.s(1, 1)], tsum.s()), shout.s()),
            lambda: chord([chain(add.s(1, 1), shout.s())], tsum.s()),
            lambda: chord([add.s(1, 1)], chain(tsum.s(), shout.s())),
            lambda: chord([add.s(1, 1)], group(tsum.s(), shout.s())),
            lambda: group(chain(add.s(1, 1), group(add.s(1), shout.s()))),
            lambda: chain(add.s(1, 1), group(add.s(1))).apply_async(link_error=add.s(1)),
            lambda: chord([add.s(1, 1)], tsum.s()).apply_async(link_error=add.s(1)),
            lambda: group(add.s(1, 1)).link(report.s()),  # the list into a str
            lambda: chain(add.s(1, 1), linked),  # group.link inside a workflow
            lambda: add.s(1, 1) | 5,  # type: ignore[operator]
            lambda: group(add.s(1, 1)) | "x",  # type: ignore[operator]
            lambda: chord([add.s(1, 1)], tsum.s()).apply_async(bogus=1),
            lambda: add.apply_async((1, 1), link=5),  # type: ignore[arg-type]
            lambda: group(chain(add.s(1, 1), group([])), add.s(1, 1)),
            lambda: chord([chord([add.s(1, 1)], group([]))], tsum.s()),
        ]
        for build in refused:
            with pytest.raises(CanvasError):
                build()
        nested = pytest.raises(CanvasError, match="not a list")
        with nested:
            chain(chord([add.s(1, 1)], chain(tsum.s(), group(add.s(1)))), add.s(1))
        stub.join()
        assert stub.broker.records(task_topic("nest", "default")) == []


def test_a_chords_result_id_is_its_callback_id_and_parent_the_header(app: App) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    with taskstream.testing.run(app):
        res = chain(add.s(1, 1), chord([add.s(1), add.s(2)], tsum.s())).apply_async()
        assert res.get(timeout=10) == 7
        header = res.parent
        assert isinstance(header, GroupResult) and res.id == callback_id(header.id)
        assert isinstance(header.parent, AsyncResult) and header.parent.get(timeout=1) == 2
        assert header.join(timeout=1) == [3, 4]


def test_workflow_events_of_the_previous_version_still_run(app: App) -> None:
    """A chain and a chord as the previous version sent them (``chain`` steps with the
    chain's errbacks, a ``chord`` field on each member) run and join as before."""
    from taskstream.canvas import member_id
    from taskstream.envelope import Chord, Step

    add, tsum, fail, report = t(app, "add"), t(app, "tsum"), t(app, "fail"), t(app, "report")

    def step(task: Task[Any, Any], args: tuple[Any, ...], task_id: str) -> Step:
        return Step(task_id, task.name, task.queue, None, task.encode_tail_args(args, {}))

    with taskstream.testing.run(app) as stub:
        first = add.event(add.encode_args((1, 2), {}))
        first.root_id, last = first.id, "chain-last"
        first.chain = [step(add, (10,), "chain-mid"), step(add, (100,), last)]
        app.publish(first)
        assert app.AsyncResult(last).get(timeout=10) == 113
        broken = fail.event(fail.encode_args((1,), {}))
        broken.chain = [step(add, (1,), "never")]
        broken.link_error = [Step("eb", report.name, report.queue, None, b"", False)]
        broken.link_error[0].args = report.encode_tail_args((), {})
        app.publish(broken)
        with pytest.raises(TaskFailed, match="not run"):
            app.AsyncResult("never").get(timeout=10)
        gid = "old-chord"
        body = Step(callback_id(gid), tsum.name, tsum.queue, None, tsum.encode_tail_args((), {}))
        for i in range(3):
            member = add.event(add.encode_args((i, i), {}), task_id=member_id(gid, i))
            member.group_id, member.group_index, member.group_size = gid, i, 3
            member.root_id, member.chord = gid, Chord(body)
            app.publish(member)
        assert app.AsyncResult(callback_id(gid)).get(timeout=10) == 6
        stub.join()
        assert reports() == [("report", broken.id)]


def test_a_retried_task_inside_a_nested_workflow_keeps_its_place(app: App) -> None:
    add, tsum, flaky = t(app, "add"), t(app, "tsum"), t(app, "flaky")
    with taskstream.testing.run(app):
        res = chain(add.s(1, 1), chord([flaky.s(), add.s(1)], tsum.s()), add.s(1))()
        assert res.get(timeout=10) == 6  # flaky(2) after a retry, add(2, 1): 5, then + 1
        inner = group(chain(add.s(1, 1), flaky.s()), flaky.s(7))()
        assert inner.get(timeout=10) == [2, 7]


def test_a_chord_member_with_ignore_result_still_counts_for_the_join(app: App) -> None:
    add, tsum, quiet = t(app, "add"), t(app, "tsum"), t(app, "quiet")
    with taskstream.testing.run(app) as stub:
        res = chain(add.s(1, 1), group(quiet.s(), chain(add.s(1), quiet.s())), tsum.s())()
        assert res.get(timeout=10) == 5  # 2 and 3: stored for the join though ignored
        alone = quiet.delay(7)
        stub.join()
        assert app.store.get(alone.id) is None  # outside a join: nothing stored
