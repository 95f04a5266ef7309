"""`schedctl task ...`: create, update, get, list, explain, preview, cancel, delete (by id or by filter),
pause, resume, trigger, backfill; their argparse sub-parsers and their handlers. `task import` is
`imports.py`; the task flags of create and update are `spec_flags.py` and `schedule_flags.py`, read by
`spec_args.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cronraft.client import _argnames, _cron_text, _parsing, _render, _requests, _specs, _tables
from cronraft.client.cli import schedule_flags, spec_args, spec_flags
from cronraft.client.cli.common import (
    UsageError,
    confirm,
    emit,
    limit_arg,
    non_negative,
    parse_pairs,
    report_bulk,
    take,
    when_arg,
)
from cronraft.client.cli.options import Parser, all_namespaces, examples, global_parent
from cronraft.client.sdk import Client
from cronraft.errors import FailedPrecondition, InvalidArgument
from cronraft.proto.v1 import common_pb2

__all__ = ["add_task_parsers", "takes_payload_argv"]

_CREATE_USAGE = (
    "schedctl task create --name NAME (--cron EXPR | --at WHEN | --every DURATION | --delay DURATION)\n"
    "       [options] (-- ARGV... | --shell -- SCRIPT | --http-url URL | --handler NAME)"
)


def add_task_parsers(task_commands: Any, opts: Parser) -> None:
    """Add the task commands (but `import`) to the `task` sub-command action, in the order of the help."""
    _task_write_parsers(task_commands)
    _task_read_parsers(task_commands, opts)
    _task_bulk_parsers(task_commands, opts)
    _task_fire_parsers(task_commands, opts)


def takes_payload_argv(args: argparse.Namespace) -> bool:
    """Whether the parsed command takes a payload's argv after `--` (`task create`, `task update`)."""
    return args.handler in (_task_create, _task_update)


def _task_write_parsers(task_commands: Any) -> None:
    # `--timeout` after create/update is the execution timeout (its old meaning): no RPC alias here.
    create_opts = global_parent(timeout_alias=False)
    create = task_commands.add_parser(
        "create",
        parents=[create_opts],
        help="create a task",
        usage=_CREATE_USAGE,
        description="Create a task. The payload is exactly one of: after `--`, the command's argv (run "
        "without a shell), or with --shell one shell string run by /bin/sh -c; --http-url (an HTTP "
        "request); --handler (a function registered in the worker). The schedule is printed back in "
        "words on stderr before the task is stored.",
        epilog=examples(
            'schedctl task create --name hello --cron "0 9 * * MON-FRI" --tz Europe/Paris -- echo hello',
            "schedctl task create --name once --at +10m -- /usr/local/bin/report",
            "schedctl task create --name tick --every 5m --exec-timeout 1m --retry-attempts 3 -- ./poll.sh",
            "schedctl task create --name nightly --cron '0 2 * * *' --shell -- 'make report | mail ops'",
            "schedctl task create --name ping --every 1m --http-url https://example.com/health \\",
            "    --http-header 'Authorization=Bearer xyz' --http-expect 200",
        ),
    )
    spec_flags.add_spec_arguments(create, update=False)
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
        epilog=examples(
            "schedctl task update t0001 --tz Asia/Tokyo --jitter 30s",
            "schedctl task update t0001 --tag team=data --clear-tag owner --clear-end-at",
            "schedctl task update t0001 --retry-attempts 5 --retry-max-backoff 10m",
            "schedctl task update t0001 --clear-retry --clear-notify -- /usr/local/bin/etl --v2",
        ),
    )
    update.add_argument("task_id", metavar="ID")
    spec_flags.add_spec_arguments(update, update=True)
    update.set_defaults(handler=_task_update)


