"""Issue 19: a newcomer's schedule is echoed in words, ambiguous input is refused or warned about with
the way to say what was meant, and errors teach (field, token, range, nearest zone, units)."""

from __future__ import annotations

import json

import pytest
from fake_cluster import FakeCluster
from test_cli import Run, cluster, run  # noqa: F401  (fixtures)

from cronraft import timefmt
from cronraft.client import _cron_text, _specs
from cronraft.client.cli import EXIT_OK, EXIT_USAGE
from cronraft.client.cli import preview as preview_cli
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday


def preview(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = preview_cli.main(list(argv), now_ms=NOW)
    out, err = capsys.readouterr()
    return code, out, err


def cron_schedule(expression: str, zone: str = "UTC") -> common_pb2.Schedule:
    return common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=expression, time_zone=zone))


# --- the describer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "words"),
    [
        ("0 9 1-7 * MON", "Europe/Paris", "at 09:00, on day-of-month 1-7 or on Monday, Europe/Paris"),
        ("0 9 * * *", "UTC", "at 09:00, every day, UTC"),
        ("30 8,17 * * 1-5", "UTC", "at 08:30 and 17:30, on Monday-Friday, UTC"),
        ("*/15 * * * *", "UTC", "every 15 minutes, every day, UTC"),
        ("0 * * * *", "UTC", "at minute 0 of every hour, every day, UTC"),
        ("0 */2 * * *", "UTC", "at minute 0, every 2 hours, every day, UTC"),
        ("*/5 9-17 * * *", "UTC", "every 5 minutes, in hours 9-17, every day, UTC"),
        ("0 0 */6 * 1", "UTC", "at 00:00, on day-of-month */6 that is also Monday, UTC"),
        ("0 9 L * *", "UTC", "at 09:00, on the last day of the month, UTC"),
        ("0 9 L-3 * *", "UTC", "at 09:00, on the day 3 before the last of the month, UTC"),
        ("0 9 LW * *", "UTC", "at 09:00, on the last weekday (Monday-Friday) of the month, UTC"),
        ("0 9 15W * *", "UTC", "at 09:00, on the weekday nearest day 15, UTC"),
        ("0 9 * * 5L", "UTC", "at 09:00, on the last Friday of the month, UTC"),
        ("0 9 * * 1#1", "UTC", "at 09:00, on the first Monday of the month, UTC"),
        ("0 9 1 JAN,7 *", "UTC", "at 09:00, on day-of-month 1, in January and July, UTC"),
        ("30 0 9 * * *", "UTC", "at 09:00:30, every day, UTC"),
        ("*/10 * * * * *", "UTC", "every 10 seconds, every day, UTC"),
        ("@weekly", "UTC", "at 00:00, on Sunday, UTC"),
    ],
)
def test_describe_cron(expression: str, zone: str, words: str) -> None:
    assert _cron_text.describe(cron_schedule(expression, zone)) == words


def test_describe_the_other_kinds_and_the_window() -> None:
    at = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=NOW))
    assert _cron_text.describe(at) == "once at 2026-01-01T00:00:00Z"
    assert _cron_text.describe(at, now_ms=NOW + 1) == "once at 2026-01-01T00:00:00Z (in the past)"
    rate = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=300_000))
    assert _cron_text.describe(rate) == "every 5m, counted from 1970-01-01T00:00:00Z (the Unix epoch)"
    delay = common_pb2.Schedule(
        fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=90_000, stop_on_failure=True),
        start_at_ms=NOW,
        max_runs=3,
    )
    assert _cron_text.describe(delay) == (
        "1m30s after each run ends (the first run at once); a run that does not succeed completes the "
        "task, from 2026-01-01T00:00:00Z, at most 3 runs"
    )


# --- six fields, years, the OR rule ----------------------------------------------------------------


def test_six_fields_without_seconds_are_refused_with_both_readings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = preview(capsys, "--cron", "0 9 * * * *")
    assert code == EXIT_USAGE and out == ""
    assert "error: --cron: '0 9 * * * *' has 6 fields and reads two ways:" in err
    assert "with seconds first (add --seconds): at minute 9 of every hour" in err
    assert "as 5 fields and one too many ('0 9 * * *'): at 09:00, every day" in err


