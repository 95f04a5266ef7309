"""`schedctl schedule preview`: the next fire instants of a schedule, computed offline.

It takes the schedule flags of `task create` and runs the very functions the leader runs
(`cronraft.raft.schedule` through `cronraft.raft.preview`), so it needs no server. That is the one place
where the client imports the pure schedule maths (an explicit exception in the import-linter contract);
it never imports the raft adapters (LMDB, pysyncobj).

Not shown offline: calendars (they are stored in the cluster; preview a stored task through the
PreviewTask API for them) and the exact jitter offset of a task not yet created (it hashes the task id).

`parser.build_parser` hooks it in with `add_preview_parser(commands)`; `main` runs it before it would open
a client (`if args.handler is run_preview: return run_preview(args)`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from cronraft.client import _argnames, _cron_text, _parsing, _render, _tables
from cronraft.client.cli import schedule_flags as _schedule_flags
from cronraft.errors import CronraftError, InvalidArgument
from cronraft.proto.v1 import common_pb2, scheduler_pb2
from cronraft.raft import preview as _preview
from cronraft.raft import schedule as _schedule

__all__ = ["DEFAULT_COUNT", "MAX_COUNT", "add_preview_parser", "main", "run_preview"]

DEFAULT_COUNT = 10
MAX_COUNT = 1000  # as the PreviewTask API
_EXIT_OK, _EXIT_SERVER, _EXIT_USAGE = 0, 1, 2
_FIELD = "spec.schedule"
# The flag that sets each schedule field, so that an error names what the user typed.
_FLAGS = {
    "cron.expression": "--cron",
    "cron.time_zone": "--tz",
    "at.at_ms": "--at",
    "fixed_rate.period_ms": "--every",
    "fixed_rate.anchor_ms": "--anchor",
    "fixed_delay.delay_ms": "--delay",
    "fixed_delay": "--delay",
    "start_at_ms": "--start-at",
    "end_at_ms": "--end-at",
    "max_runs": "--max-runs",
    "jitter_ms": "--jitter",
    "dst_gap": "--dst-gap",
    "dst_fold": "--dst-fold",
}
_USAGE = (
    "schedctl schedule preview (--cron EXPR [--tz ZONE] | --at WHEN | --every DURATION | --delay DURATION)\n"
    "       [schedule options] [--from WHEN] [--limit N] [--output table|json]"
)
_EPILOG = """Examples:
  schedctl schedule preview --cron "0 9 1-7 * MON" --tz Europe/Paris
  schedctl schedule preview --cron "0 0 9 ? * 6#3" --cron-dialect quartz --limit 3
  schedctl schedule preview --every 90m --anchor 2025-01-01T00:00:00Z --from 2025-06-01T00:00:00Z
  schedctl schedule preview --at +10m -o json"""


def add_preview_parser(subparsers: Any) -> None:
    """Add `schedule preview` to schedctl's sub-command action (`parser.add_subparsers(...)`)."""
    group = subparsers.add_parser("schedule", help="schedule tools that need no server")
    commands = group.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND", required=True)
    parser = commands.add_parser(
        "preview",
        help="show the next fire instants of a schedule (offline)",
        usage=_USAGE,
        description="Print the next fire instants of a schedule given with the flags of `task create`, "
        "in UTC and in the schedule's zone, with DST and jitter notes. Computed locally by the leader's "
        "own schedule functions: no server needed. Calendars are not applied offline.",
        epilog=_EPILOG,
    )
    _add_arguments(parser)
    # The one global option that means something offline. SUPPRESS: `schedctl --output json schedule
    # preview ...` keeps the top-level value.
    shared = parser.add_argument_group("global options (also accepted before the command)")
    shared.add_argument(
        "--output", "-o", choices=["table", "json"], default=argparse.SUPPRESS, help="output format"
    )
    parser.set_defaults(handler=run_preview)


