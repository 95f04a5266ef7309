"""Calendars: named sets of excluded times, and what a task does with a nominal time they exclude.

Pure and deterministic: the replicated state machine runs this on every node, so there is no clock, no
I/O (beyond the one-time load of zone and holiday data), no randomness, and every cache is a cache of a
pure function.

A `Calendar` (proto/v1/common.proto) excludes a time when any of its rules, or any rule of a calendar it
includes (transitively), matches it. Each calendar reads times in its own `time_zone` (UTC when empty):

- whole-day rules, on the local date: `dates` (a list of days), `date_range` (from..to inclusive),
  `weekdays` (ISO 1 = Monday .. 7 = Sunday), `holidays` (public holidays of a country or subdivision);
- time rules, on the local wall time: `time_of_day` ([start, end), wrapping midnight when end < start),
  `cron` (every minute that matches a 5-field expression; Quartz's CronCalendar).

In a fall-back fold both instants of a repeated wall time are read with that wall time (so a time rule
excludes both); a spring-forward gap has no wall time and nothing to exclude.

`CalendarSet` is the union of the calendars a task names. When it excludes a nominal time, `resolve`
applies the task's `CalendarAction`: skip it, or *roll* it to the same local wall time (in the task's zone)
on the following / preceding / modified-following included day. No reference scheduler rolls (semantics.md
section 3.5); the conventions are the business-day conventions of finance (ISDA 2006, section 4.12).

Reasons are short and name the calendar whose rule matched, e.g. "FR holiday: Noël (calendar fr-business)",
"weekend (Sat) (calendar fr-business)", "date 2026-12-24 (calendar ops-freeze)". When several rules match,
the reason names the first in the order: calendars as the task lists them (each followed by the calendars
it includes, depth first, each calendar once), and within a calendar dates, date ranges, holidays,
weekdays, times of day, cron.

Determinism across nodes: holiday data comes from the `holidays` package and zones from the `tzdata`
package. Like tzdata, the `holidays` package must be at the same version on every node of a cluster (a new
version may add, move or rename a holiday, and a node that disagrees would skip a fire the others run):
install every node from the same set of pinned versions, and upgrade cluster-wide (`HOLIDAYS_VERSION`
says which one a node runs). Holiday names are asked for in each country's own default language, never
the host's locale (the package would otherwise read LANG/LANGUAGE).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import holidays
from holidays.version import __version__ as HOLIDAYS_VERSION

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.cron import CronExpression
from cronraft.raft.cron import parse as parse_cron
from cronraft.raft.schedule import load_zone

__all__ = [
    "HOLIDAYS_VERSION",
    "MAX_CALENDAR_BYTES",
    "MAX_DATES",
    "MAX_EXPANDED_CALENDARS",
    "MAX_EXPANDED_RULES",
    "MAX_INCLUDES",
    "MAX_INCLUDE_DEPTH",
    "MAX_RULES",
    "CalendarSet",
    "resolve",
    "validate_calendar",
]

MAX_RULES = 256  # rules per calendar
MAX_DATES = 10_000  # dates per `dates` rule
MAX_INCLUDES = 64  # calendars one calendar includes directly
# Includes, transitively: the longest chain of includes below a calendar (a calendar that includes
# nothing has depth 0), and what a calendar expands to: the distinct calendars (itself among them) and
# their rules, all together. Every walk over includes is iterative and visits each calendar once.
MAX_INCLUDE_DEPTH = 16
MAX_EXPANDED_CALENDARS = 256
MAX_EXPANDED_RULES = 4096
MAX_DESCRIPTION = 1024
MAX_CALENDAR_BYTES = 1 << 20  # one calendar, serialized (its rules, dates, includes, description)

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2}))?")
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_SKIP = "skip"
_ROLL = "roll"
_FIRE = "fire"


# ---------------------------------------------------------------------------------------------------
# Validation


def validate_calendar(
    cal: common_pb2.Calendar,
    *,
    known: Mapping[str, common_pb2.Calendar],
    field: str = "calendar",
    includers: Callable[[str], Iterable[str]] | None = None,
) -> None:
    """Raise InvalidArgument naming the first bad field of `cal`, or return None.

    `known` holds the calendars already stored (it may hold an older version of `cal` itself, which `cal`
    replaces); it is read by name only, so it may load calendars lazily. Every included name must be in
    `known`, including must not close a cycle, and `cal` must stay within MAX_INCLUDE_DEPTH,
    MAX_EXPANDED_CALENDARS and MAX_EXPANDED_RULES. With `includers` (the names of the stored calendars
    that include a given one directly), the calendars that include `cal` must stay within the depth too.
    `version` and `updated_at_ms` are the cluster's to set and are not checked.

    The leader calls this before proposing a PutCalendar and the state machine again when applying it,
    each with the calendars it has stored (firing.check_calendar).
    """
    if not _NAME.fullmatch(cal.name):
        raise InvalidArgument(f"{field}.name", "must be 1 to 64 characters from A-Z a-z 0-9 _ . -")
    try:
        load_zone(cal.time_zone)
    except ValueError as exc:
        raise InvalidArgument(f"{field}.time_zone", str(exc)) from None
    if len(cal.description) > MAX_DESCRIPTION:
        raise InvalidArgument(f"{field}.description", f"must be at most {MAX_DESCRIPTION} characters")
    size = cal.ByteSize()
    if size > MAX_CALENDAR_BYTES:
        raise InvalidArgument(field, f"is {size} bytes; a calendar is at most {MAX_CALENDAR_BYTES} bytes")
    if len(cal.exclude) > MAX_RULES:
        raise InvalidArgument(f"{field}.exclude", f"at most {MAX_RULES} rules, got {len(cal.exclude)}")
    for i, rule in enumerate(cal.exclude):
        _validate_rule(rule, f"{field}.exclude[{i}]")
    if len(cal.include) > MAX_INCLUDES:
        raise InvalidArgument(f"{field}.include", f"at most {MAX_INCLUDES} calendars, got {len(cal.include)}")
    for i, name in enumerate(cal.include):
        if not _NAME.fullmatch(name):  # before any lookup: LMDB refuses an empty key (fuzz, issue 11)
            raise InvalidArgument(
                f"{field}.include[{i}]", "must be a calendar name: 1 to 64 characters from A-Z a-z 0-9 _ . -"
            )
        if name != cal.name and known.get(name) is None:
            raise InvalidArgument(f"{field}.include[{i}]", f"no calendar named {name!r}")
    height = _check_expansion(cal, known, f"{field}.include")
    if includers is not None and height:
        _check_includers(cal.name, height, includers, f"{field}.include")


def _validate_rule(rule: common_pb2.CalendarRule, field: str) -> None:
    kind = rule.WhichOneof("kind")
    if kind == "dates":
        dates = rule.dates.dates
        if not dates:
            raise InvalidArgument(f"{field}.dates.dates", "must list at least one date")
        if len(dates) > MAX_DATES:
            raise InvalidArgument(f"{field}.dates.dates", f"at most {MAX_DATES} dates, got {len(dates)}")
        for j, text in enumerate(dates):
            _parse_date(text, f"{field}.dates.dates[{j}]")
    elif kind == "holidays":
        _validate_holidays(rule.holidays, f"{field}.holidays")
    elif kind == "weekdays":
        days = rule.weekdays.days
        if not days:
            raise InvalidArgument(f"{field}.weekdays.days", "must list at least one day (1 = Mon .. 7 = Sun)")
        if len(days) > 7:
            raise InvalidArgument(f"{field}.weekdays.days", f"at most 7 days, got {len(days)}")
        for j, day in enumerate(days):
            if not 1 <= day <= 7:
                raise InvalidArgument(
                    f"{field}.weekdays.days[{j}]", f"must be 1 (Monday) to 7 (Sunday), got {day}"
                )
    elif kind == "date_range":
        start = _parse_date(getattr(rule.date_range, "from"), f"{field}.date_range.from")
        end = _parse_date(rule.date_range.to, f"{field}.date_range.to")
        if end < start:
            raise InvalidArgument(f"{field}.date_range.to", f"must not be before from ({start.isoformat()})")
    elif kind == "time_of_day":
        start_ms = _parse_time(rule.time_of_day.start, f"{field}.time_of_day.start")
        end_ms = _parse_time(rule.time_of_day.end, f"{field}.time_of_day.end")
        if start_ms == end_ms:
            raise InvalidArgument(f"{field}.time_of_day.end", "must differ from start (the range is empty)")
    elif kind == "cron":
        try:
            _compile_cron(rule.cron)
        except ValueError as exc:
            raise InvalidArgument(f"{field}.cron", str(exc)) from None
    else:
        raise InvalidArgument(
            field, "empty rule: set one of dates, holidays, weekdays, date_range, time_of_day, cron"
        )


def _parse_date(text: str, field: str) -> date:
    if not _DATE.fullmatch(text):
        raise InvalidArgument(field, f"not a date (YYYY-MM-DD): {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(field, f"not a date (YYYY-MM-DD): {text!r}") from None


def _parse_time(text: str, field: str) -> int:
    """Milliseconds since local midnight of "HH:MM" or "HH:MM:SS"."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise InvalidArgument(field, f"not a time of day (HH:MM or HH:MM:SS): {text!r}")
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise InvalidArgument(field, f"not a time of day (00:00 to 23:59:59): {text!r}")
    return ((hour * 60 + minute) * 60 + second) * 1000


