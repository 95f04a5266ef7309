"""schedctl's argparse tree (docs/cli.md is its reference): the top-level parser with its global options,
composed of the sub-parsers each subject's module adds, in the order `schedctl --help` lists them."""

from __future__ import annotations

from cronraft.client.cli import (
    audit,
    calendars,
    cluster,
    dlq,
    executions,
    imports,
    preview,
    security,
    stats,
    tasks,
)
from cronraft.client.cli.options import Parser, add_global_options, global_parent

__all__ = ["build_parser"]


def build_parser() -> Parser:
    """The argparse tree of schedctl (docs/cli.md is its reference)."""
    parser = Parser(
        prog="schedctl",
        description="Manage tasks of a Cronraft cluster.",
        epilog="Exit codes: 0 ok, 1 server-side error, 2 usage or invalid argument, 3 cluster unavailable, "
        "4 not authenticated or not allowed.",
    )
    add_global_options(parser, subcommand=False, timeout_alias=True)
    opts = global_parent()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    task = commands.add_parser("task", help="create, change, inspect and cancel tasks")
    task_commands = task.add_subparsers(dest="task_command", metavar="SUBCOMMAND", required=True)
    tasks.add_task_parsers(task_commands, opts)
    imports.add_import_parser(task_commands, opts).set_defaults(handler=imports.run_import)
    stats.add_task_stats_parser(task_commands, opts)  # task stats
    calendars.add_calendar_parser(commands, opts)
    executions.add_execution_parsers(commands, opts)
    dlq.add_dlq_parser(commands, opts)
    preview.add_preview_parser(commands)  # `schedule preview`: offline, no client
    cluster.add_cluster_parser(commands, opts)
    stats.add_cluster_stats_parser(commands, opts)  # stats
    security.add_security_commands(commands, [opts])  # tls init, token create (offline)
    audit.add_audit_parser(commands, opts)  # audit list
    return parser
