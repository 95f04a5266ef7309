"""Tests of cronraft.timefmt, the one grammar of durations and instants (issue 14): the forms each of the
three former grammars accepted (client, raft.schedule, worker) are accepted, with the client's messages."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from cronraft.errors import InvalidArgument
from cronraft.timefmt import load_zone, parse_duration, parse_instant, parse_seconds, seconds_arg, utc_text


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", 500),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
        ("1h30m", 5_400_000),
        ("0", 0),
        ("0s", 0),
        (" 10s ", 10_000),
        ("1.5s", 1_500),
        ("1.5h", 5_400_000),  # the client took decimals; raft.schedule's grammar did not
        ("30m1h", 5_400_000),  # ... and parts in any order, repeated
        ("1m1m", 120_000),
        ("1m30s250ms", 90_250),
    ],
)
def test_parse_duration(text: str, expected: int) -> None:
    assert parse_duration(text, "--every") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty duration"),
        ("10", "expected a duration such as 500ms"),
        ("-5s", "a duration is not negative"),
        ("5 m", "write it without spaces"),
        ("5x", "'x' is not a unit"),
        ("h", "expected a duration"),
        ("10us", "'us' is not a unit"),
        ("10S", "'S' is not a unit"),
        ("2w", "weeks are not a unit: use 14d"),
        ("90 seconds", "the unit of seconds is s: use 90s"),
        ("1M", "months and years are not units"),
        ("1.0005s", "finer than a millisecond"),
        (f"{2**63}ms", "too long"),
    ],
)
def test_parse_duration_rejects(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration(text, "--every")
    assert info.value.field == "--every"
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 5.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("5 s", 5.0),
        (" 1h ", 3600.0),
        ("1m30s", 90.0),
    ],
)
def test_parse_seconds_takes_the_worker_forms_too(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


def test_seconds_arg_is_an_argparse_type_with_the_grammar_message() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grace", type=seconds_arg)
    assert parser.parse_args(["--grace", "2m"]).grace == 120.0
    with pytest.raises(argparse.ArgumentTypeError, match="weeks are not a unit"):
        seconds_arg("1w")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T09:00:00+01:00", ms("2026-12-01T08:00:00+00:00")),
        ("2026-12-01t08:00:00z", ms("2026-12-01T08:00:00+00:00")),
        ("2026-12-01 08:00:00Z", ms("2026-12-01T08:00:00+00:00")),
        ("2026-12-01T09:00:00[Europe/Paris]", ms("2026-12-01T08:00:00+00:00")),
        ("2026-12-01T09:00:00+01:00[Europe/Paris]", ms("2026-12-01T08:00:00+00:00")),
        ("2026-12-01T09:00:00[!Europe/Paris]", ms("2026-12-01T08:00:00+00:00")),
        ("2026-12-01T09:00:00.123456z", 1_796_115_600_123),
        ("2026-12-01T09:00:00.123456789Z", 1_796_115_600_123),
        ("2026-12-01T09:00Z", 1_796_115_600_000),  # seconds optional (raft.schedule's grammar)
        ("2026-12-01T09:00[UTC]", 1_796_115_600_000),
        ("2016-12-31T23:59:60Z", ms("2017-01-01T00:00:00+00:00")),  # leap second: next second's :00
        ("2016-12-31T23:59:60.5Z", ms("2017-01-01T00:00:00+00:00")),
        ("2026-10-25T02:30:00[Europe/Paris]", ms("2026-10-25T00:30:00+00:00")),  # fold: first occurrence
        ("2026-10-25T02:30:00+01:00[Europe/Paris]", ms("2026-10-25T01:30:00+00:00")),  # offset: the repeat
        ("1969-12-31T23:59:59Z", -1_000),  # the client took it; the cluster judges what it is for
    ],
)
def test_parse_instant(text: str, expected: int) -> None:
    assert parse_instant(text, "--at") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-12-01T09:00:00", "naive time"),
        ("tomorrow", "invalid instant"),
        ("2026-12-01", "invalid instant"),
        ("2026-12-01T09:00.5Z", "invalid instant"),
        ("2026-02-30T00:00:00Z", "day is out of range"),
        ("2026-03-29T02:30:00[Europe/Paris]", "does not exist in Europe/Paris"),
        ("2026-12-01T09:00:00+02:00[Europe/Paris]", "does not match Europe/Paris (+01:00)"),
        ("2026-12-01T09:00:00[Mars/Base]", "unknown time zone 'Mars/Base'"),
        ("2026-12-01T09:00:00+24:00", "invalid offset"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        ("9999-12-31T23:59:60Z", "out of range"),
    ],
)
def test_parse_instant_rejects(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_instant(text, "--at")
    assert info.value.field == "--at"
    assert problem in info.value.problem


def test_zones_come_from_the_pinned_tzdata_package() -> None:
    assert load_zone("") is UTC and load_zone("Etc/UTC") is UTC
    paris = load_zone("Europe/Paris")
    assert load_zone("Europe/Paris") is paris  # cached: one object per name
    assert datetime(2026, 7, 1, tzinfo=paris).utcoffset() is not None
    with pytest.raises(ValueError, match="use an IANA name"):
        load_zone("../../etc/passwd")


@pytest.mark.parametrize(
    ("instant_ms", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_796_684_684_278, "2026-12-07T23:04:44.278Z"),
        (1_796_684_684_000, "2026-12-07T23:04:44Z"),
    ],
)
def test_utc_text_writes_what_parse_instant_reads_back(instant_ms: int, text: str) -> None:
    assert utc_text(instant_ms) == text
    assert parse_instant(text) == instant_ms
