"""Tests of cronraft.raft.cron (the cron evaluator) and regression tests of issue 12, each through the
function `schedctl schedule preview` uses. Forms cronsim does not know (`nW`, reversed ranges, `?`,
croniter's `L5`) are checked here against their definitions; the rest is also compared with cronsim in
tests/unit/test_cron_differential.py."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from importlib import metadata
from pathlib import Path

import pytest

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2 as pb
from cronraft.raft import cron
from cronraft.raft.preview import preview
from cronraft.raft.schedule import load_zone, validate_schedule
from cronraft.timefmt import parse_instant

_EPOCH = datetime(1970, 1, 1)


def ms(text: str) -> int:
    return parse_instant(text, field="test")


def schedule(expression: str, zone: str = "", **options: int) -> pb.Schedule:
    return pb.Schedule(cron=pb.CronSchedule(expression=expression, time_zone=zone), **options)  # type: ignore[arg-type]


def previewed(expression: str, zone: str, start: str, count: int, **options: int) -> list[str]:
    """Local times of the firing rows of the preview (what `schedctl schedule preview` prints)."""
    rows = preview(schedule(expression, zone, **options), from_ms=ms(start), count=count)
    tz = load_zone(zone)
    return [datetime.fromtimestamp(r.nominal_time_ms / 1000, tz).isoformat() for r in rows if r.actual_ms]


def walls(expression: str, start: str, count: int) -> list[str]:
    """The next `count` matching wall times after the naive `start`, from the evaluator itself."""
    parsed = cron.parse(expression)
    wall = int((datetime.fromisoformat(start) - _EPOCH).total_seconds())
    out = []
    for _ in range(count):
        found = parsed.next_after(wall)
        assert found is not None
        out.append((_EPOCH + timedelta(seconds=found)).isoformat())
        wall = found
    return out


# --- issue 12: the regressions ------------------------------------------------------------------------


def test_single_value_day_of_week_range_is_that_day_not_every_day() -> None:
    """`0 0 * * 2-2`: every Tuesday (croniter 6/7: every day)."""
    assert previewed("0 0 * * 2-2", "UTC", "2026-01-01T00:00:00Z", 3) == [
        "2026-01-06T00:00:00+00:00",
        "2026-01-13T00:00:00+00:00",
        "2026-01-20T00:00:00+00:00",
    ]


@pytest.mark.parametrize("hour", ["5-5", "5-5/2", "5-5/1", "5"])
def test_single_value_hour_range_with_or_without_step_is_that_hour(hour: str) -> None:
    """`0 5-5 * * *` and `0 5-5/2 * * *`: 05:00 every day (croniter 6/7: every hour)."""
    assert previewed(f"0 {hour} * * *", "UTC", "2026-01-01T00:00:00Z", 3) == [
        "2026-01-01T05:00:00+00:00",
        "2026-01-02T05:00:00+00:00",
        "2026-01-03T05:00:00+00:00",
    ]


@pytest.mark.parametrize("friday", ["5L", "L5", "FRIL", "friL"])
def test_last_weekday_of_month(friday: str) -> None:
    """`5L`: the last Friday of the month (Quartz, cronsim); croniter's spelling `L5` means the same."""
    assert previewed(f"0 9 * * {friday}", "UTC", "2026-01-01T00:00:00Z", 3) == [
        "2026-01-30T09:00:00+00:00",
        "2026-02-27T09:00:00+00:00",
        "2026-03-27T09:00:00+00:00",
    ]


def test_restricted_star_day_field_combines_days_with_and() -> None:
    """cronie: a day field starting with `*` (here `*/6`: the 1st, 7th, 13th, 19th, 25th, 31st) makes
    day of month AND day of week; two restricted fields without `*` combine with OR."""
    assert previewed("0 0 */6 * 1", "UTC", "2026-01-01T00:00:00Z", 3) == [
        "2026-01-19T00:00:00+00:00",
        "2026-04-13T00:00:00+00:00",
        "2026-05-25T00:00:00+00:00",
    ]
    assert previewed("0 0 13 * */7", "UTC", "2026-01-01T00:00:00Z", 2) == [  # 13th AND Sunday
        "2026-09-13T00:00:00+00:00",
        "2026-12-13T00:00:00+00:00",
    ]
    assert previewed("0 0 1,15 * 1", "UTC", "2026-06-23T00:00:00Z", 5) == [  # the 1st, 15th OR Monday
        "2026-06-29T00:00:00+00:00",
        "2026-07-01T00:00:00+00:00",
        "2026-07-06T00:00:00+00:00",
        "2026-07-13T00:00:00+00:00",
        "2026-07-15T00:00:00+00:00",
    ]


