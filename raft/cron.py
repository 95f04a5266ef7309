"""Cron expressions: what they mean, and the next wall time that matches one. Pure functions of their
arguments (no clock, no time zones, no I/O): `raft/schedule.py` maps wall time to instants and applies
the DST rules; `raft/calendar.py` matches calendar cron rules minute by minute.

Meaning (docs/scheduling.md, "Cron compatibility", has the table next to cronie, Quartz and croniter):

- 5 fields `minute hour day-of-month month day-of-week`, or 6 with seconds first; macros `@yearly`
  `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly` (cronie's, including which fields
  count as starting with `*`). Ranges: second/minute 0-59, hour 0-23, day of month 1-31, month 1-12 or
  JAN-DEC, day of week 0-7 or SUN-SAT (0 and 7 are Sunday). Names and letters in any case.
- Each field is a list (`,`, at most MAX_LIST_ITEMS items) of: `*`; a value; a range `a-b` (`a-a` is
  the one value a: croniter 6/7 reads it as `*`); a step `*/s`, `a-b/s` (a, a+s, ... up to b) or `a/s`
  (a up to the field's maximum, Quartz and cronsim; cronie refuses it). A range whose end is below its
  start wraps (`22-2` is 22,23,0,1,2, croniter's reading; cronie accepts it and never fires).
- Day of month also takes `L` (last day), `L-n` (n days before the last day, n 1-30: `L-1` is the
  day before the last; no fire in a month of n days or fewer), `LW` (last weekday, Mon-Fri) and
  `nW` (the weekday nearest day n, never leaving the month: the 1st on a Saturday moves to Monday
  the 3rd, a last day on a Sunday to Friday; no fire in a month shorter than n), Quartz's
  definitions. Day of week also takes `nL` (the last weekday n of the month, e.g. `5L` the last
  Friday; croniter's `L5` is read the same) and `n#k` (the k-th weekday n, k 1-5). `?` in either
  day field is `*` (Quartz).
- Day of month and day of week combine as in cronie (and Vixie cron, and cronsim): when either field
  starts with `*` (or `?`) a day must match both; otherwise it matches when either matches. So
  `0 0 */6 * 1` is the Mondays among the 1st, 7th, 13th...; `0 0 1 * 1` is the 1st and every Monday.
- `elapsed`: the minute or the hour field starts with `*` (cronie's MIN_STAR/HR_STAR, `@hourly`). Such
  a job follows the new clock through a DST change; the others are "fixed-time" (raft/schedule.py).

Hashed/random fields (croniter's `H`, `R`, cronie's `~`) are refused: nodes would disagree.

`CronExpression.next_after(wall_s)` is the first matching wall time strictly after `wall_s`, on naive
epoch seconds (seconds since 1970-01-01T00:00 on the wall clock), or None past year 9999. Its cost is
a few bisections and one month step per month without a match, with no loop over days, hours or
minutes: the matching days of a month depend only on its length and the weekday of its 1st, so each
expression precomputes them for the 28 possible months. An expression that matches no date at all
(`0 0 30 2 *`) is refused by `parse`, and a search never looks further than 400 years (the Gregorian
calendar's period) past any start, so every call does bounded work.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

__all__ = [
    "EVALUATOR_VERSION",
    "MACROS",
    "MAX_EXPRESSION_LENGTH",
    "MAX_LIST_ITEMS",
    "CronExpression",
    "parse",
]

# Bumped whenever a change could move a fire of some expression: nodes must agree on it (like tzdata).
EVALUATOR_VERSION = "2"  # 2: `L-n` in day-of-month
MAX_EXPRESSION_LENGTH = 1024  # characters, after a macro is expanded
MAX_LIST_ITEMS = 64  # items of one field's comma list (a full explicit minute list is 60)

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
_MAX_YEAR = 9999
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Cumulative days before each month of a common year (index 1..12), for a fast date -> ordinal.
_DAYS_BEFORE = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_SATURDAY, _SUNDAY = 6, 0


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0  # the value of names[0]


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES, 1)
_DOW = _Field("day-of-week", 0, 7, _DAY_NAMES, 0)


class _Bad(ValueError):
    """A term of a field is wrong; `parse` adds which field."""


_Term = Callable[[str], set[int]]  # one list item -> its plain values (special forms recorded aside)


# ---------------------------------------------------------------------------------------------------
# The parsed expression


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: hashed by identity (cheap memo keys)
class CronExpression:
    """A parsed expression (`parse`). Immutable; equal texts share one instance (parse is memoised)."""

    text: str  # as given
    seconds: tuple[int, ...]  # sorted, never empty
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[bool, ...]  # index 1..12
    # Matching days of a month, sorted, indexed by weekday of its 1st (0 = Sunday) * 4 + length - 28.
    day_table: tuple[tuple[int, ...], ...]
    elapsed: bool  # the minute or hour field starts with `*`
    has_seconds: bool
    minute_set: frozenset[int]
    hour_set: frozenset[int]

    def days_of(self, year: int, month: int) -> tuple[int, ...]:
        """The days of `month` in `year` that match the day-of-month, day-of-week and month fields."""
        if not self.months[month]:
            return ()
        return self.day_table[_month_key(year, month)]

    def matches_minute(self, year: int, month: int, day: int, hour: int, minute: int) -> bool:
        """True when the wall-clock minute matches (the seconds field is not looked at)."""
        if minute not in self.minute_set or hour not in self.hour_set or not self.months[month]:
            return False
        days = self.day_table[_month_key(year, month)]
        i = bisect_left(days, day)
        return i < len(days) and days[i] == day

    def next_after(self, wall_s: int) -> int | None:
        """The first matching wall time (naive epoch seconds) strictly after `wall_s`; None when it
        would be after year 9999."""
        target = wall_s + 1
        day_number, second_of_day = divmod(target, 86_400)
        year, month, day = _civil(day_number + _EPOCH_ORDINAL)
        if year > _MAX_YEAR:
            return None
        months, table = self.months, self.day_table
        stop = year + 401
        while True:
            if months[month]:
                days = table[_month_key(year, month)]
                i = bisect_left(days, day)
                if i < len(days):
                    if days[i] == day:
                        found = self._time_from(second_of_day)
                        if found is not None:
                            return (_ordinal(year, month, day) - _EPOCH_ORDINAL) * 86_400 + found
                        i += 1
                    if i < len(days):
                        first = (self.hours[0] * 60 + self.minutes[0]) * 60 + self.seconds[0]
                        return (_ordinal(year, month, days[i]) - _EPOCH_ORDINAL) * 86_400 + first
            month += 1
            if month == 13:
                month, year = 1, year + 1
                if year > _MAX_YEAR or year > stop:
                    return None
            day, second_of_day = 1, 0

    def _time_from(self, second_of_day: int) -> int | None:
        """The first matching second of the day at or after `second_of_day`, or None."""
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_left(hours, hour)
        if i == len(hours):
            return None
        if hours[i] == hour:
            j = bisect_left(minutes, minute)
            if j < len(minutes):
                if minutes[j] == minute:
                    k = bisect_left(seconds, second)
                    if k < len(seconds):
                        return (hour * 60 + minute) * 60 + seconds[k]
                    j += 1
                if j < len(minutes):
                    return (hour * 60 + minutes[j]) * 60 + seconds[0]
            i += 1
            if i == len(hours):
                return None
        return (hours[i] * 60 + minutes[0]) * 60 + seconds[0]


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _ordinal(year: int, month: int, day: int) -> int:
    """date(year, month, day).toordinal(), without building a date."""
    y = year - 1
    days = y * 365 + y // 4 - y // 100 + y // 400 + _DAYS_BEFORE[month] + day
    return days + 1 if month > 2 and _leap(year) else days


def _civil(ordinal: int) -> tuple[int, int, int]:
    """(year, month, day) of a proleptic Gregorian ordinal (date.fromordinal), for ordinals >= 1."""
    if ordinal < 1:
        return (1, 1, 1)
    if ordinal > 3_652_059:  # after 9999-12-31
        return (_MAX_YEAR + 1, 1, 1)
    value = date.fromordinal(ordinal)
    return value.year, value.month, value.day


def _month_key(year: int, month: int) -> int:
    """Index into `day_table`: weekday of the 1st (0 = Sunday) * 4 + the month's length - 28."""
    length = 29 if month == 2 and _leap(year) else _MONTH_DAYS[month]
    return (_ordinal(year, month, 1) % 7) * 4 + length - 28


