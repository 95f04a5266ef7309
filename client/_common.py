"""What the sync and the asyncio clients share, free of I/O: builders, parsing, routing, errors, JSON.

- Spec builders (`cron`, `at`, `every`, `command`, `shell`, `build_spec`) turn Python values into the
  `cronraft.v1` messages. They check only form (a duration parses, a datetime is aware); the cluster is the
  authority on meaning (a cron expression, a time zone) and answers INVALID_ARGUMENT naming the field.
- `parse_duration` / `parse_instant` (the one grammar, `cronraft.timefmt`) read the human forms.
- `Router` and `CallPlan` decide, for one logical call, which server to try next, when to follow a leader
  redirect, and how long to back off; the clients only perform the I/O the plan asks for.
- `error_from_status` maps a gRPC status to the error tree of `cronraft.errors` (one place).
- The stable JSON rendering of docs/cli.md lives in `_render` (`task_to_json`, `execution_to_json`, ...);
  its names are re-exported here, where they used to live. The builders of the execution-semantics parts
  of a spec (http and handler payloads, retry policy, notify targets) live in `_builders`.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeAlias, TypeVar

from cronraft.client import _argnames, _cron_text, _render
from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from cronraft.proto.v1 import common_pb2, scheduler_pb2
from cronraft.timefmt import parse_duration, parse_instant

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "CRONRAFT_SERVER"
LEADER_METADATA_KEY = "cronraft-leader"
MAX_PAGE_SIZE = 1000

# The JSON renderers (and the time and enum names they use) live in `_render`; these names stay
# importable from here, where they used to be defined.
attempt_to_json = _render.attempt_to_json
dead_letter_to_json = _render.dead_letter_to_json
enum_name = _render.enum_name
execution_to_json = _render.execution_to_json
explain_to_json = _render.explain_to_json
fire_record_to_json = _render.fire_record_to_json
format_instant = _render.format_instant
payload_to_json = _render.payload_to_json
policy_name = _render.policy_name
preview_fire_to_json = _render.preview_fire_to_json
schedule_to_json = _render.schedule_to_json
spec_to_json = _render.spec_to_json
status_to_json = _render.status_to_json
tail_text = _render.tail_text
task_to_json = _render.task_to_json
_time_fields = _render.time_fields

Instant: TypeAlias = datetime | str | int
"""An instant: an aware datetime, an RFC 3339 string (see `parse_instant`) or Unix milliseconds."""
Duration: TypeAlias = timedelta | str | int
"""A duration: a timedelta, a string such as "1h30m" (see `parse_duration`) or milliseconds."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


# --------------------------------------------------------------------------------------------- parsing

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


def parse_servers(servers: str | Sequence[str] | None) -> list[str]:
    """Normalise `servers` ("h:p", "h:p,h:p" or a list) into a list; None reads $CRONRAFT_SERVER."""
    if servers is None:
        servers = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    parts = servers.split(",") if isinstance(servers, str) else [p for s in servers for p in s.split(",")]
    result = [p.strip() for p in parts if p.strip()]
    if not result:
        raise InvalidArgument("servers", "no server address given (expected HOST:PORT[,HOST:PORT...])")
    return result


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


# --------------------------------------------------------------------------------------------- builders


def _window(
    schedule: common_pb2.Schedule,
    start_at: Instant | None,
    end_at: Instant | None,
    max_runs: int,
    *,
    jitter: Duration | None = None,
    dst_gap: common_pb2.DstGapPolicy.ValueType | str | None = None,
    dst_fold: common_pb2.DstFoldPolicy.ValueType | str | None = None,
    calendars: Sequence[str] | None = None,
    calendar_action: common_pb2.CalendarAction.ValueType | str | None = None,
) -> None:
    if start_at is not None:
        schedule.start_at_ms = instant_ms(start_at, "schedule.start_at_ms")
    if end_at is not None:
        schedule.end_at_ms = instant_ms(end_at, "schedule.end_at_ms")
    if max_runs < 0:
        raise InvalidArgument("schedule.max_runs", "must not be negative")
    schedule.max_runs = max_runs
    if jitter is not None:
        jitter_ms = duration_ms(jitter, "schedule.jitter_ms")
        if jitter_ms < 0:
            raise InvalidArgument("schedule.jitter_ms", "must not be negative")
        schedule.jitter_ms = jitter_ms
    if dst_gap is not None:
        schedule.dst_gap = parse_dst_gap(dst_gap)
    if dst_fold is not None:
        schedule.dst_fold = parse_dst_fold(dst_fold)
    if calendars is not None:
        if isinstance(calendars, str):
            calendars = [calendars]
        names = [c.strip() for c in calendars]
        if any(not n for n in names):
            raise InvalidArgument("schedule.calendars", "a calendar name must not be empty")
        del schedule.calendars[:]
        schedule.calendars.extend(names)
    if calendar_action is not None:
        schedule.calendar_action = parse_calendar_action(calendar_action)