def _validate_holidays(rule: common_pb2.HolidaySet, field: str) -> None:
    countries = _supported_countries()
    if rule.country not in countries:
        hint = f"; did you mean {rule.country.upper()!r}?" if rule.country.upper() in countries else ""
        raise InvalidArgument(
            f"{field}.country",
            f"unknown country {rule.country!r}: use an ISO 3166-1 alpha-2 code that the holidays "
            f"package ({HOLIDAYS_VERSION}) supports, e.g. 'FR'{hint}",
        )
    if rule.subdivision and rule.subdivision not in countries[rule.country]:
        known = ", ".join(countries[rule.country]) or "none"
        raise InvalidArgument(
            f"{field}.subdivision",
            f"unknown subdivision {rule.subdivision!r} of {rule.country}; known: {known}",
        )


@functools.cache
def _supported_countries() -> Mapping[str, tuple[str, ...]]:
    """Country code -> its subdivision codes and aliases (without deprecated ones)."""
    result: dict[str, tuple[str, ...]] = {}
    for code in holidays.list_supported_countries(include_aliases=False):
        entity = getattr(holidays, code)
        result[code] = tuple(entity.subdivisions) + tuple(entity.subdivisions_aliases)
    return result


def _chain(names: Sequence[str]) -> str:
    """A chain of calendar names for a message, its middle elided past 8 names."""
    shown = list(names) if len(names) <= 8 else [*names[:4], "...", *names[-3:]]
    return " -> ".join(shown)