# ---------------------------------------------------------------------------------------------------
# Parsing


@functools.lru_cache(maxsize=4096)
def parse(expression: str) -> CronExpression:
    """Parse a 5-field or 6-field (seconds first) expression or a macro. ValueError says what is wrong,
    naming the field and, for a bound, the bound."""
    text = expression.strip()
    if not text:
        raise ValueError("must not be empty")
    if not text.isascii():
        raise ValueError("must be ASCII")
    if text.startswith("@"):
        macro = text.lower()
        if macro == "@reboot":
            raise ValueError(
                "@reboot is not supported: a cluster never boots as a whole; use an `at` schedule"
            )
        if macro not in MACROS:
            raise ValueError(f"unknown macro {text!r}; use one of {', '.join(sorted(MACROS))}")
        text = MACROS[macro]
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ValueError(f"longer than {MAX_EXPRESSION_LENGTH} characters ({len(text)})")
    fields = text.upper().split()
    if len(fields) not in (5, 6):
        raise ValueError(f"expected 5 or 6 fields, got {len(fields)}")
    has_seconds = len(fields) == 6
    if not has_seconds:
        fields.insert(0, "0")
    second_f, minute_f, hour_f, dom_f, month_f, dow_f = fields

    seconds = _values(second_f, _SECOND)
    minutes = _values(minute_f, _MINUTE)
    hours = _values(hour_f, _HOUR)
    month_values = _values(month_f, _MONTH)
    dom = _day_of_month(dom_f)
    dow = _day_of_week(dow_f)
    both = dom_f[0] in "*?" or dow_f[0] in "*?"
    table = tuple(_month_days(first, 28 + extra, dom, dow, both) for first in range(7) for extra in range(4))
    months = tuple(m in month_values for m in range(13))
    possible = (first * 4 + length - 28 for m in month_values for length in _LENGTHS[m] for first in range(7))
    if not any(table[key] for key in possible):
        raise ValueError("matches no date (check day of month against month)")
    return CronExpression(
        text=expression,
        seconds=tuple(sorted(seconds)),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        months=months,
        day_table=table,
        elapsed=minute_f.startswith("*") or hour_f.startswith("*"),
        has_seconds=has_seconds,
        minute_set=frozenset(minutes),
        hour_set=frozenset(hours),
    )


