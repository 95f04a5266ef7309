"""`schedctl`: the command line of Cronraft: tasks (create, update, pause, resume, trigger, backfill,
explain, preview, cancel, by id or by filter, bulk import), calendars, executions, dead letters, cluster
status.

The task flags live in `_flags`, the table output in `_tables`, the JSON in `_render`.

Output is a table (default) or one JSON document (`--output json`, format in docs/cli.md). Errors print
`error: <message>` on stderr, never a traceback, and set the exit code: 0 ok, 1 a server-side error
(not found, failed precondition, ...), 2 usage or invalid argument (also INVALID_ARGUMENT from the
server), 3 cluster unavailable after retries (or deadline exceeded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any, NoReturn, TypeVar

from cronraft import timefmt
from cronraft.client import (
    _argnames,
    _calendars,
    _cron_text,
    _parsing,
    _render,
    _requests,
    _routing,
    _specs,
    _tables,
)
from cronraft.client._transport import add_transport_arguments, transport_from_args
from cronraft.client.cli import imports as import_cli
from cronraft.client.cli import preview as preview_cli
from cronraft.client.cli import schedule_flags as _schedule_flags
from cronraft.client.cli import spec_flags as _flags
from cronraft.client.cli.audit import add_audit_parser
from cronraft.client.cli.security import add_security_commands
from cronraft.client.cli.spec_flags import UsageError
from cronraft.client.sdk import Client
from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from cronraft.proto.v1 import common_pb2

__all__ = [
    "EXIT_AUTH",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
    "parse_args",
]

EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_AUTH = 4  # UNAUTHENTICATED or PERMISSION_DENIED (docs/security.md)

_T = TypeVar("_T")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing and exiting, so that `main` owns the output;
    its help wraps paragraphs but keeps the Examples as written (`_argnames.HelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _argnames.HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


def exit_code_for(error: CronraftError) -> int:
    """The exit code of an error of the SDK."""
    if isinstance(error, InvalidArgument):
        return EXIT_USAGE
    if isinstance(error, Unauthenticated | PermissionDenied):
        return EXIT_AUTH
    if isinstance(error, Unavailable | DeadlineExceeded | OutcomeUnknown | NotLeader):
        return EXIT_UNAVAILABLE
    return EXIT_SERVER


# ---------------------------------------------------------------------------------------------- parser

GLOBAL_OPTIONS_TITLE = "global options (also accepted before the command)"
_SERVER_HELP = f"servers to contact (default: $CRONRAFT_SERVER, else {_routing.DEFAULT_SERVER})"
_RPC_TIMEOUT_HELP = "bound on each command's calls, retries included (e.g. 10s; a bare number is seconds)"
NAMESPACE_ENV = "CRONRAFT_NAMESPACE"
_NAMESPACE_HELP = (
    f"the namespace of creates, lists, calendars and bulk commands (default: ${NAMESPACE_ENV}, else default);"
    " commands by id act in the object's own"
)


def _add_global_options(parser: argparse.ArgumentParser, *, subcommand: bool, timeout_alias: bool) -> None:
    """--server, --output and --rpc-timeout (old spelling --timeout), on the top-level parser with their
    defaults, and repeated on every subcommand with SUPPRESS defaults: the top-level value stands unless
    given again, so `schedctl task list -o json` works as well as `schedctl -o json task list`. On
    `task create`/`update`, `--timeout` keeps its old meaning there, the execution timeout
    (`timeout_alias=False`)."""
    group = parser.add_argument_group(GLOBAL_OPTIONS_TITLE) if subcommand else parser
    default: Callable[[Any], Any] = (lambda _value: argparse.SUPPRESS) if subcommand else (lambda v: v)
    added = [
        group.add_argument(
            "--server", default=default(None), metavar="HOST:PORT[,HOST:PORT...]", help=_SERVER_HELP
        ),
        group.add_argument(
            "--output", "-o", choices=["table", "json"], default=default("table"), help="output format"
        ),
    ]
    rpc_timeout = group.add_argument(
        "--rpc-timeout", default=default("10s"), metavar="DURATION", help=_RPC_TIMEOUT_HELP
    )
    added.append(rpc_timeout)
    namespace = group.add_argument(
        "--namespace", "-n", default=default(None), metavar="NS", help=_NAMESPACE_HELP
    )
    added.append(namespace)
    added += add_transport_arguments(group, suppress=subcommand)  # --tls-ca, --tls-cert, --tls-key, --token
    if timeout_alias:
        added.append(_argnames.add_alias(group, "--timeout", rpc_timeout))
    if subcommand:
        for action in added:
            _argnames.mark_global(action)


def _global_parent(*, timeout_alias: bool = True) -> _Parser:
    parent = _Parser(add_help=False)
    _add_global_options(parent, subcommand=True, timeout_alias=timeout_alias)
    return parent


def _all_namespaces(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help=f"{what} of every namespace, with a NAMESPACE column (needs the reader role in every namespace)",
    )


def _examples(*lines: str) -> str:
    """An epilog: the Examples section of a command's help (tests/unit/test_documented_commands.py
    parses every line of it)."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