def test_elapsed_time_job_follows_the_new_clock_through_a_gap() -> None:
    """cronie: `30 */9 * * *` (hour starts with `*`) is not shifted into the Santiago gap (00:00 ->
    01:00 on 2026-09-06): 00:30 that day does not exist and does not run. A fixed-time job is shifted;
    `--dst-gap shift` shifts the elapsed-time job too."""
    start = "2026-09-05T12:00:00-04:00"
    assert previewed("30 */9 * * *", "America/Santiago", start, 3) == [
        "2026-09-05T18:30:00-04:00",
        "2026-09-06T09:30:00-03:00",
        "2026-09-06T18:30:00-03:00",
    ]
    assert previewed("30 0,9,18 * * *", "America/Santiago", start, 3) == [
        "2026-09-05T18:30:00-04:00",
        "2026-09-06T01:00:00-03:00",
        "2026-09-06T09:30:00-03:00",
    ]
    assert previewed("30 */9 * * *", "America/Santiago", start, 2, dst_gap=pb.DST_GAP_SHIFT) == [
        "2026-09-05T18:30:00-04:00",
        "2026-09-06T01:00:00-03:00",
    ]


def test_elapsed_time_job_in_a_gap_is_listed_as_skipped() -> None:
    rows = preview(
        schedule("10,40 * * * *", "Europe/Paris"), from_ms=ms("2026-03-29T01:35:00+01:00"), count=2
    )
    assert [(r.local_time, r.actual_ms != 0, list(r.notes)) for r in rows] == [
        ("2026-03-29T01:40:00+01:00", True, []),
        (
            "2026-03-29T03:00:00+02:00",
            False,
            ["dst_skipped (local 02:00-03:00 does not exist on 2026-03-29)"],
        ),
        ("2026-03-29T03:10:00+02:00", True, []),
    ]


def test_a_whole_skipped_day_shifts_a_fixed_time_job_to_its_end() -> None:
    """LONG_GAP: Pacific/Apia skipped 2011-12-30; 09:00 that day fires at 2011-12-31 00:00 (cronie
    would treat the 24-hour jump as a clock correction and run nothing; cronsim agrees with us)."""
    rows = preview(schedule("0 9 * * *", "Pacific/Apia"), from_ms=ms("2011-12-29T12:00:00-10:00"), count=2)
    assert [(r.local_time, list(r.notes)) for r in rows] == [
        (
            "2011-12-31T00:00:00+14:00",
            ["dst_shifted (local 2011-12-30 00:00 to 2011-12-31 00:00 does not exist)"],
        ),
        ("2011-12-31T09:00:00+14:00", []),
    ]