# Possible lengths of each month (all seven weekdays of the 1st occur for each over 400 years).
_LENGTHS = (
    (),
    (31,),
    (28, 29),
    (31,),
    (30,),
    (31,),
    (30,),
    (31,),
    (31,),
    (30,),
    (31,),
    (30,),
    (31,),
)


@dataclass(frozen=True, slots=True)
class _DomSpec:
    days: frozenset[int]
    last: bool  # L
    last_weekday: bool  # LW
    nearest: frozenset[int]  # nW
    before_last: frozenset[int] = frozenset()  # L-n


@dataclass(frozen=True, slots=True)
class _DowSpec:
    weekdays: frozenset[int]  # 0 = Sunday .. 6
    last: frozenset[int]  # nL
    nth: frozenset[tuple[int, int]]  # n#k as (weekday, k)


def _month_days(first: int, length: int, dom: _DomSpec, dow: _DowSpec, both: bool) -> tuple[int, ...]:
    """The matching days of a month of `length` days whose 1st is weekday `first` (0 = Sunday)."""
    by_dom: set[int] = {d for d in dom.days if d <= length}
    if dom.last:
        by_dom.add(length)
    by_dom.update(length - n for n in dom.before_last if n < length)
    if dom.last_weekday:
        last = (first + length - 1) % 7
        by_dom.add(length - 1 if last == _SATURDAY else length - 2 if last == _SUNDAY else length)
    for n in dom.nearest:
        if n > length:
            continue
        weekday = (first + n - 1) % 7
        if weekday == _SATURDAY:
            by_dom.add(n - 1 if n > 1 else n + 2)
        elif weekday == _SUNDAY:
            by_dom.add(n + 1 if n < length else n - 2)
        else:
            by_dom.add(n)
    by_dow: set[int] = {d for d in range(1, length + 1) if (first + d - 1) % 7 in dow.weekdays}
    for weekday in dow.last:
        last = (first + length - 1) % 7
        by_dow.add(length - (last - weekday) % 7)
    for weekday, k in dow.nth:
        day = 1 + (weekday - first) % 7 + 7 * (k - 1)
        if day <= length:
            by_dow.add(day)
    return tuple(sorted(by_dom & by_dow if both else by_dom | by_dow))