def _check_expansion(cal: common_pb2.Calendar, known: Mapping[str, common_pb2.Calendar], field: str) -> int:
    """Walk the includes below `cal` (iteratively, depth first, each calendar once): refuse a cycle
    through `cal`, a missing calendar, a chain deeper than MAX_INCLUDE_DEPTH, or an expansion larger than
    MAX_EXPANDED_CALENDARS / MAX_EXPANDED_RULES. Returns the include depth of `cal`."""
    children: dict[str, Sequence[str]] = {cal.name: cal.include}
    height: dict[str, int] = {}  # calendars walked: the depth below each one
    path = [cal.name]  # the chain from `cal` to the calendar being walked
    on_path = {cal.name}
    pending = [iter(cal.include)]
    calendars, rules = 1, len(cal.exclude)
    while pending:
        child = next(pending[-1], None)
        if child is None:  # every include of path[-1] walked
            pending.pop()
            done = path.pop()
            on_path.discard(done)
            height[done] = max((height[c] + 1 for c in children[done]), default=0)
            continue
        if child in on_path:
            raise InvalidArgument(field, "cycle " + " -> ".join([*path[path.index(child) :], child]))
        if child in height:
            if len(path) + height[child] > MAX_INCLUDE_DEPTH:
                raise InvalidArgument(
                    field,
                    f"include depth above {MAX_INCLUDE_DEPTH}: {_chain([*path, child])} is itself "
                    f"{height[child]} deep",
                )
            continue
        if len(path) > MAX_INCLUDE_DEPTH:
            raise InvalidArgument(
                field,
                f"include depth above {MAX_INCLUDE_DEPTH}: {_chain([*path, child])} (at most "
                f"{MAX_INCLUDE_DEPTH} includes from a calendar down to the last one it includes)",
            )
        stored = known.get(child)
        if stored is None:  # only in a store that lost a calendar: stored includes were checked
            raise InvalidArgument(field, f"no calendar named {child!r} (included by {path[-1]})")
        calendars += 1
        rules += len(stored.exclude)
        if calendars > MAX_EXPANDED_CALENDARS:
            raise InvalidArgument(
                field, f"expands to more than {MAX_EXPANDED_CALENDARS} calendars (with its includes)"
            )
        if rules > MAX_EXPANDED_RULES:
            raise InvalidArgument(
                field, f"expands to more than {MAX_EXPANDED_RULES} rules (with its includes' rules)"
            )
        children[child] = stored.include
        path.append(child)
        on_path.add(child)
        pending.append(iter(stored.include))
    return height[cal.name]