def test_six_fields_with_seconds_are_read_seconds_first(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = preview(capsys, "--cron", "0 9 * * * *", "--seconds", "--limit", "2")
    assert code == EXIT_OK, err
    assert err.startswith("schedule: at minute 9 of every hour, every day, UTC\n")
    assert "2026-01-01T00:09:00Z  Thu" in out and "2026-01-01T01:09:00Z  Thu" in out


def test_six_fields_with_only_a_seconds_reading_need_no_flag(capsys: pytest.CaptureFixture[str]) -> None:
    # As 5 fields, hour 30 does not exist: seconds first is the only reading.
    code, _out, err = preview(capsys, "--cron", "0 30 9 * * *", "--limit", "1")
    assert code == EXIT_OK, err
    assert err.startswith("schedule: at 09:30, every day, UTC\n")
    # A non-zero first field is not enough: `30 9 * * * *` also reads as minute 30.
    assert preview(capsys, "--cron", "30 9 * * * *")[0] == EXIT_USAGE


def test_seconds_with_five_fields_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = preview(capsys, "--cron", "0 9 * * *", "--seconds")
    assert code == EXIT_USAGE
    assert "--seconds: '0 9 * * *' has 5 fields: with --seconds write 6, seconds first" in err


@pytest.mark.parametrize(
    ("expression", "five"), [("0 9 * * * 2027", "0 9 * * *"), ("0 0 9 * * ? 2027", "0 9 * * ?")]
)
def test_a_year_field_says_to_use_start_and_end(
    capsys: pytest.CaptureFixture[str], expression: str, five: str
) -> None:
    code, _, err = preview(capsys, "--cron", expression)
    assert code == EXIT_USAGE
    assert "a year field is not supported" in err
    assert "--start-at 2027-01-01T00:00:00Z --end-at 2028-01-01T00:00:00Z" in err
    assert f"--cron '{five}'" in err


def test_restricted_day_of_month_and_week_warn_about_the_or_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = preview(capsys, "--cron", "0 9 1-7 * MON", "--tz", "Europe/Paris", "--limit", "3")
    assert code == EXIT_OK
    assert "warning: day-of-month '1-7' and day-of-week 'MON' are both restricted, so cron's OR rule" in err
    assert "write day-of-week as the first Monday: '0 9 * * MON#1'" in err
    assert "schedule: at 09:00, on day-of-month 1-7 or on Monday, Europe/Paris\n" in err
    assert out.splitlines()[0].split()[:5] == ["NOMINAL", "(UTC)", "LOCAL", "(Europe/Paris)", "DAY"]
    assert "2026-01-01T08:00:00Z  2026-01-01T09:00:00+01:00  Thu" in out  # day 1 (a Thursday) fires
    code, out, err = preview(capsys, "--cron", "0 9 1-7 * MON", "--output", "json", "--limit", "1")
    doc = json.loads(out)
    assert doc["description"] == "at 09:00, on day-of-month 1-7 or on Monday, UTC"
    assert len(doc["warnings"]) == 1 and "OR rule" in doc["warnings"][0]
    # The AND alternative is what it says: only first Mondays.
    code, out, err = preview(capsys, "--cron", "0 9 * * MON#1", "--limit", "2")
    assert code == EXIT_OK and "warning" not in err
    assert "2026-01-05T09:00:00Z  Mon" in out and "2026-02-02T09:00:00Z  Mon" in out


@pytest.mark.parametrize("expression", ["0 9 * * MON", "0 9 1-7 * *", "0 0 */6 * 1", "0 9 ? * MON"])
def test_no_warning_when_a_day_field_is_unrestricted_or_starts_with_a_star(expression: str) -> None:
    assert _cron_text.read_cron(expression).warnings == ()


# --- the quartz dialect ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quartz", "unix", "words"),
    [
        ("0 0 9 ? * 6#3", "0 9 ? * 5#3", "at 09:00, on the third Friday of the month, UTC"),
        ("0 0 9 ? * FRI#L", "0 9 ? * FRIL", "at 09:00, on the last Friday of the month, UTC"),
        ("0 0 9 ? * 5L", "0 9 ? * 4L", "at 09:00, on the last Thursday of the month, UTC"),
        ("0 0 9 L-3 * ?", "0 9 L-3 * ?", "at 09:00, on the day 3 before the last of the month, UTC"),
        ("0 0 9 LW * ?", "0 9 LW * ?", "at 09:00, on the last weekday (Monday-Friday) of the month, UTC"),
        ("0 0 9 ? * 2-6", "0 9 ? * 1-5", "at 09:00, on Monday-Friday, UTC"),
        ("0 0 9 ? * 1,7", "0 9 ? * 0,6", "at 09:00, on Sunday and Saturday, UTC"),
        ("0 0 9 ? * MON *", "0 9 ? * MON", "at 09:00, on Monday, UTC"),
        ("30 0 9 ? * 1", "30 0 9 ? * 0", "at 09:00:30, on Sunday, UTC"),
        ("0 0 9 ? * L", "0 9 ? * 6", "at 09:00, on Saturday, UTC"),
    ],
)
def test_quartz_is_stored_as_unix(quartz: str, unix: str, words: str) -> None:
    read = _cron_text.read_cron(quartz, dialect="quartz")
    assert read.expression == unix
    assert read.translated == f"quartz {quartz!r} is stored as unix {unix!r}"
    assert _cron_text.describe_cron(read.expression) == words