def cron(
    expression: str,
    time_zone: str = "UTC",
    *,
    seconds: bool | None = None,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    max_runs: int = 0,
    jitter: Duration | None = None,
    dst_gap: common_pb2.DstGapPolicy.ValueType | str | None = None,
    dst_fold: common_pb2.DstFoldPolicy.ValueType | str | None = None,
    calendars: Sequence[str] | None = None,
    calendar_action: common_pb2.CalendarAction.ValueType | str | None = None,
) -> common_pb2.Schedule:
    """A cron schedule: 5 fields, or 6 with seconds first, evaluated in the IANA `time_zone`.

    The expression is checked here first (InvalidArgument naming `expression`): a year field
    (`0 9 * * * 2027`) is refused with the window to use instead, and a malformed field is named in
    cron's terms. `seconds=True` / `seconds=False` say which form is meant, and an expression with the
    other number of fields is refused; that catches `"0 9 * * * *"` (one `*` too many, which would fire
    hourly at :09) written where daily at 09:00 was meant. Without it, 6 fields are seconds first.

    The expression and the zone are validated by the cluster (INVALID_ARGUMENT naming
    `spec.schedule.cron.expression` or `spec.schedule.cron.time_zone`). The keyword arguments are those
    of every builder: the window (`start_at`, `end_at`, `max_runs`), `jitter` (fires are delayed by up
    to this, from a hash of task and nominal time), `dst_gap` ("shift" | "skip"), `dst_fold`
    ("first" | "second" | "both"), `calendars` (names of stored calendars) and `calendar_action`
    ("skip" | "roll-following" | "roll-preceding" | "roll-modified-following").
    """
    _cron_text.check_cron(expression, "expression", seconds=seconds)
    schedule = common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=expression, time_zone=time_zone))
    _window(
        schedule,
        start_at,
        end_at,
        max_runs,
        jitter=jitter,
        dst_gap=dst_gap,
        dst_fold=dst_fold,
        calendars=calendars,
        calendar_action=calendar_action,
    )
    return schedule


def at(
    when: Instant,
    *,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    max_runs: int = 0,
    jitter: Duration | None = None,
    dst_gap: common_pb2.DstGapPolicy.ValueType | str | None = None,
    dst_fold: common_pb2.DstFoldPolicy.ValueType | str | None = None,
    calendars: Sequence[str] | None = None,
    calendar_action: common_pb2.CalendarAction.ValueType | str | None = None,
) -> common_pb2.Schedule:
    """A one-time schedule at `when`: an aware datetime, an RFC 3339 string or Unix milliseconds."""
    schedule = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=instant_ms(when, "schedule.at.at_ms")))
    _window(
        schedule,
        start_at,
        end_at,
        max_runs,
        jitter=jitter,
        dst_gap=dst_gap,
        dst_fold=dst_fold,
        calendars=calendars,
        calendar_action=calendar_action,
    )
    return schedule


def every(
    period: Duration,
    anchor: Instant | None = None,
    *,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    max_runs: int = 0,
    jitter: Duration | None = None,
    dst_gap: common_pb2.DstGapPolicy.ValueType | str | None = None,
    dst_fold: common_pb2.DstFoldPolicy.ValueType | str | None = None,
    calendars: Sequence[str] | None = None,
    calendar_action: common_pb2.CalendarAction.ValueType | str | None = None,
) -> common_pb2.Schedule:
    """A fixed-rate schedule firing at `anchor + n * period` (anchor: the Unix epoch when None)."""
    period_ms = duration_ms(period, "schedule.fixed_rate.period_ms")
    if period_ms <= 0:
        raise InvalidArgument("schedule.fixed_rate.period_ms", "must be positive")
    anchor_ms = 0 if anchor is None else instant_ms(anchor, "schedule.fixed_rate.anchor_ms")
    schedule = common_pb2.Schedule(
        fixed_rate=common_pb2.FixedRateSchedule(period_ms=period_ms, anchor_ms=anchor_ms)
    )
    _window(
        schedule,
        start_at,
        end_at,
        max_runs,
        jitter=jitter,
        dst_gap=dst_gap,
        dst_fold=dst_fold,
        calendars=calendars,
        calendar_action=calendar_action,
    )
    return schedule


def delay(
    duration: Duration,
    stop_on_failure: bool = False,
    *,
    start_at: Instant | None = None,
    end_at: Instant | None = None,
    max_runs: int = 0,
    jitter: Duration | None = None,
    dst_gap: common_pb2.DstGapPolicy.ValueType | str | None = None,
    dst_fold: common_pb2.DstFoldPolicy.ValueType | str | None = None,
    calendars: Sequence[str] | None = None,
    calendar_action: common_pb2.CalendarAction.ValueType | str | None = None,
) -> common_pb2.Schedule:
    """A fixed-delay schedule: each run is due `duration` after the previous run reached its final state
    (every final state counts; with `stop_on_failure` a run that did not succeed completes the task).
    The first run is due at creation (or `start_at`)."""
    delay_ms = duration_ms(duration, "schedule.fixed_delay.delay_ms")
    if delay_ms <= 0:
        raise InvalidArgument("schedule.fixed_delay.delay_ms", "must be positive")
    schedule = common_pb2.Schedule(
        fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=delay_ms, stop_on_failure=stop_on_failure)
    )
    _window(
        schedule,
        start_at,
        end_at,
        max_runs,
        jitter=jitter,
        dst_gap=dst_gap,
        dst_fold=dst_fold,
        calendars=calendars,
        calendar_action=calendar_action,
    )
    return schedule


def command(*argv: str, env: Mapping[str, str] | None = None, cwd: str = "") -> common_pb2.Payload:
    """An argv list run without a shell, e.g. `command("echo", "hello")`."""
    if not argv:
        raise InvalidArgument("payload.command.argv", "must not be empty")
    return common_pb2.Payload(
        command=common_pb2.CommandPayload(argv=list(argv), env=dict(env or {}), cwd=cwd)
    )


