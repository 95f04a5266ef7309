"""`schedctl executions TASK_ID`, `execution get`, `execution cancel` and `logs`: a task's executions
and their output; the argparse sub-parsers and the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cronraft.client import _parsing, _render, _requests, _tables
from cronraft.client.cli.common import emit, limit_arg, report_bulk, take
from cronraft.client.cli.options import Parser, examples
from cronraft.client.sdk import Client

__all__ = ["add_execution_parsers"]


def add_execution_parsers(commands: Any, opts: Parser) -> None:
    """Add `executions`, `execution get|cancel` and `logs` to schedctl's sub-command action."""
    executions = commands.add_parser(
        "executions",
        parents=[opts],
        help="list the executions of a task",
        epilog=examples("schedctl executions t0001", "schedctl executions t0001 --state failed --limit 5"),
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
        epilog=examples("schedctl execution get e42"),
    )
    execution_get.add_argument("execution_id", metavar="ID")
    execution_get.set_defaults(handler=_execution_get)
    execution_cancel = execution_commands.add_parser(
        "cancel",
        parents=[opts],
        help="cancel executions",
        epilog=examples('schedctl execution cancel e42 e43 --reason "bad input file"'),
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
        epilog=examples(
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


# -------------------------------------------------------------------------------------------- handlers


def _executions(client: Client, args: argparse.Namespace) -> None:
    limit = limit_arg(args.limit)
    state = _parsing.parse_execution_state(args.state, "--state")
    page_size = min(limit, _requests.MAX_PAGE_SIZE) if limit else 100
    executions = list(take(client.list_executions(args.task_id, state=state, page_size=page_size), limit))
    emit(
        args, [_render.execution_to_json(e) for e in executions], lambda: _tables.execution_table(executions)
    )


def _execution_get(client: Client, args: argparse.Namespace) -> None:
    execution = client.get_execution(args.execution_id)
    emit(args, _render.execution_to_json(execution), lambda: _tables.execution_detail(execution))


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
        emit(
            args,
            [_render.execution_to_json(e) for e in cancelled],
            lambda: _tables.execution_table(cancelled),
        )
    report_bulk(result)
