"""`schedctl cluster status`: the status of the node reached (leader, term, indexes, workers, clock); the
sub-parser and the handler."""

from __future__ import annotations

import argparse
from typing import Any

from cronraft.client import _render, _tables
from cronraft.client.cli.common import emit
from cronraft.client.cli.options import Parser
from cronraft.client.sdk import Client

__all__ = ["add_cluster_parser"]


def add_cluster_parser(commands: Any, opts: Parser) -> None:
    """Add `cluster status` to schedctl's sub-command action."""
    cluster = commands.add_parser("cluster", help="cluster introspection")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    status = cluster_commands.add_parser("status", parents=[opts], help="show the cluster's status")
    status.set_defaults(handler=_cluster_status)


def _cluster_status(client: Client, args: argparse.Namespace) -> None:
    status = client.cluster_status()
    emit(args, _render.status_to_json(status), lambda: _tables.status_detail(status))
