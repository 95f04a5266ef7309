"""Tests of cronraft.raft.schedule: table tests per schedule kind and zone, one test per validation error,
and properties checked against a brute-force oracle that walks every minute in UTC."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2 as pb
from cronraft.raft.schedule import (
    MAX_INSTANT_MS,
    dst_shifted,
    first_fire,
    jitter_offset_ms,
    load_zone,
    next_fire,
    next_fixed_delay,
    validate_schedule,
)
from cronraft.timefmt import parse_instant

JITTER_PIN_A, JITTER_PIN_B, JITTER_PIN_C = 7_269, 75_681_014, 740


def ms(text: str) -> int:
    return parse_instant(text, field="test")


def iso(instant_ms: int, zone: str) -> str:
    return datetime.fromtimestamp(instant_ms / 1000, load_zone(zone)).isoformat()


def cron(expression: str, zone: str = "", **options: int) -> pb.Schedule:
    return pb.Schedule(cron=pb.CronSchedule(expression=expression, time_zone=zone), **options)  # type: ignore[arg-type]


def rate(period_ms: int, anchor_ms: int = 0, **options: int) -> pb.Schedule:
    return pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=period_ms, anchor_ms=anchor_ms), **options)  # type: ignore[arg-type]


def delay(delay_ms: int, stop_on_failure: bool = False, **options: int) -> pb.Schedule:
    fixed = pb.FixedDelaySchedule(delay_ms=delay_ms, stop_on_failure=stop_on_failure)
    return pb.Schedule(fixed_delay=fixed, **options)  # type: ignore[arg-type]


def fires(schedule: pb.Schedule, created: str, count: int) -> list[int]:
    out: list[int] = []
    nominal = first_fire(schedule, ms(created))
    while nominal is not None and len(out) < count:
        out.append(nominal)
        nominal = next_fire(schedule, nominal)
    return out


def local_fires(schedule: pb.Schedule, created: str, count: int) -> list[str]:
    zone = schedule.cron.time_zone or "UTC"
    return [iso(f, zone) for f in fires(schedule, created, count)]


# --- cron tables -------------------------------------------------------------------------------------

CRON_TABLE = [
    # (expression, zone, created (RFC 3339), expected local fires)
    ("*/15 * * * *", "", "2026-01-01T00:07:00Z", ["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00"]),
    (
        "0 9 * * mon-fri",
        "",
        "2026-01-02T10:00:00Z",
        ["2026-01-05T09:00:00+00:00", "2026-01-06T09:00:00+00:00"],
    ),
    ("30 0 9 * * *", "", "2026-01-01T09:00:30Z", ["2026-01-01T09:00:30+00:00", "2026-01-02T09:00:30+00:00"]),
    (
        "*/20 * * * * *",
        "",
        "2026-01-01T00:00:01.500Z",
        ["2026-01-01T00:00:20+00:00", "2026-01-01T00:00:40+00:00"],
    ),
    ("@hourly", "", "2026-01-01T00:00:00Z", ["2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00"]),
    ("@daily", "", "2026-01-01T00:00:00.001Z", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
    ("@midnight", "", "2026-01-01T12:00:00Z", ["2026-01-02T00:00:00+00:00"]),
    ("@weekly", "", "2026-01-01T00:00:00Z", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
    ("@monthly", "", "2026-01-15T00:00:00Z", ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
    ("@yearly", "", "2026-06-01T00:00:00Z", ["2027-01-01T00:00:00+00:00"]),
    ("@ANNUALLY", "", "2026-06-01T00:00:00Z", ["2027-01-01T00:00:00+00:00"]),
    ("0 0 29 2 *", "", "2026-01-01T00:00:00Z", ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    ("0 0 L * *", "", "2026-02-01T00:00:00Z", ["2026-02-28T00:00:00+00:00", "2026-03-31T00:00:00+00:00"]),
    ("0 9 * * 1#1", "", "2026-01-01T00:00:00Z", ["2026-01-05T09:00:00+00:00", "2026-02-02T09:00:00+00:00"]),
    # Asia/Kolkata: +05:30, no DST.
    (
        "0 9 * * *",
        "Asia/Kolkata",
        "2026-03-01T00:00:00Z",
        ["2026-03-01T09:00:00+05:30", "2026-03-02T09:00:00+05:30"],
    ),
    # Europe/Paris spring forward 2026-03-29 02:00 -> 03:00: a fixed time in the gap fires at 03:00.
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-03-28T00:00:00Z",
        ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    ),
    # ... and a frequent job: the gap's wall times collapse into the one instant 03:00, never repeated.
    (
        "*/20 * * * *",
        "Europe/Paris",
        "2026-03-29T00:30:00Z",
        ["2026-03-29T01:40:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:20:00+02:00"],
    ),
    # Europe/Paris fall back 2026-10-25 03:00 -> 02:00: a fixed time in the fold fires once (first).
    (
        "30 2 * * *",
        "Europe/Paris",
        "2026-10-24T00:00:00Z",
        ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    # ... an elapsed-time job (minute field starts with *) runs in both copies of the hour.
    (
        "*/30 * * * *",
        "Europe/Paris",
        "2026-10-25T00:00:00Z",
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ],
    ),
    # America/New_York: spring forward 2026-03-08 02:00 -> 03:00, 6-field expression.
    (
        "0 30 2 * * *",
        "America/New_York",
        "2026-03-07T00:00:00Z",
        ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    # America/New_York fall back 2026-11-01 02:00 -> 01:00: @hourly runs in both 01:00s.
    (
        "@hourly",
        "America/New_York",
        "2026-11-01T04:30:00Z",
        ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"],
    ),
    # Australia/Lord_Howe: 30-minute DST. Fall back 2026-04-05 02:00 (+11) -> 01:30 (+10:30).
    (
        "40 1 * * *",
        "Australia/Lord_Howe",
        "2026-04-04T13:00:00Z",
        ["2026-04-05T01:40:00+11:00", "2026-04-06T01:40:00+10:30"],
    ),
    (
        "*/15 1 * * *",
        "Australia/Lord_Howe",
        "2026-04-04T14:20:00Z",
        [
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30",
            "2026-04-06T01:00:00+10:30",
        ],
    ),
    # Lord_Howe spring forward 2026-10-04 02:00 (+10:30) -> 02:30 (+11).
    (
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2026-10-03T13:00:00Z",
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
    ),
    # Far future: the zone's rule carries on; ms values far above 2**32 s.
    (
        "0 0 1 1 *",
        "Europe/Paris",
        "2150-06-01T00:00:00Z",
        ["2151-01-01T00:00:00+01:00", "2152-01-01T00:00:00+01:00"],
    ),
    (
        "30 2 * * *",
        "Europe/Paris",
        "2199-03-30T12:00:00Z",
        ["2199-03-31T03:00:00+02:00", "2199-04-01T02:30:00+02:00"],
    ),
    ("0 12 * * *", "", "2199-12-31T13:00:00Z", ["2200-01-01T12:00:00+00:00", "2200-01-02T12:00:00+00:00"]),
]


@pytest.mark.parametrize(("expression", "zone", "created", "expected"), CRON_TABLE)
def test_cron_table(expression: str, zone: str, created: str, expected: list[str]) -> None:
    assert local_fires(cron(expression, zone), created, len(expected)) == expected


def test_cron_first_fire_rounds_up_to_whole_second() -> None:
    schedule = cron("* * * * * *")
    assert first_fire(schedule, ms("2026-01-01T00:00:00Z")) == ms("2026-01-01T00:00:00Z")
    assert first_fire(schedule, ms("2026-01-01T00:00:00.001Z")) == ms("2026-01-01T00:00:01Z")
    assert next_fire(schedule, ms("2026-01-01T00:00:00.999Z")) == ms("2026-01-01T00:00:01Z")


def test_results_beyond_year_9999_are_none() -> None:
    assert next_fire(cron("0 0 1 1 *"), ms("9999-06-01T00:00:00Z")) is None
    rate = pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=2**61))
    assert next_fire(rate, 2**62) is None


# --- DST policies: gap shift|skip, fold first|second|both, across zones and years -------------------

SHIFT, SKIP = pb.DST_GAP_SHIFT, pb.DST_GAP_SKIP
DEFAULT, FIRST, SECOND, BOTH = pb.DST_FOLD_DEFAULT, pb.DST_FOLD_FIRST, pb.DST_FOLD_SECOND, pb.DST_FOLD_BOTH

DST_TABLE = [
    # (expression, zone, dst_gap, dst_fold, created, expected local fires)
    # Europe/Paris: gap 2026-03-29 02:00 -> 03:00, fold 2026-10-25 03:00 -> 02:00.
    ("30 2 * * *", "Europe/Paris", SHIFT, DEFAULT, "2026-03-28T00:00:00Z",
     ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("30 2 * * *", "Europe/Paris", SKIP, DEFAULT, "2026-03-28T00:00:00Z",
     ["2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00"]),
    ("10,40 * * * *", "Europe/Paris", SHIFT, DEFAULT, "2026-03-29T00:30:00Z",
     ["2026-03-29T01:40:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:10:00+02:00"]),
    ("10,40 * * * *", "Europe/Paris", SKIP, DEFAULT, "2026-03-29T00:30:00Z",
     ["2026-03-29T01:40:00+01:00", "2026-03-29T03:10:00+02:00"]),
    ("30 2 * * *", "Europe/Paris", SHIFT, FIRST, "2026-10-24T00:00:00Z",
     ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ("30 2 * * *", "Europe/Paris", SHIFT, SECOND, "2026-10-24T00:00:00Z",
     ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00"]),
    ("30 2 * * *", "Europe/Paris", SHIFT, BOTH, "2026-10-24T00:00:00Z",
     ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00",
      "2026-10-26T02:30:00+01:00"]),
    ("*/30 * * * *", "Europe/Paris", SHIFT, FIRST, "2026-10-25T00:00:00Z",
     ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T03:00:00+01:00"]),
    # SECOND for an elapsed-time job: nothing in the first pass of the fold, then the repeat.
    ("*/30 * * * *", "Europe/Paris", SHIFT, SECOND, "2026-10-25T00:00:00Z",
     ["2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]),
    ("30 2 * * *", "Europe/Paris", SKIP, BOTH, "2100-03-27T00:00:00Z",
     ["2100-03-27T02:30:00+01:00", "2100-03-29T02:30:00+02:00"]),
    # America/New_York: gap 2026-03-08 02:00 -> 03:00, fold 2026-11-01 02:00 -> 01:00.
    ("0 30 2 * * *", "America/New_York", SKIP, DEFAULT, "2026-03-07T00:00:00Z",
     ["2026-03-07T02:30:00-05:00", "2026-03-09T02:30:00-04:00"]),
    ("30 1 * * *", "America/New_York", SHIFT, DEFAULT, "2026-10-31T12:00:00Z",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("30 1 * * *", "America/New_York", SHIFT, SECOND, "2026-10-31T12:00:00Z",
     ["2026-11-01T01:30:00-05:00", "2026-11-02T01:30:00-05:00"]),
    ("30 1 * * *", "America/New_York", SHIFT, BOTH, "2031-11-01T12:00:00Z",
     ["2031-11-02T01:30:00-04:00", "2031-11-02T01:30:00-05:00", "2031-11-03T01:30:00-05:00"]),
    ("@hourly", "America/New_York", SHIFT, FIRST, "2026-11-01T04:30:00Z",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00"]),
    # Australia/Lord_Howe (30-minute DST): fold 2026-04-05 02:00 -> 01:30, gap 2026-10-04 02:00 -> 02:30.
    ("40 1 * * *", "Australia/Lord_Howe", SHIFT, SECOND, "2026-04-04T13:00:00Z",
     ["2026-04-05T01:40:00+10:30", "2026-04-06T01:40:00+10:30"]),
    ("40 1 * * *", "Australia/Lord_Howe", SHIFT, BOTH, "2026-04-04T13:00:00Z",
     ["2026-04-05T01:40:00+11:00", "2026-04-05T01:40:00+10:30", "2026-04-06T01:40:00+10:30"]),
    ("*/15 1 * * *", "Australia/Lord_Howe", SHIFT, FIRST, "2026-04-04T14:20:00Z",
     ["2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00", "2026-04-06T01:00:00+10:30"]),
    ("15 2 * * *", "Australia/Lord_Howe", SKIP, DEFAULT, "2026-10-03T13:00:00Z",
     ["2026-10-05T02:15:00+11:00", "2026-10-06T02:15:00+11:00"]),
    ("15 2 * * *", "Australia/Lord_Howe", SKIP, DEFAULT, "2100-10-02T13:00:00Z",
     ["2100-10-04T02:15:00+11:00"]),
    # Australia/Sydney: fold 2026-04-05 03:00 -> 02:00, gap 2026-10-04 02:00 -> 03:00.
    ("30 2 * * *", "Australia/Sydney", SHIFT, DEFAULT, "2026-04-04T00:00:00Z",
     ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"]),
    ("30 2 * * *", "Australia/Sydney", SHIFT, SECOND, "2026-04-04T00:00:00Z",
     ["2026-04-05T02:30:00+10:00", "2026-04-06T02:30:00+10:00"]),
    ("30 2 * * *", "Australia/Sydney", SHIFT, BOTH, "2026-04-04T00:00:00Z",
     ["2026-04-05T02:30:00+11:00", "2026-04-05T02:30:00+10:00", "2026-04-06T02:30:00+10:00"]),
    ("30 2 * * *", "Australia/Sydney", SHIFT, DEFAULT, "2026-10-03T00:00:00Z",
     ["2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"]),
    ("30 2 * * *", "Australia/Sydney", SKIP, DEFAULT, "2026-10-03T00:00:00Z",
     ["2026-10-05T02:30:00+11:00"]),
    # America/Santiago: changes at midnight. Fold 2026-04-04 24:00 -> 23:00, gap 2026-09-06 00:00 -> 01:00.
    ("0 0 * * *", "America/Santiago", SHIFT, DEFAULT, "2026-09-05T00:00:00Z",
     ["2026-09-05T00:00:00-04:00", "2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]),
    ("0 0 * * *", "America/Santiago", SKIP, DEFAULT, "2026-09-05T00:00:00Z",
     ["2026-09-05T00:00:00-04:00", "2026-09-07T00:00:00-03:00"]),
    ("0 0 * * *", "America/Santiago", SKIP, DEFAULT, "2031-09-06T00:00:00Z",
     ["2031-09-06T00:00:00-04:00", "2031-09-08T00:00:00-03:00"]),
    ("30 23 * * *", "America/Santiago", SHIFT, FIRST, "2026-04-04T12:00:00Z",
     ["2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"]),
    ("30 23 * * *", "America/Santiago", SHIFT, SECOND, "2026-04-04T12:00:00Z",
     ["2026-04-04T23:30:00-04:00", "2026-04-05T23:30:00-04:00"]),
    ("30 23 * * *", "America/Santiago", SHIFT, BOTH, "2026-04-04T12:00:00Z",
     ["2026-04-04T23:30:00-03:00", "2026-04-04T23:30:00-04:00", "2026-04-05T23:30:00-04:00"]),
] + [
    # Asia/Kolkata has no DST: every policy gives the same fires.
    ("30 2 * * *", "Asia/Kolkata", gap, fold, "2026-03-28T00:00:00Z",
     ["2026-03-29T02:30:00+05:30", "2026-03-30T02:30:00+05:30"])
    for gap in (SHIFT, SKIP) for fold in (DEFAULT, FIRST, SECOND, BOTH)
]  # fmt: skip


@pytest.mark.parametrize(("expression", "zone", "gap", "fold", "created", "expected"), DST_TABLE)
def test_dst_policy_table(
    *, expression: str, zone: str, gap: int, fold: int, created: str, expected: list[str]
) -> None:
    schedule = cron(expression, zone, dst_gap=gap, dst_fold=fold)
    assert local_fires(schedule, created, len(expected)) == expected
    # Each fire is reached again from just before it (no hidden dependence on where the walk started).
    for local in expected:
        nominal = ms(local)
        assert next_fire(schedule, nominal - 1) == nominal


@pytest.mark.parametrize(
    ("expression", "zone", "local", "shifted"),
    [
        ("30 2 * * *", "Europe/Paris", "2026-03-29T03:00:00+02:00", True),
        ("30 2 * * *", "Europe/Paris", "2026-03-30T02:30:00+02:00", False),
        ("*/20 * * * *", "Europe/Paris", "2026-03-29T03:00:00+02:00", False),  # 03:00 matches on its own
        ("10,40 2 * * *", "Europe/Paris", "2026-03-29T03:00:00+02:00", True),
        # An elapsed-time job (hour `*`) follows the new clock by default (cronie): nothing is shifted.
        ("10,40 * * * *", "Europe/Paris", "2026-03-29T03:00:00+02:00", False),
        ("15 2 * * *", "Australia/Lord_Howe", "2026-10-04T02:30:00+11:00", True),
        ("0 0 * * *", "America/Santiago", "2026-09-06T01:00:00-03:00", True),
        ("30 2 * * *", "Europe/Paris", "2026-10-25T02:30:00+01:00", False),  # a fold is not a shift
        ("30 2 * * *", "Asia/Kolkata", "2026-03-29T02:30:00+05:30", False),
        ("30 2 * * *", "", "2026-03-29T02:30:00Z", False),
    ],
)
def test_dst_shifted(expression: str, zone: str, local: str, shifted: bool) -> None:
    assert dst_shifted(cron(expression, zone), ms(local)) is shifted
    assert dst_shifted(cron(expression, zone, dst_gap=SKIP), ms(local)) is False


def test_dst_shifted_elapsed_time_job_with_explicit_shift() -> None:
    schedule = cron("10,40 * * * *", "Europe/Paris", dst_gap=SHIFT)
    assert dst_shifted(schedule, ms("2026-03-29T03:00:00+02:00"))


def test_dst_shifted_is_false_for_other_kinds() -> None:
    instant = ms("2026-03-29T01:00:00Z")  # 03:00 in Paris, just after the gap
    assert not dst_shifted(rate(60_000), instant)
    assert not dst_shifted(pb.Schedule(at=pb.AtSchedule(at_ms=instant)), instant)


# --- jitter ------------------------------------------------------------------------------------------


def test_jitter_is_pinned() -> None:
    """Pinned values: a change here moves every jittered fire of every stored task (a new leader running
    another release would disagree with the old one). Never change them without a migration."""
    assert jitter_offset_ms("task-1", 1_780_000_000_000, 60_000) == JITTER_PIN_A
    assert jitter_offset_ms("", 0, 86_400_000) == JITTER_PIN_B
    assert jitter_offset_ms("täsk", -1, 1_000) == JITTER_PIN_C


def test_jitter_bounds() -> None:
    assert jitter_offset_ms("t", 5, 0) == 0
    assert jitter_offset_ms("t", 5, -3) == 0
    assert jitter_offset_ms("t", 5, 1) == 0
    assert all(0 <= jitter_offset_ms("t", n * 60_000, 7) < 7 for n in range(200))


def test_jitter_depends_on_task_and_nominal_and_spreads() -> None:
    jitter = 60_000
    offsets = [jitter_offset_ms("task-a", n * 60_000, jitter) for n in range(2_000)]
    assert offsets == [jitter_offset_ms("task-a", n * 60_000, jitter) for n in range(2_000)]
    assert offsets != [jitter_offset_ms("task-b", n * 60_000, jitter) for n in range(2_000)]
    buckets = [0] * 10
    for offset in offsets:
        buckets[offset * 10 // jitter] += 1
    assert min(buckets) > 140 and max(buckets) < 260  # 200 each expected; a chi-square-ish sanity bound
    many_tasks = {jitter_offset_ms(f"task-{i}", 0, jitter) for i in range(1_000)}
    assert len(many_tasks) > 950  # tasks sharing a nominal time are spread, not stacked


# --- fixed_delay -------------------------------------------------------------------------------------


def test_fixed_delay_first_fire_is_creation_or_start() -> None:
    assert first_fire(delay(5_000), 1_000_000) == 1_000_000
    assert first_fire(delay(5_000, start_at_ms=2_000_000), 1_000_000) == 2_000_000
    assert first_fire(delay(5_000, start_at_ms=500_000), 1_000_000) == 1_000_000
    assert first_fire(delay(5_000, end_at_ms=900_000), 1_000_000) is None


def test_fixed_delay_next_fire_is_unknown_until_the_run_ends() -> None:
    schedule = delay(5_000)
    assert next_fire(schedule, 1_000_000) is None
    assert next_fixed_delay(schedule, 1_234_567) == 1_239_567
    assert next_fixed_delay(schedule, 1_234_567, succeeded=False) == 1_239_567


def test_fixed_delay_window_and_stop_on_failure() -> None:
    windowed = delay(5_000, start_at_ms=100_000, end_at_ms=200_000)
    assert next_fixed_delay(windowed, 10_000) == 100_000  # never before start_at
    assert next_fixed_delay(windowed, 195_000) == 200_000  # end_at is inclusive
    assert next_fixed_delay(windowed, 195_001) is None
    assert next_fixed_delay(delay(5_000), MAX_INSTANT_MS) is None
    stopping = delay(5_000, stop_on_failure=True)
    assert next_fixed_delay(stopping, 0, succeeded=True) == 5_000
    assert next_fixed_delay(stopping, 0, succeeded=False) is None
    with pytest.raises(InvalidArgument):
        next_fixed_delay(rate(5_000), 0)


def test_validation_fixed_delay_end_in_the_past() -> None:
    schedule = delay(1_000, end_at_ms=ms("2026-01-01T00:00:00Z"))
    assert error_of(schedule, now_ms=ms("2026-02-01T00:00:00Z"))[0] == "spec.schedule.end_at_ms"


# --- leap seconds: POSIX time, so nothing is lost or doubled -------------------------------------------


def test_cron_and_fixed_rate_around_a_leap_second() -> None:
    """2016-12-31T23:59:60Z was a leap second. In POSIX time it has no instant of its own: the fires of
    an every-second job are consecutive whole seconds across it, and daily fires stay 86,400 s apart."""
    every_second = fires(cron("* * * * * *"), "2016-12-31T23:59:58Z", 4)
    assert every_second == [ms("2016-12-31T23:59:58Z") + 1000 * i for i in range(4)]
    assert fires(cron("0 0 * * *"), "2016-12-31T00:00:01Z", 2) == [
        ms("2017-01-01T00:00:00Z"),
        ms("2017-01-02T00:00:00Z"),
    ]
    ticker = rate(1_000)
    got = [first_fire(ticker, ms("2016-12-31T23:59:59Z"))]
    got.append(next_fire(ticker, ms("2016-12-31T23:59:59Z")))
    assert got == [ms("2016-12-31T23:59:59Z"), ms("2017-01-01T00:00:00Z")]


def test_at_given_as_a_leap_second_is_accepted() -> None:
    at_ms = parse_instant("2016-12-31T23:59:60Z", field="spec.schedule.at.at_ms")
    assert at_ms == ms("2017-01-01T00:00:00Z")
    schedule = pb.Schedule(at=pb.AtSchedule(at_ms=at_ms))
    validate_schedule(schedule)
    assert first_fire(schedule, 0) == at_ms
    assert parse_instant("2016-12-31T20:59:60.5-03:00", field="x") == ms("2017-01-01T00:00:00Z")


# --- at, fixed_rate, window --------------------------------------------------------------------------


def test_at_fires_at_its_instant_even_when_past() -> None:
    schedule = pb.Schedule(at=pb.AtSchedule(at_ms=1_000))
    assert first_fire(schedule, 5_000_000) == 1_000
    assert next_fire(schedule, 1_000) is None
    assert next_fire(schedule, 999) == 1_000


FIXED_RATE_TABLE = [
    # (period, anchor, created, expected)
    (60_000, 0, 90_000, [120_000, 180_000]),
    (60_000, 0, 120_000, [120_000, 180_000]),
    (60_000, 5_000, 0, [5_000, 65_000]),  # anchor in the future: first fire is the anchor
    (60_000, 5_000, 5_001, [65_000, 125_000]),  # anchor in the past: phase kept
    (3_600_000, ms("2026-01-01T00:05:00Z"), ms("2026-06-01T10:30:00Z"), [ms("2026-06-01T11:05:00Z")]),
    (86_400_000, 0, ms("2180-01-01T00:00:00.001Z"), [ms("2180-01-02T00:00:00Z")]),
]


@pytest.mark.parametrize(("period", "anchor", "created", "expected"), FIXED_RATE_TABLE)
def test_fixed_rate_table(period: int, anchor: int, created: int, expected: list[int]) -> None:
    schedule = pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=period, anchor_ms=anchor))
    got = [first_fire(schedule, created)]
    while len(got) < len(expected):
        previous = got[-1]
        assert previous is not None
        got.append(next_fire(schedule, previous))
    assert got == expected


def test_window_start_and_end() -> None:
    start, end = ms("2026-01-01T10:00:00Z"), ms("2026-01-01T12:00:00Z")
    schedule = cron("0 * * * *", start_at_ms=start, end_at_ms=end)
    assert fires(schedule, "2026-01-01T00:00:00Z", 10) == [start, start + 3_600_000, end]
    assert first_fire(schedule, ms("2026-01-01T12:00:01Z")) is None
    rate = pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=7_000), start_at_ms=10_000, end_at_ms=30_000)
    assert first_fire(rate, 0) == 14_000
    assert next_fire(rate, 28_000) is None


def test_at_outside_window_never_fires() -> None:
    assert first_fire(pb.Schedule(at=pb.AtSchedule(at_ms=5), start_at_ms=10), 0) is None
    assert first_fire(pb.Schedule(at=pb.AtSchedule(at_ms=50), end_at_ms=10), 0) is None


# --- validation: one test per error, each naming its field ----------------------------------------


def error_of(schedule: pb.Schedule, now_ms: int | None = None) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as info:
        validate_schedule(schedule, now_ms=now_ms)
    return info.value.field, info.value.problem


@pytest.mark.parametrize(
    ("schedule", "field", "problem"),
    [
        (pb.Schedule(), "spec.schedule", "exactly one of cron, at, fixed_rate, fixed_delay must be set"),
        (cron("* * *"), "spec.schedule.cron.expression", "expected 5 or 6 fields, got 3"),
        (cron("* * * * * * *"), "spec.schedule.cron.expression", "expected 5 or 6 fields, got 7"),
        (cron(""), "spec.schedule.cron.expression", "must not be empty"),
        (cron("61 * * * *"), "spec.schedule.cron.expression", "not a valid cron expression"),
        (cron("*/0 * * * *"), "spec.schedule.cron.expression", "not a valid cron expression"),
        (cron("@reboot"), "spec.schedule.cron.expression", "@reboot is not supported"),
        (cron("@sometimes"), "spec.schedule.cron.expression", "unknown macro"),
        (cron("H * * * *"), "spec.schedule.cron.expression", "hashed (H) and random (R)"),
        (cron("R * * * *"), "spec.schedule.cron.expression", "hashed (H) and random (R)"),
        (cron("0 0 30 2 *"), "spec.schedule.cron.expression", "matches no date"),
        (cron("0 0 * * *", "Mars/Base"), "spec.schedule.cron.time_zone", "unknown time zone 'Mars/Base'"),
        (cron("0 0 * * *", "../etc/passwd"), "spec.schedule.cron.time_zone", "unknown time zone"),
        (cron("0 0 * * *", "europe/paris"), "spec.schedule.cron.time_zone", "unknown time zone"),
        (pb.Schedule(at=pb.AtSchedule(at_ms=0)), "spec.schedule.at.at_ms", "must be > 0"),
        (pb.Schedule(at=pb.AtSchedule(at_ms=-5)), "spec.schedule.at.at_ms", "must be > 0"),
        (pb.Schedule(at=pb.AtSchedule(at_ms=2**62)), "spec.schedule.at.at_ms", "before year 10000"),
        (
            pb.Schedule(at=pb.AtSchedule(at_ms=5), start_at_ms=10),
            "spec.schedule.at.at_ms",
            "before start_at_ms",
        ),
        (pb.Schedule(at=pb.AtSchedule(at_ms=50), end_at_ms=10), "spec.schedule.at.at_ms", "after end_at_ms"),
        (
            pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=999)),
            "spec.schedule.fixed_rate.period_ms",
            "must be at least 1000 (1 s), got 999",
        ),
        (
            pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=1000, anchor_ms=-1)),
            "spec.schedule.fixed_rate.anchor_ms",
            "must not be negative",
        ),
        (delay(999), "spec.schedule.fixed_delay.delay_ms", "must be at least 1000 (1 s), got 999"),
        (delay(0), "spec.schedule.fixed_delay.delay_ms", "must be at least 1000"),
        (delay(2**62), "spec.schedule.fixed_delay.delay_ms", "must be at most"),
        (cron("* * * * *", jitter_ms=86_400_001), "spec.schedule.jitter_ms", "at most 86400000 (1 day)"),
        (rate(60_000, jitter_ms=60_000), "spec.schedule.jitter_ms", "less than fixed_rate.period_ms (60000)"),
        (delay(5_000, jitter_ms=5_000), "spec.schedule.jitter_ms", "less than fixed_delay.delay_ms (5000)"),
        (cron("* * * * *", dst_gap=7), "spec.schedule.dst_gap", "unknown policy 7"),
        (cron("* * * * *", dst_fold=9), "spec.schedule.dst_fold", "unknown policy 9"),
        (rate(60_000, dst_gap=pb.DST_GAP_SKIP), "spec.schedule.dst_gap", "applies to cron schedules only"),
        (
            pb.Schedule(at=pb.AtSchedule(at_ms=5), dst_fold=pb.DST_FOLD_BOTH),
            "spec.schedule.dst_fold",
            "applies to cron schedules only",
        ),
        (cron("* * * * *", jitter_ms=-5), "spec.schedule.jitter_ms", "must not be negative"),
        (cron("* * * * *", start_at_ms=-1), "spec.schedule.start_at_ms", "must not be negative"),
        (cron("* * * * *", end_at_ms=-1), "spec.schedule.end_at_ms", "must not be negative"),
        (cron("* * * * *", max_runs=-1), "spec.schedule.max_runs", "must not be negative"),
        (
            cron("* * * * *", start_at_ms=20, end_at_ms=20),
            "spec.schedule.end_at_ms",
            "must be after start_at_ms",
        ),
        (cron("0 0 * * *", start_at_ms=1_000, end_at_ms=2_000), "spec.schedule", "never fires"),
    ],
)
def test_validation_error_names_the_field(schedule: pb.Schedule, field: str, problem: str) -> None:
    got_field, got_problem = error_of(schedule)
    assert got_field == field
    assert problem in got_problem


def test_validation_end_in_the_past_with_now() -> None:
    schedule = cron("* * * * *", end_at_ms=ms("2026-01-01T00:00:00Z"))
    validate_schedule(schedule)  # fine without a clock: it did have fires
    assert error_of(schedule, now_ms=ms("2026-02-01T00:00:00Z")) == (
        "spec.schedule.end_at_ms",
        "is in the past: the task would never fire",
    )


def test_validation_uses_the_given_field_prefix() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_schedule(cron("* *"), field="tasks[3].schedule")
    assert info.value.field == "tasks[3].schedule.cron.expression"


@pytest.mark.parametrize(
    "schedule",
    [
        cron("*/5 * * * *", "Europe/Paris"),
        cron("0 30 9 * * mon-fri", "America/New_York"),
        cron("@daily", "Asia/Kolkata"),
        cron("0 0 ? * mon"),
        pb.Schedule(at=pb.AtSchedule(at_ms=1)),
        pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=1000, anchor_ms=10**12)),
        delay(1000),
        delay(60_000, jitter_ms=59_999),
        rate(60_000, jitter_ms=59_999),
        cron("0 9 * * *", "Europe/Paris", jitter_ms=86_400_000),
        pb.Schedule(at=pb.AtSchedule(at_ms=1), jitter_ms=1),
        cron("30 2 * * *", "Europe/Paris", dst_gap=pb.DST_GAP_SKIP, dst_fold=pb.DST_FOLD_BOTH),
        cron("30 2 * * *", dst_gap=pb.DST_GAP_SHIFT, dst_fold=pb.DST_FOLD_SECOND),
        cron("30 2 * * *", dst_fold=pb.DST_FOLD_FIRST),
    ],
)
def test_valid_schedules_pass(schedule: pb.Schedule) -> None:
    validate_schedule(schedule, now_ms=ms("2026-01-01T00:00:00Z"))


# The text forms of durations and instants are tested in test_timefmt.py.


# --- properties --------------------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",  # DST changes at midnight until 2019
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Antarctica/Troll",  # two-hour DST
    "Australia/Sydney",
    "America/Santiago",  # southern hemisphere; changes at midnight
]
GAPS = [pb.DST_GAP_DEFAULT, pb.DST_GAP_SHIFT, pb.DST_GAP_SKIP]
FOLDS = [pb.DST_FOLD_DEFAULT, pb.DST_FOLD_FIRST, pb.DST_FOLD_SECOND, pb.DST_FOLD_BOTH]
MINUTE_FIELDS = ["*", "*/7", "*/15", "0", "30", "0,45", "10-20"]
HOUR_FIELDS = ["*", "*/2", "0", "1", "2", "1-3", "23"]


@functools.cache
def transitions(zone_name: str, year: int) -> list[int]:
    """UTC offset changes (Unix seconds) in `year`, found by a 6-hourly scan and bisection."""
    zone = load_zone(zone_name)
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    found = []
    for step in range(start, start + 366 * 86_400, 6 * 3600):
        low, high = step, step + 6 * 3600
        if zone.utcoffset(datetime.fromtimestamp(low, UTC)) == zone.utcoffset(
            datetime.fromtimestamp(high, UTC)
        ):
            continue
        base = zone.utcoffset(datetime.fromtimestamp(low, UTC))
        while high - low > 1:
            middle = (low + high) // 2
            if zone.utcoffset(datetime.fromtimestamp(middle, UTC)) == base:
                low = middle
            else:
                high = middle
        found.append(high)
    return found


def oracle(
    minute: str, hour: str, zone_name: str, begin: int, end: int, *, gap: int = 0, fold: int = 0
) -> list[int]:
    """Every fire (Unix seconds) in [begin, end) of `minute hour * * *`, by walking each UTC minute.

    Rules: an instant fires when its wall time matches, unless it is one of a fold's two copies that the
    fold policy excludes (DEFAULT: the repeat of a fixed-time job, i.e. neither field starts with *);
    with gap SHIFT (DEFAULT: for a fixed-time job), the first instant after a gap also fires when a
    skipped wall time matches."""
    zone = load_zone(zone_name)
    minutes = values(minute, 60)
    hours = values(hour, 24)
    elapsed = minute.startswith("*") or hour.startswith("*")
    first_ok = fold != pb.DST_FOLD_SECOND
    second_ok = fold in (pb.DST_FOLD_SECOND, pb.DST_FOLD_BOTH) or (fold == pb.DST_FOLD_DEFAULT and elapsed)
    out = []
    for t in range(begin - begin % 60, end, 60):
        local = datetime.fromtimestamp(t, zone)
        matches = local.minute in minutes and local.hour in hours
        twin = local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()
        if twin and not (second_ok if local.fold else first_ok):
            matches = False
        before = datetime.fromtimestamp(t - 60, zone)
        skipped = (local.utcoffset() or timedelta()) - (before.utcoffset() or timedelta())
        shift = gap == pb.DST_GAP_SHIFT or (gap == pb.DST_GAP_DEFAULT and not elapsed)
        if skipped > timedelta(0) and shift:
            wall = before.replace(tzinfo=None) + timedelta(minutes=1)
            while wall < local.replace(tzinfo=None):
                matches = matches or (wall.minute in minutes and wall.hour in hours)
                wall += timedelta(minutes=1)
        if matches and t >= begin:
            out.append(t)
    return out


def values(field: str, size: int) -> set[int]:
    result: set[int] = set()
    for part in field.split(","):
        if part == "*":
            result |= set(range(size))
        elif part.startswith("*/"):
            result |= set(range(0, size, int(part[2:])))
        elif "-" in part:
            low, high = map(int, part.split("-"))
            result |= set(range(low, high + 1))
        else:
            result.add(int(part))
    return result


@settings(max_examples=60, deadline=None)
@given(
    minute=st.sampled_from(MINUTE_FIELDS),
    hour=st.sampled_from(HOUR_FIELDS),
    zone=st.sampled_from(ZONES),
    year=st.integers(2010, 2030) | st.sampled_from([2100, 2150]),
    where=st.tuples(st.integers(0, 3), st.integers(-30 * 3600, 30 * 3600)),
    gap=st.sampled_from(GAPS),
    fold=st.sampled_from(FOLDS),
)
def test_cron_matches_brute_force_oracle_around_transitions(
    *, minute: str, hour: str, zone: str, year: int, where: tuple[int, int], gap: int, fold: int
) -> None:
    """`where` picks a transition of that year and a shift of the one-day window around it."""
    which, shift = where
    changes = transitions(zone, year) or [int(datetime(year, 6, 1, tzinfo=UTC).timestamp())]
    begin = changes[which % len(changes)] - 36 * 3600 + shift
    end = begin + 24 * 3600
    schedule = cron(f"{minute} {hour} * * *", zone, dst_gap=gap, dst_fold=fold)
    got = []
    nominal = first_fire(schedule, begin * 1000)
    while nominal is not None and nominal < end * 1000:
        got.append(nominal // 1000)
        nominal = next_fire(schedule, nominal)
    assert got == oracle(minute, hour, zone, begin, end, gap=gap, fold=fold)


@settings(max_examples=60, deadline=None)
@given(
    expression=st.sampled_from(["*/7 * * * *", "0 30 2 * * *", "15 1 * * *", "*/45 */3 * * * *", "@hourly"]),
    zone=st.sampled_from(ZONES),
    after=st.integers(0, 7_258_118_400_000),
    gap=st.sampled_from(GAPS),
    fold=st.sampled_from(FOLDS),
)
def test_next_fire_strictly_increases_and_never_lands_in_a_gap(
    expression: str, zone: str, after: int, gap: int, fold: int
) -> None:
    schedule = cron(expression, zone, dst_gap=gap, dst_fold=fold)
    tz = load_zone(zone)
    previous = after
    for _ in range(5):
        nominal = next_fire(schedule, previous)
        assert nominal is not None
        assert nominal > previous
        assert nominal % 1000 == 0
        # Round trip: the fire's local wall time maps back to the same instant (so it exists).
        local = datetime.fromtimestamp(nominal / 1000, tz)
        assert (
            int(local.replace(tzinfo=None).replace(tzinfo=tz, fold=local.fold).timestamp() * 1000) == nominal
        )
        previous = nominal


@settings(max_examples=100, deadline=None)
@given(
    period=st.integers(1_000, 10**10),
    anchor=st.integers(0, 10**13),
    created=st.integers(0, 10**13),
)
def test_fixed_rate_fires_are_anchor_plus_whole_periods(period: int, anchor: int, created: int) -> None:
    schedule = pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=period, anchor_ms=anchor))
    first = first_fire(schedule, created)
    assert first is not None
    assert first >= created or first == anchor
    assert first >= anchor
    assert first - period < max(created, anchor)  # the smallest such value
    nominal = first
    for _ in range(3):
        assert (nominal - anchor) % period == 0
        following = next_fire(schedule, nominal)
        assert following == nominal + period
        nominal = following


@settings(max_examples=50, deadline=None)
@given(
    hour=st.sampled_from([0, 1, 2, 3, 23]),
    minute=st.sampled_from([0, 15, 30, 45]),
    zone=st.sampled_from([z for z in ZONES if z != "Pacific/Apia"]),  # Apia skipped a whole day
    year=st.integers(2000, 2040) | st.sampled_from([2100]),
    which=st.integers(0, 3),
    gap=st.sampled_from(GAPS),
    fold=st.sampled_from(FOLDS),
)
def test_fixed_time_job_fires_once_per_local_day(
    *, hour: int, minute: int, zone: str, year: int, which: int, gap: int, fold: int
) -> None:
    """`M H * * *` fires once on every local day; on a day whose H:M does not exist, once with SHIFT and
    never with SKIP; on a day whose H:M exists twice, twice with BOTH and once with any other policy."""
    tz = load_zone(zone)
    changes = transitions(zone, year) or [int(datetime(year, 6, 1, tzinfo=UTC).timestamp())]
    center = changes[which % len(changes)]
    schedule = cron(f"{minute} {hour} * * *", zone, dst_gap=gap, dst_fold=fold)
    per_day: dict[date, int] = {}
    nominal = first_fire(schedule, (center - 4 * 86_400) * 1000)
    while nominal is not None and nominal < (center + 4 * 86_400) * 1000:
        day = datetime.fromtimestamp(nominal / 1000, tz).date()
        per_day[day] = per_day.get(day, 0) + 1
        nominal = next_fire(schedule, nominal)
    middle = datetime.fromtimestamp(center, tz).date()
    for delta in range(-2, 3):
        day = middle + timedelta(days=delta)
        wall = datetime.combine(day, dtime(hour, minute))
        early, late = wall.replace(tzinfo=tz), wall.replace(tzinfo=tz, fold=1)
        exists = datetime.fromtimestamp(early.timestamp(), tz).replace(tzinfo=None) == wall
        if not exists:
            expected = 0 if gap == SKIP else 1
        elif early.utcoffset() != late.utcoffset():
            expected = 2 if fold == BOTH else 1
        else:
            expected = 1
        assert per_day.get(day, 0) == expected, (day, per_day)
