"""The schedule flags of `schedctl` (`task create`, `task update`, `schedule preview`): the argparse
group (`add_schedule_arguments`) and the `Schedule` it describes (`schedule_from_args`), plus
`join_dash_values` (so that `--at -10m` reaches its flag). The other task flags are in `spec_flags`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from cronraft.client import _argnames, _cron_text
from cronraft.client._parsing import parse_calendar_action, parse_dst_fold, parse_dst_gap, parse_when
from cronraft.errors import (
    InvalidArgument,
)
from cronraft.proto.v1 import common_pb2
from cronraft.timefmt import parse_duration

_POLICY_HELP = {
    "dst_gap": "shift | skip",
    "dst_fold": "first | second | both",
    "calendar_action": "skip | roll-following | roll-preceding | roll-modified-following",
}


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