def shell(script: str) -> common_pb2.Payload:
    """A shell string run by `/bin/sh -c`: an explicit opt-in (prefer `command`)."""
    if not script.strip():
        raise InvalidArgument("payload.shell.script", "must not be empty")
    return common_pb2.Payload(shell=common_pb2.ShellPayload(script=script))


def build_spec(
    name: str,
    schedule: common_pb2.Schedule,
    payload: common_pb2.Payload,
    *,
    tags: Mapping[str, str] | None = None,
    queue: str = "",
    timeout_ms: int = 0,
    guarantee: common_pb2.DeliveryGuarantee.ValueType | str = common_pb2.AT_LEAST_ONCE,
    priority: common_pb2.Priority.ValueType | str = common_pb2.MEDIUM,
    max_attempts: int = 0,
    misfire: common_pb2.MisfirePolicy.ValueType | str | None = None,
    catchup_window: Duration | None = None,
    max_catchup: int = 0,
    overlap: common_pb2.OverlapPolicy.ValueType | str | None = None,
    retry: common_pb2.RetryPolicy | None = None,
    notify: Sequence[common_pb2.NotifyTarget] | None = None,
    worker_labels: Mapping[str, str] | None = None,
    max_concurrency: int = 0,
    retention: common_pb2.Retention | None = None,
) -> common_pb2.TaskSpec:
    """Assemble a `TaskSpec` (the keyword arguments of `Client.create_task`).

    `misfire` ("skip" | "fire-once" | "fire-all"; default: fire-all within the catch-up window),
    `catchup_window` (missed times older than this never fire; default 60 s), `max_catchup` (fire-all
    fires at most this many; default 100), `overlap` ("skip" | "buffer-one" | "buffer-all" |
    "cancel-other" | "terminate-other" | "allow-all"; default allow-all). `retry` comes from
    `retry(...)` (None: the cluster's default backoff), `notify` from `notify_webhook` /
    `notify_command`; a worker must carry every one of `worker_labels`; `max_concurrency` caps the
    executions of the task holding a lease at once (0: no limit). `retention` (from `retention(...)`;
    None: the cluster's defaults) says how long the task's history is kept.
    """
    if max_catchup < 0:
        raise InvalidArgument("spec.max_catchup", "must not be negative")
    catchup_ms = 0 if catchup_window is None else duration_ms(catchup_window, "spec.catchup_window_ms")
    if catchup_ms < 0:
        raise InvalidArgument("spec.catchup_window_ms", "must not be negative")
    spec = common_pb2.TaskSpec(
        name=name,
        tags=dict(tags or {}),
        schedule=schedule,
        payload=payload,
        queue=queue,
        timeout_ms=timeout_ms,
        guarantee=parse_guarantee(guarantee, "spec.guarantee"),
        priority=parse_priority(priority, "spec.priority"),
        max_attempts=max_attempts,
        misfire=parse_misfire(misfire) if misfire is not None else common_pb2.MISFIRE_DEFAULT,
        catchup_window_ms=catchup_ms,
        max_catchup=max_catchup,
        overlap=parse_overlap(overlap) if overlap is not None else common_pb2.OVERLAP_DEFAULT,
    )
    extra = {"retry": retry, "notify": notify, "worker_labels": worker_labels, "retention": retention}
    return edit_spec(spec, {**extra, "max_concurrency": max_concurrency})


# ---------------------------------------------------------------------------------------- schedule flags

_POLICY_HELP = {
    "dst_gap": "shift | skip",
    "dst_fold": "first | second | both",
    "calendar_action": "skip | roll-following | roll-preceding | roll-modified-following",
}


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


