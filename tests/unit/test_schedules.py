"""Schedules: Celery's crontab syntax, intervals, and which ticks a beat leader fires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskstream import App
from taskstream.config import Settings
from taskstream.errors import ConfigError, InvalidArguments, InvalidSchedule
from taskstream.periodic import plan, tick_id
from taskstream.schedules import crontab, expand, schedule


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def test_crontab_fields_take_celerys_syntax() -> None:
    assert expand("*/15", 0, 59, "minute") == {0, 15, 30, 45}
    assert expand("1-5", 0, 23, "hour") == {1, 2, 3, 4, 5}
    assert expand("0,30", 0, 59, "minute") == {0, 30}
    assert expand("1-10/3", 0, 59, "minute") == {1, 4, 7, 10}
    assert expand("50/5", 0, 59, "minute") == {50, 55}  # from 50, every 5
    assert expand([1, 2], 0, 59, "minute") == {1, 2}
    assert expand(7, 0, 23, "hour") == {7}
    assert expand("22-2", 0, 23, "hour") == {22, 23, 0, 1, 2}  # wraps around


def test_day_of_week_is_celerys_sunday_zero_with_names() -> None:
    assert crontab(day_of_week="mon-fri").day_of_week == {1, 2, 3, 4, 5}
    assert crontab(day_of_week="sun").day_of_week == {0}
    assert crontab(day_of_week="7").day_of_week == {0}  # cron's other Sunday
    assert crontab(day_of_week="fri-mon").day_of_week == {5, 6, 0, 1}
    assert crontab(day_of_week="monday,wed").day_of_week == {1, 3}
    assert crontab(month_of_year="jan,jul").month_of_year == {1, 7}


@pytest.mark.parametrize(
    "fields",
    [
        {"minute": "60"},
        {"hour": "24"},
        {"day_of_month": "0"},
        {"month_of_year": "13"},
        {"day_of_week": "8"},
        {"minute": "*/0"},
        {"minute": "a-b"},
        {"minute": "1--2"},
        {"day_of_week": "funday"},
        {"minute": [61]},
    ],
)
def test_malformed_fields_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidSchedule):
        crontab(**fields)


def test_next_tick_every_fifteen_minutes_on_weekday_working_hours() -> None:
    c = crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")
    sunday_noon = at(2026, 11, 29, 12, 0)
    assert utc(c.next_after(sunday_noon, UTC)) == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    monday_0900 = at(2026, 11, 30, 9, 0)
    assert utc(c.next_after(monday_0900, UTC)) == datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    friday_1745 = at(2026, 12, 4, 17, 45)
    assert utc(c.next_after(friday_1745, UTC)) == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_day_of_month_and_day_of_week_must_both_match_as_in_celery() -> None:
    # Friday the 13th at midnight (cron would run on every 13th and every Friday).
    c = crontab(minute=0, hour=0, day_of_month=13, day_of_week="fri")
    t = utc(c.next_after(at(2026, 1, 1), UTC))
    assert t == datetime(2026, 2, 13, tzinfo=UTC) and t.weekday() == 4
    assert utc(c.next_after(t.timestamp(), UTC)) == datetime(2026, 3, 13, tzinfo=UTC)


def test_yearly_and_leap_day_schedules() -> None:
    new_year = crontab(minute=0, hour=0, day_of_month=1, month_of_year=1)
    assert utc(new_year.next_after(at(2026, 6, 1), UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    leap = crontab(minute=0, hour=12, day_of_month=29, month_of_year=2)
    assert utc(leap.next_after(at(2026, 3, 1), UTC)) == datetime(2028, 2, 29, 12, tzinfo=UTC)
    with pytest.raises(InvalidSchedule):
        crontab(minute=0, hour=0, day_of_month=30, month_of_year=2).next_after(at(2026, 1, 1), UTC)


def test_crontab_times_are_wall_clock_times_in_the_timezone() -> None:
    paris = ZoneInfo("Europe/Paris")
    seven = crontab(minute=0, hour=7)
    winter = seven.next_after(at(2026, 1, 10), paris)
    assert utc(winter) == datetime(2026, 1, 10, 6, tzinfo=UTC)  # CET = UTC+1
    summer = seven.next_after(at(2026, 7, 10), paris)
    assert utc(summer) == datetime(2026, 7, 10, 5, tzinfo=UTC)  # CEST = UTC+2
    # 02:30 does not exist on 29 March 2026 in Paris: it runs at the instant it maps to.
    gap = crontab(minute=30, hour=2).next_after(at(2026, 3, 29, 0, 0), paris)
    assert utc(gap) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    # 02:30 happens twice on 25 October 2026: it runs once.
    c = crontab(minute=30, hour=2)
    first = c.next_after(at(2026, 10, 24, 23, 0), paris)
    assert utc(first) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert utc(c.next_after(first, paris)) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_intervals_take_seconds_or_timedeltas() -> None:
    assert schedule(timedelta(minutes=2)).seconds == 120
    assert schedule(1.5).next_after(10.0, UTC) == 11.5
    with pytest.raises(InvalidSchedule):
        schedule(0)


def test_every_missed_tick_fires_after_a_short_outage() -> None:
    p = plan(schedule(1), 0, 5_500_000, UTC, catch_up="once", window_s=300)
    assert p.fire == [1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000]
    assert p.last == 5_000_000 and p.skipped == 0
    assert plan(schedule(1), 5_000_000, 5_900_000, UTC).fire == []  # nothing due yet


def test_a_long_outage_runs_once_or_skips_by_policy() -> None:
    hour = 3_600 * 1_000_000
    once = plan(schedule(60), 0, hour + 30_000_000, UTC, catch_up="once", window_s=300)
    assert once.fire == [hour] and once.last == hour and once.skipped == 59
    skip = plan(schedule(60), 0, hour + 30_000_000, UTC, catch_up="skip", window_s=300)
    assert skip.fire == [] and skip.last == hour and skip.skipped == 60
    # Too many to count (a 1 s schedule down for a week): the latest is still exact.
    week = 7 * 24 * hour
    far = plan(schedule(1), 0, week + 500_000, UTC, catch_up="once", window_s=300)
    assert far.fire == [week]


def test_a_long_outage_of_a_calendar_schedule_fires_its_latest_tick() -> None:
    c = crontab(minute="*/15")
    last = round(at(2026, 11, 1) * 1e6)
    now = round(at(2026, 11, 29, 12, 20) * 1e6)
    p = plan(c, last, now, UTC, catch_up="once", window_s=300)
    assert [utc(t / 1e6) for t in p.fire] == [datetime(2026, 11, 29, 12, 15, tzinfo=UTC)]


def test_tick_ids_are_deterministic_per_entry_and_tick() -> None:
    assert tick_id("p", "e", 1) == tick_id("p", "e", 1)
    assert len({tick_id("p", "e", 1), tick_id("p", "e", 2), tick_id("p", "f", 1)}) == 3


def test_add_periodic_task_takes_a_task_or_a_tuple_and_checks_arguments() -> None:
    app = App("t", bootstrap_servers="stub", store="memory://")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    entry = app.add_periodic_task(10.0, add, (2, 3))
    assert entry.name == f"{add.name}(2, 3)" and app.periodic_tasks[entry.name] is entry
    named = app.add_periodic_task(crontab(minute=0), (add, (1,), {"b": 2}), name="hourly")
    assert named.args == (1,) and named.kwargs == {"b": 2}
    signed = app.add_periodic_task(5.0, add.s(4, b=5).set(queue="q", key="k"))
    assert signed.name == f"{add.name}(4, b=5)" and signed.args == (4,)
    assert signed.kwargs == {"b": 5} and (signed.queue, signed.key) == ("q", "k")
    with pytest.raises(InvalidSchedule):
        app.add_periodic_task(5.0, add.s(4, 5), (1, 2))
    with pytest.raises(InvalidArguments):
        app.add_periodic_task(10, add, (2, "three"))
    with pytest.raises(InvalidSchedule):
        app.add_periodic_task("often", add, (2, 3))  # type: ignore[arg-type]
    with pytest.raises(InvalidSchedule):
        app.add_periodic_task(10, lambda: None)


def test_the_periodic_task_decorator_registers_and_schedules() -> None:
    app = App("t", bootstrap_servers="stub", store="memory://")

    @app.periodic_task(crontab(minute="*/5"), args=("x",), max_retries=0)
    def ping(host: str) -> str:
        return host

    assert ping.name in app.tasks and ping.options.max_retries == 0
    assert app.periodic_tasks[ping.name].args == ("x",)


def test_the_timezone_and_catch_up_settings_are_checked_when_loaded() -> None:
    assert Settings.load({}, timezone="Europe/Paris").time_zone() == ZoneInfo("Europe/Paris")
    assert Settings.load({"TASKSTREAM_BEAT_CATCH_UP": "skip"}).beat_catch_up == "skip"
    with pytest.raises(ConfigError):
        Settings.load({}, timezone="Mars/Olympus_Mons")
    with pytest.raises(ConfigError):
        Settings.load({}, beat_catch_up="twice")


def test_on_after_configure_receivers_add_entries_when_the_schedule_is_read() -> None:
    app = App("t", bootstrap_servers="stub", store="memory://")

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: App, **kwargs: object) -> None:
        sender.add_periodic_task(10.0, later, (1,), name="every 10 s")  # defined below

    @app.task
    def later(n: int) -> int:
        return n

    assert list(app.periodic_tasks) == ["every 10 s"]
    assert list(app.periodic_tasks) == ["every 10 s"]  # the receivers ran once
    seen: list[App] = []
    app.on_after_configure.connect(weak=False)(lambda sender, **kw: seen.append(sender))
    assert seen == [app]  # connected late: run at once


def test_with_a_secret_tick_ids_are_deterministic_yet_not_computable_without_it() -> None:
    keyed = tick_id("p", "e", 1, "s3cret")
    assert keyed == tick_id("p", "e", 1, "s3cret")  # every replica agrees
    assert keyed not in {tick_id("p", "e", 1), tick_id("p", "e", 1, "other")}
    assert tick_id("p", "e", 2, "s3cret") != keyed