def _check_includers(name: str, height: int, includers: Callable[[str], Iterable[str]], field: str) -> None:
    """Refuse when a stored calendar that includes `name` (transitively) would be deeper than
    MAX_INCLUDE_DEPTH once `name` is `height` deep. Iterative, each includer once; the stored includes are
    acyclic (a calendar closing a cycle is refused), and a cycle met anyway is not followed."""
    parents: dict[str, list[str]] = {name: list(includers(name))}
    above: dict[str, int] = {}  # includers walked: the longest chain of includers above each one
    via: dict[str, str] = {}  # the direct includer on that chain
    path, on_path = [name], {name}
    pending = [iter(parents[name])]
    while pending:
        parent = next(pending[-1], None)
        if parent is None:  # every includer of path[-1] walked
            pending.pop()
            done = path.pop()
            on_path.discard(done)
            above[done] = 0
            for p in parents[done]:
                if p in above and above[p] + 1 > above[done]:
                    above[done], via[done] = above[p] + 1, p
            continue
        if parent in on_path or parent in above:
            continue
        parents[parent] = list(includers(parent))
        path.append(parent)
        on_path.add(parent)
        pending.append(iter(parents[parent]))
    if above[name] + height > MAX_INCLUDE_DEPTH:
        chain = [name]
        while chain[-1] in via:
            chain.append(via[chain[-1]])
        raise InvalidArgument(
            field,
            f"include depth above {MAX_INCLUDE_DEPTH}: {_chain(chain[::-1])} would be "
            f"{above[name] + height} deep ({name} itself {height})",
        )


# ---------------------------------------------------------------------------------------------------
# Holidays and cron: cached pure functions


@functools.lru_cache(maxsize=4096)
def _holiday_table(country: str, subdivision: str, year: int) -> Mapping[int, str]:
    """Date ordinal -> holiday name(s) of one country (or subdivision) and year."""
    entity = getattr(holidays, country)
    # Pass the language: with None, the package reads the host's locale (LANG, LANGUAGE...).
    language = entity.default_language or "en_US"
    with warnings.catch_warnings():
        # e.g. India warns outside 2001..2035: the table is what it is on every node; a warning turned
        # into an error by one node's filters (python -W error) must not make that node diverge.
        warnings.simplefilter("ignore")
        table = holidays.country_holidays(country, subdiv=subdivision or None, years=year, language=language)
    return {day.toordinal(): name for day, name in table.items()}