def add_schedule_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add the schedule flags shared by `task create`, `task update` and `schedule preview`, in a
    "schedule" help group:

    `--cron EXPR [--tz ZONE] | --at WHEN | --every DURATION [--anchor WHEN] | --delay DURATION
    [--stop-on-failure]`, `--start-at WHEN`, `--end-at WHEN`, `--max-runs N`, `--jitter DURATION`,
    `--dst-gap`, `--dst-fold`, `--calendar NAME` (repeatable), `--calendar-action`.

    Every flag defaults to None ("not given"), so that `schedule_from_args` can tell an edit from a
    default. With `required=False` (updates) the kind is optional, and the removals are added:
    `--clear-calendars` (old spelling `--no-calendar`), `--clear-start-at`, `--clear-end-at` (which
    mean what `--start-at none` / `--end-at none` mean, and still do).
    """
    group = parser.add_argument_group("schedule (one of --cron, --at, --every, --delay)")
    kind = group.add_mutually_exclusive_group(required=required)
    kind.add_argument(
        "--cron", metavar="EXPR", help="cron expression: 5 fields, or 6 with seconds first and --seconds"
    )
    kind.add_argument("--at", metavar="WHEN", help=f"one-time: {_AT_HELP}")
    kind.add_argument("--every", metavar="DURATION", help="fixed rate, e.g. 30s, 5m, 1h30m")
    kind.add_argument(
        "--delay", metavar="DURATION", help="fixed delay: due DURATION after the previous run ended"
    )
    group.add_argument("--tz", metavar="ZONE", help="IANA time zone of --cron (default UTC)")
    group.add_argument(
        "--seconds",
        action="store_true",
        default=None,
        help="the --cron expression has 6 fields, seconds first (required when it also reads as 5 fields)",
    )
    group.add_argument(
        "--cron-dialect",
        choices=_cron_text.DIALECTS,
        default=None,
        help="unix (default: 0-7 are SUN-SAT, 0 and 7 Sunday) or quartz (1-7 are SUN-SAT, seconds first, "
        "FRI#L, L-3, LW, 5L); quartz is stored translated to unix",
    )
    group.add_argument("--anchor", metavar="WHEN", help="anchor of --every (default: the Unix epoch)")
    group.add_argument(
        "--stop-on-failure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --delay: a run that did not succeed completes the task",
    )
    _window_arguments(group, required=required)
    group.add_argument(
        "--max-runs", type=int, default=None, metavar="N", help="stop after N fires (0: no limit)"
    )
    group.add_argument(
        "--jitter", metavar="DURATION", help="delay each fire by up to DURATION (hash of task and time)"
    )
    group.add_argument("--dst-gap", metavar="POLICY", help=f"time in a DST gap: {_POLICY_HELP['dst_gap']}")
    group.add_argument("--dst-fold", metavar="POLICY", help=f"time in a DST fold: {_POLICY_HELP['dst_fold']}")
    group.add_argument(
        "--calendar",
        action="append",
        default=None,
        metavar="NAME",
        help="exclude the times of a stored calendar (repeatable)",
    )
    group.add_argument(
        "--calendar-action",
        metavar="ACTION",
        help=f"what an excluded time does: {_POLICY_HELP['calendar_action']}",
    )
    if not required:
        clear = group.add_argument(
            "--clear-calendars",
            dest="no_calendar",
            action="store_true",
            default=False,
            help="remove every calendar of the task",
        )
        _argnames.add_alias(group, "--no-calendar", clear)


# What a past --at does, said once for the help, the docs (docs/scheduling.md) and the preview note.
_AT_HELP = "RFC 3339 instant, or +DURATION from now (a past one fires as soon as possible, never dropped)"


def _window_arguments(group: Any, *, required: bool) -> None:
    """--start-at/--end-at; on an update also --clear-start-at/--clear-end-at, each exclusive with its
    flag. A clear flag stores 'none', the value `--start-at none` has always meant (no bound)."""
    for bound, text in (("start", "no fire before this instant"), ("end", "no fire after this instant")):
        target = group.add_mutually_exclusive_group() if not required else group
        target.add_argument(f"--{bound}-at", metavar="WHEN", help=f"{text} ('none': no bound)")
        if not required:
            target.add_argument(
                f"--clear-{bound}-at",
                dest=f"{bound}_at",
                action="store_const",
                const="none",
                help=f"remove the task's --{bound}-at bound",
            )


def _flag_instant(text: str | None, flag: str, now_ms: int | None) -> int | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return 0
    return parse_when(text, flag, now_ms)


def schedule_from_args(
    args: argparse.Namespace,
    base: common_pb2.Schedule | None = None,
    *,
    now_ms: int | None = None,
    warnings: list[str] | None = None,
) -> common_pb2.Schedule:
    """The `Schedule` the flags of `add_schedule_arguments` describe.

    Without `base` (create, preview) one kind flag is required. With `base` (update) only the flags
    given change it: a kind flag replaces the kind; `--tz` alone changes the zone of a cron schedule,
    `--anchor` alone the anchor of a fixed-rate one, `--stop-on-failure` alone a fixed-delay one.
    Errors are `InvalidArgument` naming the flag. A cron expression is read by `_cron_text.read_cron`
    (`--seconds`, `--cron-dialect`); its warnings, and what a quartz expression became, are appended
    to `warnings` when given.
    """

    def g(name: str) -> Any:  # a flag absent from the parser reads as not given
        return getattr(args, name, None)

    schedule = common_pb2.Schedule()
    if base is not None:
        schedule.CopyFrom(base)
    current = schedule.WhichOneof("kind")
    if g("tz") is not None:
        _cron_text.check_zone(g("tz"), "--tz")
    if g("cron") is not None:
        typed = _cron_text.read_cron(
            g("cron"), seconds=bool(g("seconds")), dialect=g("cron_dialect") or "unix"
        )
        if warnings is not None:
            warnings.extend([typed.translated] if typed.translated else [])
            warnings.extend(typed.warnings)
        schedule.cron.CopyFrom(
            common_pb2.CronSchedule(expression=typed.expression, time_zone=g("tz") or "UTC")
        )
    elif g("at") is not None:
        schedule.at.CopyFrom(common_pb2.AtSchedule(at_ms=parse_when(g("at"), "--at", now_ms)))
    elif g("every") is not None:
        period = parse_duration(_positive(g("every"), "--every", "a fixed rate"), "--every")
        if period <= 0:
            raise InvalidArgument("--every", "must be positive")
        anchor = _flag_instant(g("anchor"), "--anchor", now_ms) or 0
        schedule.fixed_rate.CopyFrom(common_pb2.FixedRateSchedule(period_ms=period, anchor_ms=anchor))
    elif g("delay") is not None:
        delay_ms = parse_duration(_positive(g("delay"), "--delay", "a fixed delay"), "--delay")
        if delay_ms <= 0:
            raise InvalidArgument("--delay", "must be positive")
        schedule.fixed_delay.CopyFrom(
            common_pb2.FixedDelaySchedule(delay_ms=delay_ms, stop_on_failure=bool(g("stop_on_failure")))
        )
    elif current is None:
        raise InvalidArgument("--cron", "give one of --cron, --at, --every or --delay")
    else:  # an update keeping the kind: the kind's own modifiers may still change
        if g("tz") is not None and current == "cron":
            schedule.cron.time_zone = g("tz")
        if g("anchor") is not None and current == "fixed_rate":
            schedule.fixed_rate.anchor_ms = _flag_instant(g("anchor"), "--anchor", now_ms) or 0
        if g("stop_on_failure") is not None and current == "fixed_delay":
            schedule.fixed_delay.stop_on_failure = g("stop_on_failure")
    kind = schedule.WhichOneof("kind")
    for flag, attr in (("--seconds", "seconds"), ("--cron-dialect", "cron_dialect")):
        if g(attr) is not None and g("cron") is None:
            raise InvalidArgument(flag, "applies to --cron only (give the expression again with it)")
    for flag, attr, needs in (
        ("--tz", "tz", "cron"),
        ("--anchor", "anchor", "fixed_rate"),
        ("--stop-on-failure", "stop_on_failure", "fixed_delay"),
    ):
        if g(attr) is not None and kind != needs:
            owner = {"cron": "--cron", "fixed_rate": "--every", "fixed_delay": "--delay"}[needs]
            raise InvalidArgument(flag, f"applies to {owner} only")
    start = _flag_instant(g("start_at"), "--start-at", now_ms)
    if start is not None:
        schedule.start_at_ms = start
    end = _flag_instant(g("end_at"), "--end-at", now_ms)
    if end is not None:
        schedule.end_at_ms = end
    if g("max_runs") is not None:
        if g("max_runs") < 0:
            raise InvalidArgument("--max-runs", f"must not be negative, got {g('max_runs')}")
        schedule.max_runs = g("max_runs")
    if g("jitter") is not None:
        schedule.jitter_ms = parse_duration(g("jitter"), "--jitter")
    if g("dst_gap") is not None:
        schedule.dst_gap = parse_dst_gap(g("dst_gap"), "--dst-gap")
    if g("dst_fold") is not None:
        schedule.dst_fold = parse_dst_fold(g("dst_fold"), "--dst-fold")
    if g("no_calendar"):
        del schedule.calendars[:]
    if g("calendar") is not None:
        names = [n.strip() for n in g("calendar")]
        if any(not n for n in names):
            raise InvalidArgument("--calendar", "a calendar name must not be empty")
        del schedule.calendars[:]
        schedule.calendars.extend(names)
    if g("calendar_action") is not None:
        schedule.calendar_action = parse_calendar_action(g("calendar_action"), "--calendar-action")
    return schedule


_DASH_VALUE = re.compile(r"^-\d")


def join_dash_values(argv: Sequence[str]) -> list[str]:
    """`--every -5m` as `--every=-5m`: argparse takes a value starting with '-' for an option (its
    "expected one argument"), so a long option followed by `-<digit>...` gets it attached, and the
    option's own check says what is wrong (or, for `--at -10m`, reads it: ten minutes ago)."""
    out: list[str] = []
    for item in argv:
        if out and _DASH_VALUE.match(item) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={item}"
        else:
            out.append(item)
    return out


