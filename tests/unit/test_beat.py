"""The beat on the stub broker and the shifted clock: one leader, every tick once, failover."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from taskstream import App, clock
from taskstream.consumer.beat import ENTRY_HEADER, TICK_HEADER, Beat
from taskstream.consumer.runtime import ConsumerRuntime, LoopTiming
from taskstream.errors import NotAuthorized
from taskstream.kafka.clients import header_pairs
from taskstream.kafka.topics import task_topic
from taskstream.metrics import BEAT_LEADER
from taskstream.periodic import tick_id
from taskstream.testing.stub_broker import StubBroker

PREFIX = "ub"
FAST = LoopTiming(poll_s=0.001, busy_poll_s=0.001)  # turns cost no real time to speak of


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    yield
    clock.reset()


def make_app(broker: StubBroker, **settings: Any) -> App:
    app = App(
        "beat", broker=broker, bootstrap_servers="stub", store="memory://",
        topic_prefix=PREFIX, partitions=2, **settings,
    )  # fmt: skip

    @app.task
    def ping(n: int) -> int:
        return n

    app.add_periodic_task(1.0, ping, (7,), name="every-second")
    return app


def ticks(app: App, broker: StubBroker) -> list[tuple[str, int, str]]:
    """(entry, tick µs, task id) of every task event the beat sent, in log order per entry."""
    out = []
    for record in broker.records(task_topic(PREFIX, "default")):
        headers = dict(header_pairs(record))
        event = app.envelopes.decode_task(record.value() or b"")
        tick = int(headers[TICK_HEADER] or b"0")
        out.append(((headers[ENTRY_HEADER] or b"").decode(), tick, event.id))  # type: ignore[union-attr]
    return sorted(out, key=lambda t: t[1])


def turn(*runtimes: ConsumerRuntime, times: int = 5) -> None:
    for _ in range(times):
        for runtime in runtimes:
            runtime.turn()


def two_replicas(broker: StubBroker) -> tuple[App, Beat, Beat]:
    """An app and two beat replicas settled in their group: (app, leader, follower)."""
    app = make_app(broker)
    a, b = Beat(app, timing=FAST), Beat(make_app(broker), timing=FAST)
    ra, rb = a.open(), b.open()
    turn(ra, rb)
    assert [a.leading, b.leading].count(True) == 1
    return (app, a, b) if a.leading else (app, b, a)


def consecutive(times: list[int]) -> bool:
    """One tick a second, none missing, none twice."""
    return all(later - earlier == 1_000_000 for earlier, later in itertools.pairwise(times))


def runtime(beat: Beat) -> ConsumerRuntime:
    assert beat._runtime is not None
    return beat._runtime


def test_one_replica_leads_and_fires_each_tick_once_with_its_deterministic_id() -> None:
    broker = StubBroker()
    app, leader, follower = two_replicas(broker)
    a, b = leader, follower
    ra, rb = runtime(a), runtime(b)
    start = leader.last["every-second"]
    clock.advance(3.5)
    turn(ra, rb)
    fired = ticks(app, broker)
    assert [t for _e, t, _i in fired] == [start + 1_000_000 * k for k in (1, 2, 3)]
    assert all(i == tick_id(PREFIX, e, t) for e, t, i in fired)
    clock.advance(1.0)
    turn(ra, rb)
    assert len(ticks(app, broker)) == 4 and a.fired + b.fired == 4


def test_a_killed_leaders_successor_fires_the_missed_ticks_and_none_twice() -> None:
    broker = StubBroker()
    app, a, b = two_replicas(broker)  # a leads
    ra, rb = runtime(a), runtime(b)
    clock.advance(2.5)
    turn(ra, rb)
    assert len(ticks(app, broker)) == 2
    ra.consumer.kill()  # type: ignore[attr-defined]  # a StubConsumer
    clock.advance(5.0)  # the outage: ticks 3 to 7 missed
    turn(rb)
    assert b.leading
    fired = ticks(app, broker)
    times = [t for _e, t, _i in fired]
    assert len(times) == 7 and len(set(times)) == 7  # ticks 1..7: none skipped, none twice
    assert consecutive(times)


def test_a_zombie_leader_is_fenced_and_fires_nothing_more() -> None:
    broker = StubBroker()
    app, a, b = two_replicas(broker)  # a leads
    ra, rb = runtime(a), runtime(b)
    ra.consumer.kill()  # type: ignore[attr-defined]  # a StubConsumer
    turn(rb)
    assert b.leading
    clock.advance(1.5)
    a.serve(0)  # the zombie tries to fire the due tick: its producer is fenced
    assert not a.leading and a.fired == 0
    turn(rb)
    assert [t for _e, t, _i in ticks(app, broker)] == [b.last["every-second"]]
    assert b.fired == 1


def test_a_zombie_that_fired_before_the_new_leader_claimed_is_not_repeated() -> None:
    broker = StubBroker()
    app, a, b = two_replicas(broker)  # a leads
    ra, rb = runtime(a), runtime(b)
    ra.consumer.kill()  # type: ignore[attr-defined]  # a StubConsumer
    clock.advance(1.5)
    a.serve(0)  # fires tick 1 before b has taken over: b reads it with the state
    assert a.fired == 1
    turn(rb)
    assert b.leading and b.fired == 0
    clock.advance(1.0)
    turn(rb)
    times = [t for _e, t, _i in ticks(app, broker)]
    assert len(times) == 2 and times[1] - times[0] == 1_000_000


def test_a_long_outage_fires_once_or_skips_by_policy() -> None:
    for policy, expected in (("once", 1), ("skip", 0)):
        broker = StubBroker()
        app = make_app(broker, beat_catch_up=policy, beat_catch_up_window_s=60.0)
        a = Beat(app, timing=FAST)
        ra = a.open()
        turn(ra)
        ra.consumer.kill()  # type: ignore[attr-defined]  # a StubConsumer
        clock.advance(3600)
        b = Beat(make_app(broker, beat_catch_up=policy, beat_catch_up_window_s=60.0), timing=FAST)
        turn(b.open())
        assert len(ticks(app, broker)) == expected, policy
        clock.advance(1.0)
        turn(runtime(b))
        assert len(ticks(app, broker)) == expected + 1, policy
        clock.reset()


def test_the_leader_gauge_follows_the_lead() -> None:
    broker = StubBroker()
    a = Beat(make_app(broker), timing=FAST)
    ra = a.open()
    turn(ra)
    assert a.leading and BEAT_LEADER._value.get() == 1
    ra.stop()
    ra.run()  # drains and closes: the revoke ends the lead
    assert not a.leading and BEAT_LEADER._value.get() == 0


def test_an_entry_sent_to_another_queue_finds_its_topic_created() -> None:
    broker = StubBroker()
    app = make_app(broker)
    app.add_periodic_task(1.0, app.get_task(next(iter(app.tasks))), (1,), name="q", queue="rep")
    a = Beat(app, timing=FAST)
    ra = a.open()
    turn(ra)
    clock.advance(1.5)
    turn(ra)
    sent = broker.records(task_topic(PREFIX, "rep"))
    assert [dict(header_pairs(m))[ENTRY_HEADER] for m in sent] == [b"q"]


def test_dev_runs_a_beat_and_says_so_only_for_an_app_with_periodic_tasks() -> None:
    import argparse

    from taskstream.cli.banner import Banner
    from taskstream.cli.dev import _role_commands

    args = argparse.Namespace(app="m:app", concurrency=1)
    plain = App("plain", bootstrap_servers="stub", store="memory://")
    assert "beat" not in _role_commands(["ts"], args, plain, {})
    app = make_app(StubBroker())
    assert _role_commands(["ts"], args, app, {})["beat"] == ["ts", "beat", "m:app"]
    text = Banner(app, "m:app", "127.0.0.1:1", embedded=True, created=[]).render()
    assert "beat:    1 periodic tasks" in text


def test_a_leader_fenced_by_a_zombies_claim_claims_again_a_session_later() -> None:
    broker = StubBroker()
    app, a, _b = two_replicas(broker)
    ra = runtime(a)
    # A zombie (an expelled replica that resumed) takes the transactional id and fires nothing.
    zombie = broker.producer({"transactional.id": f"{PREFIX}.beat"})
    zombie.init_transactions(1)
    clock.advance(1.5)
    turn(ra)
    assert not a.leading and a.fired == 0  # fenced: it stepped down
    clock.advance(app.settings.session_timeout_ms / 1000 + 0.5)
    turn(ra)  # still the group's owner a session later: the lead is its own again
    assert a.leading
    times = [t for _e, t, _i in ticks(app, broker)]
    assert len(times) >= 7 and consecutive(times)  # ticks 1..7: none skipped, none twice


def test_a_crontab_entry_fires_at_the_wall_clock_time_of_the_configured_timezone() -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from taskstream.schedules import crontab

    tokyo = ZoneInfo("Asia/Tokyo")  # UTC+9 all year: no daylight-saving surprise
    broker = StubBroker()
    app = make_app(broker, timezone="Asia/Tokyo")
    now = datetime.fromtimestamp(clock.now(), tokyo)
    at = (now + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    app.add_periodic_task(crontab(minute=0, hour=at.hour), app.tasks[next(iter(app.tasks))],
                          (1,), name="tokyo")  # fmt: skip
    beat = Beat(app, timing=FAST)
    rt = beat.open()
    turn(rt)
    clock.advance(at.timestamp() - clock.now() + 0.5)
    turn(rt)
    fired = [t for e, t, _i in ticks(app, broker) if e == "tokyo"]
    assert fired == [round(at.timestamp() * 1_000_000)]


def test_the_leader_logs_each_tick_it_sends(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20, minor 18: one INFO line per tick sent (entry, task, tick time, task id)."""
    broker = StubBroker()
    app, leader, follower = two_replicas(broker)
    clock.advance(2.5)
    with caplog.at_level("INFO", logger="taskstream.consumer.beat"):
        turn(runtime(leader), runtime(follower))
    sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("beat: sent")]
    fired = ticks(app, broker)
    assert len(sent) == len(fired) == 2
    assert all(
        "every-second" in line and i in line for line, (_e, _t, i) in zip(sent, fired, strict=True)
    )