@dataclass(frozen=True, slots=True)
class _Cron:
    """A 5-field expression or macro (meaning: raft/cron.py, the evaluator schedules use), matched
    minute by minute on the calendar's wall clock."""

    expression: CronExpression
    text: str

    def matches(self, local: datetime) -> bool:
        return self.expression.matches_minute(local.year, local.month, local.day, local.hour, local.minute)


@functools.lru_cache(maxsize=1024)
def _compile_cron(expression: str) -> _Cron:
    fields = expression.split()
    if fields and not fields[0].startswith("@") and len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    return _Cron(parse_cron(expression), expression)


# ---------------------------------------------------------------------------------------------------
# Compiled calendars


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One calendar's own rules, precomputed for lookups in microseconds (includes are not followed)."""

    name: str
    zone: tzinfo
    include: tuple[str, ...]
    dates: Mapping[int, str]  # ordinal -> "date 2026-12-24"
    ranges: tuple[tuple[int, int, str], ...]  # (first ordinal, last ordinal, label)
    holiday_sets: tuple[tuple[str, str, str], ...]  # (country, subdivision, label)
    weekdays: frozenset[int]  # ISO
    times: tuple[tuple[int, int, str], ...]  # [start, end) ms of day; end < start wraps
    crons: tuple[_Cron, ...]

    def day_reason(self, ordinal: int, year: int) -> str | None:
        reason = self.dates.get(ordinal)
        if reason is not None:
            return reason
        for first, last, label in self.ranges:
            if first <= ordinal <= last:
                return label
        if self.holiday_sets:
            for country, subdivision, label in self.holiday_sets:
                name = _holiday_table(country, subdivision, year).get(ordinal)
                if name is not None:
                    return f"{label}: {name}"
        if self.weekdays:
            weekday = ordinal % 7 or 7  # date.fromordinal(1) is a Monday
            if weekday in self.weekdays:
                kind = "weekend" if weekday >= 6 else "weekday"
                return f"{kind} ({_DAY_NAMES[weekday - 1]})"
        return None

    def time_reason(self, local: datetime) -> str | None:
        if self.times:
            ms = ((local.hour * 60 + local.minute) * 60 + local.second) * 1000 + local.microsecond // 1000
            for start, end, label in self.times:
                if (start <= ms < end) if start < end else (ms >= start or ms < end):
                    return label
        for cron in self.crons:
            if cron.matches(local):
                return f"cron {cron.text!r}"
        return None


@functools.lru_cache(maxsize=1024)
def _compile_calendar(data: bytes) -> _Compiled:
    """Compile a serialized, already validated calendar (keyed by its bytes, so an edit recompiles)."""
    cal = common_pb2.Calendar.FromString(data)
    zone = load_zone(cal.time_zone)
    dates: dict[int, str] = {}
    ranges: list[tuple[int, int, str]] = []
    holiday_sets: list[tuple[str, str, str]] = []
    weekdays: set[int] = set()
    times: list[tuple[int, int, str]] = []
    crons: list[_Cron] = []
    for i, rule in enumerate(cal.exclude):
        field = f"calendar {cal.name}: exclude[{i}]"
        kind = rule.WhichOneof("kind")
        if kind == "dates":
            for text in rule.dates.dates:
                day = _parse_date(text, field)
                dates.setdefault(day.toordinal(), f"date {text}")
        elif kind == "date_range":
            first = _parse_date(getattr(rule.date_range, "from"), field)
            last = _parse_date(rule.date_range.to, field)
            ranges.append((first.toordinal(), last.toordinal(), f"dates {first}..{last}"))
        elif kind == "holidays":
            where = rule.holidays.country + (
                f"-{rule.holidays.subdivision}" if rule.holidays.subdivision else ""
            )
            holiday_sets.append((rule.holidays.country, rule.holidays.subdivision, f"{where} holiday"))
        elif kind == "weekdays":
            weekdays.update(rule.weekdays.days)
        elif kind == "time_of_day":
            start, end = rule.time_of_day.start, rule.time_of_day.end
            times.append((_parse_time(start, field), _parse_time(end, field), f"time of day {start}-{end}"))
        elif kind == "cron":
            crons.append(_compile_cron(rule.cron))
    return _Compiled(
        name=cal.name,
        zone=zone,
        include=tuple(cal.include),
        dates=dates,
        ranges=tuple(ranges),
        holiday_sets=tuple(holiday_sets),
        weekdays=frozenset(weekdays),
        times=tuple(times),
        crons=tuple(crons),
    )