def _positive(text: str, flag: str, what: str) -> str:
    if text.strip().startswith("-"):
        raise InvalidArgument(flag, f"must be positive, got {text!r}: {what} runs forward (e.g. {flag} 5m)")
    return text


def new_request_id() -> str:
    """A fresh idempotency key for one logical write (reused by every retry of that write)."""
    return uuid.uuid4().hex


def clamp_page_size(page_size: int) -> int:
    """Page sizes are 1..1000 (the server's bounds)."""
    return max(1, min(MAX_PAGE_SIZE, page_size))


def list_tasks_request(
    state: common_pb2.TaskState.ValueType | str | None,
    tags: Mapping[str, str] | None,
    name_prefix: str,
    page_size: int,
    page_token: str,
) -> scheduler_pb2.ListTasksRequest:
    return scheduler_pb2.ListTasksRequest(
        state=parse_task_state(state),
        tags=dict(tags or {}),
        name_prefix=name_prefix,
        page_size=clamp_page_size(page_size),
        page_token=page_token,
    )


def list_executions_request(
    task_id: str,
    state: common_pb2.ExecutionState.ValueType | str | None,
    page_size: int,
    page_token: str,
) -> scheduler_pb2.ListExecutionsRequest:
    return scheduler_pb2.ListExecutionsRequest(
        task_id=task_id,
        state=parse_execution_state(state),
        page_size=clamp_page_size(page_size),
        page_token=page_token,
    )


def backfill_request(
    task_id: str, from_: Instant, to: Instant, max_fires: int, request_id: str
) -> scheduler_pb2.BackfillTaskRequest:
    if max_fires < 0:
        raise InvalidArgument("max_fires", "must not be negative")
    return scheduler_pb2.BackfillTaskRequest(
        task_id=task_id,
        from_ms=instant_ms(from_, "from_ms"),
        to_ms=instant_ms(to, "to_ms"),
        max_fires=max_fires,
        request_id=request_id,
    )


