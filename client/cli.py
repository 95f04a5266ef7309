"""`schedctl`: the command line of Cronraft: tasks (create, update, pause, resume, trigger, backfill,
explain, preview, cancel), calendars, executions, cluster status.

Output is a table (default) or one JSON document (`--output json`, format in docs/cli.md). Errors print
`error: <message>` on stderr, never a traceback, and set the exit code: 0 ok, 1 a server-side error
(not found, failed precondition, ...), 2 usage or invalid argument (also INVALID_ARGUMENT from the
server), 3 cluster unavailable after retries (or deadline exceeded).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, NoReturn, TypeVar

from cronraft.client import _common, preview_cli
from cronraft.client.sdk import Client
from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotLeader,
    OutcomeUnknown,
    Unavailable,
)
from cronraft.proto.v1 import cluster_pb2, common_pb2, scheduler_pb2

__all__ = ["EXIT_OK", "EXIT_SERVER", "EXIT_UNAVAILABLE", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

_T = TypeVar("_T")


class UsageError(Exception):
    """Bad command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing and exiting, so that `main` owns the output."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


def exit_code_for(error: CronraftError) -> int:
    """The exit code of an error of the SDK."""
    if isinstance(error, InvalidArgument):
        return EXIT_USAGE
    if isinstance(error, Unavailable | DeadlineExceeded | OutcomeUnknown | NotLeader):
        return EXIT_UNAVAILABLE
    return EXIT_SERVER


# ---------------------------------------------------------------------------------------------- parser


