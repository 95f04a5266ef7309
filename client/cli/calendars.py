"""`schedctl calendar put|get|list|delete`: calendars, from rule flags or a JSON file; the argparse
sub-parsers and the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cronraft.client import _calendars, _tables
from cronraft.client.cli.common import UsageError, emit
from cronraft.client.cli.options import Parser, all_namespaces, examples
from cronraft.client.sdk import Client
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

__all__ = ["add_calendar_parser"]


def add_calendar_parser(commands: Any, opts: Parser) -> None:
    """Add `calendar put|get|list|delete` to schedctl's sub-command action."""
    calendar = commands.add_parser("calendar", help="put, get, list, delete calendars")
    calendar_commands = calendar.add_subparsers(dest="calendar_command", metavar="SUBCOMMAND", required=True)
    put = calendar_commands.add_parser(
        "put",
        parents=[opts],
        help="create or replace a calendar",
        usage="schedctl calendar put NAME [--tz ZONE] [--description TEXT] [rule flags...] "
        "[--include NAME]...\n       schedctl calendar put NAME --file CAL.json",
        description="Create or replace the calendar NAME. Its excluded times are the union of its rules and "
        "of the calendars it includes. Dates and times of day are read in --tz (default UTC).",
        epilog=examples(
            "schedctl calendar put fr-business --tz Europe/Paris --holidays FR --weekdays 6,7",
            "schedctl calendar put night --time-of-day 22:00-06:00 --include fr-business",
            "schedctl calendar put fr-business --file fr-business.json",
        ),
    )
    put.add_argument("name", metavar="NAME")
    put.add_argument(
        "--file", metavar="PATH", help="the calendar as JSON (the shape of `calendar get -o json`)"
    )
    put.add_argument("--tz", metavar="ZONE", help="IANA time zone of the rules (default UTC)")
    put.add_argument("--description", metavar="TEXT", help="free text")
    put.add_argument("--date", action="append", default=[], metavar="YYYY-MM-DD", help="exclude a day")
    put.add_argument(
        "--holidays",
        action="append",
        default=[],
        metavar="CC[-SUBDIV]",
        help="exclude the public holidays of a country (subdivision optional), e.g. FR, DE-BY",
    )
    put.add_argument("--weekdays", metavar="DAYS", help="exclude days of week, ISO: 1=Mon..7=Sun, e.g. 6,7")
    put.add_argument(
        "--date-range", action="append", default=[], metavar="FROM..TO", help="exclude days, inclusive"
    )
    put.add_argument(
        "--time-of-day",
        action="append",
        default=[],
        metavar="HH:MM-HH:MM",
        help="exclude a daily local time range [start, end); end before start wraps past midnight",
    )
    put.add_argument(
        "--exclude-cron",
        action="append",
        default=[],
        metavar="EXPR",
        help="exclude the minutes matching EXPR",
    )
    put.add_argument(
        "--include", action="append", default=[], metavar="NAME", help="also exclude what NAME excludes"
    )
    put.set_defaults(handler=_calendar_put)
    cal_get = calendar_commands.add_parser(
        "get", parents=[opts], help="show a calendar", epilog=examples("schedctl calendar get fr-business")
    )
    cal_get.add_argument("name", metavar="NAME")
    cal_get.set_defaults(handler=_calendar_get)
    cal_list = calendar_commands.add_parser(
        "list",
        parents=[opts],
        help="list calendars",
        epilog=examples("schedctl calendar list", "schedctl calendar list --all-namespaces -o json"),
    )
    all_namespaces(cal_list, "calendars")
    cal_list.set_defaults(handler=_calendar_list)
    cal_delete = calendar_commands.add_parser(
        "delete",
        parents=[opts],
        help="delete a calendar",
        epilog=examples("schedctl calendar delete fr-business"),
    )
    cal_delete.add_argument("name", metavar="NAME")
    cal_delete.set_defaults(handler=_calendar_delete)


# -------------------------------------------------------------------------------------------- handlers


_RULE_FLAGS = ("date", "holidays", "date_range", "time_of_day", "exclude_cron", "include")


def _calendar_from_flags(args: argparse.Namespace) -> common_pb2.Calendar:
    if args.file is not None:
        given = [
            f"--{n.replace('_', '-')}"
            for n in (*_RULE_FLAGS, "weekdays", "tz", "description")
            if getattr(args, n)
        ]
        if given:
            raise UsageError(f"--file takes the whole calendar: drop {', '.join(given)}")
        try:
            if args.file == "-":
                text = sys.stdin.read()
            else:
                with open(args.file, encoding="utf-8") as f:
                    text = f.read()
        except OSError as exc:
            raise InvalidArgument("--file", f"cannot read {args.file}: {exc.strerror}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument("--file", f"{args.file} is not JSON: {exc}") from None
        return _calendars.calendar_from_json(doc, args.name)
    rules: list[common_pb2.CalendarRule] = []
    if args.date:
        dates = [_calendars.check_date(d, "--date") for d in args.date]
        rules.append(common_pb2.CalendarRule(dates=common_pb2.DateList(dates=dates)))
    rules.extend(_calendars.holidays_rule(h, "--holidays") for h in args.holidays)
    if args.weekdays is not None:
        days = _calendars.parse_weekdays(args.weekdays, "--weekdays")
        rules.append(common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=days)))
    rules.extend(_calendars.date_range_rule(r, "--date-range") for r in args.date_range)
    rules.extend(_calendars.time_of_day_rule(r, "--time-of-day") for r in args.time_of_day)
    for expression in args.exclude_cron:
        if not expression.strip():
            raise InvalidArgument("--exclude-cron", "must not be empty")
        rules.append(common_pb2.CalendarRule(cron=expression))
    if any(not n.strip() for n in args.include):
        raise InvalidArgument("--include", "a calendar name must not be empty")
    if not rules and not args.include:
        raise UsageError(
            "a calendar needs a rule (--date, --holidays, --weekdays, ...), an --include, or --file"
        )
    return common_pb2.Calendar(
        name=args.name,
        time_zone=args.tz or "",
        description=args.description or "",
        exclude=rules,
        include=args.include,
    )


def _calendar_put(client: Client, args: argparse.Namespace) -> None:
    calendar = client.put_calendar(_calendar_from_flags(args))
    emit(args, _calendars.calendar_to_json(calendar), lambda: _tables.calendar_detail(calendar))


def _calendar_get(client: Client, args: argparse.Namespace) -> None:
    calendar = client.get_calendar(args.name)
    emit(args, _calendars.calendar_to_json(calendar), lambda: _tables.calendar_detail(calendar))


def _calendar_list(client: Client, args: argparse.Namespace) -> None:
    every = args.all_namespaces
    calendars = client.list_calendars(all_namespaces=every)
    emit(
        args,
        [_calendars.calendar_to_json(c) for c in calendars],
        lambda: _tables.calendar_table(calendars, namespaces=every),
    )


def _calendar_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_calendar(args.name)
    emit(args, {"name": args.name, "deleted": True}, lambda: f"deleted calendar {args.name}")