def explain_request(
    task_id: str, from_: Instant | None, to: Instant | None, limit: int
) -> scheduler_pb2.ExplainTaskRequest:
    return scheduler_pb2.ExplainTaskRequest(
        task_id=task_id,
        from_ms=0 if from_ is None else instant_ms(from_, "from_ms"),
        to_ms=0 if to is None else instant_ms(to, "to_ms"),
        limit=clamp_page_size(limit),
    )


def preview_request(task_id: str, from_: Instant | None, count: int) -> scheduler_pb2.PreviewTaskRequest:
    return scheduler_pb2.PreviewTaskRequest(
        task_id=task_id,
        from_ms=0 if from_ is None else instant_ms(from_, "from_ms"),
        count=clamp_page_size(count),
    )


# -------------------------------------------------------------------------------------- dead letters


def _dlq_selector(execution_ids: Iterable[str] | str, task_id: str | None) -> tuple[list[str], str]:
    ids = [execution_ids] if isinstance(execution_ids, str) else list(execution_ids)
    if any(not isinstance(i, str) or not i.strip() for i in ids):
        raise InvalidArgument("execution_ids", "an execution id must be a non-empty string")
    if ids and task_id:
        raise InvalidArgument("execution_ids", "give execution ids or a task id, not both")
    if not ids and not task_id:
        raise InvalidArgument("execution_ids", "give execution ids or a task id")
    return list(dict.fromkeys(ids)), task_id or ""


def list_dead_letters_request(
    task_id: str | None, page_size: int, page_token: str
) -> scheduler_pb2.ListDeadLettersRequest:
    return scheduler_pb2.ListDeadLettersRequest(
        task_id=task_id or "", page_size=clamp_page_size(page_size), page_token=page_token
    )


def redrive_request(
    execution_ids: Iterable[str] | str, task_id: str | None, limit: int, request_id: str
) -> scheduler_pb2.RedriveDeadLettersRequest:
    """Redrive by ids, or every dead letter of `task_id` (at most `limit`, 0: the cluster's bound)."""
    ids, task = _dlq_selector(execution_ids, task_id)
    return scheduler_pb2.RedriveDeadLettersRequest(
        execution_ids=ids, task_id=task, limit=_non_negative_int(limit, "limit"), request_id=request_id
    )


def purge_request(
    execution_ids: Iterable[str] | str,
    task_id: str | None,
    before: Instant | None,
    limit: int,
    request_id: str,
) -> scheduler_pb2.PurgeDeadLettersRequest:
    """Purge by ids, or the dead letters of `task_id`; only those dead before `before` if given."""
    ids, task = _dlq_selector(execution_ids, task_id)
    return scheduler_pb2.PurgeDeadLettersRequest(
        execution_ids=ids,
        task_id=task,
        before_ms=0 if before is None else instant_ms(before, "before_ms"),
        limit=_non_negative_int(limit, "limit"),
        request_id=request_id,
    )


# ---------------------------------------------------------------------------------------------- bulk

_M = TypeVar("_M")