# ---------------------------------------------------------------------------------------------------
# Calendar sets


class CalendarSet:
    """The union of the exclusions of several calendars (and, transitively, the calendars they include).

    Immutable once built. `store` maps names to stored (validated) calendars; building costs a few
    microseconds per calendar after the first time a calendar version is seen (compiled forms are cached
    by content). Raises InvalidArgument on "spec.schedule.calendars" when a name, or a name one of them
    includes, is not in `store`.
    """

    __slots__ = ("_groups", "names")

    def __init__(self, names: Sequence[str], store: Mapping[str, common_pb2.Calendar]) -> None:
        self.names: tuple[str, ...] = tuple(names)
        ordered: list[_Compiled] = []
        seen: set[str] = set()
        # Depth first, each calendar once (which also ends a cycle a bad store might hold); iterative:
        # a stack of (name, who included it), children pushed in reverse to be visited in order.
        pending: list[tuple[str, str]] = [(name, "") for name in reversed(self.names)]
        while pending:
            name, includer = pending.pop()
            if name in seen:
                continue
            stored = store.get(name)
            if stored is None:
                where = f" (included by {includer})" if includer else ""
                raise InvalidArgument("spec.schedule.calendars", f"no calendar named {name!r}{where}")
            seen.add(name)
            compiled = _compile_calendar(stored.SerializeToString(deterministic=True))
            ordered.append(compiled)
            pending.extend((child, name) for child in reversed(compiled.include))
        # Calendars sharing a zone share one UTC -> local conversion; first-seen order is kept.
        groups: dict[tzinfo, list[_Compiled]] = {}
        for compiled in ordered:
            groups.setdefault(compiled.zone, []).append(compiled)
        self._groups: tuple[tuple[tzinfo, tuple[_Compiled, ...]], ...] = tuple(
            (zone, tuple(members)) for zone, members in groups.items()
        )

    def __repr__(self) -> str:
        return f"CalendarSet({list(self.names)!r})"

    def excluded(self, instant_ms: int) -> str | None:
        """None when `instant_ms` is included; else why it is excluded (names the calendar)."""
        for zone, members in self._groups:
            local = _local(instant_ms, zone)
            ordinal, year = local.toordinal(), local.year
            for compiled in members:
                reason = compiled.day_reason(ordinal, year) or compiled.time_reason(local)
                if reason is not None:
                    return f"{reason} (calendar {compiled.name})"
        return None

    def day_excluded(self, day: date, zone: tzinfo) -> str | None:
        """Why a whole-day rule excludes the local date `day` in `zone`, or None (time rules ignored).

        Each calendar reads `day` as its own local date at 12:00 of `day` in `zone`: the same date
        whenever the two zones are less than 12 hours apart (and always for calendars in `zone`).
        """
        noon = _instant_ms(day, time(12), zone)
        for calendar_zone, members in self._groups:
            local = day if calendar_zone is zone else _local(noon, calendar_zone).date()
            for compiled in members:
                reason = compiled.day_reason(local.toordinal(), local.year)
                if reason is not None:
                    return f"{reason} (calendar {compiled.name})"
        return None


# ---------------------------------------------------------------------------------------------------
# Resolving an excluded nominal time


