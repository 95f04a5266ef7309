"""`schedctl dlq list|show|redrive|purge`: dead letters; the argparse sub-parsers and the handlers."""

from __future__ import annotations

import argparse
from typing import Any

from cronraft.client import _render, _requests, _tables
from cronraft.client.cli.common import UsageError, confirm, emit, limit_arg, non_negative, take, when_arg
from cronraft.client.cli.options import Parser, all_namespaces, examples
from cronraft.client.sdk import Client
from cronraft.errors import NotFound
from cronraft.proto.v1 import common_pb2

__all__ = ["add_dlq_parser"]


def add_dlq_parser(commands: Any, opts: Parser) -> None:
    """Add `dlq list|show|redrive|purge` to schedctl's sub-command action."""
    dlq = commands.add_parser("dlq", help="dead letters: list, show, redrive, purge")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND", required=True)
    lst = dlq_commands.add_parser(
        "list", parents=[opts], help="list dead letters", epilog=examples("schedctl dlq list --task t0001")
    )
    lst.add_argument("--task", metavar="ID", help="only those of this task")
    lst.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N dead letters")
    all_namespaces(lst, "dead letters")
    lst.set_defaults(handler=_dlq_list)
    show = dlq_commands.add_parser(
        "show",
        parents=[opts],
        help="show a dead letter: reason, attempts, output tails",
        epilog=examples("schedctl dlq show e42"),
    )
    show.add_argument("execution_id", metavar="EXECUTION_ID")
    show.set_defaults(handler=_dlq_show)
    redrive = dlq_commands.add_parser(
        "redrive",
        parents=[opts],
        help="run dead letters again as new executions",
        usage="schedctl dlq redrive (EXECUTION_ID... | --task ID) [--limit N]",
        epilog=examples("schedctl dlq redrive e42 e43", "schedctl dlq redrive --task t0001 --limit 10"),
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
        epilog=examples(
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


# -------------------------------------------------------------------------------------------- handlers


def _dlq_list(client: Client, args: argparse.Namespace) -> None:
    limit = limit_arg(args.limit)
    page_size = min(limit, _requests.MAX_PAGE_SIZE) if limit else 100
    every = args.all_namespaces
    items = list(take(client.list_dead_letters(args.task, page_size=page_size, all_namespaces=every), limit))
    emit(
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
    emit(args, doc, lambda: _tables.dead_letter_detail(dead, execution))


def _dlq_selection(args: argparse.Namespace) -> None:
    if args.execution_ids and args.task:
        raise UsageError("give EXECUTION_IDs or --task ID, not both")
    if not args.execution_ids and not args.task:
        raise UsageError("give EXECUTION_IDs or --task ID")
    non_negative(args.limit, "--limit")


def _dlq_redrive(client: Client, args: argparse.Namespace) -> None:
    _dlq_selection(args)
    executions = client.redrive_dead_letters(args.execution_ids, args.task, args.limit)
    emit(
        args,
        [_render.execution_to_json(e) for e in executions],
        lambda: _tables.execution_table(executions) if executions else "nothing redriven",
    )


def _dlq_purge(client: Client, args: argparse.Namespace) -> None:
    _dlq_selection(args)
    before = when_arg(args.before, "--before")
    what = (
        f"{len(args.execution_ids)} dead letter(s): {', '.join(args.execution_ids)}"
        if args.execution_ids
        else f"the dead letters of task {args.task}"
    )
    if before is not None:
        what += f" dead before {_render.format_instant(before)}"
    if args.limit:
        what += f" (at most {args.limit})"
    confirm(args, f"purge {what} (this cannot be undone)")
    purged = client.purge_dead_letters(args.execution_ids, args.task, before, args.limit)
    emit(args, {"purged": purged}, lambda: f"purged {purged} dead letter(s)")