def main(argv: Sequence[str] | None = None, *, now_ms: int | None = None) -> int:
    """Run the preview alone (as `schedctl schedule preview` would) with `argv`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="schedctl schedule preview",
        usage=_USAGE,
        epilog=_EPILOG,
        formatter_class=_argnames.HelpFormatter,
    )
    _add_arguments(parser)
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table", help="output format")
    try:
        args = parser.parse_args(_schedule_flags.join_dash_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else _EXIT_OK
    return run_preview(args, now_ms=now_ms)


def run_preview(args: argparse.Namespace, *, now_ms: int | None = None) -> int:
    """Print the preview asked for by parsed `args`; returns the exit code (0, or 2 for bad input).
    `now_ms` (default: the wall clock) is what `--from` defaults to and what `+DURATION` counts from."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        from_ms = _parsing.parse_when(args.from_ or "now", "--from", now)
        if not 1 <= args.limit <= MAX_COUNT:
            raise InvalidArgument("--limit", f"must be between 1 and {MAX_COUNT}, got {args.limit}")
        warnings: list[str] = []
        schedule = _schedule_flags.schedule_from_args(args, now_ms=now, warnings=warnings)
        if schedule.calendars:
            print(
                "note: calendars are not applied offline (they are stored in the cluster); "
                "`schedctl task preview ID` shows a stored task with its calendars",
                file=sys.stderr,
            )
            del schedule.calendars[:]
            schedule.calendar_action = common_pb2.CALENDAR_ACTION_DEFAULT
        _validate(schedule, from_ms)
        fires = _preview.preview(schedule, from_ms=from_ms, count=args.limit)
    except CronraftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _EXIT_USAGE if isinstance(exc, InvalidArgument) else _EXIT_SERVER
    zone = schedule.cron.time_zone if schedule.WhichOneof("kind") == "cron" else ""
    description = _cron_text.describe(schedule, now)
    print(f"schedule: {description}", file=sys.stderr)  # the table stays alone on stdout
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if getattr(args, "output", "table") == "json":
        doc = _json(schedule, zone or "UTC", from_ms, fires)
        doc.update(description=description, warnings=warnings)
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_table(zone or "UTC", fires) + "\n")
    return _EXIT_OK


# ------------------------------------------------------------------------------------------- arguments


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    _schedule_flags.add_schedule_arguments(parser)  # the schedule flags of `task create`, parsed the same way
    parser.add_argument(
        "--from", dest="from_", metavar="WHEN", help="preview from this instant (default: now)"
    )
    limit = parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_COUNT,
        metavar="N",
        help=f"fires to show (default {DEFAULT_COUNT}, at most {MAX_COUNT})",
    )
    _argnames.add_alias(parser, "--count", limit)  # a result cap is --limit everywhere (issue 19)


def _validate(schedule: common_pb2.Schedule, from_ms: int) -> None:
    """The cluster's own validation, with errors naming the flag rather than the proto field."""
    try:
        _schedule.validate_schedule(schedule, field=_FIELD, now_ms=from_ms)
    except InvalidArgument as exc:
        flag = _FLAGS.get(exc.field.removeprefix(f"{_FIELD}."))
        if flag is None:
            raise
        raise InvalidArgument(flag, exc.problem) from None


# ---------------------------------------------------------------------------------------------- output


def _utc(instant_ms: int) -> str:
    return _preview.rfc3339(instant_ms, UTC)


def _table(zone: str, fires: Sequence[scheduler_pb2.PreviewFire]) -> str:
    if not fires:
        return "no fire in the window"
    headers = ["NOMINAL (UTC)", f"LOCAL ({zone})", "DAY", "STARTS (UTC)", "NOTES"]
    rows = [
        [
            _utc(f.nominal_time_ms),
            f.local_time,
            _tables.weekday(f.local_time),
            _utc(f.actual_ms) if f.actual_ms else "does not fire",
            "; ".join(f.notes) or "-",
        ]
        for f in fires
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    )


def _json(
    schedule: common_pb2.Schedule, zone: str, from_ms: int, fires: Sequence[scheduler_pb2.PreviewFire]
) -> dict[str, Any]:
    return {
        "schedule": _render.schedule_to_json(schedule),
        "time_zone": zone,
        "tzdata": _schedule.TZDATA_VERSION,
        "from_ms": from_ms,
        "from": _utc(from_ms),
        "fires": [
            {
                "nominal_time_ms": f.nominal_time_ms,
                "nominal_time": _utc(f.nominal_time_ms),
                "local_time": f.local_time,
                "fires": f.actual_ms != 0,
                "actual_ms": f.actual_ms,
                "actual": _utc(f.actual_ms) if f.actual_ms else None,
                "notes": list(f.notes),
            }
            for f in fires
        ],
    }