class _DeniedTxnBroker(StubBroker):
    """A cluster whose ACLs refuse WRITE on every transactional id."""

    def producer(self, config: dict[str, Any]) -> Any:
        producer = super().producer(config)
        if "transactional.id" in config:

            def denied(timeout: float | None = None) -> None:
                code = KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                raise KafkaException(KafkaError(code, "Transactional Id authorization failed"))

            producer.init_transactions = denied  # type: ignore[method-assign]
        return producer


def test_a_beat_refused_its_transactional_id_stops_naming_it() -> None:
    broker = _DeniedTxnBroker()
    beat = Beat(make_app(broker, kafka={"sasl.username": "svc"}), timing=FAST)
    with pytest.raises(NotAuthorized) as refused:
        turn(beat.open())
    assert (refused.value.operation, refused.value.resource) == ("WRITE", "transactional-id")
    assert "user 'svc' is not authorized to WRITE the transactional-id 'ub.beat'" in str(
        refused.value
    )
    assert "--transactional-id ub.beat" in str(refused.value)


def test_a_replica_joining_the_group_does_not_interrupt_the_leaders_ticks() -> None:
    """Issue 20, minor 18: a second replica joining took the lead away for a rebalance (an
    eager assignor revokes every partition, then the leader claimed and read anew); the
    beat's group is cooperative-sticky, so the leader keeps its partition and fires on."""
    broker = StubBroker()
    app = make_app(broker)
    leader = Beat(app, timing=FAST)
    ra = leader.open()
    turn(ra)
    assert leader.leading
    producer = leader._term.producer if leader._term else None
    newcomer = Beat(make_app(broker), timing=FAST)
    rb = newcomer.open()
    clock.advance(1.0)  # a tick falls due while the group rebalances
    for _ in range(5):
        turn(ra, rb, times=1)
        assert leader.leading and not newcomer.leading
    assert leader._term is not None and leader._term.producer is producer  # no new claim
    assert leader.fired == 1
    assert runtime(newcomer).consumer.assignment() == []
