"""Cron schedules, 5 fields (minute hour day-of-month month day-of-week), as Vixie cron reads
them: ``*``, ``a-b``, ``*/n``, ``a-b/n``, lists, month and weekday names, 0 and 7 for Sunday;
when both day fields are restricted, a day matching either one matches. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names)
_FIELDS = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
]
_SEARCH_DAYS = 366 * 5  # Feb 29 on a Monday: the rarest match cron can ask for is within this


class CronError(ValueError):
    """A cron expression that does not parse; the message names the field."""


def _number(text: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(text.lower())
    if value is None:
        if not text.isdigit():
            raise CronError(f"{field}: {text!r} is not a number" + (" or a name" if names else ""))
        value = int(text)
    if not low <= value <= high:
        raise CronError(f"{field}: {value} is out of range {low}-{high}")
    return value


def _parse_field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: empty list entry in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = (_number(x, field, low, high, names) for x in (a, b))
            if first > last:
                raise CronError(f"{field}: range {base!r} runs backwards")
        else:
            first = _number(base, field, low, high, names)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return values


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, when: datetime) -> bool:
        if when.month not in self.months:
            return False
        dom = when.day in self.days
        dow = (when.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def matches(self, when: datetime) -> bool:
        return when.minute in self.minutes and when.hour in self.hours and self.day_matches(when)

    def next_after(self, when: datetime) -> datetime | None:
        """The first minute after ``when`` that matches (None: never, e.g. Feb 30)."""
        t = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = t + timedelta(days=_SEARCH_DAYS)
        while t < end:
            if not self.day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t
        return None

    def due(self, last: datetime, now: datetime) -> bool:
        """Whether a run is due: the schedule matched a minute after ``last``, up to ``now``."""
        following = self.next_after(last)
        return following is not None and following <= now


def parse_cron(text: str) -> Cron:
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"a cron schedule has 5 fields (minute hour day month weekday), not {len(fields)}: "
            f"{text!r}"
        )
    sets = [_parse_field(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = {0 if d == 7 else d for d in sets[4]}
    return Cron(
        text=" ".join(fields),
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=frozenset(weekdays),
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
    )
