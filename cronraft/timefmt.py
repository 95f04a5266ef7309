"""The one grammar of durations and instants, and the one source of time zones (issue 14).

Every layer reads time text here: the SDK and `schedctl` (flags, spec files), the worker's command line,
and the raft layer (zones of cron schedules and calendars). This module imports nothing of the project
but the error tree, and no clock, so it is as deterministic as its input and the pinned tzdata package.

Durations (`parse_duration`, milliseconds): parts of a number (decimals allowed) and a unit among ms, s,
m, h, d, without spaces, in any order ("500ms", "1h30m", "1.5s", "1m30s250ms"), or "0". The total must
be a whole number of milliseconds and fit an int64. Weeks, months and years are not units: the error
says what to write instead. `parse_seconds` is the worker's flag form: the same grammar, plus a bare
number of seconds ("5", "2.5") and one space between a single number and its unit ("5 s").

Instants (`parse_instant`, Unix milliseconds, POSIX time): RFC 3339 with 'Z' or an offset, 'T', 't' or a
space between date and time, seconds optional, fractional seconds truncated to the millisecond; or an
RFC 9557 zone suffix ("2026-12-01T09:00:00[Europe/Paris]") alone (the wall time read in that zone) or
after an offset (which must then agree with the zone). A wall time skipped by a DST change is rejected;
one that occurs twice reads as its first occurrence unless an offset picks the repeat. A leap second
(":60") reads as the next second's ":00". A time with neither offset nor zone is rejected.

Zones (`load_zone`) come from the pinned tzdata package, never from the host's /usr/share/zoneinfo, so
that a client reads "[Europe/Paris]" as every node of the cluster does (`raft.schedule.TZDATA_VERSION`).

History: before issue 14 there were three duration grammars and two instant grammars. The client's was
the user-facing one and is this one, with its error messages. `raft.schedule`'s (whole numbers, units
once each from largest to smallest, seconds optional, nothing before 1970) had no caller outside the
tests: no stored spec and no config went through it (specs store milliseconds), so nothing stored is
read differently; its optional seconds and its int64 bound are kept here. The worker's ("5", "5 s",
seconds as a float) is `parse_seconds`.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
import re
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction
from zoneinfo import ZoneInfo

from cronraft.errors import InvalidArgument

__all__ = [
    "load_zone",
    "parse_duration",
    "parse_instant",
    "parse_seconds",
    "seconds_arg",
    "utc_text",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INT64_MAX = 2**63 - 1

# ------------------------------------------------------------------------------------------ durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_HINT = "expected a duration such as 500ms, 10s, 5m, 1h, 2d or 1h30m"

_OTHER_UNITS = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)")
# A unit people write -> (what to say, the multiplier to our unit, our unit).
_UNIT_FIXES = {
    "w": ("weeks are not a unit", 7, "d"),
    "wk": ("weeks are not a unit", 7, "d"),
    "week": ("weeks are not a unit", 7, "d"),
    "weeks": ("weeks are not a unit", 7, "d"),
    "sec": ("the unit of seconds is s", 1, "s"),
    "secs": ("the unit of seconds is s", 1, "s"),
    "second": ("the unit of seconds is s", 1, "s"),
    "seconds": ("the unit of seconds is s", 1, "s"),
    "min": ("the unit of minutes is m", 1, "m"),
    "mins": ("the unit of minutes is m", 1, "m"),
    "minute": ("the unit of minutes is m", 1, "m"),
    "minutes": ("the unit of minutes is m", 1, "m"),
    "hr": ("the unit of hours is h", 1, "h"),
    "hrs": ("the unit of hours is h", 1, "h"),
    "hour": ("the unit of hours is h", 1, "h"),
    "hours": ("the unit of hours is h", 1, "h"),
    "day": ("the unit of days is d", 1, "d"),
    "days": ("the unit of days is d", 1, "d"),
}
_MONTHS_AND_YEARS = ("mo", "mon", "month", "months", "y", "yr", "year", "years")


def utc_text(instant_ms: int) -> str:
    """An instant as RFC 3339 in UTC, milliseconds shown only when there are some: the form of instants in
    text a person reads (reasons, messages), which `parse_instant` reads back."""
    moment = _EPOCH + timedelta(milliseconds=instant_ms)
    text = moment.isoformat(timespec="milliseconds" if instant_ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def parse_duration(text: str, field: str = "duration") -> int:
    """Parse "500ms", "10s", "5m", "1h", "2d", "1h30m" (or "0") into milliseconds.

    Parts are a number (decimals allowed) and a unit among ms, s, m, h, d, written without spaces.
    The total must be a whole number of milliseconds. Raises `InvalidArgument(field, ...)`.
    """
    total = _duration(text, field)
    if total.denominator != 1:
        raise InvalidArgument(field, f"invalid duration {text!r}: finer than a millisecond")
    return int(total)


def parse_seconds(text: str, field: str = "duration") -> float:
    """Seconds of a duration as `parse_duration` reads it, or of a bare number of seconds ("5", "2.5");
    a single number and its unit may be one space apart ("5 s"). Finer than a millisecond is allowed."""
    s = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return float(s)
    single = re.fullmatch(r"(\d+(?:\.\d+)?)\s+(ms|s|m|h|d)", s)
    if single is not None:
        s = single.group(1) + single.group(2)
    return float(_duration(s, field) / 1000)


def seconds_arg(text: str) -> float:
    """`parse_seconds` as an argparse `type=`: the grammar's message on a bad value."""
    try:
        return parse_seconds(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _duration(text: str, field: str) -> Fraction:
    s = text.strip()
    if s == "0":
        return Fraction(0)
    if not s:
        raise InvalidArgument(field, f"empty duration: {_DURATION_HINT}")
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise InvalidArgument(field, f"invalid duration {text!r}: {_duration_hint(s)}")
        total += Fraction(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if total > _INT64_MAX:
        raise InvalidArgument(field, f"invalid duration {text!r}: too long")
    return total


def _duration_hint(s: str) -> str:
    """What is wrong with a duration, and the spelling that works."""
    if s.startswith("-"):
        return "a duration is not negative"
    for number, unit in _OTHER_UNITS.findall(s):
        if unit in _UNIT_MS:
            continue
        fix = _UNIT_FIXES.get(unit.lower())
        if fix is not None:
            value = Fraction(number) * fix[1]
            shown = str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
            return f"{fix[0]}: use {shown}{fix[2]} (units: ms, s, m, h, d)"
        if unit.lower() in _MONTHS_AND_YEARS or unit == "M":
            return (
                "months and years are not units (their length varies): use a cron schedule such as "
                "--cron '0 0 1 * *' (the 1st of each month) (units: ms, s, m, h, d)"
            )
        return f"{unit!r} is not a unit: use ms, s, m, h or d (e.g. 1h30m)"
    if " " in s:
        return "write it without spaces, e.g. 1h30m"
    return _DURATION_HINT


# ------------------------------------------------------------------------------------------- instants

_INSTANT = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?"
    r"(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<off>[Zz]|[+-]\d{2}:\d{2})?"
    r"(?:\[!?(?P<zone>[^\]\s]+)\])?"
)
_INSTANT_HINT = (
    "expected RFC 3339 such as 2025-06-01T09:00:00Z, 2025-06-01T11:00:00+02:00"
    " or 2025-06-01T11:00:00[Europe/Paris]"
)


def parse_instant(text: str, field: str = "instant") -> int:
    """Parse an RFC 3339 instant into Unix milliseconds (POSIX time, fraction truncated to the ms).

    Accepted: `2025-06-01T09:00:00Z`, `...+02:00`, `...-05:30`, fractional seconds, and an RFC 9557 zone
    suffix `[Europe/Paris]`, either after an offset (which must then agree with the zone) or alone, in
    which case the local time is read in that zone (a local time inside a DST gap is rejected; one in a
    DST overlap is the earlier of the two instants). A time without offset or zone is naive and rejected.
    A leap second (second 60) is read as the start of the next second, as POSIX time has no leap seconds.
    """
    m = _INSTANT.fullmatch(text.strip())
    if m is None or (m.group("frac") is not None and m.group("s") is None):
        raise InvalidArgument(field, f"invalid instant {text!r}: {_INSTANT_HINT}")
    off, zone_name = m.group("off"), m.group("zone")
    if off is None and zone_name is None:
        raise InvalidArgument(
            field, f"naive time {text!r}: add Z, an offset such as +02:00, or a zone such as [Europe/Paris]"
        )
    second = int(m.group("s") or 0)
    leap = second == 60
    frac = m.group("frac") or ""
    try:
        naive = datetime(
            int(m.group("y")),
            int(m.group("mo")),
            int(m.group("d")),
            int(m.group("h")),
            int(m.group("mi")),
            59 if leap else second,
            0 if leap else int(frac[:6].ljust(6, "0")),
        )
    except ValueError as exc:
        raise InvalidArgument(field, f"invalid instant {text!r}: {exc}") from None
    try:
        instant = _aware(naive, off, zone_name, text, field)
        if leap:
            instant += timedelta(seconds=1)
    except OverflowError:
        raise InvalidArgument(field, f"invalid instant {text!r}: out of range") from None
    return (instant - _EPOCH) // _MS


def _aware(naive: datetime, off: str | None, zone_name: str | None, text: str, field: str) -> datetime:
    """The UTC instant of a wall time with its offset, its zone, or both (which must agree)."""
    zone = _zone_of(zone_name, field) if zone_name else None
    if off is not None:
        offset = _offset(off, text, field)
        instant = naive.replace(tzinfo=UTC) - offset
        if zone is not None:
            zone_offset = instant.astimezone(zone).utcoffset()
            if zone_offset != offset:
                raise InvalidArgument(
                    field, f"offset {off} in {text!r} does not match {zone_name} ({_fmt_offset(zone_offset)})"
                )
        return instant
    assert zone is not None
    local = naive.replace(tzinfo=zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise InvalidArgument(field, f"{text!r} does not exist in {zone_name} (skipped by a DST change)")
    return local.astimezone(UTC)


def _zone_of(name: str, field: str) -> tzinfo:
    try:
        return load_zone(name)
    except ValueError:
        raise InvalidArgument(field, f"unknown time zone {name!r}") from None


def _offset(off: str, text: str, field: str) -> timedelta:
    if off in ("Z", "z"):
        return timedelta(0)
    hours, minutes = int(off[1:3]), int(off[4:6])
    if hours > 23 or minutes > 59:
        raise InvalidArgument(field, f"invalid offset {off} in {text!r}")
    delta = timedelta(hours=hours, minutes=minutes)
    return -delta if off[0] == "-" else delta


def _fmt_offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta(0)).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# ---------------------------------------------------------------------------------------------- zones

_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")
_UTC_NAMES = frozenset({"", "UTC", "Etc/UTC"})


@functools.lru_cache(maxsize=4096)
def load_zone(name: str) -> tzinfo:
    """The IANA zone `name` from the pinned tzdata package (UTC for '', 'UTC', 'Etc/UTC'). ValueError
    when unknown. Schedules, calendars, previews and parsed instants all use it, so they agree."""
    if name in _UTC_NAMES:
        return UTC
    if not _ZONE_NAME.fullmatch(name) or name not in _known_zones():
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'")
    resource = importlib.resources.files("tzdata").joinpath("zoneinfo")
    for part in name.split("/"):
        resource = resource.joinpath(part)
    with resource.open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


@functools.cache
def _known_zones() -> frozenset[str]:
    listing = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in listing.splitlines() if line.strip())
