"""`schedctl`: the command line of Cronraft (create, inspect and cancel tasks; read executions; status).

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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, NoReturn, TypeVar

from cronraft.client import _common
from cronraft.client.sdk import Client
from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    InvalidArgument,
    NotLeader,
    OutcomeUnknown,
    Unavailable,
)
from cronraft.proto.v1 import cluster_pb2, common_pb2

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

    task = commands.add_parser("task", help="create, get, list, cancel tasks")
    task_commands = task.add_subparsers(dest="task_command", metavar="SUBCOMMAND", required=True)

    create = task_commands.add_parser(
        "create",
        parents=[create_opts],
        help="create a task",
        usage="schedctl task create --name NAME (--cron EXPR [--tz ZONE] | --at WHEN | --every DURATION "
        "[--anchor WHEN]) [options] -- ARGV...",
        description="Create a task. After `--`: the command's argv (run without a shell), or with --shell "
        "one shell string run by /bin/sh -c.",
    )
    create.add_argument("--name", required=True, help="task name")
    kind = create.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", metavar="EXPR", help="cron expression: 5 fields, or 6 with seconds first")
    kind.add_argument("--at", metavar="WHEN", help="one-time: RFC 3339 instant, or +DURATION from now")
    kind.add_argument("--every", metavar="DURATION", help="fixed rate, e.g. 30s, 5m, 1h30m")
    create.add_argument("--tz", metavar="ZONE", help="IANA time zone of --cron (default UTC)")
    create.add_argument("--anchor", metavar="WHEN", help="anchor of --every (default: the Unix epoch)")
    create.add_argument("--start-at", metavar="WHEN", help="no fire before this instant")
    create.add_argument("--end-at", metavar="WHEN", help="no fire after this instant")
    create.add_argument(
        "--max-runs", type=int, default=0, metavar="N", help="stop after N fires (0: no limit)"
    )
    create.add_argument("--queue", default="", help="worker queue (default: default)")
    create.add_argument("--timeout", dest="task_timeout", metavar="DURATION", help="execution timeout")
    create.add_argument(
        "--guarantee", default="at-least-once", help="at-least-once | exactly-once | at-most-once"
    )
    create.add_argument("--priority", default="medium", help="high | medium | low")
    create.add_argument("--max-attempts", type=int, default=0, metavar="N", help="attempts per execution")
    create.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag (repeatable)")
    create.add_argument("--shell", action="store_true", help="run the one argument after -- with /bin/sh -c")
    create.add_argument("--request-id", default=None, help=argparse.SUPPRESS)
    create.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    create.set_defaults(handler=_task_create)

    get = task_commands.add_parser("get", parents=[opts], help="show a task")
    get.add_argument("task_id", metavar="ID")
    get.set_defaults(handler=_task_get)

    lst = task_commands.add_parser("list", parents=[opts], help="list tasks")
    lst.add_argument("--state", help="scheduled | completed | cancelled")
    lst.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="filter (repeatable)")
    lst.add_argument("--name-prefix", default="", metavar="P", help="filter on the name's start")
    lst.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N tasks")
    lst.set_defaults(handler=_task_list)

    cancel = task_commands.add_parser("cancel", parents=[opts], help="cancel tasks")
    cancel.add_argument("task_ids", nargs="+", metavar="ID")
    cancel.set_defaults(handler=_task_cancel)

    executions = commands.add_parser("executions", parents=[opts], help="list the executions of a task")
    executions.add_argument("task_id", metavar="TASK_ID")
    executions.add_argument(
        "--state", help="pending | running | succeeded | failed | timed-out | cancelled | lost"
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

    cluster = commands.add_parser("cluster", help="cluster introspection")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    status = cluster_commands.add_parser("status", parents=[opts], help="show the cluster's status")
    status.set_defaults(handler=_cluster_status)
    return parser


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
            if args.handler is not _task_create:
                raise UsageError("arguments after -- are only taken by `task create`")
            args.argv = [*args.argv, *after_dash]
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
    if args.tz is not None and args.cron is None:
        raise UsageError("--tz applies to --cron only")
    if args.anchor is not None and args.every is None:
        raise UsageError("--anchor applies to --every only")
    window: dict[str, Any] = {
        "start_at": _when(args.start_at, "--start-at"),
        "end_at": _when(args.end_at, "--end-at"),
        "max_runs": _non_negative(args.max_runs, "--max-runs"),
    }
    if args.cron is not None:
        # Passed through as typed: the cluster validates expressions and zones (INVALID_ARGUMENT, exit 2).
        schedule = _common.cron(args.cron, args.tz or "UTC", **window)
    elif args.at is not None:
        when = _when(args.at, "--at")
        assert when is not None
        schedule = _common.at(when, **window)
    else:
        period = _common.parse_duration(args.every, "--every")
        if period <= 0:
            raise InvalidArgument("--every", "must be positive")
        schedule = _common.every(period, _when(args.anchor, "--anchor"), **window)
    if args.shell:
        if len(args.argv) != 1:
            raise UsageError(
                f"--shell takes exactly one argument after --, the script (quote it); got {len(args.argv)}"
            )
        payload = _common.shell(args.argv[0])
    else:
        if not args.argv:
            raise UsageError("missing command: put its argv after --, e.g. -- echo hello")
        payload = _common.command(*args.argv)
    timeout_ms = _common.parse_duration(args.task_timeout, "--timeout") if args.task_timeout else 0
    spec = _common.build_spec(
        args.name,
        schedule,
        payload,
        tags=_tags(args.tag),
        queue=args.queue,
        timeout_ms=timeout_ms,
        guarantee=_common.parse_guarantee(args.guarantee, "--guarantee"),
        priority=_common.parse_priority(args.priority, "--priority"),
        max_attempts=_non_negative(args.max_attempts, "--max-attempts"),
    )
    task = client.create_task_spec(spec, request_id=args.request_id)
    _emit(args, _common.task_to_json(task), lambda: _task_detail(task))


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


def _cluster_status(client: Client, args: argparse.Namespace) -> None:
    status = client.cluster_status()
    _emit(args, _common.status_to_json(status), lambda: _status_detail(status))


# -------------------------------------------------------------------------------------- argument helpers


def _when(text: str | None, flag: str) -> int | None:
    """An RFC 3339 instant, or "+DURATION" from now; in Unix ms."""
    if text is None:
        return None
    if text.startswith("+"):
        return int(time.time() * 1000) + _common.parse_duration(text[1:], flag)
    return _common.parse_instant(text, flag)


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
        return f"delay {format_duration(schedule.fixed_delay.delay_ms)}"
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
            ("payload", _payload_text(spec.payload)),
            ("tags", ", ".join(f"{k}={v}" for k, v in sorted(spec.tags.items())) or "-"),
            ("queue", spec.queue or "default"),
            ("timeout", format_duration(spec.timeout_ms) if spec.timeout_ms else "cluster default"),
            ("guarantee", _enum(common_pb2.DeliveryGuarantee, spec.guarantee)),
            ("priority", _enum(common_pb2.Priority, spec.priority)),
            ("max_attempts", str(spec.max_attempts) if spec.max_attempts else "default"),
            ("next_fire", _time(task.next_fire_ms)),
            ("last_fired", _time(task.last_fired_nominal_ms)),
            ("fire_count", str(task.fire_count)),
            ("created_at", _time(task.created_at_ms)),
            ("updated_at", _time(task.updated_at_ms)),
            ("version", str(task.version)),
        ]
    )


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
