"""Python values and command-line text read into what the protos hold: instants, durations, enums.

The text grammar of durations and instants is `cronraft.timefmt`'s (one for every layer); here are
the SDK's forms around it (`instant_ms`: an aware datetime, an RFC 3339 string or Unix ms;
`duration_ms`: a timedelta, a duration string or ms), `parse_when` (the CLI's `now`, `+5m`, `-1h`),
and the enum names (`parse_priority("high")`). Errors are `InvalidArgument` naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from cronraft.errors import (
    InvalidArgument,
)
from cronraft.proto.v1 import common_pb2
from cronraft.timefmt import parse_duration, parse_instant

Instant: TypeAlias = datetime | str | int
"""An instant: an aware datetime, an RFC 3339 string (see `parse_instant`) or Unix milliseconds."""
Duration: TypeAlias = timedelta | str | int
"""A duration: a timedelta, a string such as "1h30m" (see `parse_duration`) or milliseconds."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def instant_ms(value: Instant, field: str = "instant") -> int:
    """Unix milliseconds of an aware datetime, an RFC 3339 string or an int (already milliseconds)."""
    if isinstance(value, bool):
        raise InvalidArgument(field, "expected a datetime, an RFC 3339 string or Unix milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_instant(value, field)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(field, "naive datetime: give it a tzinfo (e.g. datetime.now(UTC))")
        return (value - _EPOCH) // _MS
    raise InvalidArgument(
        field, f"expected a datetime, an RFC 3339 string or Unix milliseconds, got {value!r}"
    )


def duration_ms(value: Duration, field: str = "duration") -> int:
    """Milliseconds of a timedelta, a duration string (see `parse_duration`) or an int (milliseconds)."""
    if isinstance(value, bool):
        raise InvalidArgument(field, "expected a timedelta, a duration string or milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_duration(value, field)
    if isinstance(value, timedelta):
        return value // _MS
    raise InvalidArgument(field, f"expected a timedelta, a duration string or milliseconds, got {value!r}")


def parse_when(text: str, field: str = "instant", now_ms: int | None = None) -> int:
    """A command-line instant in Unix ms: RFC 3339 (see `parse_instant`), "+DURATION" from now,
    "-DURATION" ago, or "now". `now_ms` defaults to the wall clock (injected by tests and by offline
    previews)."""
    s = text.strip()
    if s == "now" or s[:1] in ("+", "-"):
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if s == "now":
            return now
        delta = parse_duration(s[1:], field)
        return now + delta if s[0] == "+" else now - delta
    return parse_instant(s, field)


def non_negative_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"expected an integer, got {value!r}")
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


# ------------------------------------------------------------------------------------------------ enums


def _enum_parser(wrapper: Any, prefix: str, what: str) -> Callable[[Any, str], Any]:
    by_name: dict[str, int] = {}
    for name, number in wrapper.items():
        if number == 0:
            continue
        short = name.removeprefix(prefix).lower()
        by_name[short] = number
        by_name[short.replace("_", "-")] = number

    def parse(value: Any, field: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in by_name:
            return by_name[value.strip().lower()]
        choices = ", ".join(sorted(k for k in by_name if "_" not in k))
        raise InvalidArgument(field, f"unknown {what} {value!r} (expected one of: {choices})")

    return parse


_parse_guarantee = _enum_parser(common_pb2.DeliveryGuarantee, "", "guarantee")
_parse_priority = _enum_parser(common_pb2.Priority, "", "priority")
_parse_task_state = _enum_parser(common_pb2.TaskState, "TASK_", "task state")
_parse_execution_state = _enum_parser(common_pb2.ExecutionState, "EXECUTION_", "execution state")
_parse_dst_gap = _enum_parser(common_pb2.DstGapPolicy, "DST_GAP_", "dst gap policy")
_parse_dst_fold = _enum_parser(common_pb2.DstFoldPolicy, "DST_FOLD_", "dst fold policy")
_parse_calendar_action = _enum_parser(common_pb2.CalendarAction, "CALENDAR_", "calendar action")
_parse_misfire = _enum_parser(common_pb2.MisfirePolicy, "MISFIRE_", "misfire policy")
_parse_overlap = _enum_parser(common_pb2.OverlapPolicy, "OVERLAP_", "overlap policy")


def parse_guarantee(
    value: common_pb2.DeliveryGuarantee.ValueType | str, field: str = "guarantee"
) -> common_pb2.DeliveryGuarantee.ValueType:
    """An enum value, or a name such as "at-least-once" / "exactly_once" / "at-most-once"."""
    return common_pb2.DeliveryGuarantee.ValueType(_parse_guarantee(value, field))


def parse_priority(
    value: common_pb2.Priority.ValueType | str, field: str = "priority"
) -> common_pb2.Priority.ValueType:
    """An enum value, or "high" / "medium" / "low"."""
    return common_pb2.Priority.ValueType(_parse_priority(value, field))


def parse_task_state(
    value: common_pb2.TaskState.ValueType | str | None, field: str = "state"
) -> common_pb2.TaskState.ValueType:
    """None (any state), an enum value, or "scheduled" / "completed" / "cancelled"."""
    if value is None:
        return common_pb2.TASK_STATE_UNSPECIFIED
    return common_pb2.TaskState.ValueType(_parse_task_state(value, field))


def parse_execution_state(
    value: common_pb2.ExecutionState.ValueType | str | None, field: str = "state"
) -> common_pb2.ExecutionState.ValueType:
    """None (any state), an enum value, or "pending" / "running" / "succeeded" / "failed" / ..."""
    if value is None:
        return common_pb2.EXECUTION_STATE_UNSPECIFIED
    return common_pb2.ExecutionState.ValueType(_parse_execution_state(value, field))


def parse_dst_gap(
    value: common_pb2.DstGapPolicy.ValueType | str, field: str = "schedule.dst_gap"
) -> common_pb2.DstGapPolicy.ValueType:
    """An enum value, or "shift" / "skip"."""
    return common_pb2.DstGapPolicy.ValueType(_parse_dst_gap(value, field))


def parse_dst_fold(
    value: common_pb2.DstFoldPolicy.ValueType | str, field: str = "schedule.dst_fold"
) -> common_pb2.DstFoldPolicy.ValueType:
    """An enum value, or "first" / "second" / "both"."""
    return common_pb2.DstFoldPolicy.ValueType(_parse_dst_fold(value, field))


def parse_calendar_action(
    value: common_pb2.CalendarAction.ValueType | str, field: str = "schedule.calendar_action"
) -> common_pb2.CalendarAction.ValueType:
    """An enum value, or "skip" / "roll-following" / "roll-preceding" / "roll-modified-following"."""
    return common_pb2.CalendarAction.ValueType(_parse_calendar_action(value, field))


def parse_misfire(
    value: common_pb2.MisfirePolicy.ValueType | str, field: str = "spec.misfire"
) -> common_pb2.MisfirePolicy.ValueType:
    """An enum value, or "skip" / "fire-once" / "fire-all"."""
    return common_pb2.MisfirePolicy.ValueType(_parse_misfire(value, field))


def parse_overlap(
    value: common_pb2.OverlapPolicy.ValueType | str, field: str = "spec.overlap"
) -> common_pb2.OverlapPolicy.ValueType:
    """An enum value, or "skip" / "buffer-one" / "buffer-all" / "cancel-other" / "terminate-other" /
    "allow-all"."""
    return common_pb2.OverlapPolicy.ValueType(_parse_overlap(value, field))