def test_quartz_third_friday_fires_on_third_fridays(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = preview(capsys, "--cron", "0 0 9 ? * 6#3", "--cron-dialect", "quartz", "--limit", "2")
    assert code == EXIT_OK
    assert "quartz '0 0 9 ? * 6#3' is stored as unix '0 9 ? * 5#3'" in err
    assert "2026-01-16T09:00:00Z  Fri" in out and "2026-02-20T09:00:00Z  Fri" in out


def test_quartz_weekday_zero_is_out_of_its_range() -> None:
    with pytest.raises(InvalidArgument, match=r"out of range 1-7 in the quartz dialect \(1 is Sunday"):
        _cron_text.read_cron("0 0 9 ? * 0", dialect="quartz")


# --- errors that teach -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("0 9 * * 1-8", "day-of-week: 8 is out of range 0-7 (0 and 7 are Sunday), in '1-8' of '0 9 * * 1-8'"),
        ("61 9 * * *", "minute: 61 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 9 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("0 9 * 13 *", "month: 13 is out of range 1-12"),
        ("0 9 * * MONDAY", "day-of-week: 'MONDAY' is not a number or a name (names: SUN-SAT)"),
        ("*/0 9 * * *", "minute: '*/0': the step after / must be a whole number of at least 1"),
        ("* * * *", "expected 5 or 6 fields, got 4 in '* * * *': write minute hour day-of-month month"),
    ],
)
def test_cron_errors_name_the_field_token_and_range(
    capsys: pytest.CaptureFixture[str], expression: str, says: str
) -> None:
    code, _, err = preview(capsys, "--cron", expression)
    assert code == EXIT_USAGE
    assert err.startswith(f"error: --cron: {says}")


def test_lowercase_letters_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = preview(capsys, "--cron", "0 9 * * 5l", "--limit", "1")
    assert code == EXIT_OK and "on the last Friday of the month" in err and "Fri" in out