@dataclass
class BulkResult(Generic[_M]):
    """The outcome of a bulk call: one write per id, each with its own request id, reused on that
    write's retries and redirects. Not atomic: some ids may succeed while others fail.

    `results` and `errors` are keyed by id, in the order the ids were given; `skipped` lists the ids
    not tried because the cluster became unreachable (trying them would only wait out the timeout once
    per id); `request_ids` maps every id to its request id: pass it back as `request_ids=` to retry the
    failed or skipped ids idempotently.
    """

    results: dict[str, _M] = field(default_factory=dict)
    errors: dict[str, CronraftError] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    request_ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every id succeeded."""
        return not self.errors and not self.skipped


def bulk_request_ids(ids: Iterable[str] | str, given: Mapping[str, str] | None) -> dict[str, str]:
    """One request id per distinct id (in order): the one in `given`, else a fresh one."""
    items = [ids] if isinstance(ids, str) else list(ids)
    if any(not isinstance(i, str) or not i.strip() for i in items):
        raise InvalidArgument("ids", "an id must be a non-empty string")
    given = given or {}
    return {i: given.get(i) or new_request_id() for i in dict.fromkeys(items)}


def stops_bulk(error: CronraftError) -> bool:
    """Whether a bulk call gives up on its remaining ids after `error` (the cluster is unreachable)."""
    return isinstance(error, Unavailable | DeadlineExceeded)


def check_task_filter(
    state: common_pb2.TaskState.ValueType | str | None,
    tags: Mapping[str, str] | None,
    name_prefix: str,
) -> None:
    """A bulk change by filter needs at least one filter (an empty one would select every task)."""
    if state is None and not tags and not name_prefix:
        raise InvalidArgument("filter", "give at least one of state, tags or name_prefix")


EDITABLE_FIELDS = (
    "name",
    "schedule",
    "payload",
    "tags",
    "queue",
    "timeout_ms",
    "guarantee",
    "priority",
    "max_attempts",
    "misfire",
    "catchup_window",
    "max_catchup",
    "overlap",
    "retry",
    "notify",
    "worker_labels",
    "max_concurrency",
    "start_deadline",
    "depends_on",
    "dependency_deadline",
    "sensor",
    "retention",
)
"""The keyword arguments of `edit_task`: those of `create_task` plus the policies."""


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument(field, f"expected a mapping of non-empty strings to strings, got {value!r}")
    return dict(value)


def _set_retry(out: common_pb2.TaskSpec, value: Any) -> None:
    if value is None:
        out.ClearField("retry")
    elif isinstance(value, common_pb2.RetryPolicy):
        out.retry.CopyFrom(value)
    else:
        raise InvalidArgument("spec.retry", "expected a RetryPolicy (from retry(...)) or None")


def _set_notify(out: common_pb2.TaskSpec, value: Any) -> None:
    targets = [value] if isinstance(value, common_pb2.NotifyTarget) else list(value or [])
    for i, target in enumerate(targets):
        if not isinstance(target, common_pb2.NotifyTarget) or target.WhichOneof("kind") is None:
            raise InvalidArgument(
                f"spec.notify[{i}]", "expected a NotifyTarget (from notify_webhook or notify_command)"
            )
    del out.notify[:]
    out.notify.extend(targets)


def _non_negative_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"expected an integer, got {value!r}")
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return value


def edit_spec(spec: common_pb2.TaskSpec, changes: Mapping[str, Any]) -> common_pb2.TaskSpec:
    """A copy of `spec` with `changes` applied (keys from `EDITABLE_FIELDS`; values as `create_task`
    takes them). `tags` replaces every tag; `schedule` and `payload` replace the whole message."""
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise InvalidArgument(
            unknown[0], f"not an editable field (expected one of: {', '.join(EDITABLE_FIELDS)})"
        )
    out = common_pb2.TaskSpec()
    out.CopyFrom(spec)
    for key, value in changes.items():
        field_name = f"spec.{key}"
        if key == "schedule":
            if not isinstance(value, common_pb2.Schedule):
                raise InvalidArgument(field_name, "expected a Schedule (from cron, at, every or delay)")
            out.schedule.CopyFrom(value)
        elif key == "payload":
            if not isinstance(value, common_pb2.Payload):
                raise InvalidArgument(field_name, "expected a Payload (from command, shell, http or handler)")
            out.payload.CopyFrom(value)
        elif key in ("tags", "worker_labels"):
            getattr(out, key).clear()
            getattr(out, key).update(_string_map(value, field_name))
        elif key == "retry":
            _set_retry(out, value)
        elif key == "notify":
            _set_notify(out, value)
        elif key == "max_concurrency":
            out.max_concurrency = _non_negative_int(value, field_name)
        elif key == "start_deadline":
            out.start_deadline_ms = duration_ms(value, "spec.start_deadline_ms")
        elif key == "retention":
            if value is None:
                out.ClearField("retention")  # the cluster's defaults
            elif isinstance(value, common_pb2.Retention):
                out.retention.CopyFrom(value)
            else:
                raise InvalidArgument(field_name, "expected a Retention (from retention(...)) or None")
        elif key == "sensor":
            if value is None:
                out.ClearField("sensor")
            elif isinstance(value, common_pb2.Sensor):
                out.sensor.CopyFrom(value)
            else:
                raise InvalidArgument(field_name, "expected a Sensor (or None to remove it)")
        elif key == "dependency_deadline":
            out.dependency_deadline_ms = duration_ms(value, "spec.dependency_deadline_ms")
        elif key == "depends_on":
            del out.depends_on[:]
            for item in value:
                task_id, window = (item, 0) if isinstance(item, str) else item
                out.depends_on.add(
                    task_id=task_id, window_ms=duration_ms(window, "spec.depends_on.window_ms")
                )
        elif key in ("name", "queue"):
            if not isinstance(value, str):
                raise InvalidArgument(field_name, f"expected a string, got {value!r}")
            setattr(out, key, value)
        elif key == "timeout_ms":
            out.timeout_ms = _non_negative_int(value, field_name)
        elif key in ("max_attempts", "max_catchup"):
            setattr(out, key, _non_negative_int(value, field_name))
        elif key == "catchup_window":
            ms = duration_ms(value, "spec.catchup_window_ms")
            out.catchup_window_ms = _non_negative_int(ms, "spec.catchup_window_ms")
        elif key == "guarantee":
            out.guarantee = parse_guarantee(value, field_name)
        elif key == "priority":
            out.priority = parse_priority(value, field_name)
        elif key == "misfire":
            out.misfire = parse_misfire(value, field_name)
        else:  # overlap
            out.overlap = parse_overlap(value, field_name)
    return out


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
    _time_fields(out, "updated_at", calendar.updated_at_ms)
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


# ------------------------------------------------------------------------------------------------ errors


def error_from_status(code_name: str, details: str | None) -> CronraftError:
    """Map a gRPC status (code by name, e.g. "NOT_FOUND") to the error tree of `cronraft.errors`.

    INVALID_ARGUMENT details read "field: problem" (split on the first ": "); without one, the field is
    "request".
    """
    message = details or code_name.lower()
    if code_name == "INVALID_ARGUMENT":
        field_name, sep, problem = message.partition(": ")
        if not sep or not field_name or " " in field_name:
            return InvalidArgument("request", message)
        return InvalidArgument(field_name, problem)
    classes: dict[str, type[CronraftError]] = {
        "NOT_FOUND": NotFound,
        "FAILED_PRECONDITION": FailedPrecondition,
        "RESOURCE_EXHAUSTED": ResourceExhausted,
        "UNAVAILABLE": Unavailable,
        "DEADLINE_EXCEEDED": DeadlineExceeded,
        "UNAUTHENTICATED": Unauthenticated,
        "PERMISSION_DENIED": PermissionDenied,
    }
    cls = classes.get(code_name)
    if cls is None:
        return CronraftError(f"{code_name.lower()}: {message}")
    return cls(message)


def leader_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The leader address a follower put in the trailing metadata, or None if absent or empty."""
    for key, value in metadata or ():
        if key.lower() == LEADER_METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            return text.strip() or None
    return None


