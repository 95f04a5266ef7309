"""The building blocks of schedctl's argparse tree: the parser that raises instead of exiting, the global
options (accepted before the command and after it), and the help pieces every command uses."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from cronraft.client import _argnames, _routing
from cronraft.client._transport import add_transport_arguments
from cronraft.client.cli.common import UsageError

__all__ = [
    "GLOBAL_OPTIONS_TITLE",
    "NAMESPACE_ENV",
    "Parser",
    "add_global_options",
    "all_namespaces",
    "examples",
    "global_parent",
]

GLOBAL_OPTIONS_TITLE = "global options (also accepted before the command)"
_SERVER_HELP = f"servers to contact (default: $CRONRAFT_SERVER, else {_routing.DEFAULT_SERVER})"
_RPC_TIMEOUT_HELP = "bound on each command's calls, retries included (e.g. 10s; a bare number is seconds)"
NAMESPACE_ENV = "CRONRAFT_NAMESPACE"
_NAMESPACE_HELP = (
    f"the namespace of creates, lists, calendars and bulk commands (default: ${NAMESPACE_ENV}, else default);"
    " commands by id act in the object's own"
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing and exiting, so that `main` owns the output;
    its help wraps paragraphs but keeps the Examples as written (`_argnames.HelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _argnames.HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


def add_global_options(parser: argparse.ArgumentParser, *, subcommand: bool, timeout_alias: bool) -> None:
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


def global_parent(*, timeout_alias: bool = True) -> Parser:
    """The global options as a parent parser, for `parents=[...]` of every command."""
    parent = Parser(add_help=False)
    add_global_options(parent, subcommand=True, timeout_alias=timeout_alias)
    return parent


def all_namespaces(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help=f"{what} of every namespace, with a NAMESPACE column (needs the reader role in every namespace)",
    )


def examples(*lines: str) -> str:
    """An epilog: the Examples section of a command's help (tests/unit/test_documented_commands.py
    parses every line of it)."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)