_CREATE_USAGE = (
    "schedctl task create --name NAME (--cron EXPR | --at WHEN | --every DURATION | --delay DURATION)\n"
    "       [options] (-- ARGV... | --shell -- SCRIPT | --http-url URL | --handler NAME)"
)


def build_parser() -> _Parser:
    """The argparse tree of schedctl (docs/cli.md is its reference)."""
    parser = _Parser(
        prog="schedctl",
        description="Manage tasks of a Cronraft cluster.",
        epilog="Exit codes: 0 ok, 1 server-side error, 2 usage or invalid argument, 3 cluster unavailable, "
        "4 not authenticated or not allowed.",
    )
    _add_global_options(parser, subcommand=False, timeout_alias=True)
    opts = _global_parent()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    task = commands.add_parser("task", help="create, change, inspect and cancel tasks")
    task_commands = task.add_subparsers(dest="task_command", metavar="SUBCOMMAND", required=True)
    _task_write_parsers(task_commands)
    _task_read_parsers(task_commands, opts)
    _task_bulk_parsers(task_commands, opts)
    _task_fire_parsers(task_commands, opts)
    import_cli.add_import_parser(task_commands, opts).set_defaults(handler=import_cli.run_import)
    _calendar_parsers(commands, opts)
    _execution_parsers(commands, opts)
    _dlq_parser(commands, opts)
    preview_cli.add_preview_parser(commands)  # `schedule preview`: offline, owned by preview_cli
    cluster = commands.add_parser("cluster", help="cluster introspection")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    status = cluster_commands.add_parser("status", parents=[opts], help="show the cluster's status")
    status.set_defaults(handler=_cluster_status)
    add_security_commands(commands, [opts])  # tls init, token create (offline)
    add_audit_parser(commands, opts)  # audit list (client/audit_cli.py)
    return parser


def _task_write_parsers(task_commands: Any) -> None:
    # `--timeout` after create/update is the execution timeout (its old meaning): no RPC alias here.
    create_opts = _global_parent(timeout_alias=False)
    create = task_commands.add_parser(
        "create",
        parents=[create_opts],
        help="create a task",
        usage=_CREATE_USAGE,
        description="Create a task. The payload is exactly one of: after `--`, the command's argv (run "
        "without a shell), or with --shell one shell string run by /bin/sh -c; --http-url (an HTTP "
        "request); --handler (a function registered in the worker). The schedule is printed back in "
        "words on stderr before the task is stored.",
        epilog=_examples(
            'schedctl task create --name hello --cron "0 9 * * MON-FRI" --tz Europe/Paris -- echo hello',
            "schedctl task create --name once --at +10m -- /usr/local/bin/report",
            "schedctl task create --name tick --every 5m --exec-timeout 1m --retry-attempts 3 -- ./poll.sh",
            "schedctl task create --name nightly --cron '0 2 * * *' --shell -- 'make report | mail ops'",
            "schedctl task create --name ping --every 1m --http-url https://example.com/health \\",
            "    --http-header 'Authorization=Bearer xyz' --http-expect 200",
        ),
    )
    _flags.add_spec_arguments(create, update=False)
    create.set_defaults(handler=_task_create)

    update = task_commands.add_parser(
        "update",
        parents=[create_opts],
        help="change a task (only the given flags change)",
        usage="schedctl task update ID [any flag of task create] [--clear-X ...] [-- ARGV...]",
        description="Read the task, change what the flags say, and update it if nobody changed it "
        "meanwhile. A schedule kind flag replaces the schedule's kind (the window, jitter, DST and calendar "
        "settings stay unless given); --tz alone changes the zone of a cron task. `--` ARGV replaces the "
        "payload (so do --http-url and --handler; the http and handler options alone change the current "
        "http or handler payload). The --clear-X flags remove a setting. Effective from the next nominal "
        "time: never retroactive.",
        epilog=_examples(
            "schedctl task update t0001 --tz Asia/Tokyo --jitter 30s",
            "schedctl task update t0001 --tag team=data --clear-tag owner --clear-end-at",
            "schedctl task update t0001 --retry-attempts 5 --retry-max-backoff 10m",
            "schedctl task update t0001 --clear-retry --clear-notify -- /usr/local/bin/etl --v2",
        ),
    )
    update.add_argument("task_id", metavar="ID")
    _flags.add_spec_arguments(update, update=True)
    update.set_defaults(handler=_task_update)