# ----------------------------------------------------------------------------------------------- routing


RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class Router:
    """Where a client sends its calls; shared by all the calls of one client. Its two fields are plain
    hints written without a lock: a lost update between threads costs at most one extra redirect.

    Writes go to the leader when one is known, else to the servers in turn. Reads go to the server that
    answered last (any node can serve them), else to the servers in turn.
    """

    def __init__(self, servers: Sequence[str]) -> None:
        self.servers = list(servers)
        self.leader: str | None = None
        self.preferred = 0  # index into servers for reads / leader discovery

    def first(self, write: bool) -> str:
        if write and self.leader:
            return self.leader
        return self.servers[self.preferred % len(self.servers)]

    def succeeded(self, address: str, write: bool) -> None:
        if write:
            self.leader = address
        if address in self.servers:
            self.preferred = self.servers.index(address)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter (0.5x to 1x of the step)."""

    initial_s: float = 0.05
    cap_s: float = 1.0
    multiplier: float = 2.0
    rand: Callable[[], float] = random.random
    _step: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._step = self.initial_s if self._step == 0 else min(self.cap_s, self._step * self.multiplier)
        return self._step * (0.5 + 0.5 * self.rand())


@dataclass
class Failure:
    address: str
    code_name: str
    details: str


class CallPlan:
    """The retry plan of one logical call: which address next, how long to wait, when to give up.

    The caller loops: `address = plan.address`, perform the RPC with `plan.attempt_timeout()`; on success
    `plan.succeeded()`; on a gRPC error `delay = plan.failed(code, details, leader)` and sleep `delay`
    then try again, or raise `plan.give_up_error()` when `delay` is None.

    - A redirect (UNAVAILABLE with a leader address) is followed at once, at most `max_redirects` times.
    - UNAVAILABLE / DEADLINE_EXCEEDED move to the next configured server; after a full round over them,
      the plan backs off. The total is bounded by `timeout_s`.
    - Any other status is final: `failed` returns None and `give_up_error` maps it.
    """

    def __init__(
        self,
        router: Router,
        *,
        write: bool,
        timeout_s: float,
        attempt_timeout_s: float | None = None,
        max_redirects: int = 5,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        self.router = router
        self.write = write
        self.clock = clock
        self.deadline = clock() + timeout_s
        self.attempt_timeout_s = (
            attempt_timeout_s if attempt_timeout_s is not None else max(timeout_s / 2, 0.1)
        )
        self.max_redirects = max_redirects
        self.redirects_left = max_redirects
        self.backoff = backoff or Backoff()
        self.address = router.first(write)
        self.failures: list[Failure] = []
        self._final: Failure | None = None
        self._tried_in_round: set[str] = set()
        self._index = router.preferred

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def attempt_timeout(self) -> float:
        return max(0.001, min(self.remaining(), self.attempt_timeout_s))

    def succeeded(self) -> None:
        self.router.succeeded(self.address, self.write)

    def failed(self, code_name: str, details: str, leader: str | None) -> float | None:
        """Record a failed attempt; return the delay before the next one, or None to give up."""
        failure = Failure(self.address, code_name, details)
        self.failures.append(failure)
        if code_name not in RETRYABLE:
            self._final = failure
            return None
        self._tried_in_round.add(self.address)
        if code_name == "UNAVAILABLE" and leader and leader != self.address and self.redirects_left > 0:
            self.redirects_left -= 1
            self.router.leader = leader
            self.address = leader
            return 0.0 if self.remaining() > 0 else None
        if self.router.leader == self.address:
            self.router.leader = None  # the leader we knew is gone or deposed: rediscover
        delay = 0.0
        nxt = self._next_server()
        if nxt is None:  # every server failed in this round: back off, then start a new round
            self._tried_in_round.clear()
            self.redirects_left = self.max_redirects
            nxt = self._next_server()
            delay = self.backoff.next()
        assert nxt is not None
        self.address = nxt
        if self.remaining() - delay <= 0.001:
            return None
        return delay

    def _next_server(self) -> str | None:
        servers = self.router.servers
        for _ in range(len(servers)):
            self._index = (self._index + 1) % len(servers)
            candidate = servers[self._index]
            if candidate not in self._tried_in_round:
                return candidate
        return None

    def give_up_error(self, request_id: str | None = None) -> CronraftError:
        """The error to raise once `failed` returned None."""
        if self._final is not None:
            return error_from_status(self._final.code_name, self._final.details)
        last = self.failures[-1] if self.failures else Failure(self.address, "UNAVAILABLE", "no attempt made")
        tried = ", ".join(dict.fromkeys(f.address for f in self.failures)) or self.address
        outcome = ""
        if self.write and request_id and any(f.code_name == "DEADLINE_EXCEEDED" for f in self.failures):
            outcome = f"; the outcome is unknown: retrying with request_id={request_id} is safe"
        if last.code_name == "DEADLINE_EXCEEDED":
            return DeadlineExceeded(f"deadline exceeded (tried {tried}): {last.details}{outcome}")
        return Unavailable(f"cluster unavailable (tried {tried}): {last.details}{outcome}")