def resolve(
    cal_set: CalendarSet,
    action: int,
    nominal_ms: int,
    zone: tzinfo,
    *,
    not_before_ms: int = 0,
    max_days: int = 366,
) -> tuple[str, int, str]:
    """What a task in `zone` does at `nominal_ms`: ("fire", nominal_ms, ""), ("skip", 0, reason) or
    ("roll", instant_ms, "rolled from <local date> (<reason>)").

    `action` is a `CalendarAction`. A roll keeps the nominal local wall time (in `zone`) and moves it a
    day at a time, up to `max_days`, to the first day on which that instant is not excluded (by any rule,
    time rules included). On a day where the wall time falls in a spring-forward gap, the candidate is the
    first instant after the gap; in a fold it is the first occurrence. PRECEDING never returns an instant
    at or before `not_before_ms` (the previous fire): it skips instead. MODIFIED_FOLLOWING rolls forward
    unless that leaves the nominal local month (or finds nothing), and then rolls back.
    """
    reason = cal_set.excluded(nominal_ms)
    if reason is None:
        return (_FIRE, nominal_ms, "")
    if action in (common_pb2.CALENDAR_ACTION_DEFAULT, common_pb2.CALENDAR_SKIP):
        return (_SKIP, 0, reason)
    local = _local(nominal_ms, zone)
    nominal_day, wall = local.date(), local.time()
    rolled_from = f"rolled from {nominal_day.isoformat()} ({reason})"

    def search(step: int) -> tuple[str, int]:
        """("found", instant) | ("passed", 0): rolling back reached not_before_ms | ("none", 0)."""
        for day in _days(nominal_day, step, max_days):
            candidate = _instant_ms(day, wall, zone)
            if step < 0 and candidate <= not_before_ms:
                return ("passed", 0)
            if cal_set.excluded(candidate) is None:
                return ("found", candidate)
        return ("none", 0)

    def outcome(found: tuple[str, int]) -> tuple[str, int, str]:
        status, instant = found
        if status == "found":
            return (_ROLL, instant, rolled_from)
        if status == "passed":
            return (_SKIP, 0, f"{reason}; rolling back would pass the previous fire")
        return (_SKIP, 0, f"{reason}; no included day within {max_days} days")

    if action == common_pb2.CALENDAR_ROLL_FOLLOWING:
        return outcome(search(+1))
    if action == common_pb2.CALENDAR_ROLL_PRECEDING:
        return outcome(search(-1))
    if action == common_pb2.CALENDAR_ROLL_MODIFIED_FOLLOWING:
        status, instant = search(+1)
        if status == "found":
            landed = _local(instant, zone)
            if (landed.year, landed.month) == (nominal_day.year, nominal_day.month):
                return (_ROLL, instant, rolled_from)
        return outcome(search(-1))
    raise InvalidArgument("spec.schedule.calendar_action", f"unknown calendar action {action}")


def _days(start: date, step: int, count: int) -> Iterator[date]:
    day = start
    for _ in range(count):
        try:
            day += timedelta(days=step)
        except OverflowError:  # past year 9999 or before year 1
            return
        yield day


# ---------------------------------------------------------------------------------------------------
# Wall time <-> instants (milliseconds; transitions fall on whole seconds)


def _local(instant_ms: int, zone: tzinfo) -> datetime:
    seconds, millis = divmod(instant_ms, 1000)
    moment = datetime.fromtimestamp(seconds, zone)
    return moment.replace(microsecond=millis * 1000) if millis else moment  # replace() costs 2 us


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _instant_ms(day: date, wall: time, zone: tzinfo) -> int:
    """The instant of local `day` `wall` in `zone`: its first occurrence in a fold, and in a gap the first
    instant after the gap."""
    naive = datetime.combine(day, wall.replace(tzinfo=None, fold=0))
    early = _to_ms(naive.replace(tzinfo=zone))
    if _local(early, zone).replace(tzinfo=None) == naive:
        return early  # PEP 495: fold=0 is the first occurrence of a repeated wall time
    # A gap. PEP 495: fold=0 reads the wall time with the offset before the transition (an instant after
    # it), fold=1 with the offset after it (an instant before it); find the transition in between.
    low = _to_ms(naive.replace(tzinfo=zone, fold=1)) // 1000
    high = -(-early // 1000)
    base = _local(low * 1000, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if _local(middle * 1000, zone).utcoffset() == base:
            low = middle
        else:
            high = middle
    return high * 1000