def _task_read_parsers(task_commands: Any, opts: _Parser) -> None:
    get = task_commands.add_parser(
        "get", parents=[opts], help="show a task", epilog=_examples("schedctl task get t0001 -o json")
    )
    get.add_argument("task_id", metavar="ID")
    get.set_defaults(handler=_task_get)

    lst = task_commands.add_parser(
        "list",
        parents=[opts],
        help="list tasks",
        epilog=_examples(
            "schedctl task list --tag team=ops --state scheduled",
            "schedctl task list --name-prefix nightly- --limit 20 -o json",
        ),
    )
    lst.add_argument("--state", help="scheduled | paused | completed | cancelled")
    _tag_filter(lst)
    lst.add_argument("--name-prefix", default="", metavar="P", help="filter on the name's start")
    lst.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N tasks")
    _all_namespaces(lst, "tasks")
    lst.set_defaults(handler=_task_list)

    explain = task_commands.add_parser(
        "explain",
        parents=[opts],
        help="why did (or didn't) a task run: its fire ledger",
        epilog=_examples(
            "schedctl task explain t0001",
            "schedctl task explain t0001 --from 2025-06-01T00:00:00Z --to 2025-06-02T00:00:00Z --limit 50",
        ),
    )
    explain.add_argument("task_id", metavar="ID")
    explain.add_argument(
        "--from", dest="from_", metavar="WHEN", help="first nominal time (default: oldest kept)"
    )
    explain.add_argument("--to", metavar="WHEN", help="last nominal time (default: now)")
    explain.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N records (default 100)"
    )
    explain.set_defaults(handler=_task_explain)

    preview = task_commands.add_parser(
        "preview",
        parents=[opts],
        help="the next fires of a stored task",
        epilog=_examples("schedctl task preview t0001 --limit 5", "schedctl task preview t0001 --from +1d"),
    )
    preview.add_argument("task_id", metavar="ID")
    preview.add_argument("--from", dest="from_", metavar="WHEN", help="start instant (default: now)")
    count = preview.add_argument(
        "--limit", type=int, default=10, metavar="N", help="how many fires (default 10)"
    )
    _argnames.add_alias(preview, "--count", count)
    preview.set_defaults(handler=_task_preview)


def _tag_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_argnames.key_value("--tag"),
        metavar=_argnames.KEY_VALUE,
        help="filter (repeatable; all must match)",
    )


def _task_bulk_parsers(task_commands: Any, opts: _Parser) -> None:
    cancel = task_commands.add_parser(
        "cancel",
        parents=[opts],
        help="cancel tasks, by id or by filter",
        usage="schedctl task cancel ID...\n"
        "       schedctl task cancel [--tag KEY=VALUE]... [--name-prefix P] [--state STATE] [--yes]",
        description="Cancel tasks by id, or every task matching the filters (all must match; tasks "
        "already cancelled are left alone). By filter, the command lists the tasks, asks for confirmation "
        "on a terminal (or needs --yes), then cancels them one by one: it is not atomic.",
        epilog=_examples("schedctl task cancel t0001 t0002", "schedctl task cancel --tag team=legacy --yes"),
    )
    cancel.add_argument("task_ids", nargs="*", metavar="ID")
    _tag_filter(cancel)
    cancel.add_argument("--name-prefix", default="", metavar="P", help="filter on the name's start")
    cancel.add_argument("--state", help="filter: scheduled | paused | completed")
    cancel.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    cancel.set_defaults(handler=_task_cancel)

    delete = task_commands.add_parser(
        "delete",
        parents=[opts],
        help="delete tasks with their whole history, by id or by filter",
        usage="schedctl task delete ID... [--force] [--yes]\n"
        "       schedctl task delete [--tag KEY=VALUE]... [--name-prefix P] [--state STATE] "
        "[--force] [--yes]",
        description="Delete tasks with everything about them: executions, attempts, output logs, dead "
        "letters and the fire ledger. It cannot be undone: the command asks for confirmation on a terminal "
        "(or needs --yes). By filter, it lists the matching tasks, then deletes them one by one: it is not "
        "atomic. A task with a running execution is refused, naming the execution, unless --force: running "
        "executions are then terminated (their workers are told to stop) and deleted too.",
        epilog=_examples(
            "schedctl task delete t0001 --yes",
            "schedctl task delete --state cancelled --tag team=legacy --yes",
        ),
    )
    delete.add_argument("task_ids", nargs="*", metavar="ID")
    _tag_filter(delete)
    delete.add_argument("--name-prefix", default="", metavar="P", help="filter on the name's start")
    delete.add_argument("--state", help="filter: scheduled | paused | completed | cancelled")
    delete.add_argument(
        "--force", action="store_true", help="terminate running executions instead of refusing the task"
    )
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=_task_delete)


