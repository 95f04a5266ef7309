"""`schedctl`: the command line of Cronraft: tasks (create, update, pause, resume, trigger, backfill,
explain, preview, cancel, by id or by filter, bulk import), calendars, executions, dead letters, cluster
status, the audit trail, and the offline `schedule preview`, `tls init` and `token create`.

This module holds `main` and `parse_args`; `parser.build_parser` composes the argparse tree from one
module per subject (`tasks`, `imports`, `calendars`, `executions`, `dlq`, `cluster`, `audit`, `preview`,
`security`), each holding its sub-parsers and its handlers. The task flags live in `spec_flags` and
`schedule_flags` (read by `spec_args`), what every command shares in `common` and `options`, the table
output in `_tables`, the JSON in `_render`.

Output is a table (default) or one JSON document (`--output json`, format in docs/cli.md). Errors print
`error: <message>` on stderr, never a traceback, and set the exit code: 0 ok, 1 a server-side error
(not found, failed precondition, ...), 2 usage or invalid argument (also INVALID_ARGUMENT from the
server), 3 cluster unavailable after retries (or deadline exceeded), 4 not authenticated or not allowed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cronraft import timefmt
from cronraft.client._transport import transport_from_args
from cronraft.client.cli import preview, schedule_flags, task_names, tasks
from cronraft.client.cli.common import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Reported,
    UsageError,
    exit_code_for,
    print_error,
)
from cronraft.client.cli.options import GLOBAL_OPTIONS_TITLE, NAMESPACE_ENV
from cronraft.client.cli.parser import build_parser
from cronraft.client.sdk import Client
from cronraft.errors import CronraftError, InvalidArgument

__all__ = [
    "EXIT_AUTH",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "GLOBAL_OPTIONS_TITLE",
    "NAMESPACE_ENV",
    "UsageError",
    "build_parser",
    "exit_code_for",
    "main",
    "parse_args",
]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """schedctl's command line as `main` reads it (without running it): everything after the first
    `--` is the payload of `task create`/`update`, never an option; `--every -5m` is the option's own
    error, not argparse's. Raises UsageError (also for --help: SystemExit)."""
    args_list = list(argv)
    after_dash: list[str] | None = None
    if "--" in args_list:
        i = args_list.index("--")
        args_list, after_dash = args_list[:i], args_list[i + 1 :]
    args = build_parser().parse_args(schedule_flags.join_dash_values(args_list))
    if after_dash is not None:
        if not tasks.takes_payload_argv(args):
            raise UsageError("arguments after -- are only taken by `task create` and `task update`")
        args.argv = [*args.argv, *after_dash]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run schedctl with `argv` (default: sys.argv[1:]); returns the exit code."""
    args: argparse.Namespace | None = None  # None until parsed: an error before has no names to explain
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.handler is preview.run_preview:  # offline: no server, no Client
            code: int = preview.run_preview(args)
            return code
        if getattr(args, "offline", False):  # tls init, token create: files only, no Client
            offline: int = args.handler(args)
            return offline
        timeout_s = _rpc_timeout(args.rpc_timeout)
        namespace = getattr(args, "namespace", None) or os.environ.get(NAMESPACE_ENV) or "default"
        with Client(
            args.server, timeout_s=timeout_s, transport=transport_from_args(args), namespace=namespace
        ) as client:
            task_names.resolve(client, args)  # `task get nightly`: a task's name where its id goes
            args.handler(client, args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except Reported as exc:
        return exc.code
    except CronraftError as exc:
        shown = task_names.explain(args, exc)
        print_error(str(shown))
        return exit_code_for(shown)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _rpc_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = timefmt.parse_duration(text, "--rpc-timeout") / 1000
    if not seconds > 0:
        raise InvalidArgument("--rpc-timeout", f"must be positive, got {text!r}")
    return seconds
