"""`schedctl executions [TASK_ID]` (a task's, or a search across tasks), `execution get`, `execution
result`, `execution cancel` and `logs`: executions, their output and their result; the argparse
sub-parsers and the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cronraft.client import _argnames, _parsing, _render, _requests, _tables
from cronraft.client.cli.common import UsageError, emit, limit_arg, parse_pairs, report_bulk, take
from cronraft.client.cli.options import Parser, all_namespaces, examples
from cronraft.client.sdk import Client
from cronraft.errors import InvalidArgument

__all__ = ["add_execution_parsers", "when_arg"]


def add_execution_parsers(commands: Any, opts: Parser) -> None:
    """Add `executions`, `execution get|cancel` and `logs` to schedctl's sub-command action."""
    executions = commands.add_parser(
        "executions",
        parents=[opts],
        help="list a task's executions, or search executions across tasks",
        description="Executions newest first: of one task (TASK_ID or --task), or of every task of the "
        "namespace matching the filters (every filter given must match). --since/--until bound the fire "
        "time, or the end time with --completed (then only executions that ended).",
        epilog=examples(
            "schedctl executions t0001",
            "schedctl executions t0001 --state failed --limit 5",
            "schedctl executions --state failed --state timed-out --since 6h",
            "schedctl executions --worker w1 --tag team=ops --completed --since 2026-01-01T00:00:00Z",
        ),
    )
    executions.add_argument("task_id", nargs="?", default="", metavar="TASK_ID")
    executions.add_argument("--task", default="", metavar="ID", help="the executions of this task")
    executions.add_argument(
        "--state",
        action="append",
        default=[],
        help="pending | buffered | running | succeeded | failed | timed-out | cancelled | lost | expired "
        "(repeatable: any of them)",
    )
    executions.add_argument(
        "--since", metavar="WHEN", help="fired (or ended) at or after WHEN: RFC 3339, DURATION ago (6h), now"
    )
    executions.add_argument("--until", metavar="WHEN", help="fired (or ended) before WHEN")
    executions.add_argument(
        "--completed", action="store_true", help="--since/--until bound the end time: ended executions only"
    )
    executions.add_argument("--worker", default="", metavar="ID", help="ran (or runs) on this worker")
    executions.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_argnames.key_value("--tag"),
        metavar=_argnames.KEY_VALUE,
        help="its task has this tag (repeatable; all must match)",
    )
    executions.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N executions")
    all_namespaces(executions, "executions")
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
    execution_result = execution_commands.add_parser(
        "result",
        parents=[opts],
        help="print the result an execution handed back (raw bytes)",
        description="Print what the execution's last attempt wrote to $CRONRAFT_RESULT_FILE (or a "
        "handler's return value), byte for byte; nothing when none was kept.",
        epilog=examples("schedctl execution result e42 > report.csv"),
    )
    execution_result.add_argument("execution_id", metavar="ID")
    execution_result.set_defaults(handler=_execution_result)
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


def when_arg(text: str | None, flag: str) -> int | None:
    """A WHEN of the search and stats flags: what `parse_when` takes (RFC 3339, +/-DURATION, now), or a
    bare DURATION meaning that long ago (`--since 6h`)."""
    if text is None:
        return None
    s = text.strip()
    if s[:1].isdigit():
        try:
            return _parsing.parse_when("-" + s, flag)
        except InvalidArgument:
            pass  # not a duration: an instant
    return _parsing.parse_when(s, flag)


def _executions(client: Client, args: argparse.Namespace) -> None:
    if args.task_id and args.task and args.task_id != args.task:
        raise UsageError(f"two tasks given: {args.task_id} and --task {args.task}")
    limit = limit_arg(args.limit)
    states = [_parsing.parse_execution_state(s, "--state") for s in args.state]
    page_size = min(limit, _requests.MAX_PAGE_SIZE) if limit else 100
    found = client.search_executions(
        task_id=args.task_id or args.task,
        states=states,
        since=when_arg(args.since, "--since"),
        until=when_arg(args.until, "--until"),
        by_completed=args.completed,
        worker_id=args.worker,
        tags=parse_pairs(args.tag, "--tag"),
        all_namespaces=args.all_namespaces,
        page_size=page_size,
    )
    executions = list(take(found, limit))
    emit(
        args, [_render.execution_to_json(e) for e in executions], lambda: _tables.execution_table(executions)
    )


def _execution_result(client: Client, args: argparse.Namespace) -> None:
    """Raw bytes to stdout, as stored; with -o json, one document (the bytes as text, invalid UTF-8
    replaced, and base64)."""
    data = client.get_execution_result(args.execution_id)
    if args.output == "json":
        sys.stdout.write(json.dumps(_render.result_to_json(args.execution_id, data)) + "\n")
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


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
