"""Calendars on the client side: rule builders from CLI text (`holidays_rule("DE-BY")`,
`date_range_rule`, `time_of_day_rule`, `parse_weekdays`), and the JSON of docs/cli.md ("Calendar"):
`calendar_to_json` and `calendar_from_json`, which reads it back (`calendar put --file`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cronraft.client import _render
from cronraft.errors import (
    InvalidArgument,
)
from cronraft.proto.v1 import common_pb2

# ------------------------------------------------------------------------------------------- calendars

RULE_KINDS = ("dates", "holidays", "weekdays", "date_range", "time_of_day", "cron")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_OF_DAY = re.compile(r"\d{2}:\d{2}(?::\d{2})?")
_WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


def check_date(text: str, field: str) -> str:
    """A "YYYY-MM-DD" calendar date (checked for form and existence), returned as given."""
    s = text.strip()
    try:
        if not _DATE.fullmatch(s):
            raise ValueError("expected YYYY-MM-DD")
        datetime.strptime(s, "%Y-%m-%d")
    except ValueError as exc:
        raise InvalidArgument(field, f"invalid date {text!r}: {exc}") from None
    return s


def check_time_of_day(text: str, field: str) -> str:
    """An "HH:MM" or "HH:MM:SS" local time, returned as given."""
    s = text.strip()
    ok = _TIME_OF_DAY.fullmatch(s) is not None
    if ok:
        parts = [int(p) for p in s.split(":")]
        ok = parts[0] < 24 and parts[1] < 60 and (len(parts) < 3 or parts[2] < 60)
    if not ok:
        raise InvalidArgument(field, f"invalid time of day {text!r}: expected HH:MM or HH:MM:SS")
    return s


def parse_weekdays(text: str | Sequence[int | str], field: str = "weekdays") -> list[int]:
    """ISO days of week (1 = Monday .. 7 = Sunday) from "6,7", "sat,sun" or a sequence of them."""
    items = text.split(",") if isinstance(text, str) else list(text)
    days: list[int] = []
    for item in items:
        if isinstance(item, str):
            word = item.strip().lower()
            day = _WEEKDAYS.get(word[:3]) if word[:3] in _WEEKDAYS else None
            if day is None and word.isdigit():
                day = int(word)
        else:
            day = item
        if not isinstance(day, int) or isinstance(day, bool) or not 1 <= day <= 7:
            raise InvalidArgument(field, f"invalid day of week {item!r}: expected 1 (Monday) .. 7 (Sunday)")
        if day not in days:
            days.append(day)
    if not days:
        raise InvalidArgument(field, "expected at least one day of week")
    return days


def holidays_rule(text: str, field: str = "holidays") -> common_pb2.CalendarRule:
    """ "FR" or "DE-BY" (country, optional subdivision) as a holidays rule."""
    country, dash, subdivision = text.strip().partition("-")
    if not re.fullmatch(r"[A-Za-z]{2}", country) or (dash and not subdivision):
        raise InvalidArgument(
            field, f"invalid holiday set {text!r}: expected CC or CC-SUBDIV, e.g. FR or DE-BY"
        )
    return common_pb2.CalendarRule(
        holidays=common_pb2.HolidaySet(country=country.upper(), subdivision=subdivision.upper())
    )


def date_range_rule(text: str, field: str = "date_range") -> common_pb2.CalendarRule:
    """ "2025-07-14..2025-08-15" (inclusive) as a date-range rule."""
    start, sep, end = text.partition("..")
    if not sep:
        raise InvalidArgument(
            field, f"invalid date range {text!r}: expected FROM..TO (YYYY-MM-DD..YYYY-MM-DD)"
        )
    lo, hi = check_date(start, field), check_date(end, field)
    if hi < lo:
        raise InvalidArgument(field, f"invalid date range {text!r}: it ends before it starts")
    return common_pb2.CalendarRule(date_range=common_pb2.DateRange(**{"from": lo, "to": hi}))


def time_of_day_rule(text: str, field: str = "time_of_day") -> common_pb2.CalendarRule:
    """ "22:00-06:00" ([start, end) local time; end before start wraps past midnight)."""
    start, sep, end = text.partition("-")
    if not sep:
        raise InvalidArgument(field, f"invalid time-of-day range {text!r}: expected HH:MM-HH:MM")
    return common_pb2.CalendarRule(
        time_of_day=common_pb2.TimeOfDayRange(
            start=check_time_of_day(start, field), end=check_time_of_day(end, field)
        )
    )


def rule_to_json(rule: common_pb2.CalendarRule) -> dict[str, Any]:
    kind = rule.WhichOneof("kind")
    if kind == "dates":
        return {"kind": "dates", "dates": list(rule.dates.dates)}
    if kind == "holidays":
        return {
            "kind": "holidays",
            "country": rule.holidays.country,
            "subdivision": rule.holidays.subdivision,
        }
    if kind == "weekdays":
        return {"kind": "weekdays", "days": list(rule.weekdays.days)}
    if kind == "date_range":
        return {"kind": "date_range", "from": getattr(rule.date_range, "from"), "to": rule.date_range.to}
    if kind == "time_of_day":
        return {"kind": "time_of_day", "start": rule.time_of_day.start, "end": rule.time_of_day.end}
    if kind == "cron":
        return {"kind": "cron", "expression": rule.cron}
    return {"kind": None}


def calendar_to_json(calendar: common_pb2.Calendar) -> dict[str, Any]:
    """The JSON object of a calendar (docs/cli.md, "Calendar"); `calendar_from_json` reads it back."""
    out: dict[str, Any] = {
        "name": calendar.name,
        "namespace": calendar.namespace or "default",
        "time_zone": calendar.time_zone,
        "description": calendar.description,
        "exclude": [rule_to_json(r) for r in calendar.exclude],
        "include": list(calendar.include),
        "version": calendar.version,
    }
    _render.time_fields(out, "updated_at", calendar.updated_at_ms)
    return out


def _json_str(obj: Mapping[str, Any], key: str, field: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidArgument(f"{field}.{key}", f"expected a non-empty string, got {value!r}")
    return value


def _json_list(obj: Mapping[str, Any], key: str, field: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise InvalidArgument(f"{field}.{key}", f"expected a list, got {value!r}")
    return value


def rule_from_json(obj: Any, field: str) -> common_pb2.CalendarRule:
    if not isinstance(obj, dict):
        raise InvalidArgument(field, f'expected an object with a "kind", got {obj!r}')
    kind = obj.get("kind")
    if kind == "dates":
        dates = [
            check_date(d, f"{field}.dates") if isinstance(d, str) else ""
            for d in _json_list(obj, "dates", field)
        ]
        if not dates or "" in dates:
            raise InvalidArgument(f"{field}.dates", "expected a non-empty list of YYYY-MM-DD strings")
        return common_pb2.CalendarRule(dates=common_pb2.DateList(dates=dates))
    if kind == "holidays":
        country = _json_str(obj, "country", field, required=True)
        sub = _json_str(obj, "subdivision", field)
        return holidays_rule(f"{country}-{sub}" if sub else country, f"{field}.country")
    if kind == "weekdays":
        return common_pb2.CalendarRule(
            weekdays=common_pb2.WeekdaySet(
                days=parse_weekdays(_json_list(obj, "days", field), f"{field}.days")
            )
        )
    if kind == "date_range":
        lo = _json_str(obj, "from", field, required=True)
        hi = _json_str(obj, "to", field, required=True)
        return date_range_rule(f"{lo}..{hi}", field)
    if kind == "time_of_day":
        start = _json_str(obj, "start", field, required=True)
        end = _json_str(obj, "end", field, required=True)
        return time_of_day_rule(f"{start}-{end}", field)
    if kind == "cron":
        return common_pb2.CalendarRule(cron=_json_str(obj, "expression", field, required=True))
    raise InvalidArgument(
        f"{field}.kind",
        f"unknown rule kind {kind!r} (expected one of: {', '.join(RULE_KINDS)})",
    )


def calendar_from_json(obj: Any, name: str | None = None) -> common_pb2.Calendar:
    """A `Calendar` from the JSON of `calendar_to_json` (version and updated_at are ignored: the
    cluster sets them; so is namespace: the client's namespace, --namespace, is where it is put).
    `name`, when given, is used and must agree with a name in the document."""
    if not isinstance(obj, dict):
        raise InvalidArgument("calendar", "expected a JSON object")
    known = {
        "name",
        "namespace",
        "time_zone",
        "description",
        "exclude",
        "include",
        "version",
        "updated_at",
        "updated_at_ms",
    }
    unknown = sorted(set(obj) - known)
    if unknown:
        raise InvalidArgument(f"calendar.{unknown[0]}", f"unknown key (expected: {', '.join(sorted(known))})")
    doc_name = _json_str(obj, "name", "calendar")
    if name and doc_name and doc_name != name:
        raise InvalidArgument("calendar.name", f"the file names {doc_name!r}, the command {name!r}")
    final = name or doc_name
    if not final:
        raise InvalidArgument("calendar.name", "must not be empty")
    include = _json_list(obj, "include", "calendar")
    if not all(isinstance(i, str) and i.strip() for i in include):
        raise InvalidArgument("calendar.include", "expected a list of calendar names")
    return common_pb2.Calendar(
        name=final,
        time_zone=_json_str(obj, "time_zone", "calendar"),
        description=_json_str(obj, "description", "calendar"),
        exclude=[
            rule_from_json(r, f"calendar.exclude[{i}]")
            for i, r in enumerate(_json_list(obj, "exclude", "calendar"))
        ],
        include=include,
    )
