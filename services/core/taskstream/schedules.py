"""When periodic tasks run: :class:`schedule` (every N seconds) and :class:`crontab`.

Celery's names and field syntax (``celery.schedules``). A schedule answers one question,
``next_after(t, tz)``: the first tick strictly after the epoch time ``t`` (seconds, UTC),
so a tick is a point in time that every beat replica computes alike; its task id is derived
from it (taskstream.periodic).

crontab fields take an int, an iterable of ints, or a string: ``*``, ``*/15``, ``5``,
``1-5``, ``1-10/2``, ``5/10`` (5, 15, 25, ...), lists of those (``"0,30"``, ``"mon-fri,sun"``).
``day_of_week``: 0 (or 7) is Sunday, as in Celery, and the names ``sun``..``sat`` (or
``sunday``..); ``fri-mon`` wraps around. ``month_of_year`` also takes ``jan``..``dec``.
As in Celery and unlike cron, a time matches only when **both** ``day_of_month`` and
``day_of_week`` match (cron runs when either does, if both are restricted).
Times are wall-clock times in ``tz`` (UTC unless the app's ``timezone`` says otherwise): a
time that a daylight-saving change skips runs at the instant it maps to (an hour later), a
time that repeats runs once (its first occurrence).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from taskstream.errors import InvalidSchedule

_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_PART = re.compile(r"^(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\d+))?$")
_SEARCH_LIMIT = 100_000  # steps (months, days, hours) before a crontab is declared impossible

CronSpec = int | str | Iterable[int]


class Schedule(Protocol):
    """What the beat asks a schedule."""

    def next_after(self, t: float, tz: tzinfo) -> float:
        """The first tick strictly after epoch time ``t`` (seconds, UTC)."""
        ...


class schedule:  # Celery's name (celery.schedules.schedule)
    """Every ``run_every`` (seconds or a timedelta), counted from the entry's first start:
    ticks are that start plus whole multiples of the interval, whichever replica fires."""

    def __init__(self, run_every: float | timedelta) -> None:
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else run_every
        if not seconds > 0:
            raise InvalidSchedule(f"an interval must be positive, not {run_every!r}")
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"<schedule every {self.seconds:g}s>"

    def next_after(self, t: float, tz: tzinfo) -> float:
        return t + self.seconds


class crontab:  # Celery's name (celery.schedules.crontab)
    """Cron-like: ``crontab(minute="*/15")``, ``crontab(0, 7, day_of_week="mon-fri")``."""

    def __init__(
        self,
        minute: CronSpec = "*",
        hour: CronSpec = "*",
        day_of_week: CronSpec = "*",
        day_of_month: CronSpec = "*",
        month_of_year: CronSpec = "*",
    ) -> None:
        self.spec = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = expand(minute, 0, 59, "minute")
        self.hour = expand(hour, 0, 23, "hour")
        # 7 is Sunday too (cron's habit); stored as 0, Celery's Sunday.
        self.day_of_week = {d % 7 for d in expand(day_of_week, 0, 7, "day_of_week", _WEEKDAYS)}
        self.day_of_month = expand(day_of_month, 1, 31, "day_of_month")
        self.month_of_year = expand(month_of_year, 1, 12, "month_of_year", _MONTHS)
        self._minutes = sorted(self.minute)

    def __repr__(self) -> str:
        fields = " ".join(str(f) if not isinstance(f, str) else f for f in self.spec)
        return f"<crontab: {fields} (m/h/dow/dom/moy)>"

    def matches(self, local: datetime) -> bool:
        """Whether the wall-clock minute ``local`` is a tick (every field matches)."""
        return (
            local.minute in self.minute
            and local.hour in self.hour
            and self._day_matches(local)
            and local.month in self.month_of_year
        )

    def _day_matches(self, local: datetime) -> bool:
        weekday = (local.weekday() + 1) % 7  # Python's Monday 0 -> Celery's Sunday 0
        return local.day in self.day_of_month and weekday in self.day_of_week

    def next_after(self, t: float, tz: tzinfo) -> float:
        after = datetime.fromtimestamp(t, tz)
        local = after.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(_SEARCH_LIMIT):
            step = self._skip(local)
            if step is not None:
                local = step
                continue
            tick = local.replace(tzinfo=tz).timestamp()
            if tick > t:
                return tick
            local += timedelta(minutes=1)  # a repeated (daylight-saving) hour: its 2nd pass
        raise InvalidSchedule(f"{self!r} never matches (e.g. 30 February)")

    def _skip(self, local: datetime) -> datetime | None:
        """The next wall-clock minute worth checking when ``local`` does not match, else None."""
        if local.month not in self.month_of_year:
            first = local.replace(day=1, hour=0, minute=0)
            return (first + timedelta(days=32)).replace(day=1)
        if not self._day_matches(local):
            return local.replace(hour=0, minute=0) + timedelta(days=1)
        if local.hour not in self.hour:
            return local.replace(minute=0) + timedelta(hours=1)
        if local.minute not in self.minute:
            i = bisect.bisect_left(self._minutes, local.minute)
            if i < len(self._minutes):
                return local.replace(minute=self._minutes[i])
            return local.replace(minute=0) + timedelta(hours=1)
        return None


def expand(
    spec: CronSpec, low: int, high: int, field: str, names: dict[str, int] | None = None
) -> set[int]:
    """The set of values a crontab field stands for, each within ``low``..``high``."""
    if isinstance(spec, bool):
        raise InvalidSchedule(f"{field}: {spec!r} is not a cron field")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = set()
        for part in spec.replace(" ", "").lower().split(","):
            values |= _expand_part(part, low, high, field, names or {})
    else:
        values = set(spec)
    bad = [v for v in values if not isinstance(v, int) or not low <= v <= high]
    if bad or not values:
        raise InvalidSchedule(f"{field}: {spec!r} is not within {low}-{high}")
    return values


def _expand_part(part: str, low: int, high: int, field: str, names: dict[str, int]) -> set[int]:
    match = _PART.match(part)
    if match is None:
        raise InvalidSchedule(f"{field}: cannot parse {part!r}")
    star, first, last, step_text = match.groups()
    step = int(step_text) if step_text else 1
    if step < 1:
        raise InvalidSchedule(f"{field}: the step of {part!r} must be at least 1")
    if star:
        return set(range(low, high + 1, step))
    start = _number(first, low, high, field, names)
    if last is None:
        # "5/10": from 5 to the end, every 10 (cron's reading); a plain "5" is just 5.
        return set(range(start, high + 1, step)) if step_text else {start}
    end = _number(last, low, high, field, names)
    if end >= start:
        return set(range(start, end + 1, step))
    # "fri-mon", "22-2": wrap around the field's end (Celery does).
    wrapped = list(range(start, high + 1)) + list(range(low, end + 1))
    return set(wrapped[::step])


def _number(text: str, low: int, high: int, field: str, names: dict[str, int]) -> int:
    if text.isdigit():
        value = int(text)
    elif text[:3] in names:
        value = names[text[:3]]
    else:
        raise InvalidSchedule(f"{field}: {text!r} is neither a number nor a name")
    if not low <= value <= high:
        raise InvalidSchedule(f"{field}: {value} is not within {low}-{high}")
    return value


def as_schedule(value: float | timedelta | Schedule) -> Schedule:
    """Seconds, a timedelta or a schedule object (crontab, schedule): a schedule."""
    if isinstance(value, bool):
        raise InvalidSchedule(f"{value!r} is not a schedule")
    if isinstance(value, int | float | timedelta):
        return schedule(value)
    if not hasattr(value, "next_after"):
        raise InvalidSchedule(f"{value!r} is not a schedule (seconds, timedelta, crontab)")
    return value