def _task_fire_parsers(task_commands: Any, opts: _Parser) -> None:
    pause = task_commands.add_parser(
        "pause",
        parents=[opts],
        help="pause a task (no fire until resumed)",
        epilog=_examples('schedctl task pause t0001 --note "db migration until Friday"'),
    )
    pause.add_argument("task_id", metavar="ID")
    pause.add_argument("--note", default="", metavar="TEXT", help="why it is paused (shown by get/explain)")
    pause.set_defaults(handler=_task_pause)

    resume = task_commands.add_parser(
        "resume",
        parents=[opts],
        help="resume a paused task",
        epilog=_examples("schedctl task resume t0001", "schedctl task resume t0001 --replay-missed"),
    )
    resume.add_argument("task_id", metavar="ID")
    resume.add_argument(
        "--replay-missed",
        action="store_true",
        help="fire the nominal times of the paused period (by the misfire policy); default: skip them",
    )
    resume.set_defaults(handler=_task_resume)

    trigger = task_commands.add_parser(
        "trigger", parents=[opts], help="fire a task now", epilog=_examples("schedctl task trigger t0001")
    )
    trigger.add_argument("task_id", metavar="ID")
    trigger.set_defaults(handler=_task_trigger)

    backfill = task_commands.add_parser(
        "backfill",
        parents=[opts],
        help="fire the nominal times of a past time range now",
        epilog=_examples(
            "schedctl task backfill t0001 --from 2025-06-01T00:00:00Z --to 2025-06-02T00:00:00Z --limit 24"
        ),
    )
    backfill.add_argument("task_id", metavar="ID")
    backfill.add_argument("--from", dest="from_", required=True, metavar="WHEN", help="first instant")
    backfill.add_argument("--to", required=True, metavar="WHEN", help="last instant (inclusive)")
    cap = backfill.add_argument(
        "--limit", type=int, default=0, metavar="N", help="fire at most N times (default 100, at most 1000)"
    )
    _argnames.add_alias(backfill, "--max", cap)
    backfill.set_defaults(handler=_task_backfill)


def _calendar_parsers(commands: Any, opts: _Parser) -> None:
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
        epilog=_examples(
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
        "get", parents=[opts], help="show a calendar", epilog=_examples("schedctl calendar get fr-business")
    )
    cal_get.add_argument("name", metavar="NAME")
    cal_get.set_defaults(handler=_calendar_get)
    cal_list = calendar_commands.add_parser(
        "list",
        parents=[opts],
        help="list calendars",
        epilog=_examples("schedctl calendar list", "schedctl calendar list --all-namespaces -o json"),
    )
    _all_namespaces(cal_list, "calendars")
    cal_list.set_defaults(handler=_calendar_list)
    cal_delete = calendar_commands.add_parser(
        "delete",
        parents=[opts],
        help="delete a calendar",
        epilog=_examples("schedctl calendar delete fr-business"),
    )
    cal_delete.add_argument("name", metavar="NAME")
    cal_delete.set_defaults(handler=_calendar_delete)


def _execution_parsers(commands: Any, opts: _Parser) -> None:
    executions = commands.add_parser(
        "executions",
        parents=[opts],
        help="list the executions of a task",
        epilog=_examples("schedctl executions t0001", "schedctl executions t0001 --state failed --limit 5"),
    )
    executions.add_argument("task_id", metavar="TASK_ID")
    executions.add_argument(
        "--state", help="pending | buffered | running | succeeded | failed | timed-out | cancelled | lost"
    )
    executions.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N executions")
    executions.set_defaults(handler=_executions)

    execution = commands.add_parser("execution", help="show or cancel an execution")
    execution_commands = execution.add_subparsers(
        dest="execution_command", metavar="SUBCOMMAND", required=True
    )
    execution_get = execution_commands.add_parser(
        "get",
        parents=[opts],
        help="show an execution and its output",
        epilog=_examples("schedctl execution get e42"),
    )
    execution_get.add_argument("execution_id", metavar="ID")
    execution_get.set_defaults(handler=_execution_get)
    execution_cancel = execution_commands.add_parser(
        "cancel",
        parents=[opts],
        help="cancel executions",
        epilog=_examples('schedctl execution cancel e42 e43 --reason "bad input file"'),
    )
    execution_cancel.add_argument("execution_ids", nargs="+", metavar="ID")
    execution_cancel.add_argument("--reason", default="", metavar="TEXT", help="recorded with the cancel")
    execution_cancel.set_defaults(handler=_execution_cancel)

    logs = commands.add_parser(
        "logs",
        parents=[opts],
        help="print an execution's full stdout and stderr (takes an execution id, not a task id)",
        description="Print the output of one execution. It takes an EXECUTION id (e42), not a task id: "
        "`schedctl executions TASK_ID` lists a task's executions with their ids.",
        epilog=_examples(
            "schedctl executions t0001 --limit 1     # the newest execution's id, e.g. e42",
            "schedctl logs e42 -f",
            "schedctl logs e42 --attempt 1 --stream stderr",
        ),
    )
    logs.add_argument("execution_id", metavar="EXECUTION_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the attempt ends")
    logs.add_argument("--attempt", type=int, default=0, metavar="N", help="attempt number (default: latest)")
    logs.add_argument(
        "--stream", choices=("both", "stdout", "stderr"), default="both", help="which output to print"
    )
    logs.set_defaults(handler=_logs)