def _values(text: str, field: _Field) -> set[int]:
    """The values of a plain field (seconds, minutes, hours, months)."""
    try:
        if text.startswith("?"):
            raise _Bad("`?` is only allowed in day-of-month and day-of-week")
        return _list(text, field, lambda term: _plain(term, field))
    except _Bad as exc:
        raise ValueError(f"not a valid cron expression: {field.name} field {text!r}: {exc}") from None


def _day_of_month(text: str) -> _DomSpec:
    days: set[int] = set()
    flags = {"L": False, "LW": False}
    nearest: set[int] = set()
    before_last: set[int] = set()

    def term(item: str) -> set[int]:
        if item.startswith("L-"):
            if not item[2:].isdigit() or not 1 <= int(item[2:]) <= 30:
                raise _Bad(f"{item!r}: the days before the last after L- must be 1 to 30")
            before_last.add(int(item[2:]))
            return set()
        if item in flags:
            flags[item] = True
            return set()
        if item.endswith("W") and item[:-1].isdigit():
            nearest.add(_number(item[:-1], _DOM))
            return set()
        return _plain(item, _DOM)

    try:
        days = _list(text, _DOM, term)
    except _Bad as exc:
        raise ValueError(f"not a valid cron expression: day-of-month field {text!r}: {exc}") from None
    return _DomSpec(frozenset(days), flags["L"], flags["LW"], frozenset(nearest), frozenset(before_last))


def _day_of_week(text: str) -> _DowSpec:
    last: set[int] = set()
    nth: set[tuple[int, int]] = set()

    def term(item: str) -> set[int]:
        if item.endswith("L") and len(item) > 1:  # nL: the last weekday n of the month
            last.add(_number(item[:-1], _DOW) % 7)
            return set()
        if item.startswith("L") and len(item) > 1:  # croniter's spelling of the same: L5
            last.add(_number(item[1:], _DOW) % 7)
            return set()
        if item == "L":
            raise _Bad("`L` needs a weekday in day-of-week: `5L` is the last Friday")
        if "#" in item:
            weekday, _, k = item.partition("#")
            if not k.isdigit() or not 1 <= int(k) <= 5:
                raise _Bad(f"{item!r}: the week number after # must be 1 to 5")
            nth.add((_number(weekday, _DOW) % 7, int(k)))
            return set()
        return {value % 7 for value in _plain(item, _DOW)}

    try:
        weekdays = _list(text, _DOW, term)
    except _Bad as exc:
        raise ValueError(f"not a valid cron expression: day-of-week field {text!r}: {exc}") from None
    return _DowSpec(frozenset(weekdays), frozenset(last), frozenset(nth))


def _list(text: str, field: _Field, term: _Term) -> set[int]:
    items = text.split(",")
    if len(items) > MAX_LIST_ITEMS:
        raise _Bad(f"at most {MAX_LIST_ITEMS} list items, got {len(items)}")
    values: set[int] = set()
    for item in items:
        if not item:
            raise _Bad("empty list item")
        if "~" in item or (item[0] in "HR" and (len(item) == 1 or item[1] in "(/")):
            raise _Bad(f"hashed (H) and random (R) fields are not supported, nor cronie's ~: {item!r}")
        values |= term(item)
    return values


def _plain(item: str, field: _Field) -> set[int]:
    """`*`, `?`, a value, `a-b`, each optionally `/step`, and `a/step` (a up to the field's maximum)."""
    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise _Bad(f"{item!r}: the step after / must be a whole number of at least 1")
        step = int(step_text)
    if body in ("*", "?"):
        return set(range(field.low, field.high + 1, step))
    low_text, dash, high_text = body.partition("-")
    low = _number(low_text, field)
    if not dash:
        return set(range(low, field.high + 1, step)) if slash else {low}
    high = _number(high_text, field)
    if high >= low:
        return set(range(low, high + 1, step))
    # A reversed range wraps past the field's end (croniter's reading); Sunday is counted once.
    top = 6 if field is _DOW else field.high
    sequence = list(range(low, top + 1)) + list(range(field.low, high + 1))
    return set(sequence[::step])


def _number(text: str, field: _Field) -> int:
    if text.isdigit():
        value = int(text)
    elif text in field.names:
        value = field.names.index(text) + field.name_base
    else:
        raise _Bad(f"{text!r} is not a number" + (" or a name" if field.names else ""))
    if not field.low <= value <= field.high:
        hint = " (0 and 7 are Sunday)" if field is _DOW else ""
        raise _Bad(f"{value} is out of range {field.low}-{field.high}{hint}")
    return value