# --- field forms --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # nW: the weekday nearest day n, within the month (Quartz).
        ("0 0 15W * *", "2026-08-01T00:00", ["2026-08-14T00:00:00"]),  # the 15th is a Saturday
        ("0 0 15W * *", "2026-03-01T00:00", ["2026-03-16T00:00:00"]),  # a Sunday
        ("0 0 15W * *", "2026-04-01T00:00", ["2026-04-15T00:00:00"]),  # a Wednesday
        ("0 0 1W * *", "2026-07-31T00:00", ["2026-08-03T00:00:00"]),  # the 1st is a Saturday: Monday 3rd
        ("0 0 31W * *", "2026-05-01T00:00", ["2026-05-29T00:00:00"]),  # the 31st is a Sunday: Friday 29th
        ("0 0 31W * *", "2026-04-01T00:00", ["2026-05-29T00:00:00"]),  # April has no 31st: no fire
        ("0 0 29W 2 *", "2026-01-01T00:00", ["2028-02-29T00:00:00"]),
        # L, LW, n#k
        ("0 0 L * *", "2028-02-01T00:00", ["2028-02-29T00:00:00", "2028-03-31T00:00:00"]),
        ("0 0 LW * *", "2026-05-01T00:00", ["2026-05-29T00:00:00", "2026-06-30T00:00:00"]),
        ("0 0 L-3 * *", "2028-02-01T00:00", ["2028-02-26T00:00:00", "2028-03-28T00:00:00"]),  # Quartz's L-n
        ("0 0 L-1,L * *", "2026-04-01T00:00", ["2026-04-29T00:00:00", "2026-04-30T00:00:00"]),
        ("0 0 1,L * *", "2026-04-15T00:00", ["2026-04-30T00:00:00", "2026-05-01T00:00:00"]),
        ("0 0 * * 1#5", "2026-01-01T00:00", ["2026-03-30T00:00:00", "2026-06-29T00:00:00"]),
        ("0 0 * * 0#1,6L", "2026-01-01T00:00", ["2026-01-04T00:00:00", "2026-01-31T00:00:00"]),
        # ranges, steps, names, Sunday as 0 or 7
        (
            "0 22-2 * * *",
            "2026-01-01T12:00",
            ["2026-01-01T22:00:00", "2026-01-01T23:00:00", "2026-01-02T00:00:00"],
        ),
        (
            "0 22-2/2 * * *",
            "2026-01-01T12:00",
            ["2026-01-01T22:00:00", "2026-01-02T00:00:00", "2026-01-02T02:00:00"],
        ),
        (
            "0 0 * * sat-mon",
            "2026-01-01T00:00",
            ["2026-01-03T00:00:00", "2026-01-04T00:00:00", "2026-01-05T00:00:00"],
        ),
        ("0 0 * * 7", "2026-01-01T00:00", ["2026-01-04T00:00:00"]),
        (
            "0 0 * * 5-7",
            "2026-01-01T00:00",
            ["2026-01-02T00:00:00", "2026-01-03T00:00:00", "2026-01-04T00:00:00"],
        ),
        (
            "0 0 * * */3",
            "2026-01-01T00:00",
            ["2026-01-03T00:00:00", "2026-01-04T00:00:00", "2026-01-07T00:00:00"],
        ),
        ("0 0 1 jan-mar/2 *", "2026-01-01T00:00", ["2026-03-01T00:00:00", "2027-01-01T00:00:00"]),
        ("0 0 ? * MON", "2026-01-01T00:00", ["2026-01-05T00:00:00", "2026-01-12T00:00:00"]),
        ("45/20 * * * *", "2026-01-01T00:00", ["2026-01-01T00:45:00", "2026-01-01T01:45:00"]),
        ("10/20 0 * * * *", "2026-01-01T00:00", ["2026-01-01T00:00:10", "2026-01-01T00:00:30"]),
        ("0 0 0 29 2 *", "2026-01-01T00:00", ["2028-02-29T00:00:00", "2032-02-29T00:00:00"]),
        ("@weekly", "2026-01-01T00:00", ["2026-01-04T00:00:00"]),
        ("@Hourly", "2026-01-01T00:30", ["2026-01-01T01:00:00"]),
    ],
)
def test_field_forms(expression: str, start: str, expected: list[str]) -> None:
    assert walls(expression, start, len(expected)) == expected


def test_macros_are_their_fields() -> None:
    for macro, fields in cron.MACROS.items():
        assert cron.parse(macro).day_table == cron.parse(fields).day_table
        assert cron.parse(macro).elapsed == cron.parse(fields).elapsed
    assert cron.parse("@hourly").elapsed and not cron.parse("@daily").elapsed


def test_elapsed_is_cronies_min_star_or_hr_star() -> None:
    assert cron.parse("*/15 * * * *").elapsed
    assert cron.parse("30 */9 * * *").elapsed
    assert cron.parse("* 2 * * *").elapsed
    assert not cron.parse("0,30 2 * * *").elapsed
    assert not cron.parse("0-59 0-23 * * *").elapsed  # the same times, but written without a star
    assert not cron.parse("* 30 2 * * *").elapsed  # a seconds field plays no part


def test_nearest_weekday_matches_its_definition_every_month_for_400_years() -> None:
    """`nW` against a direct reading of Quartz's definition, for every n and month of a full cycle."""
    for n in (1, 2, 15, 28, 29, 30, 31):
        parsed = cron.parse(f"0 0 {n}W * *")
        for year in range(2000, 2400):
            for month in range(1, 13):
                first = date(year, month, 1)
                length = ((first + timedelta(days=32)).replace(day=1) - first).days
                expected: tuple[int, ...] = ()
                if n <= length:
                    day = date(year, month, n)
                    if day.weekday() == 5:
                        day = day - timedelta(days=1) if n > 1 else day + timedelta(days=2)
                    elif day.weekday() == 6:
                        day = day + timedelta(days=1) if n < length else day - timedelta(days=2)
                    expected = (day.day,)
                assert parsed.days_of(year, month) == expected, (n, year, month)