def _dlq_parser(commands: Any, opts: _Parser) -> None:
    dlq = commands.add_parser("dlq", help="dead letters: list, show, redrive, purge")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND", required=True)
    lst = dlq_commands.add_parser(
        "list", parents=[opts], help="list dead letters", epilog=_examples("schedctl dlq list --task t0001")
    )
    lst.add_argument("--task", metavar="ID", help="only those of this task")
    lst.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N dead letters")
    _all_namespaces(lst, "dead letters")
    lst.set_defaults(handler=_dlq_list)
    show = dlq_commands.add_parser(
        "show",
        parents=[opts],
        help="show a dead letter: reason, attempts, output tails",
        epilog=_examples("schedctl dlq show e42"),
    )
    show.add_argument("execution_id", metavar="EXECUTION_ID")
    show.set_defaults(handler=_dlq_show)
    redrive = dlq_commands.add_parser(
        "redrive",
        parents=[opts],
        help="run dead letters again as new executions",
        usage="schedctl dlq redrive (EXECUTION_ID... | --task ID) [--limit N]",
        epilog=_examples("schedctl dlq redrive e42 e43", "schedctl dlq redrive --task t0001 --limit 10"),
    )
    redrive.add_argument("execution_ids", nargs="*", metavar="EXECUTION_ID")
    redrive.add_argument("--task", metavar="ID", help="every dead letter of this task")
    redrive.add_argument(
        "--limit", type=int, default=0, metavar="N", help="at most N (default: the cluster's)"
    )
    redrive.set_defaults(handler=_dlq_redrive)
    purge = dlq_commands.add_parser(
        "purge",
        parents=[opts],
        help="delete dead letters",
        usage="schedctl dlq purge (EXECUTION_ID... | --task ID) [--before WHEN] [--limit N] [--yes]",
        description="Delete dead letters for good. Asks for confirmation on a terminal unless --yes; "
        "without a terminal, --yes is required.",
        epilog=_examples(
            "schedctl dlq purge e42 --yes", "schedctl dlq purge --task t0001 --before=-30d --yes"
        ),
    )
    purge.add_argument("execution_ids", nargs="*", metavar="EXECUTION_ID")
    purge.add_argument("--task", metavar="ID", help="the dead letters of this task")
    purge.add_argument(
        "--before", metavar="WHEN", help="only those dead before WHEN (RFC 3339, now, or -DURATION ago)"
    )
    purge.add_argument("--limit", type=int, default=0, metavar="N", help="at most N (0: the cluster's bound)")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(handler=_dlq_purge)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """schedctl's command line as `main` reads it (without running it): everything after the first
    `--` is the payload of `task create`/`update`, never an option; `--every -5m` is the option's own
    error, not argparse's. Raises UsageError (also for --help: SystemExit)."""
    args_list = list(argv)
    after_dash: list[str] | None = None
    if "--" in args_list:
        i = args_list.index("--")
        args_list, after_dash = args_list[:i], args_list[i + 1 :]
    args = build_parser().parse_args(_schedule_flags.join_dash_values(args_list))
    if after_dash is not None:
        if args.handler not in (_task_create, _task_update):
            raise UsageError("arguments after -- are only taken by `task create` and `task update`")
        args.argv = [*args.argv, *after_dash]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run schedctl with `argv` (default: sys.argv[1:]); returns the exit code."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.handler is preview_cli.run_preview:  # offline: no server, no Client
            code: int = preview_cli.run_preview(args)
            return code
        if getattr(args, "offline", False):  # tls init, token create: files only, no Client
            offline: int = args.handler(args)
            return offline
        timeout_s = _rpc_timeout(args.rpc_timeout)
        namespace = getattr(args, "namespace", None) or os.environ.get(NAMESPACE_ENV) or "default"
        with Client(
            args.server, timeout_s=timeout_s, transport=transport_from_args(args), namespace=namespace
        ) as client:
            args.handler(client, args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except _Reported as exc:
        return exc.code
    except CronraftError as exc:
        _error(str(exc))
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _rpc_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = timefmt.parse_duration(text, "--rpc-timeout") / 1000
    if not seconds > 0:
        raise InvalidArgument("--rpc-timeout", f"must be positive, got {text!r}")
    return seconds


def _emit(args: argparse.Namespace, doc: Any, table: Callable[[], str]) -> None:
    if args.output == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        text = table()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


# -------------------------------------------------------------------------------------------- handlers


def _echo_schedule(schedule: common_pb2.Schedule, warnings: list[str]) -> None:
    """The schedule in words, and its warnings, on stderr before it is stored (issue 19)."""
    print(f"schedule: {_cron_text.describe(schedule, int(time.time() * 1000))}", file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _with_warnings(doc: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    return {**doc, "warnings": warnings}


def _task_create(client: Client, args: argparse.Namespace) -> None:
    warnings: list[str] = []
    schedule = _schedule_flags.schedule_from_args(args, warnings=warnings)
    payload = _flags.payload_from_args(args)
    assert payload is not None
    spec = _specs.build_spec(args.name, schedule, payload, tags=_flags.parse_pairs(args.tag, "--tag"))
    spec = _specs.edit_spec(spec, _flags.spec_changes(args))
    _echo_schedule(schedule, warnings)
    task = client.create_task_spec(spec, request_id=args.request_id)
    _emit(args, _with_warnings(_render.task_to_json(task), warnings), lambda: _tables.task_detail(task))


def _task_update(client: Client, args: argparse.Namespace) -> None:
    task = client.get_task(args.task_id)
    changes = _flags.spec_changes(args, task.spec)
    warnings: list[str] = []
    changes["schedule"] = _schedule_flags.schedule_from_args(args, task.spec.schedule, warnings=warnings)
    payload = _flags.payload_from_args(args, task.spec.payload, required=False)
    if payload is not None:
        changes["payload"] = payload
    tags = dict(task.spec.tags)
    tags.update(_flags.parse_pairs(args.tag, "--tag"))
    for key in args.remove_tag:  # --clear-tag
        tags.pop(key, None)
    changes["tags"] = tags
    spec = _specs.edit_spec(task.spec, changes)
    if spec == task.spec:
        raise UsageError("nothing to change: give at least one flag of `task create`, or -- ARGV")
    if spec.schedule != task.spec.schedule:
        _echo_schedule(spec.schedule, warnings)
    try:
        updated = client.update_task(
            args.task_id, spec, expected_version=task.version, request_id=args.request_id
        )
    except FailedPrecondition as exc:
        if "version" in str(exc).lower():
            raise FailedPrecondition(f"the task changed meanwhile; retry ({exc})") from None
        raise
    _emit(args, _with_warnings(_render.task_to_json(updated), warnings), lambda: _tables.task_detail(updated))


def _task_pause(client: Client, args: argparse.Namespace) -> None:
    task = client.pause_task(args.task_id, args.note)
    _emit(args, _render.task_to_json(task), lambda: _tables.task_detail(task))


def _task_resume(client: Client, args: argparse.Namespace) -> None:
    task = client.resume_task(args.task_id, args.replay_missed)
    _emit(args, _render.task_to_json(task), lambda: _tables.task_detail(task))


def _task_trigger(client: Client, args: argparse.Namespace) -> None:
    execution = client.trigger_task(args.task_id)
    _emit(args, _render.execution_to_json(execution), lambda: _tables.execution_detail(execution))


def _task_backfill(client: Client, args: argparse.Namespace) -> None:
    from_ms = _when(args.from_, "--from")
    to_ms = _when(args.to, "--to")
    assert from_ms is not None and to_ms is not None
    if to_ms < from_ms:
        raise InvalidArgument("--to", "must not be before --from")
    executions = client.backfill_task(
        args.task_id, from_ms, to_ms, _flags.non_negative(args.limit, "--limit")
    )
    _emit(
        args, [_render.execution_to_json(e) for e in executions], lambda: _tables.execution_table(executions)
    )


def _task_explain(client: Client, args: argparse.Namespace) -> None:
    limit = _limit(args.limit)
    assert limit is not None
    response = client.explain_task(args.task_id, _when(args.from_, "--from"), _when(args.to, "--to"), limit)
    _emit(args, _render.explain_to_json(response), lambda: _tables.explain_text(response))


def _task_preview(client: Client, args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {args.limit}")
    fires = client.preview_task(args.task_id, _when(args.from_, "--from"), args.limit)
    _emit(args, [_render.preview_fire_to_json(f) for f in fires], lambda: _tables.preview_table(fires))


def _task_get(client: Client, args: argparse.Namespace) -> None:
    task = client.get_task(args.task_id)
    _emit(args, _render.task_to_json(task), lambda: _tables.task_detail(task))


def _task_list(client: Client, args: argparse.Namespace) -> None:
    limit = _limit(args.limit)
    state = _parsing.parse_task_state(args.state, "--state")
    page_size = min(limit, _requests.MAX_PAGE_SIZE) if limit else 100
    tasks = list(
        _take(
            client.list_tasks(
                state=state,
                tags=_flags.parse_pairs(args.tag, "--tag"),
                name_prefix=args.name_prefix,
                page_size=page_size,
                all_namespaces=args.all_namespaces,
            ),
            limit,
        )
    )
    _emit(
        args,
        [_render.task_to_json(t) for t in tasks],
        lambda: _tables.task_table(tasks, namespaces=args.all_namespaces),
    )


def _task_cancel(client: Client, args: argparse.Namespace) -> None:
    filtered = bool(args.tag or args.name_prefix or args.state is not None)
    if filtered and args.task_ids:
        raise UsageError("give task ids or filters (--tag, --name-prefix, --state), not both")
    if not filtered and not args.task_ids:
        raise UsageError("give task ids, or filters: --tag KEY=VALUE, --name-prefix P, --state STATE")
    ids = list(args.task_ids)
    if filtered:
        state = _parsing.parse_task_state(args.state, "--state")
        tags = _flags.parse_pairs(args.tag, "--tag")
        matching = [
            t
            for t in client.list_tasks(state=state or None, tags=tags, name_prefix=args.name_prefix)
            if t.state != common_pb2.TASK_CANCELLED
        ]
        ids = [t.task_id for t in matching]
        if ids:
            names = ", ".join(f"{t.task_id} ({t.spec.name})" for t in matching[:5])
            more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
            _confirm(args, f"cancel {len(ids)} task(s): {names}{more}")
    result = client.cancel_tasks(ids)
    cancelled = list(result.results.values())
    if cancelled or args.output == "json" or filtered:
        _emit(args, [_render.task_to_json(t) for t in cancelled], lambda: _tables.task_table(cancelled))
    _report_bulk(result)


def _task_delete(client: Client, args: argparse.Namespace) -> None:
    filtered = bool(args.tag or args.name_prefix or args.state is not None)
    if filtered and args.task_ids:
        raise UsageError("give task ids or filters (--tag, --name-prefix, --state), not both")
    if not filtered and not args.task_ids:
        raise UsageError("give task ids, or filters: --tag KEY=VALUE, --name-prefix P, --state STATE")
    ids = list(dict.fromkeys(args.task_ids))
    names: dict[str, str] = {}
    if filtered:
        state = _parsing.parse_task_state(args.state, "--state")
        tags = _flags.parse_pairs(args.tag, "--tag")
        for t in client.list_tasks(state=state or None, tags=tags, name_prefix=args.name_prefix):
            ids.append(t.task_id)
            names[t.task_id] = t.spec.name
    if ids:
        shown = ", ".join(f"{i} ({names[i]})" if i in names else i for i in ids[:5])
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        force = ", terminating running executions" if args.force else ""
        _confirm(
            args,
            f"delete {len(ids)} task(s) with their history{force}: {shown}{more} (this cannot be undone)",
        )
    result = client.delete_tasks(ids, force=args.force)
    deleted = list(result.results.values())
    doc = [
        {
            "task": _render.task_to_json(r.task),
            "executions_deleted": r.executions_deleted,
            "cleanup_pending": r.cleanup_pending,
        }
        for r in deleted
    ]

    def text() -> str:
        lines = [
            f"deleted {r.task.task_id} ({r.task.spec.name}): {r.executions_deleted} execution(s)"
            + (", the rest of its history in the next retention steps" if r.cleanup_pending else "")
            for r in deleted
        ]
        return "\n".join(lines) if lines else "nothing deleted"

    if deleted or args.output == "json" or filtered:
        _emit(args, doc, text)
    _report_bulk(result)


def _report_bulk(result: _requests.BulkResult[Any]) -> None:
    """One `error:` line per failed id and per id not tried; raise the worst exit code, if any."""
    for item, exc in result.errors.items():
        _error(f"{item}: {exc}")
    for item in result.skipped:
        _error(f"{item}: not tried: the cluster is unreachable")
    codes = [exit_code_for(e) for e in result.errors.values()]
    if result.skipped:
        codes.append(EXIT_UNAVAILABLE)
    if codes:
        raise _Reported(max(codes))


def _confirm(args: argparse.Namespace, action: str) -> None:
    """Ask whether to do `action` on a terminal (on stderr, so that stdout stays one document) unless
    --yes; with no terminal, --yes is required (exit 2). Anything but y/yes aborts (exit 1)."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{action}: confirmation needed, but stdin is not a terminal: pass --yes")
    sys.stderr.write(f"{action}? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        _error("aborted: nothing was changed")
        raise _Reported(EXIT_SERVER)


class _Reported(Exception):
    """Errors already printed, one per item; carries the exit code of the worst of them."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _executions(client: Client, args: argparse.Namespace) -> None:
    limit = _limit(args.limit)
    state = _parsing.parse_execution_state(args.state, "--state")
    page_size = min(limit, _requests.MAX_PAGE_SIZE) if limit else 100
    executions = list(_take(client.list_executions(args.task_id, state=state, page_size=page_size), limit))
    _emit(
        args, [_render.execution_to_json(e) for e in executions], lambda: _tables.execution_table(executions)
    )


def _execution_get(client: Client, args: argparse.Namespace) -> None:
    execution = client.get_execution(args.execution_id)
    _emit(args, _render.execution_to_json(execution), lambda: _tables.execution_detail(execution))


def _logs(client: Client, args: argparse.Namespace) -> None:
    """Raw bytes to stdout (stderr output to our stderr with --stream both), or one JSON document."""
    if args.follow:
        pages = client.follow_execution_logs(args.execution_id, attempt=args.attempt)
    else:
        pages = iter([client.get_execution_logs(args.execution_id, attempt=args.attempt, max_bytes=4 << 20)])
    if args.output == "json":
        out, err, attempt, truncated = b"", b"", 0, False
        for page in pages:
            out, err, attempt = out + page.stdout, err + page.stderr, page.attempt
            truncated = truncated or page.truncated
        doc = {
            "execution_id": args.execution_id,
            "attempt": attempt,
            "stdout": out.decode("utf-8", "replace"),
            "stderr": err.decode("utf-8", "replace"),
            "truncated": truncated,
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    for page in pages:
        if args.stream in ("both", "stdout") and page.stdout:
            sys.stdout.buffer.write(page.stdout)
            sys.stdout.flush()
        if args.stream in ("both", "stderr") and page.stderr:
            target = sys.stderr if args.stream == "both" else sys.stdout
            target.buffer.write(page.stderr)
            target.flush()
        if page.truncated and page.finished:
            print("(output truncated: the stored log is capped)", file=sys.stderr)


def _execution_cancel(client: Client, args: argparse.Namespace) -> None:
    result = client.cancel_executions(args.execution_ids, args.reason)
    cancelled = list(result.results.values())
    if cancelled or args.output == "json":
        _emit(
            args,
            [_render.execution_to_json(e) for e in cancelled],
            lambda: _tables.execution_table(cancelled),
        )
    _report_bulk(result)


def _dlq_list(client: Client, args: argparse.Namespace) -> None:
    limit = _limit(args.limit)
    page_size = min(limit, _requests.MAX_PAGE_SIZE) if limit else 100
    every = args.all_namespaces
    items = list(_take(client.list_dead_letters(args.task, page_size=page_size, all_namespaces=every), limit))
    _emit(
        args,
        [_render.dead_letter_to_json(d) for d in items],
        lambda: _tables.dead_letter_table(items, namespaces=every),
    )


def _dlq_show(client: Client, args: argparse.Namespace) -> None:
    dead = client.get_dead_letter(args.execution_id)
    execution: common_pb2.Execution | None
    try:
        execution = client.get_execution(args.execution_id)
    except NotFound:  # the execution's history may have been trimmed: the dead letter stands alone
        execution = None
    doc = _render.dead_letter_to_json(dead)
    doc["execution"] = _render.execution_to_json(execution) if execution is not None else None
    _emit(args, doc, lambda: _tables.dead_letter_detail(dead, execution))


def _dlq_selection(args: argparse.Namespace) -> None:
    if args.execution_ids and args.task:
        raise UsageError("give EXECUTION_IDs or --task ID, not both")
    if not args.execution_ids and not args.task:
        raise UsageError("give EXECUTION_IDs or --task ID")
    _flags.non_negative(args.limit, "--limit")


def _dlq_redrive(client: Client, args: argparse.Namespace) -> None:
    _dlq_selection(args)
    executions = client.redrive_dead_letters(args.execution_ids, args.task, args.limit)
    _emit(
        args,
        [_render.execution_to_json(e) for e in executions],
        lambda: _tables.execution_table(executions) if executions else "nothing redriven",
    )


def _dlq_purge(client: Client, args: argparse.Namespace) -> None:
    _dlq_selection(args)
    before = _when(args.before, "--before")
    what = (
        f"{len(args.execution_ids)} dead letter(s): {', '.join(args.execution_ids)}"
        if args.execution_ids
        else f"the dead letters of task {args.task}"
    )
    if before is not None:
        what += f" dead before {_render.format_instant(before)}"
    if args.limit:
        what += f" (at most {args.limit})"
    _confirm(args, f"purge {what} (this cannot be undone)")
    purged = client.purge_dead_letters(args.execution_ids, args.task, before, args.limit)
    _emit(args, {"purged": purged}, lambda: f"purged {purged} dead letter(s)")


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
    _emit(args, _calendars.calendar_to_json(calendar), lambda: _tables.calendar_detail(calendar))


def _calendar_get(client: Client, args: argparse.Namespace) -> None:
    calendar = client.get_calendar(args.name)
    _emit(args, _calendars.calendar_to_json(calendar), lambda: _tables.calendar_detail(calendar))


def _calendar_list(client: Client, args: argparse.Namespace) -> None:
    every = args.all_namespaces
    calendars = client.list_calendars(all_namespaces=every)
    _emit(
        args,
        [_calendars.calendar_to_json(c) for c in calendars],
        lambda: _tables.calendar_table(calendars, namespaces=every),
    )


def _calendar_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_calendar(args.name)
    _emit(args, {"name": args.name, "deleted": True}, lambda: f"deleted calendar {args.name}")


def _cluster_status(client: Client, args: argparse.Namespace) -> None:
    status = client.cluster_status()
    _emit(args, _render.status_to_json(status), lambda: _tables.status_detail(status))


# -------------------------------------------------------------------------------------- argument helpers


def _when(text: str | None, flag: str) -> int | None:
    """An RFC 3339 instant, "+DURATION" from now, or "now"; in Unix ms."""
    if text is None:
        return None
    return _parsing.parse_when(text, flag)


def _limit(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {value}")
    return value


def _take(items: Iterator[_T], limit: int | None) -> Iterator[_T]:
    return items if limit is None else islice(items, limit)