def _common_options(with_timeout: bool) -> _Parser:
    # Repeated on every sub-command (default SUPPRESS: the top-level value stands unless given again), so
    # that `schedctl task list --output json` works as well as `schedctl --output json task list`.
    parent = _Parser(add_help=False)
    parent.add_argument("--server", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parent.add_argument(
        "--output", "-o", choices=["table", "json"], default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    if with_timeout:
        parent.add_argument(
            "--timeout", dest="rpc_timeout", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parent


def build_parser() -> _Parser:
    """The argparse tree of schedctl (docs/cli.md is its reference)."""
    parser = _Parser(
        prog="schedctl",
        description="Manage tasks of a Cronraft cluster.",
        epilog="Exit codes: 0 ok, 1 server-side error, 2 usage or invalid argument, 3 cluster unavailable.",
    )
    parser.add_argument(
        "--server",
        default=None,
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"servers to contact (default: $CRONRAFT_SERVER, else {_common.DEFAULT_SERVER})",
    )
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table", help="output format")
    parser.add_argument(
        "--timeout",
        dest="rpc_timeout",
        default="10s",
        metavar="DURATION",
        help="bound on each command's calls, retries included (e.g. 10s; a bare number is seconds)",
    )
    opts = _common_options(with_timeout=True)
    create_opts = _common_options(with_timeout=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    task = commands.add_parser("task", help="create, change, inspect and cancel tasks")
    task_commands = task.add_subparsers(dest="task_command", metavar="SUBCOMMAND", required=True)

    create = task_commands.add_parser(
        "create",
        parents=[create_opts],
        help="create a task",
        usage="schedctl task create --name NAME (--cron EXPR [--tz ZONE] | --at WHEN | --every DURATION "
        "[--anchor WHEN] | --delay DURATION [--stop-on-failure]) [options] -- ARGV...",
        description="Create a task. After `--`: the command's argv (run without a shell), or with --shell "
        "one shell string run by /bin/sh -c.",
    )
    _spec_arguments(create, update=False)
    create.set_defaults(handler=_task_create)

    update = task_commands.add_parser(
        "update",
        parents=[create_opts],
        help="change a task (only the given flags change)",
        usage="schedctl task update ID [any flag of task create] [-- ARGV...]",
        description="Read the task, change what the flags say, and update it if nobody changed it "
        "meanwhile. A schedule kind flag replaces the schedule's kind (the window, jitter, DST and calendar "
        "settings stay unless given); --tz alone changes the zone of a cron task. `--` ARGV replaces the "
        "payload. Effective from the next nominal time: never retroactive.",
    )
    update.add_argument("task_id", metavar="ID")
    _spec_arguments(update, update=True)
    update.set_defaults(handler=_task_update)

    get = task_commands.add_parser("get", parents=[opts], help="show a task")
    get.add_argument("task_id", metavar="ID")
    get.set_defaults(handler=_task_get)

    lst = task_commands.add_parser("list", parents=[opts], help="list tasks")
    lst.add_argument("--state", help="scheduled | paused | completed | cancelled")
    lst.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="filter (repeatable)")
    lst.add_argument("--name-prefix", default="", metavar="P", help="filter on the name's start")
    lst.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N tasks")
    lst.set_defaults(handler=_task_list)

    cancel = task_commands.add_parser("cancel", parents=[opts], help="cancel tasks")
    cancel.add_argument("task_ids", nargs="+", metavar="ID")
    cancel.set_defaults(handler=_task_cancel)

    pause = task_commands.add_parser("pause", parents=[opts], help="pause a task (no fire until resumed)")
    pause.add_argument("task_id", metavar="ID")
    pause.add_argument("--note", default="", metavar="TEXT", help="why it is paused (shown by get/explain)")
    pause.set_defaults(handler=_task_pause)

    resume = task_commands.add_parser("resume", parents=[opts], help="resume a paused task")
    resume.add_argument("task_id", metavar="ID")
    resume.add_argument(
        "--replay-missed",
        action="store_true",
        help="fire the nominal times of the paused period (by the misfire policy); default: skip them",
    )
    resume.set_defaults(handler=_task_resume)

    trigger = task_commands.add_parser("trigger", parents=[opts], help="fire a task now")
    trigger.add_argument("task_id", metavar="ID")
    trigger.set_defaults(handler=_task_trigger)

    backfill = task_commands.add_parser(
        "backfill", parents=[opts], help="fire the nominal times of a past time range now"
    )
    backfill.add_argument("task_id", metavar="ID")
    backfill.add_argument("--from", dest="from_", required=True, metavar="WHEN", help="first instant")
    backfill.add_argument("--to", required=True, metavar="WHEN", help="last instant (inclusive)")
    backfill.add_argument(
        "--max", type=int, default=0, metavar="N", help="fire at most N times (default 100, at most 1000)"
    )
    backfill.set_defaults(handler=_task_backfill)

    explain = task_commands.add_parser(
        "explain", parents=[opts], help="why did (or didn't) a task run: its fire ledger"
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

    preview = task_commands.add_parser("preview", parents=[opts], help="the next fires of a stored task")
    preview.add_argument("task_id", metavar="ID")
    preview.add_argument("--from", dest="from_", metavar="WHEN", help="start instant (default: now)")
    preview.add_argument("--count", type=int, default=10, metavar="N", help="how many fires (default 10)")
    preview.set_defaults(handler=_task_preview)

    calendar = commands.add_parser("calendar", help="put, get, list, delete calendars")
    calendar_commands = calendar.add_subparsers(dest="calendar_command", metavar="SUBCOMMAND", required=True)
    put = calendar_commands.add_parser(
        "put",
        parents=[opts],
        help="create or replace a calendar",
        usage="schedctl calendar put NAME [--tz ZONE] [--description TEXT] [rule flags...] "
        "[--include NAME]... | schedctl calendar put NAME --file CAL.json",
        description="Create or replace the calendar NAME. Its excluded times are the union of its rules and "
        "of the calendars it includes. Dates and times of day are read in --tz (default UTC).",
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
    cal_get = calendar_commands.add_parser("get", parents=[opts], help="show a calendar")
    cal_get.add_argument("name", metavar="NAME")
    cal_get.set_defaults(handler=_calendar_get)
    cal_list = calendar_commands.add_parser("list", parents=[opts], help="list calendars")
    cal_list.set_defaults(handler=_calendar_list)
    cal_delete = calendar_commands.add_parser("delete", parents=[opts], help="delete a calendar")
    cal_delete.add_argument("name", metavar="NAME")
    cal_delete.set_defaults(handler=_calendar_delete)

    executions = commands.add_parser("executions", parents=[opts], help="list the executions of a task")
    executions.add_argument("task_id", metavar="TASK_ID")
    executions.add_argument(
        "--state", help="pending | buffered | running | succeeded | failed | timed-out | cancelled | lost"
    )
    executions.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N executions")
    executions.set_defaults(handler=_executions)

    execution = commands.add_parser("execution", help="show an execution")
    execution_commands = execution.add_subparsers(
        dest="execution_command", metavar="SUBCOMMAND", required=True
    )
    execution_get = execution_commands.add_parser(
        "get", parents=[opts], help="show an execution and its output"
    )
    execution_get.add_argument("execution_id", metavar="ID")
    execution_get.set_defaults(handler=_execution_get)
    execution_cancel = execution_commands.add_parser("cancel", parents=[opts], help="cancel executions")
    execution_cancel.add_argument("execution_ids", nargs="+", metavar="ID")
    execution_cancel.add_argument("--reason", default="", metavar="TEXT", help="recorded with the cancel")
    execution_cancel.set_defaults(handler=_execution_cancel)

    preview_cli.add_preview_parser(commands)  # `schedule preview`: offline, owned by preview_cli

    cluster = commands.add_parser("cluster", help="cluster introspection")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    status = cluster_commands.add_parser("status", parents=[opts], help="show the cluster's status")
    status.set_defaults(handler=_cluster_status)
    return parser


def _spec_arguments(parser: _Parser, *, update: bool) -> None:
    # The flags of `task create`, shared by `task update` where every one is optional and defaults to
    # None ("unchanged"); `_task_create` applies the documented defaults.
    parser.add_argument("--name", required=not update, help="task name")
    _common.add_schedule_arguments(parser, required=not update)
    parser.add_argument("--queue", help="worker queue (default: default)")
    parser.add_argument("--timeout", dest="task_timeout", metavar="DURATION", help="execution timeout")
    parser.add_argument("--guarantee", help="at-least-once (default) | exactly-once | at-most-once")
    parser.add_argument("--priority", help="high | medium (default) | low")
    parser.add_argument("--max-attempts", type=int, metavar="N", help="attempts per execution")
    parser.add_argument(
        "--misfire", metavar="POLICY", help="missed times: skip | fire-once | fire-all (default)"
    )
    parser.add_argument(
        "--catchup-window", metavar="DURATION", help="missed times older than this never fire (default 60s)"
    )
    parser.add_argument("--max-catchup", type=int, metavar="N", help="fire-all fires at most N missed times")
    parser.add_argument(
        "--overlap",
        metavar="POLICY",
        help="a fire while the previous run is on: skip | buffer-one | buffer-all | cancel-other | "
        "terminate-other | allow-all (default)",
    )
    tag_help = "set a tag (repeatable)" if update else "a tag (repeatable)"
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help=tag_help)
    if update:
        parser.add_argument(
            "--remove-tag", action="append", default=[], metavar="KEY", help="remove a tag (repeatable)"
        )
    parser.add_argument("--shell", action="store_true", help="run the one argument after -- with /bin/sh -c")
    parser.add_argument("--request-id", default=None, help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    """Run schedctl with `argv` (default: sys.argv[1:]); returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the payload of `task create`, never an option of schedctl.
    after_dash: list[str] | None = None
    if "--" in args_list:
        i = args_list.index("--")
        args_list, after_dash = args_list[:i], args_list[i + 1 :]
    try:
        args = build_parser().parse_args(args_list)
        if after_dash is not None:
            if args.handler not in (_task_create, _task_update):
                raise UsageError("arguments after -- are only taken by `task create` and `task update`")
            args.argv = [*args.argv, *after_dash]
        if args.handler is preview_cli.run_preview:  # offline: no server, no Client
            code: int = preview_cli.run_preview(args)
            return code
        timeout_s = _rpc_timeout(args.rpc_timeout)
        with Client(args.server, timeout_s=timeout_s) as client:
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
        seconds = _common.parse_duration(text, "--timeout") / 1000
    if not seconds > 0:
        raise InvalidArgument("--timeout", f"must be positive, got {text!r}")
    return seconds


def _emit(args: argparse.Namespace, doc: Any, table: Callable[[], str]) -> None:
    if args.output == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        text = table()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


# -------------------------------------------------------------------------------------------- handlers


def _task_create(client: Client, args: argparse.Namespace) -> None:
    schedule = _common.schedule_from_args(args)
    payload = _payload(args)
    assert payload is not None
    spec = _common.build_spec(args.name, schedule, payload, tags=_tags(args.tag))
    spec = _common.edit_spec(spec, _spec_changes(args))
    task = client.create_task_spec(spec, request_id=args.request_id)
    _emit(args, _common.task_to_json(task), lambda: _task_detail(task))


def _spec_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given on the command line (besides name, schedule, payload and tags)."""
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.queue is not None:
        changes["queue"] = args.queue
    if args.task_timeout is not None:
        changes["timeout_ms"] = _common.parse_duration(args.task_timeout, "--timeout")
    if args.guarantee is not None:
        changes["guarantee"] = _common.parse_guarantee(args.guarantee, "--guarantee")
    if args.priority is not None:
        changes["priority"] = _common.parse_priority(args.priority, "--priority")
    if args.max_attempts is not None:
        changes["max_attempts"] = _non_negative(args.max_attempts, "--max-attempts")
    if args.misfire is not None:
        changes["misfire"] = _common.parse_misfire(args.misfire, "--misfire")
    if args.catchup_window is not None:
        changes["catchup_window"] = _common.parse_duration(args.catchup_window, "--catchup-window")
    if args.max_catchup is not None:
        changes["max_catchup"] = _non_negative(args.max_catchup, "--max-catchup")
    if args.overlap is not None:
        changes["overlap"] = _common.parse_overlap(args.overlap, "--overlap")
    return changes


def _payload(args: argparse.Namespace, *, required: bool = True) -> common_pb2.Payload | None:
    """The payload after `--` (None when optional and absent)."""
    if args.shell:
        if len(args.argv) != 1:
            raise UsageError(
                f"--shell takes exactly one argument after --, the script (quote it); got {len(args.argv)}"
            )
        return _common.shell(args.argv[0])
    if not args.argv:
        if required:
            raise UsageError("missing command: put its argv after --, e.g. -- echo hello")
        return None
    return _common.command(*args.argv)


def _task_update(client: Client, args: argparse.Namespace) -> None:
    task = client.get_task(args.task_id)
    changes = _spec_changes(args)
    changes["schedule"] = _common.schedule_from_args(args, task.spec.schedule)
    payload = _payload(args, required=False)
    if payload is not None:
        changes["payload"] = payload
    tags = dict(task.spec.tags)
    tags.update(_tags(args.tag))
    for key in args.remove_tag:
        tags.pop(key, None)
    changes["tags"] = tags
    spec = _common.edit_spec(task.spec, changes)
    if spec == task.spec:
        raise UsageError("nothing to change: give at least one flag of `task create`, or -- ARGV")
    try:
        updated = client.update_task(
            args.task_id, spec, expected_version=task.version, request_id=args.request_id
        )
    except FailedPrecondition as exc:
        if "version" in str(exc).lower():
            raise FailedPrecondition(f"the task changed meanwhile; retry ({exc})") from None
        raise
    _emit(args, _common.task_to_json(updated), lambda: _task_detail(updated))


def _task_pause(client: Client, args: argparse.Namespace) -> None:
    task = client.pause_task(args.task_id, args.note)
    _emit(args, _common.task_to_json(task), lambda: _task_detail(task))


def _task_resume(client: Client, args: argparse.Namespace) -> None:
    task = client.resume_task(args.task_id, args.replay_missed)
    _emit(args, _common.task_to_json(task), lambda: _task_detail(task))


def _task_trigger(client: Client, args: argparse.Namespace) -> None:
    execution = client.trigger_task(args.task_id)
    _emit(args, _common.execution_to_json(execution), lambda: _execution_detail(execution))


def _task_backfill(client: Client, args: argparse.Namespace) -> None:
    from_ms = _when(args.from_, "--from")
    to_ms = _when(args.to, "--to")
    assert from_ms is not None and to_ms is not None
    if to_ms < from_ms:
        raise InvalidArgument("--to", "must not be before --from")
    executions = client.backfill_task(args.task_id, from_ms, to_ms, _non_negative(args.max, "--max"))
    _emit(args, [_common.execution_to_json(e) for e in executions], lambda: _execution_table(executions))


def _task_explain(client: Client, args: argparse.Namespace) -> None:
    limit = _limit(args.limit)
    assert limit is not None
    response = client.explain_task(args.task_id, _when(args.from_, "--from"), _when(args.to, "--to"), limit)
    _emit(args, _common.explain_to_json(response), lambda: _explain_text(response))


def _task_preview(client: Client, args: argparse.Namespace) -> None:
    if args.count < 1:
        raise InvalidArgument("--count", f"must be at least 1, got {args.count}")
    fires = client.preview_task(args.task_id, _when(args.from_, "--from"), args.count)
    _emit(args, [_common.preview_fire_to_json(f) for f in fires], lambda: _preview_table(fires))


def _task_get(client: Client, args: argparse.Namespace) -> None:
    task = client.get_task(args.task_id)
    _emit(args, _common.task_to_json(task), lambda: _task_detail(task))


def _task_list(client: Client, args: argparse.Namespace) -> None:
    limit = _limit(args.limit)
    state = _common.parse_task_state(args.state, "--state")
    page_size = min(limit, _common.MAX_PAGE_SIZE) if limit else 100
    tasks = list(
        _take(
            client.list_tasks(
                state=state, tags=_tags(args.tag), name_prefix=args.name_prefix, page_size=page_size
            ),
            limit,
        )
    )
    _emit(args, [_common.task_to_json(t) for t in tasks], lambda: _task_table(tasks))


def _task_cancel(client: Client, args: argparse.Namespace) -> None:
    cancelled: list[common_pb2.Task] = []
    failures: list[CronraftError] = []
    for task_id in args.task_ids:
        try:
            cancelled.append(client.cancel_task(task_id))
        except CronraftError as exc:
            _error(f"{task_id}: {exc}")
            failures.append(exc)
            if exit_code_for(exc) == EXIT_UNAVAILABLE:
                break  # the cluster is unreachable: do not wait a full timeout per remaining id
    if cancelled or args.output == "json":
        _emit(args, [_common.task_to_json(t) for t in cancelled], lambda: _task_table(cancelled))
    if failures:
        raise _Reported(max(exit_code_for(f) for f in failures))


class _Reported(Exception):
    """Errors already printed, one per item; carries the exit code of the worst of them."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _executions(client: Client, args: argparse.Namespace) -> None:
    limit = _limit(args.limit)
    state = _common.parse_execution_state(args.state, "--state")
    page_size = min(limit, _common.MAX_PAGE_SIZE) if limit else 100
    executions = list(_take(client.list_executions(args.task_id, state=state, page_size=page_size), limit))
    _emit(args, [_common.execution_to_json(e) for e in executions], lambda: _execution_table(executions))


def _execution_get(client: Client, args: argparse.Namespace) -> None:
    execution = client.get_execution(args.execution_id)
    _emit(args, _common.execution_to_json(execution), lambda: _execution_detail(execution))


def _execution_cancel(client: Client, args: argparse.Namespace) -> None:
    cancelled: list[common_pb2.Execution] = []
    failures: list[CronraftError] = []
    for execution_id in args.execution_ids:
        try:
            cancelled.append(client.cancel_execution(execution_id, args.reason))
        except CronraftError as exc:
            _error(f"{execution_id}: {exc}")
            failures.append(exc)
            if exit_code_for(exc) == EXIT_UNAVAILABLE:
                break
    if cancelled or args.output == "json":
        _emit(args, [_common.execution_to_json(e) for e in cancelled], lambda: _execution_table(cancelled))
    if failures:
        raise _Reported(max(exit_code_for(f) for f in failures))


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
        return _common.calendar_from_json(doc, args.name)
    rules: list[common_pb2.CalendarRule] = []
    if args.date:
        dates = [_common.check_date(d, "--date") for d in args.date]
        rules.append(common_pb2.CalendarRule(dates=common_pb2.DateList(dates=dates)))
    rules.extend(_common.holidays_rule(h, "--holidays") for h in args.holidays)
    if args.weekdays is not None:
        days = _common.parse_weekdays(args.weekdays, "--weekdays")
        rules.append(common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=days)))
    rules.extend(_common.date_range_rule(r, "--date-range") for r in args.date_range)
    rules.extend(_common.time_of_day_rule(r, "--time-of-day") for r in args.time_of_day)
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
    _emit(args, _common.calendar_to_json(calendar), lambda: _calendar_detail(calendar))


def _calendar_get(client: Client, args: argparse.Namespace) -> None:
    calendar = client.get_calendar(args.name)
    _emit(args, _common.calendar_to_json(calendar), lambda: _calendar_detail(calendar))


def _calendar_list(client: Client, args: argparse.Namespace) -> None:
    calendars = client.list_calendars()
    _emit(args, [_common.calendar_to_json(c) for c in calendars], lambda: _calendar_table(calendars))


def _calendar_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_calendar(args.name)
    _emit(args, {"name": args.name, "deleted": True}, lambda: f"deleted calendar {args.name}")


def _cluster_status(client: Client, args: argparse.Namespace) -> None:
    status = client.cluster_status()
    _emit(args, _common.status_to_json(status), lambda: _status_detail(status))


# -------------------------------------------------------------------------------------- argument helpers


def _when(text: str | None, flag: str) -> int | None:
    """An RFC 3339 instant, "+DURATION" from now, or "now"; in Unix ms."""
    if text is None:
        return None
    return _common.parse_when(text, flag)


def _tags(pairs: Iterable[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument("--tag", f"expected KEY=VALUE, got {pair!r}")
        tags[key] = value
    return tags


def _non_negative(value: int, flag: str) -> int:
    if value < 0:
        raise InvalidArgument(flag, f"must not be negative, got {value}")
    return value


def _limit(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {value}")
    return value


def _take(items: Iterator[_T], limit: int | None) -> Iterator[_T]:
    return items if limit is None else islice(items, limit)


# ----------------------------------------------------------------------------------------------- tables


def _time(ms: int) -> str:
    """RFC 3339 UTC to the second for tables; "-" for none."""
    return _common.format_instant(ms)[:19] + "Z" if ms else "-"


def format_duration(ms: int) -> str:
    """Compact duration: 90000 -> "1m30s", 1500 -> "1s500ms", 0 -> "0s"."""
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)


def _schedule_text(schedule: common_pb2.Schedule) -> str:
    kind = schedule.WhichOneof("kind")
    if kind == "cron":
        return f"cron {schedule.cron.expression} ({schedule.cron.time_zone or 'UTC'})"
    if kind == "at":
        return f"at {_time(schedule.at.at_ms)}"
    if kind == "fixed_rate":
        anchor = f" from {_time(schedule.fixed_rate.anchor_ms)}" if schedule.fixed_rate.anchor_ms else ""
        return f"every {format_duration(schedule.fixed_rate.period_ms)}{anchor}"
    if kind == "fixed_delay":
        stop = ", stop on failure" if schedule.fixed_delay.stop_on_failure else ""
        return f"delay {format_duration(schedule.fixed_delay.delay_ms)}{stop}"
    return "-"


def _window_text(schedule: common_pb2.Schedule) -> str:
    parts = []
    if schedule.start_at_ms:
        parts.append(f"from {_time(schedule.start_at_ms)}")
    if schedule.end_at_ms:
        parts.append(f"until {_time(schedule.end_at_ms)}")
    if schedule.max_runs:
        parts.append(f"at most {schedule.max_runs} runs")
    return ", ".join(parts) or "-"


def _timing_text(schedule: common_pb2.Schedule) -> str:
    parts = []
    if schedule.jitter_ms:
        parts.append(f"jitter up to {format_duration(schedule.jitter_ms)}")
    parts.append(f"dst gap {_common.policy_name(common_pb2.DstGapPolicy, schedule.dst_gap, 'DST_GAP_')}")
    parts.append(f"dst fold {_common.policy_name(common_pb2.DstFoldPolicy, schedule.dst_fold, 'DST_FOLD_')}")
    return ", ".join(parts)


def _calendars_text(schedule: common_pb2.Schedule) -> str:
    if not schedule.calendars:
        return "-"
    action = _common.policy_name(common_pb2.CalendarAction, schedule.calendar_action, "CALENDAR_")
    return f"{', '.join(schedule.calendars)} ({action})"


def _policies_text(spec: common_pb2.TaskSpec) -> str:
    misfire = _common.policy_name(common_pb2.MisfirePolicy, spec.misfire, "MISFIRE_")
    overlap = _common.policy_name(common_pb2.OverlapPolicy, spec.overlap, "OVERLAP_")
    window = format_duration(spec.catchup_window_ms) if spec.catchup_window_ms else "default"
    cap = str(spec.max_catchup) if spec.max_catchup else "default"
    return f"misfire {misfire} (catch-up window {window}, max {cap}), overlap {overlap}"


def _payload_text(payload: common_pb2.Payload) -> str:
    kind = payload.WhichOneof("kind")
    if kind == "command":
        return shlex.join(payload.command.argv)
    if kind == "shell":
        return f"sh -c {shlex.quote(payload.shell.script)}"
    return "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {v}" for k, v in pairs)


def _enum(wrapper: Any, number: int, prefix: str = "") -> str:
    return _common.enum_name(wrapper, number, prefix)


def _task_table(tasks: Sequence[common_pb2.Task]) -> str:
    rows = [
        [
            t.task_id,
            t.spec.name,
            _enum(common_pb2.TaskState, t.state, "TASK_"),
            _schedule_text(t.spec.schedule),
            _time(t.next_fire_ms),
            str(t.fire_count),
        ]
        for t in tasks
    ]
    return _table(["TASK_ID", "NAME", "STATE", "SCHEDULE", "NEXT_FIRE", "FIRES"], rows)


def _task_detail(task: common_pb2.Task) -> str:
    spec = task.spec
    return _fields(
        [
            ("task_id", task.task_id),
            ("name", spec.name),
            ("state", _enum(common_pb2.TaskState, task.state, "TASK_")),
            ("schedule", _schedule_text(spec.schedule)),
            ("window", _window_text(spec.schedule)),
            ("timing", _timing_text(spec.schedule)),
            ("calendars", _calendars_text(spec.schedule)),
            ("policies", _policies_text(spec)),
            ("payload", _payload_text(spec.payload)),
            ("tags", ", ".join(f"{k}={v}" for k, v in sorted(spec.tags.items())) or "-"),
            ("queue", spec.queue or "default"),
            ("timeout", format_duration(spec.timeout_ms) if spec.timeout_ms else "cluster default"),
            ("guarantee", _enum(common_pb2.DeliveryGuarantee, spec.guarantee)),
            ("priority", _enum(common_pb2.Priority, spec.priority)),
            ("max_attempts", str(spec.max_attempts) if spec.max_attempts else "default"),
            ("next_fire", _time(task.next_fire_ms)),
            ("next_due", _time(task.next_due_ms)),
            ("last_fired", _time(task.last_fired_nominal_ms)),
            ("fire_count", str(task.fire_count)),
            ("created_at", _time(task.created_at_ms)),
            ("updated_at", _time(task.updated_at_ms)),
            ("version", str(task.version)),
            *_pause_rows(task),
        ]
    )


def _pause_rows(task: common_pb2.Task) -> list[tuple[str, str]]:
    if task.state != common_pb2.TASK_PAUSED and not task.pause_note:
        return []
    return [("paused_at", _time(task.paused_at_ms)), ("pause_note", task.pause_note or "-")]


def _explain_text(response: scheduler_pb2.ExplainTaskResponse) -> str:
    head = [
        ("state", _enum(common_pb2.TaskState, response.state, "TASK_")),
        ("next_fire", _time(response.next_fire_ms)),
    ]
    if response.note:
        head.append(("pause_note", response.note))
    head.append(("records", str(len(response.records))))
    rows = [
        [
            _time(r.nominal_time_ms),
            _enum(common_pb2.FireOutcome, r.outcome),
            format_duration(r.late_ms) if r.execution_id else "-",
            r.execution_id or "-",
            r.reason or "-",
        ]
        for r in response.records
    ]
    table = _table(["NOMINAL_TIME (UTC)", "OUTCOME", "LATE", "EXECUTION_ID", "REASON"], rows)
    return _fields(head) + "\n\n" + table


def _preview_table(fires: Sequence[scheduler_pb2.PreviewFire]) -> str:
    rows = [
        [
            _time(f.nominal_time_ms),
            _time(f.actual_ms or f.nominal_time_ms),
            f.local_time or "-",
            "; ".join(f.notes) or "-",
        ]
        for f in fires
    ]
    return _table(["NOMINAL_TIME (UTC)", "DUE (UTC)", "LOCAL_TIME", "NOTES"], rows)


def _rule_text(rule: common_pb2.CalendarRule) -> str:
    kind = rule.WhichOneof("kind")
    if kind == "dates":
        return "dates " + ", ".join(rule.dates.dates)
    if kind == "holidays":
        sub = f"-{rule.holidays.subdivision}" if rule.holidays.subdivision else ""
        return f"holidays {rule.holidays.country}{sub}"
    if kind == "weekdays":
        return "weekdays " + ",".join(str(d) for d in rule.weekdays.days)
    if kind == "date_range":
        return f"date range {getattr(rule.date_range, 'from')}..{rule.date_range.to}"
    if kind == "time_of_day":
        return f"time of day {rule.time_of_day.start}-{rule.time_of_day.end}"
    if kind == "cron":
        return f"cron {rule.cron}"
    return "-"


def _calendar_detail(calendar: common_pb2.Calendar) -> str:
    pairs = [
        ("name", calendar.name),
        ("time_zone", calendar.time_zone or "UTC"),
        ("description", calendar.description or "-"),
        ("include", ", ".join(calendar.include) or "-"),
        ("version", str(calendar.version)),
        ("updated_at", _time(calendar.updated_at_ms)),
    ]
    rules = [f"  {_rule_text(r)}" for r in calendar.exclude] or ["  (none)"]
    return _fields(pairs) + "\nexclude:\n" + "\n".join(rules)


def _calendar_table(calendars: Sequence[common_pb2.Calendar]) -> str:
    rows = [
        [
            c.name,
            c.time_zone or "UTC",
            str(len(c.exclude)),
            ", ".join(c.include) or "-",
            str(c.version),
            c.description or "-",
        ]
        for c in calendars
    ]
    return _table(["NAME", "TIME_ZONE", "RULES", "INCLUDE", "VERSION", "DESCRIPTION"], rows)


def _execution_table(executions: Sequence[common_pb2.Execution]) -> str:
    rows = [
        [
            e.execution_id,
            _time(e.nominal_time_ms),
            _enum(common_pb2.ExecutionState, e.state, "EXECUTION_"),
            str(e.attempt),
            e.worker_id or "-",
            str(e.exit_code) if e.finished_at_ms else "-",
        ]
        for e in executions
    ]
    return _table(["EXECUTION_ID", "NOMINAL_TIME", "STATE", "ATTEMPT", "WORKER", "EXIT_CODE"], rows)


def _execution_detail(e: common_pb2.Execution) -> str:
    token = f"{e.token.term}.{e.token.index}" if e.HasField("token") else "-"
    head = _fields(
        [
            ("execution_id", e.execution_id),
            ("task_id", e.task_id),
            ("state", _enum(common_pb2.ExecutionState, e.state, "EXECUTION_")),
            ("nominal_time", _time(e.nominal_time_ms)),
            ("fired_at", _time(e.fired_at_ms)),
            ("attempt", str(e.attempt)),
            ("worker_id", e.worker_id or "-"),
            ("token", token),
            ("leased_at", _time(e.leased_at_ms)),
            ("started_at", _time(e.started_at_ms)),
            ("finished_at", _time(e.finished_at_ms)),
            ("completed_at", _time(e.completed_at_ms)),
            ("exit_code", str(e.exit_code) if e.finished_at_ms else "-"),
            ("error", e.error or "-"),
            ("guarantee", _enum(common_pb2.DeliveryGuarantee, e.guarantee)),
            ("priority", _enum(common_pb2.Priority, e.priority)),
        ]
    )
    parts = [head]
    for label, data in (("stdout", e.stdout_tail), ("stderr", e.stderr_tail)):
        text = _common.tail_text(data)
        parts.append(f"--- {label} (tail) ---\n{text.rstrip(chr(10)) if text else '(empty)'}")
    return "\n".join(parts)


def _status_detail(status: cluster_pb2.StatusResponse) -> str:
    head = _fields(
        [
            ("node_id", status.node_id),
            ("is_leader", "yes" if status.is_leader else "no"),
            ("leader", f"{status.leader_id or '-'} ({status.leader_address or 'address unknown'})"),
            ("ready", "yes" if status.ready else "no"),
            ("term", str(status.term)),
            ("epoch_term", str(status.epoch_term)),
            ("commit_index", str(status.commit_index)),
            ("applied_index", str(status.applied_index)),
            ("connected_workers", str(status.connected_workers)),
        ]
    )
    rows = [
        [
            m.node_id,
            m.grpc_address or "-",
            m.raft_address or "-",
            "yes" if m.connected else "no",
            "yes" if m.node_id == status.leader_id else "",
        ]
        for m in status.members
    ]
    return head + "\n\n" + _table(["NODE_ID", "GRPC_ADDRESS", "RAFT_ADDRESS", "CONNECTED", "LEADER"], rows)


if __name__ == "__main__":
    sys.exit(main())
