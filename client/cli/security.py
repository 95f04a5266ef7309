"""`schedctl tls init` and `schedctl token create`: offline commands (no server) that make the files a
secured cluster needs. docs/security.md shows them in use; `make cluster` runs both on first start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cronraft import timefmt
from cronraft.client._pki import Leaf, init_pki, nodes_from_configs, parse_node_flag
from cronraft.errors import InvalidArgument
from cronraft.tokenfile import ALL_NAMESPACES, ROLES, add_token, parse_role

__all__ = ["add_security_commands"]


def add_security_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register `tls init` and `token create` under schedctl's sub-command parser. Their handlers take
    only `args` (marked `offline`: main runs them without a Client) and return the exit code."""
    tls = commands.add_parser("tls", help="development certificates (schedctl tls init DIR)")
    tls_commands = tls.add_subparsers(dest="tls_command", metavar="SUBCOMMAND", required=True)
    init = tls_commands.add_parser(
        "init",
        parents=parents,
        help="write a CA, a certificate per node, a client and a worker certificate (development only)",
        description="Write DIR/ca.pem, DIR/NODE.pem per node (its addresses as SANs), DIR/CLIENT.pem and "
        "DIR/WORKER.pem, each with a -key.pem (mode 0600). Nodes come from --config files (every member "
        "listed, its gRPC host as SAN) and/or --node ID=HOST[,HOST...]. Production: bring your own PKI "
        "(docs/security.md).",
        epilog="Examples:\n"
        "  schedctl tls init data/three-node/tls --config cluster-configs/three-node/node1.toml --worker w1\n"
        "  schedctl tls init /tmp/pki --node n1=10.0.0.1,n1.example.com --node n2=10.0.0.2",
    )
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--config", action="append", default=[], metavar="FILE", help="a schedd config file")
    init.add_argument("--node", action="append", default=[], metavar="ID=HOST[,HOST...]", help="a node")
    init.add_argument("--client", default="client", metavar="NAME", help="client certificate name (client)")
    init.add_argument("--worker", default="worker", metavar="NAME", help="worker certificate name (worker)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(handler=_tls_init, offline=True)

    token = commands.add_parser("token", help="bearer tokens (schedctl token create)")
    token_commands = token.add_subparsers(dest="token_command", metavar="SUBCOMMAND", required=True)
    create = token_commands.add_parser(
        "create",
        parents=parents,
        help="add a token to a token file and print it (once)",
        description="Append a new token for PRINCIPAL with the given roles to the token file (its SHA-256 "
        "only; created 0600 if absent) and print the clear token on stdout: it is shown this once. Nodes "
        "reload the file within a second, or on SIGHUP.",
        epilog="Examples:\n"
        "  schedctl token create --principal alice --role operator --file data/three-node/tokens.toml\n"
        "  schedctl token create --principal w1 --role worker --expires 90d --file tokens.toml\n"
        "  schedctl token create --principal wa --role worker@team-a --file tokens.toml  # team-a's only",
    )
    create.add_argument("--principal", required=True, metavar="NAME", help="who the token stands for")
    create.add_argument(
        "--role",
        action="append",
        required=True,
        metavar="ROLE[@NAMESPACE]",
        help=f"a role ({', '.join(ROLES)}) in every namespace, or @NAMESPACE in that one only (repeatable)",
    )
    create.add_argument(
        "--expires", metavar="DURATION", help="valid for this long (e.g. 90d); default: no expiry"
    )
    create.add_argument("--file", required=True, metavar="TOKENS", help="the token file ([auth] token_file)")
    create.set_defaults(handler=_token_create, offline=True)


def _tls_init(args: argparse.Namespace) -> int:
    leaves = nodes_from_configs(args.config) + [parse_node_flag(n) for n in args.node]
    if not leaves:
        raise InvalidArgument("--node", "give the nodes: --config FILE or --node ID=HOST[,HOST...]")
    leaves += [Leaf(args.client), Leaf(args.worker)]
    written = init_pki(Path(args.directory), leaves, force=args.force)
    if getattr(args, "output", "table") == "json":
        sys.stdout.write(json.dumps({"files": [str(p) for p in written]}, indent=2) + "\n")
    else:
        for p in written:
            print(p)
    print(
        "development certificates only: keep ca-key.pem away from the nodes (docs/security.md)",
        file=sys.stderr,
    )
    return 0


def _token_create(args: argparse.Namespace) -> int:
    now_ms = int(time.time() * 1000)
    expires_ms = None
    if args.expires:
        expires_ms = now_ms + timefmt.parse_duration(args.expires, "--expires")
    token = add_token(Path(args.file), args.principal, list(args.role), expires_ms=expires_ms, now_ms=now_ms)
    if getattr(args, "output", "table") == "json":
        roles: dict[str, list[str]] = {}
        for text in args.role:
            namespace, role = parse_role(text)
            roles.setdefault(namespace, []).append(role)
        doc = {
            "principal": args.principal,
            "roles": roles.get(ALL_NAMESPACES, []) if set(roles) == {ALL_NAMESPACES} else roles,
            "expires_ms": expires_ms,
            "token": token,
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print(token)
    print(f"token for {args.principal} added to {args.file}; it is not shown again", file=sys.stderr)
    return 0