def test_an_unknown_zone_suggests_the_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = preview(capsys, "--cron", "0 9 * * *", "--tz", "America/NewYork")
    assert code == EXIT_USAGE
    assert err.startswith("error: --tz: unknown time zone 'America/NewYork'; did you mean America/New_York")
    with pytest.raises(InvalidArgument, match="did you mean Europe/Paris"):
        _cron_text.check_zone("europe/paris")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1w", "weeks are not a unit: use 7d"),
        ("2weeks", "weeks are not a unit: use 14d"),
        ("5min", "the unit of minutes is m: use 5m"),
        ("1y", "months and years are not units"),
        ("5x", "'x' is not a unit: use ms, s, m, h or d"),
        ("2 h", "write it without spaces"),
    ],
)
def test_durations_say_which_units_exist(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        timefmt.parse_duration(text, "--every")


@pytest.mark.parametrize("flag", ["--every", "--delay"])
def test_a_negative_period_says_it_must_be_positive(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, _, err = preview(capsys, flag, "-5m")
    assert code == EXIT_USAGE
    assert f"error: {flag}: must be positive, got '-5m'" in err
    assert "expected one argument" not in err


def test_at_minus_a_duration_reads_as_ago(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = preview(capsys, "--at", "-10m")
    assert code == EXIT_OK and "2025-12-31T23:50:00Z" in out


# --- task create / get echo the schedule -----------------------------------------------------------


def test_create_echoes_the_schedule_and_its_warning_before_storing(run: Run, cluster: FakeCluster) -> None:  # noqa: F811
    argv = ["task", "create", "--name", "m", "--cron", "0 9 1-7 * MON", "--tz", "Europe/Paris", "--", "true"]
    code, out, err = run(*argv)
    assert code == EXIT_OK, err
    assert "schedule: at 09:00, on day-of-month 1-7 or on Monday, Europe/Paris" in err
    assert "warning: day-of-month '1-7' and day-of-week 'MON' are both restricted" in err
    assert "meaning" in out and "at 09:00, on day-of-month 1-7 or on Monday, Europe/Paris" in out
    doc = run.json(*argv)
    assert len(doc["warnings"]) == 1 and "OR rule" in doc["warnings"][0]
    code, out, err = run("task", "get", doc["task_id"])
    assert "at 09:00, on day-of-month 1-7 or on Monday, Europe/Paris" in out


def test_create_refuses_an_ambiguous_expression_before_any_call(run: Run, cluster: FakeCluster) -> None:  # noqa: F811
    code, _, err = run("task", "create", "--name", "m", "--cron", "0 9 * * * *", "--", "true")
    assert code == EXIT_USAGE and "reads two ways" in err
    assert cluster.methods("n1") == [] and cluster.methods("n2") == []
    code, _out, err = run("task", "create", "--name", "m", "--cron", "0 9 * * * *", "--seconds", "--", "true")
    assert code == EXIT_OK, err


def test_create_stores_quartz_as_unix(run: Run) -> None:  # noqa: F811
    doc = run.json(
        "task", "create", "--name", "q", "--cron", "0 0 9 ? * 6#3", "--cron-dialect", "quartz", "--", "true"
    )
    assert doc["spec"]["schedule"]["expression"] == "0 9 ? * 5#3"
    assert doc["warnings"] == ["quartz '0 0 9 ? * 6#3' is stored as unix '0 9 ? * 5#3'"]


# --------------------------------------------------------------------- the SDK and `task import`


def test_sdk_cron_refuses_a_year_field_and_names_expression() -> None:
    with pytest.raises(InvalidArgument) as err:
        _specs.cron("0 9 * * * 2027")
    assert err.value.field == "expression"
    assert "--start-at 2027-01-01" in err.value.problem


def test_sdk_cron_seconds_flag_must_agree_with_the_field_count() -> None:
    with pytest.raises(InvalidArgument, match="seconds=True"):
        _specs.cron("0 9 * * * *", seconds=False)  # one `*` too many for daily at 09:00
    with pytest.raises(InvalidArgument, match="write 6 fields"):
        _specs.cron("0 9 * * *", seconds=True)
    assert _specs.cron("0 0 9 * * *", seconds=True).cron.expression == "0 0 9 * * *"
    # Without `seconds`, 6 fields keep their documented meaning (seconds first).
    assert _specs.cron("*/2 * * * * *").cron.expression == "*/2 * * * * *"


def test_sdk_cron_names_the_bad_field_in_cron_terms() -> None:
    with pytest.raises(InvalidArgument, match="day-of-week: 8 is out of range") as err:
        _specs.cron("0 9 * * 1-8")
    assert err.value.field == "expression"


def test_import_refuses_a_year_field_naming_the_json_field() -> None:
    from cronraft.client._spec_json import schedule_from_json

    with pytest.raises(InvalidArgument) as err:
        schedule_from_json({"kind": "cron", "expression": "0 9 * * * 2027", "time_zone": "UTC"})
    assert err.value.field == "spec.schedule.expression"
    # 6 fields are the stored (exported) form: seconds first, accepted as they are.
    assert schedule_from_json(
        {"kind": "cron", "expression": "0 0 9 * * *", "time_zone": "UTC"}
    ).cron.expression
