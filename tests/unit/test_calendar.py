"""Tests of cronraft.raft.calendar: every rule kind, composition, one test per validation error, each
calendar action (month ends, DST days, the previous-fire guard, giving up), and properties: a fired or
rolled instant is never excluded, a roll keeps the local wall time, and results are deterministic."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2 as pb
from cronraft.raft.calendar import CalendarSet, resolve, validate_calendar
from cronraft.raft.schedule import load_zone

PARIS = load_zone("Europe/Paris")
SKIP = pb.CALENDAR_SKIP
FOLLOWING = pb.CALENDAR_ROLL_FOLLOWING
PRECEDING = pb.CALENDAR_ROLL_PRECEDING
MODIFIED = pb.CALENDAR_ROLL_MODIFIED_FOLLOWING


def at(text: str, zone: str = "Europe/Paris", fold: int = 0) -> int:
    """Milliseconds of a local wall time ("YYYY-MM-DD HH:MM[:SS]") in `zone`."""
    naive = datetime.fromisoformat(text)
    return int(naive.replace(tzinfo=load_zone(zone), fold=fold).timestamp() * 1000)


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def local(instant_ms: int, zone: str = "Europe/Paris") -> str:
    """ "YYYY-MM-DD HH:MM:SS+HH:MM" in `zone`."""
    return datetime.fromtimestamp(instant_ms / 1000, load_zone(zone)).isoformat(sep=" ")


def dates(*days: str) -> pb.CalendarRule:
    return pb.CalendarRule(dates=pb.DateList(dates=list(days)))


def holidays(country: str, subdivision: str = "") -> pb.CalendarRule:
    return pb.CalendarRule(holidays=pb.HolidaySet(country=country, subdivision=subdivision))


def weekdays(*days: int) -> pb.CalendarRule:
    return pb.CalendarRule(weekdays=pb.WeekdaySet(days=list(days)))


def date_range(first: str, last: str) -> pb.CalendarRule:
    return pb.CalendarRule(date_range=pb.DateRange(**{"from": first, "to": last}))


def time_of_day(start: str, end: str) -> pb.CalendarRule:
    return pb.CalendarRule(time_of_day=pb.TimeOfDayRange(start=start, end=end))


def cron(expression: str) -> pb.CalendarRule:
    return pb.CalendarRule(cron=expression)


def calendar(
    name: str, *rules: pb.CalendarRule, zone: str = "", include: tuple[str, ...] = ()
) -> pb.Calendar:
    return pb.Calendar(name=name, time_zone=zone, exclude=list(rules), include=list(include))


def store(*calendars: pb.Calendar) -> dict[str, pb.Calendar]:
    known: dict[str, pb.Calendar] = {}
    for cal in calendars:
        validate_calendar(cal, known=known)
        known[cal.name] = cal
    return known


def one(cal: pb.Calendar, *others: pb.Calendar) -> CalendarSet:
    return CalendarSet([cal.name], store(*others, cal))


FR_BUSINESS = calendar("fr-business", holidays("FR"), weekdays(6, 7), zone="Europe/Paris")
FR_SET = one(FR_BUSINESS)


# ---------------------------------------------------------------------------------------------------
# Rules


def test_dates_are_whole_local_days_in_the_calendar_zone() -> None:
    freeze = one(calendar("ops-freeze", dates("2026-12-24"), zone="Asia/Tokyo"))
    assert freeze.excluded(at("2026-12-24 00:00", "Asia/Tokyo")) == "date 2026-12-24 (calendar ops-freeze)"
    assert freeze.excluded(at("2026-12-24 23:59:59", "Asia/Tokyo")) is not None
    assert freeze.excluded(utc("2026-12-23 15:00")) is not None  # = 2026-12-24 00:00 in Tokyo
    assert freeze.excluded(utc("2026-12-23 14:59:59")) is None
    assert freeze.excluded(at("2026-12-25 00:00", "Asia/Tokyo")) is None


def test_date_range_is_inclusive_at_both_ends() -> None:
    holiday = one(calendar("xmas", date_range("2026-12-20", "2027-01-03")))
    assert holiday.excluded(utc("2026-12-19 23:59:59")) is None
    assert holiday.excluded(utc("2026-12-20 00:00")) == "dates 2026-12-20..2027-01-03 (calendar xmas)"
    assert holiday.excluded(utc("2027-01-03 23:59:59")) is not None
    assert holiday.excluded(utc("2027-01-04 00:00")) is None


def test_weekdays_name_the_day() -> None:
    cal = one(calendar("c", weekdays(1, 6, 7)))
    assert cal.excluded(utc("2026-05-30 12:00")) == "weekend (Sat) (calendar c)"
    assert cal.excluded(utc("2026-05-31 12:00")) == "weekend (Sun) (calendar c)"
    assert cal.excluded(utc("2026-06-01 12:00")) == "weekday (Mon) (calendar c)"
    assert cal.excluded(utc("2026-06-02 12:00")) is None


def test_holidays_of_a_country_in_its_own_language() -> None:
    assert FR_SET.excluded(at("2026-12-25 09:00")) == "FR holiday: Noël (calendar fr-business)"
    assert FR_SET.excluded(at("2026-07-14 00:00")) == "FR holiday: Fête nationale (calendar fr-business)"
    assert FR_SET.excluded(at("2026-07-15 09:00")) is None
    assert FR_SET.excluded(at("2100-12-24 09:00")) is None  # years are computed as they are asked for
    assert FR_SET.excluded(at("2100-12-25 09:00")) is not None


def test_holiday_names_do_not_depend_on_the_host_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.setenv(variable, "en_US.UTF-8")
    fresh = one(calendar("fr-2031", holidays("FR"), zone="Europe/Paris"))
    assert fresh.excluded(at("2031-12-25 09:00")) == "FR holiday: Noël (calendar fr-2031)"


def test_holidays_of_a_subdivision() -> None:
    bavaria = one(calendar("by", holidays("DE", "BY"), zone="Europe/Berlin"))
    germany = one(calendar("de", holidays("DE"), zone="Europe/Berlin"))
    epiphany = at("2026-01-06 10:00", "Europe/Berlin")
    assert bavaria.excluded(epiphany) == "DE-BY holiday: Heilige Drei Könige (calendar by)"
    assert germany.excluded(epiphany) is None


def test_time_of_day_is_start_inclusive_end_exclusive() -> None:
    lunch = one(calendar("lunch", time_of_day("12:00", "13:30:30"), zone="Europe/Paris"))
    assert lunch.excluded(at("2026-06-01 11:59:59")) is None
    assert lunch.excluded(at("2026-06-01 12:00")) == "time of day 12:00-13:30:30 (calendar lunch)"
    assert lunch.excluded(at("2026-06-01 13:30:29") + 999) is not None
    assert lunch.excluded(at("2026-06-01 13:30:30")) is None


def test_time_of_day_wraps_midnight_when_end_is_before_start() -> None:
    night = one(calendar("night", time_of_day("22:00", "06:00")))
    assert night.excluded(utc("2026-06-01 21:59:59")) is None
    assert night.excluded(utc("2026-06-01 22:00")) is not None
    assert night.excluded(utc("2026-06-02 00:00")) is not None
    assert night.excluded(utc("2026-06-02 05:59:59")) is not None
    assert night.excluded(utc("2026-06-02 06:00")) is None


def test_time_of_day_excludes_both_instants_of_a_folded_wall_time() -> None:
    cal = one(calendar("c", time_of_day("02:00", "02:30"), zone="Europe/Paris"))
    first, second = at("2026-10-25 02:15", fold=0), at("2026-10-25 02:15", fold=1)
    assert second - first == 3_600_000
    assert cal.excluded(first) is not None
    assert cal.excluded(second) is not None
    assert cal.excluded(at("2026-10-25 02:45", fold=1)) is None


def test_cron_excludes_matching_minutes_in_the_calendar_zone() -> None:
    cal = one(calendar("c", cron("*/15 9-17 * * 1-5"), zone="America/New_York"))
    assert cal.excluded(at("2026-06-01 09:15", "America/New_York")) == "cron '*/15 9-17 * * 1-5' (calendar c)"
    assert cal.excluded(at("2026-06-01 09:15:59", "America/New_York")) is not None  # the whole minute
    assert cal.excluded(at("2026-06-01 09:16", "America/New_York")) is None
    assert cal.excluded(at("2026-06-01 18:00", "America/New_York")) is None
    assert cal.excluded(at("2026-05-31 09:15", "America/New_York")) is None  # Sunday


def test_cron_day_specials_and_day_or() -> None:
    last = one(calendar("c", cron("0 0 L * *")))
    assert last.excluded(utc("2026-02-28 00:00")) is not None
    assert last.excluded(utc("2028-02-28 00:00")) is None  # leap year: the 29th is last
    assert last.excluded(utc("2028-02-29 00:00")) is not None
    either = one(calendar("c", cron("0 0 1 * 1")))  # classic cron: day 1 OR Monday
    assert either.excluded(utc("2026-06-08 00:00")) is not None  # a Monday
    assert either.excluded(utc("2026-07-01 00:00")) is not None  # a Wednesday, the 1st
    assert either.excluded(utc("2026-07-02 00:00")) is None
    nth = one(calendar("c", cron("@daily"), cron("30 12 * * 1#2")))
    assert nth.excluded(utc("2026-06-08 12:30")) == "cron '30 12 * * 1#2' (calendar c)"
    assert nth.excluded(utc("2026-06-15 12:30")) is None
    assert nth.excluded(utc("2026-06-15 00:00")) == "cron '@daily' (calendar c)"
    both = one(calendar("c", cron("0 0 */6 * 1")))  # cronie: a day field starting with * means AND
    assert both.excluded(utc("2026-01-19 00:00")) is not None  # the 19th, a Monday
    assert both.excluded(utc("2026-01-13 00:00")) is None  # the 13th, a Tuesday
    assert both.excluded(utc("2026-01-12 00:00")) is None  # a Monday, the 12th
    single = one(calendar("c", cron("0 5-5 * * 2-2")))  # a-a is the value a (croniter: every value)
    assert single.excluded(utc("2026-01-06 05:00")) is not None
    assert single.excluded(utc("2026-01-06 06:00")) is None
    assert single.excluded(utc("2026-01-07 05:00")) is None
    last_friday = one(calendar("c", cron("0 0 * * 5L")))
    assert last_friday.excluded(utc("2026-01-30 00:00")) is not None
    assert last_friday.excluded(utc("2026-01-23 00:00")) is None


# ---------------------------------------------------------------------------------------------------
# Composition


def test_include_chain_applies_transitively_and_names_the_matching_calendar() -> None:
    c = calendar("c", dates("2026-03-03"))
    b = calendar("b", dates("2026-03-02"), include=("c",))
    a = calendar("a", dates("2026-03-01"), include=("b",))
    cal_set = CalendarSet(["a"], store(c, b, a))
    assert cal_set.excluded(utc("2026-03-01 12:00")) == "date 2026-03-01 (calendar a)"
    assert cal_set.excluded(utc("2026-03-02 12:00")) == "date 2026-03-02 (calendar b)"
    assert cal_set.excluded(utc("2026-03-03 12:00")) == "date 2026-03-03 (calendar c)"
    assert cal_set.excluded(utc("2026-03-04 12:00")) is None


def test_a_set_is_the_union_and_each_calendar_keeps_its_zone() -> None:
    tokyo = calendar("tokyo", weekdays(6, 7), zone="Asia/Tokyo")
    freeze = calendar("freeze", dates("2026-06-03"))
    known = store(tokyo, freeze)
    cal_set = CalendarSet(["freeze", "tokyo"], known)
    assert cal_set.excluded(utc("2026-06-03 12:00")) == "date 2026-06-03 (calendar freeze)"
    assert cal_set.excluded(utc("2026-06-05 15:00")) == "weekend (Sat) (calendar tokyo)"  # Sat 00:00 JST
    assert cal_set.excluded(utc("2026-06-05 14:59")) is None
    assert CalendarSet([], known).excluded(utc("2026-06-03 12:00")) is None


def test_the_first_listed_calendar_names_the_reason() -> None:
    known = store(calendar("x", dates("2026-06-03")), calendar("y", weekdays(3)))
    assert CalendarSet(["y", "x"], known).excluded(utc("2026-06-03 12:00")) == "weekday (Wed) (calendar y)"
    assert CalendarSet(["x", "y"], known).excluded(utc("2026-06-03 12:00")) == "date 2026-06-03 (calendar x)"


def test_a_holiday_is_named_before_a_weekend() -> None:
    assert FR_SET.excluded(at("2027-08-15 09:00")) == "FR holiday: Assomption (calendar fr-business)"


def test_unknown_calendar_names_are_rejected() -> None:
    with pytest.raises(InvalidArgument) as raised:
        CalendarSet(["fr-business", "nope"], store(FR_BUSINESS))
    assert raised.value.field == "spec.schedule.calendars"
    assert "'nope'" in raised.value.problem


def test_an_include_missing_from_the_store_is_rejected() -> None:
    known = store(calendar("b"), calendar("a", include=("b",)))
    del known["b"]
    with pytest.raises(InvalidArgument) as raised:
        CalendarSet(["a"], known)
    assert raised.value.field == "spec.schedule.calendars"
    assert raised.value.problem == "no calendar named 'b' (included by a)"


def test_an_edited_calendar_is_seen_by_a_new_set() -> None:
    old = calendar("c", dates("2026-06-03"))
    new = calendar("c", dates("2026-06-04"))
    assert CalendarSet(["c"], {"c": old}).excluded(utc("2026-06-03 12:00")) is not None
    assert CalendarSet(["c"], {"c": new}).excluded(utc("2026-06-03 12:00")) is None


def test_day_excluded_reads_whole_day_rules_only() -> None:
    cal_set = CalendarSet(
        ["c", "utc"],
        store(
            calendar("c", weekdays(6), time_of_day("00:00", "23:59"), zone="Europe/Paris"),
            calendar("utc", dates("2026-06-03")),
        ),
    )
    assert cal_set.day_excluded(date(2026, 5, 30), PARIS) == "weekend (Sat) (calendar c)"
    assert cal_set.day_excluded(date(2026, 6, 1), PARIS) is None  # the time rule does not count
    assert cal_set.day_excluded(date(2026, 6, 3), PARIS) == "date 2026-06-03 (calendar utc)"
    # A Tokyo date maps to the UTC calendar's date at its noon: the same date.
    assert cal_set.day_excluded(date(2026, 6, 3), load_zone("Asia/Tokyo")) is not None


# ---------------------------------------------------------------------------------------------------
# Validation: one test per error, each naming its field


def rejected(cal: pb.Calendar, known: Mapping[str, pb.Calendar] | None = None) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        validate_calendar(cal, known=known or {})
    return raised.value.field, raised.value.problem


def test_a_valid_calendar_passes() -> None:
    validate_calendar(FR_BUSINESS, known={})
    every = calendar(
        "every-kind.v2",
        dates("2026-12-24", "2027-12-24"),
        holidays("DE", "BY"),
        weekdays(6, 7),
        date_range("2026-12-20", "2026-12-20"),
        time_of_day("22:00", "06:00:30"),
        cron("@hourly"),
        zone="America/New_York",
        include=("fr-business",),
    )
    validate_calendar(every, known={"fr-business": FR_BUSINESS})


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "é", "a/b"])
def test_bad_name(name: str) -> None:
    assert rejected(calendar(name))[0] == "calendar.name"


def test_unknown_zone() -> None:
    assert rejected(calendar("c", zone="Mars/Olympus"))[0] == "calendar.time_zone"


def test_empty_rule() -> None:
    field, problem = rejected(calendar("c", weekdays(6), pb.CalendarRule()))
    assert field == "calendar.exclude[1]"
    assert "set one of" in problem


def test_empty_date_list() -> None:
    assert rejected(calendar("c", dates()))[0] == "calendar.exclude[0].dates.dates"


@pytest.mark.parametrize("text", ["2026-02-30", "26-01-01", "2026-1-01", "2026-01-01T00:00", ""])
def test_bad_date(text: str) -> None:
    assert rejected(calendar("c", weekdays(6), dates("2026-01-01", text))) == (
        "calendar.exclude[1].dates.dates[1]",
        f"not a date (YYYY-MM-DD): {text!r}",
    )


def test_unknown_country() -> None:
    field, problem = rejected(calendar("c", holidays("ZZ")))
    assert field == "calendar.exclude[0].holidays.country"
    assert "'ZZ'" in problem


def test_lowercase_country_gets_a_hint() -> None:
    field, problem = rejected(calendar("c", holidays("fr")))
    assert field == "calendar.exclude[0].holidays.country"
    assert "did you mean 'FR'?" in problem


def test_unknown_subdivision() -> None:
    field, problem = rejected(calendar("c", holidays("DE", "XX")))
    assert field == "calendar.exclude[0].holidays.subdivision"
    assert "BY" in problem  # lists the known ones


def test_empty_weekdays() -> None:
    assert rejected(calendar("c", weekdays()))[0] == "calendar.exclude[0].weekdays.days"


@pytest.mark.parametrize("day", [0, 8, -1])
def test_weekday_out_of_range(day: int) -> None:
    assert rejected(calendar("c", weekdays(6, day)))[0] == "calendar.exclude[0].weekdays.days[1]"


def test_bad_range_from() -> None:
    assert rejected(calendar("c", date_range("2026-13-01", "2026-12-31")))[0] == (
        "calendar.exclude[0].date_range.from"
    )


def test_bad_range_to() -> None:
    assert rejected(calendar("c", date_range("2026-01-01", "")))[0] == "calendar.exclude[0].date_range.to"


def test_range_ending_before_it_starts() -> None:
    assert rejected(calendar("c", date_range("2026-12-31", "2026-01-01"))) == (
        "calendar.exclude[0].date_range.to",
        "must not be before from (2026-12-31)",
    )


@pytest.mark.parametrize("text", ["24:00", "9:00", "12:60", "12:00:60", "noon", "12:00:00.5"])
def test_bad_time_of_day_start(text: str) -> None:
    assert rejected(calendar("c", time_of_day(text, "13:00")))[0] == "calendar.exclude[0].time_of_day.start"


def test_bad_time_of_day_end() -> None:
    assert rejected(calendar("c", time_of_day("12:00", "")))[0] == "calendar.exclude[0].time_of_day.end"


def test_empty_time_of_day_range() -> None:
    assert rejected(calendar("c", time_of_day("12:00", "12:00:00")))[0] == (
        "calendar.exclude[0].time_of_day.end"
    )


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "must not be empty"),
        ("0 9 * * * *", "expected 5 fields"),
        ("0 9 * *", "expected 5 fields"),
        ("61 9 * * *", "not a valid cron expression: minute field '61': 61 is out of range 0-59"),
        ("H 9 * * *", "hashed (H) and random (R)"),
        ("R 9 * * *", "hashed (H) and random (R)"),
        ("@reboot", "@reboot is not supported"),
        ("@sometimes", "unknown macro"),
    ],
)
def test_bad_cron(expression: str, says: str) -> None:
    field, problem = rejected(calendar("c", cron(expression)))
    assert field == "calendar.exclude[0].cron"
    assert says in problem


def test_unknown_include() -> None:
    assert rejected(calendar("c", include=("fr-business", "nope")), {"fr-business": FR_BUSINESS}) == (
        "calendar.include[1]",
        "no calendar named 'nope'",
    )


def test_self_include_is_a_cycle() -> None:
    assert rejected(calendar("a", include=("a",))) == ("calendar.include", "cycle a -> a")


def test_include_cycle_is_named() -> None:
    known = store(calendar("a"), calendar("b", include=("a",)))
    assert rejected(calendar("a", include=("b",)), known) == ("calendar.include", "cycle a -> b -> a")


def test_longer_include_cycle_is_named() -> None:
    known = store(
        calendar("a"), calendar("x"), calendar("c", include=("x", "a")), calendar("b", include=("c",))
    )
    assert rejected(calendar("a", include=("x", "b")), known) == (
        "calendar.include",
        "cycle a -> b -> c -> a",
    )


def test_a_diamond_is_not_a_cycle() -> None:
    known = store(calendar("d"), calendar("b", include=("d",)), calendar("c", include=("d",)))
    validate_calendar(calendar("a", include=("b", "c")), known=known)
    cal_set = CalendarSet(["a"], {**known, "a": calendar("a", include=("b", "c"))})
    assert cal_set.excluded(0) is None


def test_too_long_description() -> None:
    cal = calendar("c")
    cal.description = "x" * 1025
    assert rejected(cal)[0] == "calendar.description"


def test_too_many_rules() -> None:
    assert rejected(calendar("c", *[weekdays(6)] * 257))[0] == "calendar.exclude"


def test_field_prefix_is_the_callers() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_calendar(calendar("c", weekdays(9)), known={}, field="request.calendar")
    assert raised.value.field == "request.calendar.exclude[0].weekdays.days[0]"


# ---------------------------------------------------------------------------------------------------
# Resolving: "09:00 Europe/Paris on the last business day of the month, France"


def test_an_included_time_fires() -> None:
    nominal = at("2026-05-29 09:00")
    for action in (SKIP, FOLLOWING, PRECEDING, MODIFIED):
        assert resolve(FR_SET, action, nominal, PARIS) == ("fire", nominal, "")


@pytest.mark.parametrize("action", [pb.CALENDAR_ACTION_DEFAULT, SKIP])
def test_skip_is_the_default(action: int) -> None:
    assert resolve(FR_SET, action, at("2026-05-31 09:00"), PARIS) == (
        "skip",
        0,
        "weekend (Sun) (calendar fr-business)",
    )


def test_last_day_on_a_sunday_rolls_back_to_friday() -> None:
    kind, instant, reason = resolve(FR_SET, PRECEDING, at("2026-05-31 09:00"), PARIS)
    assert (kind, local(instant)) == ("roll", "2026-05-29 09:00:00+02:00")
    assert reason == "rolled from 2026-05-31 (weekend (Sun) (calendar fr-business))"


def test_last_day_on_a_holiday_rolls_back_to_the_previous_business_day() -> None:
    # 2004-05-31 was Whit Monday (Lundi de Pentecôte), a public holiday in France that year.
    kind, instant, reason = resolve(FR_SET, PRECEDING, at("2004-05-31 09:00"), PARIS)
    assert (kind, local(instant)) == ("roll", "2004-05-28 09:00:00+02:00")
    assert reason == "rolled from 2004-05-31 (FR holiday: Lundi de Pentecôte (calendar fr-business))"


def test_following_skips_a_holiday_after_a_weekend() -> None:
    # Sat 2026-04-04, Sun 04-05, Easter Monday 04-06: Tuesday.
    kind, instant, reason = resolve(FR_SET, FOLLOWING, at("2026-04-04 09:00"), PARIS)
    assert (kind, local(instant)) == ("roll", "2026-04-07 09:00:00+02:00")
    assert reason == "rolled from 2026-04-04 (weekend (Sat) (calendar fr-business))"


def test_modified_following_stays_in_the_month() -> None:
    kind, instant, _ = resolve(FR_SET, MODIFIED, at("2026-08-15 09:00"), PARIS)  # Sat and a holiday
    assert (kind, local(instant)) == ("roll", "2026-08-17 09:00:00+02:00")


def test_modified_following_rolls_back_rather_than_leave_the_month() -> None:
    # Following from Sat 2026-05-30 lands on Mon 06-01: another month, so the previous business day.
    kind, instant, reason = resolve(FR_SET, MODIFIED, at("2026-05-30 09:00"), PARIS)
    assert (kind, local(instant)) == ("roll", "2026-05-29 09:00:00+02:00")
    assert reason == "rolled from 2026-05-30 (weekend (Sat) (calendar fr-business))"
    # ... and across a year end: Thu 2026-12-31 excluded, Fri 2027-01-01 is a holiday too.
    cal_set = one(calendar("eoy", dates("2026-12-31"), holidays("FR"), weekdays(6, 7), zone="Europe/Paris"))
    kind, instant, _ = resolve(cal_set, MODIFIED, at("2026-12-31 09:00"), PARIS)
    assert (kind, local(instant)) == ("roll", "2026-12-30 09:00:00+01:00")


def test_modified_following_falling_back_is_guarded_too() -> None:
    previous = at("2026-05-29 09:00")
    assert resolve(FR_SET, MODIFIED, at("2026-05-30 09:00"), PARIS, not_before_ms=previous) == (
        "skip",
        0,
        "weekend (Sat) (calendar fr-business); rolling back would pass the previous fire",
    )


def test_preceding_never_reaches_the_previous_fire() -> None:
    nominal = at("2026-05-31 09:00")
    friday = at("2026-05-29 09:00")
    assert resolve(FR_SET, PRECEDING, nominal, PARIS, not_before_ms=friday) == (
        "skip",
        0,
        "weekend (Sun) (calendar fr-business); rolling back would pass the previous fire",
    )
    assert resolve(FR_SET, PRECEDING, nominal, PARIS, not_before_ms=friday - 1) == (
        "roll",
        friday,
        "rolled from 2026-05-31 (weekend (Sun) (calendar fr-business))",
    )


def test_gives_up_after_max_days() -> None:
    never = one(calendar("never", weekdays(1, 2, 3, 4, 5, 6, 7)))
    for action in (FOLLOWING, PRECEDING, MODIFIED):
        assert resolve(never, action, utc("2026-06-01 09:00"), UTC) == (
            "skip",
            0,
            "weekday (Mon) (calendar never); no included day within 366 days",
        )
    kind, _, reason = resolve(FR_SET, FOLLOWING, at("2026-05-30 09:00"), PARIS, max_days=1)
    assert (kind, reason) == ("skip", "weekend (Sat) (calendar fr-business); no included day within 1 days")
    assert resolve(FR_SET, FOLLOWING, at("2026-05-30 09:00"), PARIS, max_days=2)[0] == "roll"


def test_rolling_stops_at_the_end_of_time() -> None:
    never = one(calendar("never", weekdays(1, 2, 3, 4, 5, 6, 7)))
    assert resolve(never, FOLLOWING, utc("9999-12-30 09:00"), UTC)[0] == "skip"


def test_unknown_action() -> None:
    with pytest.raises(InvalidArgument) as raised:
        resolve(FR_SET, 99, at("2026-05-31 09:00"), PARIS)
    assert raised.value.field == "spec.schedule.calendar_action"


def test_time_rules_count_when_rolling() -> None:
    mondays = one(calendar("c", cron("0 9 * * 1"), zone="Europe/Paris"))
    kind, instant, reason = resolve(mondays, FOLLOWING, at("2026-06-01 09:00"), PARIS)
    assert (kind, local(instant)) == ("roll", "2026-06-02 09:00:00+02:00")
    assert reason == "rolled from 2026-06-01 (cron '0 9 * * 1' (calendar c))"
    # A time-of-day exclusion holds every day: no day is included at that time.
    morning = one(calendar("m", time_of_day("08:00", "10:00"), zone="Europe/Paris"))
    assert resolve(morning, FOLLOWING, at("2026-06-01 09:00"), PARIS, max_days=10)[0] == "skip"


# ---------------------------------------------------------------------------------------------------
# Resolving across DST and zones


def test_roll_keeps_the_wall_time_across_a_dst_change() -> None:
    # Mon 2026-03-30 (CEST) excluded: back to Fri 03-27 09:00 CET, one more hour of UTC before.
    cal_set = one(calendar("c", dates("2026-03-30"), weekdays(6, 7), zone="Europe/Paris"))
    nominal = at("2026-03-30 09:00")
    kind, instant, _ = resolve(cal_set, PRECEDING, nominal, PARIS)
    assert (kind, local(instant)) == ("roll", "2026-03-27 09:00:00+01:00")
    assert nominal - instant == (3 * 24 - 1) * 3_600_000


def test_rolling_onto_a_gap_day_fires_at_the_end_of_the_gap() -> None:
    # 02:30 does not exist on Sun 2026-03-29 in Paris (02:00 CET -> 03:00 CEST).
    cal_set = one(calendar("c", dates("2026-03-28"), zone="Europe/Paris"))
    kind, instant, _ = resolve(cal_set, FOLLOWING, at("2026-03-28 02:30"), PARIS)
    assert (kind, local(instant)) == ("roll", "2026-03-29 03:00:00+02:00")
    assert instant == utc("2026-03-29 01:00")


def test_rolling_onto_a_fold_day_takes_the_first_occurrence() -> None:
    # 02:30 happens twice on Sun 2026-10-25 in Paris (03:00 CEST -> 02:00 CET).
    cal_set = one(calendar("c", dates("2026-10-26"), zone="Europe/Paris"))
    kind, instant, _ = resolve(cal_set, PRECEDING, at("2026-10-26 02:30"), PARIS)
    assert (kind, local(instant)) == ("roll", "2026-10-25 02:30:00+02:00")
    assert instant == utc("2026-10-25 00:30")


def test_lord_howe_half_hour_gap() -> None:
    # Australia/Lord_Howe jumps 02:00 -> 02:30 on Sun 2026-10-04.
    zone = load_zone("Australia/Lord_Howe")
    cal_set = one(calendar("c", dates("2026-10-03"), zone="Australia/Lord_Howe"))
    kind, instant, _ = resolve(cal_set, FOLLOWING, at("2026-10-03 02:15", "Australia/Lord_Howe"), zone)
    assert (kind, local(instant, "Australia/Lord_Howe")) == ("roll", "2026-10-04 02:30:00+11:00")


def test_task_zone_and_calendar_zone_differ() -> None:
    # A UTC weekend calendar, a task at 08:00 Tokyo: Monday 08:00 JST is Sunday 23:00 UTC.
    tokyo = load_zone("Asia/Tokyo")
    cal_set = one(calendar("utc-weekend", weekdays(6, 7)))
    nominal = at("2026-06-01 08:00", "Asia/Tokyo")
    assert cal_set.excluded(nominal) == "weekend (Sun) (calendar utc-weekend)"
    kind, instant, reason = resolve(cal_set, FOLLOWING, nominal, tokyo)
    assert (kind, local(instant, "Asia/Tokyo")) == ("roll", "2026-06-02 08:00:00+09:00")
    assert reason == "rolled from 2026-06-01 (weekend (Sun) (calendar utc-weekend))"


def test_milliseconds_are_kept() -> None:
    cal_set = one(calendar("c", weekdays(6, 7)))
    kind, instant, _ = resolve(cal_set, FOLLOWING, utc("2026-05-30 09:00") + 123, UTC)
    assert (kind, instant) == ("roll", utc("2026-06-01 09:00") + 123)


# ---------------------------------------------------------------------------------------------------
# Properties

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago"]
START_MS = utc("2024-01-01 00:00")
END_MS = utc("2030-12-31 00:00")


@st.composite
def calendar_sets(draw: st.DrawFn) -> tuple[dict[str, pb.Calendar], list[str]]:
    rules: list[pb.CalendarRule] = []
    days = draw(st.sets(st.integers(1, 7), max_size=6))
    if days:
        rules.append(weekdays(*sorted(days)))
    if draw(st.booleans()):
        rules.append(holidays("FR"))
    picked = draw(st.lists(st.dates(date(2024, 1, 1), date(2030, 12, 31)), max_size=20))
    if picked:
        rules.append(dates(*(d.isoformat() for d in picked)))
    if draw(st.booleans()):
        first = draw(st.dates(date(2024, 1, 1), date(2030, 12, 31)))
        rules.append(
            date_range(first.isoformat(), (first + timedelta(days=draw(st.integers(0, 20)))).isoformat())
        )
    if draw(st.booleans()):
        rules.append(time_of_day(f"{draw(st.integers(0, 23)):02d}:00", f"{draw(st.integers(0, 23)):02d}:30"))
    if draw(st.booleans()):
        rules.append(cron(f"*/{draw(st.integers(2, 30))} * * * *"))
    inner = calendar("inner", *rules, zone=draw(st.sampled_from(ZONES)))
    outer = calendar("outer", dates("2026-06-03"), zone=draw(st.sampled_from(ZONES)), include=("inner",))
    return store(inner, outer), ["outer"]


def wall_exists(day: date, wall: datetime, zone: str) -> bool:
    naive = datetime.combine(day, wall.time())
    aware = naive.replace(tzinfo=load_zone(zone))
    return aware.astimezone(UTC).astimezone(load_zone(zone)).replace(tzinfo=None) == naive


@settings(max_examples=150, deadline=None)
@given(
    calendar_sets(),
    st.integers(START_MS, END_MS),
    st.sampled_from(ZONES),
    st.sampled_from([SKIP, FOLLOWING, PRECEDING, MODIFIED]),
    st.integers(0, 40 * 86_400_000),
)
def test_fire_and_roll_are_never_excluded_and_keep_the_wall_time(
    case: tuple[dict[str, pb.Calendar], list[str]], nominal: int, zone_name: str, action: int, back_ms: int
) -> None:
    known, names = case
    zone = load_zone(zone_name)
    cal_set = CalendarSet(names, known)
    not_before = nominal - back_ms
    kind, instant, reason = resolve(cal_set, action, nominal, zone, not_before_ms=not_before, max_days=60)
    event(kind)
    again = resolve(CalendarSet(names, known), action, nominal, zone, not_before_ms=not_before, max_days=60)
    assert again == (kind, instant, reason)  # deterministic, also from a freshly built set
    excluded = cal_set.excluded(nominal)
    if kind == "fire":
        assert (instant, reason, excluded) == (nominal, "", None)
        return
    assert excluded is not None
    assert reason.startswith(excluded) if kind == "skip" else reason.endswith(f"({excluded})")
    if kind == "skip":
        assert instant == 0
        return
    assert kind == "roll"
    assert action != SKIP
    assert cal_set.excluded(instant) is None
    before = datetime.fromtimestamp(nominal / 1000, zone)
    after = datetime.fromtimestamp(instant / 1000, zone)
    if wall_exists(after.date(), before, zone_name):
        assert after.time() == before.time()
    else:  # the wall time fell in a gap that day: the first instant after the gap
        assert after.time() > before.time()
    assert 1 <= abs((after.date() - before.date()).days) <= 60
    if instant < nominal:
        assert action in (PRECEDING, MODIFIED)
        assert instant > not_before
    else:
        assert action in (FOLLOWING, MODIFIED)
    if action == MODIFIED and instant > nominal:
        assert (after.year, after.month) == (before.year, before.month)
