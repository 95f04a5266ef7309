"""A schedule typed on the command line, read back in words, and the checks that keep a first-time user
from a silent misreading (issue 19). Pure functions: no I/O, no clock (`now_ms` is passed in).

- `describe(schedule, now_ms=None)`: the schedule in words ("at 09:00, on day-of-month 1-7 or on
  Monday, Europe/Paris"), for every kind (cron, at, every, delay) and the window. `describe_cron` is
  the cron part alone.
- `read_cron(text, seconds=..., dialect=...)`: the expression to store (always cronie's "unix"
  numbering: the state machine knows one dialect), the warnings to show, and a note when the input
  was translated. Refusals are `InvalidArgument("--cron", ...)` that name the field in the user's
  terms, show both readings of an ambiguous input and the flag that chooses one.
- `check_zone(name)`: an unknown zone is refused with the nearest IANA names.

It runs the evaluator the leader runs (`cronraft.raft.cron`, pure, standard library only: an explicit
exception in the import-linter contract, like `schedule preview`), so what is echoed is what fires.

Which 6-field expressions are read without `--seconds` (unambiguous): those whose first five fields
are not a valid 5-field expression (`0 30 9 * * *`: read as 5 fields, hour 30 would not exist), so
seconds-first is the only reading. Every other 6-field expression (`0 9 * * * *`, `0 0 9 * * MON`)
also reads as a 5-field one with one field too many, and is refused until `--seconds` says which is
meant. A non-zero or stepped first field is not enough: `30 9 * * * *` reads as minute 30 too. In the
quartz dialect 6 fields are always seconds-first (Quartz has no 5-field form to confuse it with).
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from dataclasses import dataclass

from cronraft.client import _render
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft import cron as _cron

__all__ = ["DIALECTS", "CronInput", "check_cron", "check_zone", "describe", "describe_cron", "read_cron"]

DIALECTS = ("unix", "quartz")
_FLAG = "--cron"
_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTHS = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_ORDINALS = ("", "first", "second", "third", "fourth", "fifth")
_YEAR = re.compile(r"^(19[7-9]\d|2\d\d\d)(-(19[7-9]\d|2\d\d\d))?$")
_FIELD_ERROR = re.compile(
    r"^not a valid cron expression: (?P<field>[a-z-]+) field (?P<text>'.*?'): (?P<why>.*)$"
)


@dataclass(frozen=True, slots=True)
class CronInput:
    """What `read_cron` made of a typed expression."""

    expression: str  # the expression to store (unix dialect)
    warnings: tuple[str, ...] = ()
    translated: str | None = None  # says what a quartz expression became, when it changed


# ------------------------------------------------------------------------------------------- reading


def read_cron(text: str, *, seconds: bool = False, dialect: str = "unix") -> CronInput:
    """Check a typed `--cron` expression (see the module's doc) and return what to store."""
    if dialect not in DIALECTS:
        raise InvalidArgument("--cron-dialect", f"expected unix or quartz, got {dialect!r}")
    source = text.strip()
    if source.startswith("@"):
        if seconds:
            raise InvalidArgument("--seconds", f"{source} is a macro without a seconds field: drop --seconds")
        _parse(source, source)
        return CronInput(source)
    fields = source.split()
    translated = None
    if dialect == "quartz":
        stored = _from_quartz(fields, source)
        if stored != source:
            translated = f"quartz {source!r} is stored as unix {stored!r}"
        fields = stored.split()
    else:
        stored = source
        _refuse_year(fields, source)
        if len(fields) == 5 and seconds:
            raise InvalidArgument(
                "--seconds",
                f"{source!r} has 5 fields: with --seconds write 6, seconds first (e.g. '0 {source}')",
            )
        if len(fields) == 6 and not seconds:
            _refuse_ambiguous(fields, source)
    _parse(stored, source)
    return CronInput(stored, tuple(_warnings(fields, dialect)), translated)


def check_cron(text: str, field: str, *, seconds: bool | None = None) -> str:
    """The SDK's and `task import`'s check of an expression built in code or read from a file.

    A year field and a malformed expression are refused in the user's terms, naming `field`. 6 fields
    mean seconds first there (the stored format, and what `task get --output json` exports); with
    `seconds` given (the SDK's `cron(..., seconds=...)`), the field count must agree with it, and an
    expression that also reads as 5 fields with one too many needs `seconds=True` to be accepted."""
    source = text.strip()
    try:
        if source.startswith("@"):
            _parse(source, source)
            return source
        fields = source.split()
        _refuse_year(fields, source)
        if seconds is not None and len(fields) in (5, 6) and (len(fields) == 6) != seconds:
            raise InvalidArgument(
                field,
                f"{source!r} has {len(fields)} fields but seconds={seconds}: "
                + ("write 6 fields, seconds first" if seconds else "pass seconds=True for seconds first"),
            )
        _parse(source, source)
        return source
    except InvalidArgument as exc:
        if exc.field == field:
            raise
        raise InvalidArgument(field, exc.problem) from None


def _parse(expression: str, typed: str) -> _cron.CronExpression:
    try:
        return _cron.parse(expression)
    except ValueError as exc:
        raise InvalidArgument(_FLAG, _teach(str(exc), typed)) from None


def _teach(message: str, typed: str) -> str:
    """The evaluator's refusal in the user's terms: the field, the bad token, the range, a hint."""
    m = _FIELD_ERROR.match(message)
    if m is None:
        if message.startswith("expected 5 or 6 fields"):
            return (
                f"{message} in {typed!r}: write minute hour day-of-month month day-of-week "
                "(e.g. '0 9 * * 1-5'), or 6 fields with seconds first and --seconds"
            )
        return f"{message} (in {typed!r})"
    field, token, why = m.group("field"), m.group("text"), m.group("why")
    hint = ""
    if "not a number or a name" in why:
        hint = {"month": " (names: JAN-DEC)", "day-of-week": " (names: SUN-SAT)"}.get(field, "")
    return f"{field}: {why}{hint}, in {token} of {typed!r}"


def _refuse_year(fields: list[str], source: str) -> None:
    """A year-last habit (`0 9 * * * 2027`, Quartz's 7th field) is refused with what to use instead."""
    if len(fields) not in (6, 7) or not all(_YEAR.match(part) for part in fields[-1].split(",")):
        return
    years = [int(y) for part in fields[-1].split(",") for y in part.split("-")]
    rest = " ".join(fields[:-1])
    if len(fields) == 6 or fields[0] == "0":  # the 5-field expression the user most likely meant
        rest = " ".join(fields[-6:-1]) if len(fields) == 6 else " ".join(fields[1:-1])
    raise InvalidArgument(
        _FLAG,
        f"{source!r}: a year field is not supported (cron has 5 fields, or 6 with seconds first). "
        f"To fire only in {fields[-1]}, bound the task instead: --cron '{rest}' "
        f"--start-at {min(years)}-01-01T00:00:00Z --end-at {max(years) + 1}-01-01T00:00:00Z "
        "(or a zone such as [Europe/Paris] instead of Z)",
    )


def _refuse_ambiguous(fields: list[str], source: str) -> None:
    """Refuse a 6-field expression that also reads as a 5-field one with a field too many."""
    five = " ".join(fields[:5])
    try:
        _cron.parse(five)
    except ValueError:
        return  # the 5-field reading does not exist: seconds first is the only one
    raise InvalidArgument(
        _FLAG,
        f"{source!r} has 6 fields and reads two ways:\n"
        f"  with seconds first (add --seconds): {describe_cron(source)}\n"
        f"  as 5 fields and one too many ('{five}'): {describe_cron(five)}\n"
        f"Give --seconds for the first, or write the 5 fields '{five}' for the second.",
    )


def _warnings(fields: list[str], dialect: str) -> list[str]:
    if len(fields) not in (5, 6):
        return []
    dom, dow = fields[-3], fields[-1]
    if dom[0] in "*?" or dow[0] in "*?":
        return []
    dom_words, dow_words = _dom_words(dom.upper()), _dow_words(dow.upper())
    return [
        f"day-of-month {dom!r} and day-of-week {dow!r} are both restricted, so cron's OR rule applies: "
        f"it fires on {dom_words} and also on {dow_words}, not only on the days that are both. "
        f"For the days that are both, {_and_alternative(fields, dom.upper(), dow.upper(), dialect)}"
    ]


def _and_alternative(fields: list[str], dom: str, dow: str, dialect: str) -> str:
    """How to write "day-of-month AND day-of-week" (cron has no such form in general)."""
    weekdays = _plain_weekdays(dow)
    m = re.fullmatch(r"(1|8|15|22)-(7|14|21|28)", dom)
    if weekdays is not None and m is not None and int(m.group(2)) - int(m.group(1)) == 6:
        k = (int(m.group(1)) - 1) // 7 + 1
        days = ",".join(f"{_DAY_NAMES[d]}#{k}" for d in weekdays)
        expression = " ".join([*fields[:-3], "*", fields[-2], days])
        if dialect == "quartz":
            expression = " ".join([*fields[:-3], "?", fields[-2], days])
        names = "/".join(_WEEKDAYS[d] for d in weekdays)
        return f"write day-of-week as the {_ORDINALS[k]} {names}: '{expression}'"
    return (
        "use `n#k` in day-of-week for the k-th weekday of a month (`MON#1`: the first Monday), "
        "`nL` for the last one, or keep one day field and exclude the other days with a calendar (--calendar)"
    )


def _plain_weekdays(dow: str) -> list[int] | None:
    """The weekdays of a list of plain values and ranges (None when it has another form)."""
    days: list[int] = []
    for item in dow.split(","):
        low, dash, high = item.partition("-")
        a, b = _weekday_number(low), _weekday_number(high) if dash else _weekday_number(low)
        if a is None or b is None or b < a:
            return None
        days.extend(d % 7 for d in range(a, b + 1) if d % 7 not in days)
    return sorted(days)


def _weekday_number(text: str) -> int | None:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    return _DAY_NAMES.index(text) if text in _DAY_NAMES else None


# ------------------------------------------------------------------------------------ quartz dialect


def _from_quartz(fields: list[str], source: str) -> str:
    """A Quartz expression in the unix dialect: weekday numbers 1-7 (SUN-SAT) become 0-6, `FRI#L` the
    last Friday (`5L`), a lone `L` in day-of-week Saturday; a 7th (year) field `*` or `?` is dropped,
    another is refused; seconds `0` are dropped (a 5-field expression is stored)."""
    if len(fields) == 7:
        if fields[6] in ("*", "?"):
            fields = fields[:6]
        else:
            _refuse_year(fields, source)
            raise InvalidArgument(
                _FLAG, f"{source!r}: a year field is not supported; use --start-at/--end-at"
            )
    if len(fields) not in (5, 6):
        raise InvalidArgument(_FLAG, _teach(f"expected 5 or 6 fields, got {len(fields)}", source))
    dow = ",".join(_quartz_weekday_term(item.upper(), source) for item in fields[-1].split(","))
    out = [*fields[:-1], dow]
    if len(out) == 6 and out[0] == "0":
        out = out[1:]
    return " ".join(out)


def _quartz_weekday_term(item: str, source: str) -> str:
    if item in ("*", "?") or item.startswith("*/"):
        return item  # the same days in both numberings (1,1+s,... is 0,0+s,... shifted by one)
    if item == "L":
        return "6"  # Quartz: L alone in day-of-week is its 7, Saturday
    if item.endswith("#L"):  # FRI#L, 6#L: the last such weekday of the month
        return f"{_quartz_day(item[:-2], source)}L"
    if item.endswith("L"):
        return f"{_quartz_day(item[:-1], source)}L"
    if "#" in item:
        day, _, k = item.partition("#")
        return f"{_quartz_day(day, source)}#{k}"
    body, slash, step = item.partition("/")
    low, dash, high = body.partition("-")
    if slash and not dash:  # a/s: a up to Saturday
        return f"{_quartz_day(low, source)}-6/{step}"
    out = _quartz_day(low, source) + (f"-{_quartz_day(high, source)}" if dash else "")
    return out + (f"/{step}" if slash else "")


def _quartz_day(text: str, source: str) -> str:
    if text in _DAY_NAMES:
        return text
    if not text.isdigit() or not 1 <= int(text) <= 7:
        raise InvalidArgument(
            _FLAG,
            f"day-of-week: {text!r} is out of range 1-7 in the quartz dialect (1 is Sunday, 7 Saturday; "
            f"names SUN-SAT), in {source!r}",
        )
    return str(int(text) - 1)


# ------------------------------------------------------------------------------------------- zones


def check_zone(name: str, flag: str = "--tz") -> str:
    """`name` when it is an IANA zone; else InvalidArgument naming the nearest zone names."""
    if name in _zones():
        return name
    try:
        zoneinfo.ZoneInfo(name)
        return name
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    by_lower = {zone.lower(): zone for zone in _zones()}
    near = [by_lower[z] for z in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]
    hint = f"; did you mean {' or '.join(near)}?" if near else " (IANA names such as Europe/Paris, UTC)"
    raise InvalidArgument(flag, f"unknown time zone {name!r}{hint}")


_ZONES: frozenset[str] = frozenset()


def _zones() -> frozenset[str]:
    global _ZONES
    if not _ZONES:
        _ZONES = frozenset(zoneinfo.available_timezones())
    return _ZONES


# ------------------------------------------------------------------------------------------ describing


def describe(schedule: common_pb2.Schedule, now_ms: int | None = None) -> str:
    """The schedule in words: its kind's times, then its window."""
    kind = schedule.WhichOneof("kind")
    if kind == "cron":
        text = describe_cron(schedule.cron.expression, schedule.cron.time_zone or "UTC")
    elif kind == "at":
        text = f"once at {_instant(schedule.at.at_ms)}"
        if now_ms is not None and schedule.at.at_ms < now_ms:
            text += " (in the past)"
    elif kind == "fixed_rate":
        rate = schedule.fixed_rate
        anchor = _instant(rate.anchor_ms) if rate.anchor_ms else "1970-01-01T00:00:00Z (the Unix epoch)"
        text = f"every {_duration(rate.period_ms)}, counted from {anchor}"
    elif kind == "fixed_delay":
        delay = schedule.fixed_delay
        text = f"{_duration(delay.delay_ms)} after each run ends (the first run at once)"
        if delay.stop_on_failure:
            text += "; a run that does not succeed completes the task"
    else:
        return "no schedule"
    window = []
    if schedule.start_at_ms:
        window.append(f"from {_instant(schedule.start_at_ms)}")
    if schedule.end_at_ms:
        window.append(f"until {_instant(schedule.end_at_ms)}")
    if schedule.max_runs:
        window.append(f"at most {schedule.max_runs} run{'s' if schedule.max_runs > 1 else ''}")
    return ", ".join([text, *window])


def describe_cron(expression: str, zone: str = "UTC") -> str:
    """A cron expression (unix dialect, as stored) in words, e.g. `0 9 1-7 * MON` in Europe/Paris:
    "at 09:00, on day-of-month 1-7 or on Monday, Europe/Paris". Made for an expression `parse`
    accepts; any other is described field by field as typed."""
    text = expression.strip()
    text = _cron.MACROS.get(text.lower(), text)
    fields: list[str | None] = list(text.upper().split())
    if len(fields) == 5:
        fields.insert(0, None)
    if len(fields) != 6:
        return f"{expression} (not a cron expression), {zone or 'UTC'}"
    second, minute, hour, dom, month, dow = fields
    assert minute is not None and hour is not None and dom is not None and month is not None
    assert dow is not None
    parts = [_time_words(second, minute, hour), _day_words(dom, dow)]
    if month not in ("*", "?"):
        parts.append("in " + _list_words(month, _month_name))
    parts.append(zone or "UTC")
    return ", ".join(parts)


def _time_words(second: str | None, minute: str, hour: str) -> str:
    sec = None if second in (None, "0") else second
    if minute.isdigit() and (sec is None or sec.isdigit()):
        hours = hour.split(",")
        if all(h.isdigit() for h in hours) and len(hours) <= 6:
            tail = f":{int(sec):02d}" if sec is not None else ""
            times = [f"{int(h):02d}:{int(minute):02d}{tail}" for h in hours]
            return "at " + (times[0] if len(times) == 1 else ", ".join(times[:-1]) + " and " + times[-1])
    words = []
    if sec is not None:
        words.append(_unit_words(sec, "second"))
    if not (sec is not None and minute == "*"):
        words.append(_unit_words(minute, "minute"))
    if hour == "*":
        if words[-1].startswith("at "):
            words[-1] += " of every hour"
    elif hour.startswith("*/") and hour[2:].isdigit():
        words.append(_unit_words(hour, "hour"))
    else:
        words.append(f"in hour{'' if hour.isdigit() else 's'} {hour}")
    return ", ".join(words)


def _unit_words(text: str, unit: str) -> str:
    if text == "*":
        return f"every {unit}"
    if text.startswith("*/") and text[2:].isdigit():
        return f"every {unit}" if int(text[2:]) == 1 else f"every {text[2:]} {unit}s"
    return f"at {unit} {text}" if text.isdigit() else f"at {unit}s {text}"


def _day_words(dom: str, dow: str) -> str:
    dom_any, dow_any = dom in ("*", "?"), dow in ("*", "?")
    if dom_any and dow_any:
        return "every day"
    if dow_any:
        return "on " + _dom_words(dom)
    if dom_any:
        return "on " + _dow_words(dow)
    if dom[0] in "*?" or dow[0] in "*?":  # cronie: a field starting with * makes it AND
        return f"on {_dom_words(dom)} that is also {_dow_words(dow)}"
    return f"on {_dom_words(dom)} or on {_dow_words(dow)}"


def _dom_words(dom: str) -> str:
    plain, special = [], []
    for item in dom.split(","):
        if item == "L":
            special.append("the last day of the month")
        elif item == "LW":
            special.append("the last weekday (Monday-Friday) of the month")
        elif item.startswith("L-"):
            special.append(f"the day {item[2:]} before the last of the month")
        elif item.endswith("W") and item[:-1].isdigit():
            special.append(f"the weekday nearest day {item[:-1]}")
        else:
            plain.append(item)
    words = [f"day-of-month {','.join(plain)}"] if plain else []
    return " or ".join(words + special)


def _dow_words(dow: str) -> str:
    plain, special = [], []
    for item in dow.split(","):
        if item.endswith("L") and len(item) > 1:
            special.append(f"the last {_weekday(item[:-1])} of the month")
        elif item.startswith("L") and len(item) > 1:
            special.append(f"the last {_weekday(item[1:])} of the month")
        elif "#" in item:
            day, _, k = item.partition("#")
            nth = _ORDINALS[int(k)] if k.isdigit() and 1 <= int(k) <= 5 else k
            special.append(f"the {nth} {_weekday(day)} of the month")
        else:
            plain.append(item)
    words = [_list_words(",".join(plain), _weekday)] if plain else []
    return " or ".join(words + special)


def _list_words(text: str, name: object) -> str:
    """A list of values and ranges with names (`MON-FRI` -> Monday-Friday); steps as typed."""
    assert callable(name)
    out = []
    for item in text.split(","):
        if "/" in item or item in ("*", "?"):
            out.append(item)
            continue
        low, dash, high = item.partition("-")
        out.append(name(low) + (f"-{name(high)}" if dash else ""))
    return ", ".join(out[:-1]) + " and " + out[-1] if len(out) > 1 else out[0]


def _weekday(text: str) -> str:
    number = _weekday_number(text)
    return _WEEKDAYS[number % 7] if number is not None else text


def _month_name(text: str) -> str:
    if text.isdigit() and 1 <= int(text) <= 12:
        return _MONTHS[int(text)]
    return _MONTHS[_MONTH_NAMES.index(text) + 1] if text in _MONTH_NAMES else text


def _instant(ms: int) -> str:
    text = _render.format_instant(ms)
    return text[:19] + "Z" if text.endswith(".000Z") else text


def _duration(ms: int) -> str:
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0s"