def _task_read_parsers(task_commands: Any, opts: Parser) -> None:
    get = task_commands.add_parser(
        "get", parents=[opts], help="show a task", epilog=examples("schedctl task get t0001 -o json")
    )
    get.add_argument("task_id", metavar="ID")
    get.set_defaults(handler=_task_get)

    lst = task_commands.add_parser(
        "list",
        parents=[opts],
        help="list tasks",
        epilog=examples(
            "schedctl task list --tag team=ops --state scheduled",
            "schedctl task list --name-prefix nightly- --limit 20 -o json",
            "schedctl task list --last-outcome failed --last-outcome timed-out",
            "schedctl task list --kind cron --next-after now --next-before +1h",
        ),
    )
    lst.add_argument("--state", help="scheduled | paused | completed | cancelled")
    _tag_filter(lst)
    lst.add_argument("--name-prefix", default="", metavar="P", help="filter on the name's start (name order)")
    lst.add_argument("--kind", default="", help="schedule kind: cron | at | fixed_rate | fixed_delay")
    lst.add_argument(
        "--next-after",
        metavar="WHEN",
        help="next fire at or after WHEN (RFC 3339, +DURATION, now; soonest first)",
    )
    lst.add_argument("--next-before", metavar="WHEN", help="next fire before WHEN")
    lst.add_argument(
        "--last-outcome",
        action="append",
        default=[],
        metavar="STATE",
        help="its last execution ended so: succeeded | failed | timed-out | ... (repeatable: any of them)",
    )
    lst.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N tasks")
    all_namespaces(lst, "tasks")
    lst.set_defaults(handler=_task_list)

    explain = task_commands.add_parser(
        "explain",
        parents=[opts],
        help="why did (or didn't) a task run: its fire ledger",
        epilog=examples(
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
        epilog=examples("schedctl task preview t0001 --limit 5", "schedctl task preview t0001 --from +1d"),
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


def _task_bulk_parsers(task_commands: Any, opts: Parser) -> None:
    cancel = task_commands.add_parser(
        "cancel",
        parents=[opts],
        help="cancel tasks, by id or by filter",
        usage="schedctl task cancel ID...\n"
        "       schedctl task cancel [--tag KEY=VALUE]... [--name-prefix P] [--state STATE] [--yes]",
        description="Cancel tasks by id, or every task matching the filters (all must match; tasks "
        "already cancelled are left alone). By filter, the command lists the tasks, asks for confirmation "
        "on a terminal (or needs --yes), then cancels them one by one: it is not atomic.",
        epilog=examples("schedctl task cancel t0001 t0002", "schedctl task cancel --tag team=legacy --yes"),
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
        epilog=examples(
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


def _task_fire_parsers(task_commands: Any, opts: Parser) -> None:
    pause = task_commands.add_parser(
        "pause",
        parents=[opts],
        help="pause a task (no fire until resumed)",
        epilog=examples('schedctl task pause t0001 --note "db migration until Friday"'),
    )
    pause.add_argument("task_id", metavar="ID")
    pause.add_argument("--note", default="", metavar="TEXT", help="why it is paused (shown by get/explain)")
    pause.set_defaults(handler=_task_pause)

    resume = task_commands.add_parser(
        "resume",
        parents=[opts],
        help="resume a paused task",
        epilog=examples("schedctl task resume t0001", "schedctl task resume t0001 --replay-missed"),
    )
    resume.add_argument("task_id", metavar="ID")
    resume.add_argument(
        "--replay-missed",
        action="store_true",
        help="fire the nominal times of the paused period (by the misfire policy); default: skip them",
    )
    resume.set_defaults(handler=_task_resume)

    trigger = task_commands.add_parser(
        "trigger", parents=[opts], help="fire a task now", epilog=examples("schedctl task trigger t0001")
    )
    trigger.add_argument("task_id", metavar="ID")
    trigger.set_defaults(handler=_task_trigger)

    backfill = task_commands.add_parser(
        "backfill",
        parents=[opts],
        help="fire the nominal times of a past time range now",
        epilog=examples(
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
    schedule = schedule_flags.schedule_from_args(args, warnings=warnings)
    payload = spec_args.payload_from_args(args)
    assert payload is not None
    spec = _specs.build_spec(args.name, schedule, payload, tags=parse_pairs(args.tag, "--tag"))
    try:
        spec = _specs.edit_spec(spec, spec_args.spec_changes(args))
    except InvalidArgument as exc:
        raise spec_args.named_by_flag(exc) from None
    _echo_schedule(schedule, warnings)
    task = client.create_task_spec(spec, request_id=args.request_id)
    emit(args, _with_warnings(_render.task_to_json(task), warnings), lambda: _tables.task_detail(task))


def _task_update(client: Client, args: argparse.Namespace) -> None:
    task = client.get_task(args.task_id)
    changes = spec_args.spec_changes(args, task.spec)
    warnings: list[str] = []
    changes["schedule"] = schedule_flags.schedule_from_args(args, task.spec.schedule, warnings=warnings)
    payload = spec_args.payload_from_args(args, task.spec.payload, required=False)
    if payload is not None:
        changes["payload"] = payload
    tags = dict(task.spec.tags)
    tags.update(parse_pairs(args.tag, "--tag"))
    for key in args.remove_tag:  # --clear-tag
        tags.pop(key, None)
    changes["tags"] = tags
    try:
        spec = _specs.edit_spec(task.spec, changes)
    except InvalidArgument as exc:
        raise spec_args.named_by_flag(exc) from None
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
    emit(args, _with_warnings(_render.task_to_json(updated), warnings), lambda: _tables.task_detail(updated))


def _task_pause(client: Client, args: argparse.Namespace) -> None:
    task = client.pause_task(args.task_id, args.note)
    emit(args, _render.task_to_json(task), lambda: _tables.task_detail(task))


def _task_resume(client: Client, args: argparse.Namespace) -> None:
    task = client.resume_task(args.task_id, args.replay_missed)
    emit(args, _render.task_to_json(task), lambda: _tables.task_detail(task))


def _task_trigger(client: Client, args: argparse.Namespace) -> None:
    execution = client.trigger_task(args.task_id)
    emit(args, _render.execution_to_json(execution), lambda: _tables.execution_detail(execution))


def _task_backfill(client: Client, args: argparse.Namespace) -> None:
    from_ms = when_arg(args.from_, "--from")
    to_ms = when_arg(args.to, "--to")
    assert from_ms is not None and to_ms is not None
    if to_ms < from_ms:
        raise InvalidArgument("--to", "must not be before --from")
    executions = client.backfill_task(args.task_id, from_ms, to_ms, non_negative(args.limit, "--limit"))
    emit(
        args, [_render.execution_to_json(e) for e in executions], lambda: _tables.execution_table(executions)
    )


def _task_explain(client: Client, args: argparse.Namespace) -> None:
    limit = limit_arg(args.limit)
    assert limit is not None
    response = client.explain_task(
        args.task_id, when_arg(args.from_, "--from"), when_arg(args.to, "--to"), limit
    )
    emit(args, _render.explain_to_json(response), lambda: _tables.explain_text(response))


def _task_preview(client: Client, args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {args.limit}")
    fires = client.preview_task(args.task_id, when_arg(args.from_, "--from"), args.limit)
    emit(args, [_render.preview_fire_to_json(f) for f in fires], lambda: _tables.preview_table(fires))


def _task_get(client: Client, args: argparse.Namespace) -> None:
    task = client.get_task(args.task_id)
    emit(args, _render.task_to_json(task), lambda: _tables.task_detail(task))


def _task_list(client: Client, args: argparse.Namespace) -> None:
    limit = limit_arg(args.limit)
    state = _parsing.parse_task_state(args.state, "--state")
    page_size = min(limit, _requests.MAX_PAGE_SIZE) if limit else 100
    tasks = list(
        take(
            client.list_tasks(
                state=state,
                tags=parse_pairs(args.tag, "--tag"),
                name_prefix=args.name_prefix,
                page_size=page_size,
                all_namespaces=args.all_namespaces,
                kind=args.kind.replace("-", "_"),
                next_after=None
                if args.next_after is None
                else _parsing.parse_when(args.next_after, "--next-after"),
                next_before=(
                    None
                    if args.next_before is None
                    else _parsing.parse_when(args.next_before, "--next-before")
                ),
                last_outcomes=[
                    _parsing.parse_execution_state(s, "--last-outcome") for s in args.last_outcome
                ],
            ),
            limit,
        )
    )
    emit(
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
        tags = parse_pairs(args.tag, "--tag")
        matching = [
            t
            for t in client.list_tasks(state=state or None, tags=tags, name_prefix=args.name_prefix)
            if t.state != common_pb2.TASK_CANCELLED
        ]
        ids = [t.task_id for t in matching]
        if ids:
            names = ", ".join(f"{t.task_id} ({t.spec.name})" for t in matching[:5])
            more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
            confirm(args, f"cancel {len(ids)} task(s): {names}{more}")
    result = client.cancel_tasks(ids)
    cancelled = list(result.results.values())
    if cancelled or args.output == "json" or filtered:
        emit(args, [_render.task_to_json(t) for t in cancelled], lambda: _tables.task_table(cancelled))
    report_bulk(result)


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
        tags = parse_pairs(args.tag, "--tag")
        for t in client.list_tasks(state=state or None, tags=tags, name_prefix=args.name_prefix):
            ids.append(t.task_id)
            names[t.task_id] = t.spec.name
    if ids:
        shown = ", ".join(f"{i} ({names[i]})" if i in names else i for i in ids[:5])
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        force = ", terminating running executions" if args.force else ""
        confirm(
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
        emit(args, doc, text)
    report_bulk(result)