def test_days_before_the_last_match_their_definition_for_400_years() -> None:
    """`L-n` (Quartz): the day n days before the month's last day, none in a month of n days or fewer."""
    for n in (1, 3, 27, 28, 30):
        parsed = cron.parse(f"0 0 L-{n} * *")
        for year in range(2000, 2400):
            for month in range(1, 13):
                first = date(year, month, 1)
                length = ((first + timedelta(days=32)).replace(day=1) - first).days
                assert parsed.days_of(year, month) == ((length - n,) if n < length else ()), (n, year, month)


def test_search_stops_after_year_9999() -> None:
    parsed = cron.parse("0 0 1 1 *")
    wall = int((datetime(9999, 1, 1) - _EPOCH).total_seconds())
    assert parsed.next_after(wall - 1) == wall
    assert parsed.next_after(wall) is None


# --- refusals and bounds ------------------------------------------------------------------------------


def refusal(expression: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        validate_schedule(schedule(expression))
    assert info.value.field == "spec.schedule.cron.expression"
    return info.value.problem


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("60 * * * *", "minute field '60': 60 is out of range 0-59"),
        ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field '13': 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field '8': 8 is out of range 0-7 (0 and 7 are Sunday)"),
        ("0 0 L-31 * *", "the days before the last after L- must be 1 to 30"),
        ("0 0 L-x * *", "the days before the last after L- must be 1 to 30"),
        ("*/0 * * * *", "the step after / must be a whole number of at least 1"),
        ("0 0 * * 1#6", "the week number after # must be 1 to 5"),
        ("0 0 * * L", "`L` needs a weekday"),
        ("0 0 32W * *", "32 is out of range 1-31"),
        ("1,,2 * * * *", "empty list item"),
        ("? * * * *", "`?` is only allowed in day-of-month and day-of-week"),
        ("0 0 * * MONDAY", "'MONDAY' is not a number or a name"),
        ("0 0 * jan-foo *", "'FOO' is not a number or a name"),
        ("H * * * *", "hashed (H) and random (R) fields are not supported"),
        ("0 1~5 * * *", "nor cronie's ~"),
        ("0 0 31 4 *", "matches no date"),  # a star day of week: the 31st AND any weekday, in April
        ("0 0 */15 * 1#2", "matches no date"),  # the 1st, 16th or 31st AND the 2nd Monday (8th-14th)
        ("0 0 * * * * *", "expected 5 or 6 fields, got 7"),
        ("@reboot", "@reboot is not supported"),
    ],
)
def test_refusals_name_the_field(expression: str, says: str) -> None:
    assert says in refusal(expression)


def test_bounds_on_length_and_list_items() -> None:
    sixty_four = ",".join(str(i % 60) for i in range(cron.MAX_LIST_ITEMS))
    cron.parse(f"{sixty_four} * * * *")  # at the bound
    assert refusal(f"{sixty_four},0 * * * *") == (
        f"not a valid cron expression: minute field '{sixty_four},0': at most 64 list items, got 65"
    )
    assert "day-of-week field" in refusal(f"0 0 * * {','.join(['1'] * 65)}")
    long = "0 " * 600 + "* * * *"
    assert refusal(long) == f"longer than {cron.MAX_EXPRESSION_LENGTH} characters ({len(long.strip())})"


# --- determinism: the versions that change schedule results -------------------------------------------


def test_installed_versions_are_the_pinned_ones(repo_root: Path) -> None:
    """`make install` installs with constraints.txt; a venv that drifted (another tzdata or holidays)
    would compute other fires than the cluster's other nodes."""
    pins = {}
    for line in (repo_root / "constraints.txt").read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            pins[name] = version
    assert set(pins) >= {"tzdata", "holidays"}
    # The [bench] extra's pins (celery, redis, ...) bind only where scripts/bench-deps.sh installed it.
    optional = {"celery", "kombu", "billiard", "vine", "amqp", "redis"}
    pins = {name: v for name, v in pins.items() if name not in optional or _installed(name)}
    assert {name: metadata.version(name) for name in pins} == pins


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
