"""Tests of cronraft.raft.preview (the pure preview) and of `schedctl schedule preview`
(cronraft.client.cli.preview), which runs it offline."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronraft.client.cli import preview as preview_cli
from cronraft.proto.v1 import common_pb2 as pb
from cronraft.raft.preview import format_duration, preview, rfc3339
from cronraft.raft.schedule import first_fire, jitter_offset_ms, load_zone, next_fire
from cronraft.timefmt import parse_instant


def ms(text: str) -> int:
    return parse_instant(text, field="test")


def cron(expression: str, zone: str = "", **options: int) -> pb.Schedule:
    return pb.Schedule(cron=pb.CronSchedule(expression=expression, time_zone=zone), **options)  # type: ignore[arg-type]


def rows_of(schedule: pb.Schedule, start: str, count: int, **kw: object) -> list[tuple[str, bool, list[str]]]:
    """(local_time, fires, notes) of each previewed row."""
    fires = preview(schedule, from_ms=ms(start), count=count, **kw)  # type: ignore[arg-type]
    return [(f.local_time, f.actual_ms != 0, list(f.notes)) for f in fires]


# --- pure preview: DST notes ----------------------------------------------------------------------------


def test_shifted_fire_is_noted() -> None:
    rows = rows_of(cron("30 2 * * *", "Europe/Paris"), "2026-03-28T00:00:00Z", 3)
    assert rows == [
        ("2026-03-28T02:30:00+01:00", True, []),
        ("2026-03-29T03:00:00+02:00", True, ["dst_shifted (local 02:00-03:00 does not exist on 2026-03-29)"]),
        ("2026-03-30T02:30:00+02:00", True, []),
    ]


def test_skipped_gap_is_listed_but_not_counted() -> None:
    schedule = cron("30 2 * * *", "Europe/Paris", dst_gap=pb.DST_GAP_SKIP)
    fires = preview(schedule, from_ms=ms("2026-03-28T00:00:00Z"), count=2)
    assert [(f.local_time, f.actual_ms) for f in fires] == [
        ("2026-03-28T02:30:00+01:00", ms("2026-03-28T01:30:00Z")),
        ("2026-03-29T03:00:00+02:00", 0),
        ("2026-03-30T02:30:00+02:00", ms("2026-03-30T00:30:00Z")),
    ]
    assert list(fires[1].notes) == ["dst_skipped (local 02:00-03:00 does not exist on 2026-03-29)"]


def test_fold_notes_lord_howe_half_hour() -> None:
    schedule = cron("40 1 * * *", "Australia/Lord_Howe", dst_fold=pb.DST_FOLD_BOTH)
    assert rows_of(schedule, "2026-04-04T13:00:00Z", 3) == [
        ("2026-04-05T01:40:00+11:00", True, ["dst_fold: first occurrence of 01:40"]),
        ("2026-04-05T01:40:00+10:30", True, ["dst_fold: repeat of 01:40"]),
        ("2026-04-06T01:40:00+10:30", True, []),
    ]


def test_santiago_midnight_gap_and_kolkata_offset() -> None:
    rows = rows_of(cron("0 0 * * *", "America/Santiago"), "2026-09-05T12:00:00Z", 1)
    assert rows == [
        ("2026-09-06T01:00:00-03:00", True, ["dst_shifted (local 00:00-01:00 does not exist on 2026-09-06)"])
    ]
    assert rows_of(cron("0 9 * * *", "Asia/Kolkata"), "2026-03-01T00:00:00Z", 1) == [
        ("2026-03-01T09:00:00+05:30", True, [])
    ]


# --- pure preview: jitter, calendar hook, limits --------------------------------------------------------


def test_jitter_with_and_without_task_id() -> None:
    schedule = cron("0 * * * *", jitter_ms=600_000)
    start = ms("2026-01-01T00:00:00Z")
    fires = preview(schedule, from_ms=start, count=3, task_id="task-7")
    for fire in fires:
        offset = jitter_offset_ms("task-7", fire.nominal_time_ms, 600_000)
        assert fire.actual_ms == fire.nominal_time_ms + offset
        assert list(fire.notes) == [f"jitter +{offset} ms"]
    assert len({f.actual_ms - f.nominal_time_ms for f in fires}) > 1
    anonymous = preview(schedule, from_ms=start, count=1)
    assert anonymous[0].actual_ms == anonymous[0].nominal_time_ms
    assert list(anonymous[0].notes) == ["jitter: up to 10m later (depends on the task id)"]


def test_resolve_hook_skip_roll_fire() -> None:
    day = 86_400_000
    start = ms("2026-01-01T09:00:00Z")

    def resolve(nominal: int) -> tuple[str, int, str]:
        index = (nominal - start) // day
        if index == 1:
            return "skip", 0, "skipped_calendar (FR holiday)"
        if index == 2:
            return "roll", nominal + day, "rolled to the next business day"
        return "fire", nominal, ""

    fires = preview(cron("0 9 * * *", jitter_ms=1_000), from_ms=start, count=3, task_id="t", resolve=resolve)
    assert [(f.nominal_time_ms - start) // day for f in fires] == [0, 1, 2, 3]
    assert fires[1].actual_ms == 0 and list(fires[1].notes) == ["skipped_calendar (FR holiday)"]
    rolled = fires[2]
    assert rolled.actual_ms == rolled.nominal_time_ms + day + jitter_offset_ms(
        "t", rolled.nominal_time_ms, 1_000
    )
    assert rolled.notes[0] == "rolled to the next business day"


def test_resolve_unknown_outcome_is_an_error() -> None:
    with pytest.raises(ValueError, match="'maybe'"):
        preview(cron("* * * * *"), from_ms=0, count=1, resolve=lambda n: ("maybe", n, ""))


def test_walk_is_capped_at_ten_times_count() -> None:
    fires = preview(cron("* * * * *"), from_ms=0, count=3, resolve=lambda n: ("skip", 0, "excluded"))
    assert len(fires) == 30 and all(f.actual_ms == 0 for f in fires)


def test_window_max_runs_and_count() -> None:
    start = ms("2026-01-01T00:00:00Z")
    hourly = cron("0 * * * *", end_at_ms=start + 2 * 3_600_000)
    assert len(preview(hourly, from_ms=start, count=10)) == 3
    assert len(preview(cron("0 * * * *", max_runs=5), from_ms=start, count=10)) == 5
    assert len(preview(cron("0 * * * *", max_runs=5), from_ms=start, count=10, fire_count=4)) == 1
    assert preview(cron("0 * * * *", max_runs=5), from_ms=start, count=10, fire_count=5) == []
    assert preview(cron("0 * * * *"), from_ms=start, count=0) == []


def test_fixed_delay_shows_the_first_fire_only() -> None:
    schedule = pb.Schedule(fixed_delay=pb.FixedDelaySchedule(delay_ms=90_000, stop_on_failure=True))
    fires = preview(schedule, from_ms=ms("2026-01-01T00:00:00Z"), count=5)
    assert len(fires) == 1
    assert fires[0].local_time == "2026-01-01T00:00:00Z"
    assert list(fires[0].notes) == ["then 1m30s after each run ends (stops after a failed run)"]


def test_at_in_the_past_and_fixed_rate_milliseconds() -> None:
    past = preview(pb.Schedule(at=pb.AtSchedule(at_ms=1_000)), from_ms=5_000, count=3)
    assert len(past) == 1 and past[0].notes[0].startswith("in the past")
    rate = pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=1_500))
    assert [f.local_time for f in preview(rate, from_ms=0, count=2)] == [
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:01.500Z",
    ]


def test_formatting_helpers() -> None:
    assert (
        rfc3339(ms("2026-10-25T01:30:00.250Z"), load_zone("Europe/Paris")) == "2026-10-25T02:30:00.250+01:00"
    )
    assert format_duration(0) == "0s" and format_duration(90_061_001) == "1d1h1m1s1ms"


@settings(max_examples=40, deadline=None)
@given(
    expression=st.sampled_from(["*/20 * * * *", "30 2 * * *", "0 0 * * *", "15 1 * * 1-5", "10,40 * * * *"]),
    zone=st.sampled_from(["Europe/Paris", "America/Santiago", "Australia/Lord_Howe", "UTC"]),
    start=st.integers(86_400_000, 4_102_444_800_000),  # (a fire at instant 0 would read as not firing)
    fold=st.sampled_from([pb.DST_FOLD_DEFAULT, pb.DST_FOLD_SECOND, pb.DST_FOLD_BOTH]),
)
def test_preview_lists_exactly_what_the_leader_fires(
    expression: str, zone: str, start: int, fold: int
) -> None:
    """With SHIFT the rows are the leader's own walk (first_fire, then next_fire); with SKIP (and by
    default for an elapsed-time job) the firing rows are the leader's walk and the others are all
    dst_skipped."""
    for gap in (pb.DST_GAP_DEFAULT, pb.DST_GAP_SHIFT, pb.DST_GAP_SKIP):
        schedule = cron(expression, zone, dst_gap=gap, dst_fold=fold)
        fires = preview(schedule, from_ms=start, count=5)
        walk = []
        nominal = first_fire(schedule, start)
        while nominal is not None and len(walk) < 5:
            walk.append(nominal)
            nominal = next_fire(schedule, nominal)
        assert [f.nominal_time_ms for f in fires if f.actual_ms] == walk
        assert all(f.notes[0].startswith("dst_skipped") for f in fires if not f.actual_ms)


# --- schedctl schedule preview ---------------------------------------------------------------------------

NOW = ms("2026-03-28T00:00:00Z")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = preview_cli.main(argv, now_ms=NOW)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--cron", "30 2 * * *", "--tz", "Europe/Paris", "--limit", "3"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "NOMINAL (UTC)",
        "LOCAL (Europe/Paris)",
        "DAY",
        "STARTS (UTC)",
        "NOTES",
    ]
    assert "2026-03-29T01:00:00Z  2026-03-29T03:00:00+02:00" in lines[2]
    assert "dst_shifted" in lines[2]
    assert len(lines) == 4


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--cron", "30 2 * * *", "--tz", "Europe/Paris", "--dst-gap", "skip", "--limit", "2"]
    code, out, _ = run([*argv, "--from", "+1d", "--output", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["from_ms"] == NOW + 86_400_000
    assert doc["time_zone"] == "Europe/Paris"
    assert doc["schedule"]["kind"] == "cron"
    assert [(f["local_time"], f["fires"]) for f in doc["fires"]] == [
        ("2026-03-29T03:00:00+02:00", False),
        ("2026-03-30T02:30:00+02:00", True),
        ("2026-03-31T02:30:00+02:00", True),
    ]
    assert doc["fires"][0]["actual"] is None and doc["fires"][1]["actual"] == "2026-03-30T00:30:00Z"


@pytest.mark.parametrize(
    ("argv", "first_local"),
    [
        (["--every", "6h", "--anchor", "2026-01-01T00:05:00Z"], "2026-03-28T00:05:00Z"),
        (["--at", "2026-04-01T10:00:00+02:00"], "2026-04-01T08:00:00Z"),
        (["--at", "2016-12-31T23:59:60Z"], "2017-01-01T00:00:00Z"),  # a leap second reads as :00
        (["--delay", "5m", "--start-at", "+1h"], "2026-03-28T01:00:00Z"),
        (["--cron", "0 9 * * *", "--tz", "Asia/Kolkata", "--jitter", "10m"], "2026-03-28T09:00:00+05:30"),
    ],
)
def test_cli_kinds(argv: list[str], first_local: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*argv, "--output", "json"], capsys)
    assert code == 0 and err.startswith("schedule: ") and err.count("\n") == 1  # the echo (issue 19)
    assert json.loads(out)["fires"][0]["local_time"] == first_local


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cron", "* * *"], "error: --cron: expected 5 or 6 fields"),
        (["--cron", "0 0 * * *", "--tz", "Mars/Base"], "error: --tz: unknown time zone"),
        (["--every", "1h", "--jitter", "1h"], "error: --jitter: must be less than fixed_rate.period_ms"),
        (["--delay", "500ms"], "error: --delay: must be at least 1000"),
        (["--every", "1h", "--dst-gap", "skip"], "error: --dst-gap: applies to cron schedules only"),
        (["--cron", "0 0 * * *", "--dst-fold", "sometimes"], "error: --dst-fold:"),
        (["--cron", "0 0 * * *", "--limit", "0"], "error: --limit: must be between 1 and 1000"),
        (["--cron", "0 0 * * *", "--end-at", "2026-01-01T00:00:00Z"], "error: --end-at: is in the past"),
        (["--every", "1h", "--tz", "Europe/Paris"], "error: --tz: applies to --cron only"),
    ],
)
def test_cli_errors_name_the_flag(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert err.startswith(message)


def test_cli_calendar_is_not_applied_offline(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--cron", "0 0 * * *", "--calendar", "fr-holidays", "--limit", "1"], capsys)
    assert code == 0 and "calendars are not applied offline" in err
    assert "2026-03-28T00:00:00Z" in out


def test_hook_into_a_schedctl_style_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """What schedctl does: `add_preview_parser(commands)`, then `run_preview(args)` without a client; the
    top-level `--output` holds unless the sub-command gives its own."""
    parser = argparse.ArgumentParser(prog="schedctl")
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table")
    preview_cli.add_preview_parser(parser.add_subparsers(dest="command", required=True))
    for argv in (
        ["--output", "json", "schedule", "preview", "--every", "1h"],
        ["schedule", "preview", "--every", "1h", "-o", "json"],
    ):
        args = parser.parse_args(argv)
        assert args.handler is preview_cli.run_preview
        assert preview_cli.run_preview(args, now_ms=NOW) == 0
        assert len(json.loads(capsys.readouterr().out)["fires"]) == preview_cli.DEFAULT_COUNT
    args = parser.parse_args(["schedule", "preview", "--every", "1h", "--limit", "2"])
    assert preview_cli.run_preview(args, now_ms=NOW) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("2026-03-28T00:00:00Z")
