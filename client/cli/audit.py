"""`schedctl audit list`: the audit trail (docs/security.md, "Audit trail"; docs/cli.md).

`parser.build_parser` hooks it in with `add_audit_parser(commands, opts)`; the handler takes a Client like
the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cronraft.client import _audit, _parsing
from cronraft.client._render import format_instant
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import audit_pb2

__all__ = ["add_audit_parser", "run_list"]

_USAGE = (
    "schedctl audit list [--principal NAME] [--method RPC] [--target ID] [--since WHEN] [--until WHEN]\n"
    "       [--limit N] [--output table|json]"
)
_EPILOG = """Examples:
  schedctl audit list --since=-1h
  schedctl audit list --principal alice --method DeleteTask --limit 20
  schedctl audit list --target 01JF3Z6V8W2B1X9K4M7N5P0Q3R -o json"""


def add_audit_parser(commands: Any, opts: argparse.ArgumentParser) -> None:
    """Add `audit list` to schedctl's sub-command action."""
    audit = commands.add_parser("audit", help="the audit trail: who changed what (admin role)")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    lst = audit_commands.add_parser(
        "list",
        parents=[opts],
        help="list audit records, oldest first",
        usage=_USAGE,
        description="List the audit trail: one record per write a client made (principal, peer, RPC, "
        "target ids, request id, outcome, the leader's time and the Raft index), oldest first. Read from "
        "the node reached; every node holds the same trail. Needs the admin role.",
        epilog=_EPILOG,
    )
    lst.add_argument("--principal", default="", metavar="NAME", help="only this principal's records")
    lst.add_argument("--method", default="", metavar="RPC", help="only this RPC, e.g. CreateTask")
    lst.add_argument("--target", default="", metavar="ID", help="only records naming this id or calendar")
    lst.add_argument("--since", metavar="WHEN", help="stamped at or after WHEN (RFC 3339, -DURATION, now)")
    lst.add_argument("--until", metavar="WHEN", help="stamped before WHEN")
    lst.add_argument("--limit", type=int, default=100, metavar="N", help="at most N records (default 100)")
    lst.set_defaults(handler=run_list)


def run_list(client: Any, args: argparse.Namespace) -> None:
    if args.limit < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {args.limit}")
    since = None if args.since is None else _parsing.parse_when(args.since, "--since")
    until = None if args.until is None else _parsing.parse_when(args.until, "--until")
    records = client.list_audit(
        principal=args.principal,
        method=args.method,
        since=since,
        until=until,
        target_id=args.target,
        limit=args.limit,
    )
    if args.output == "json":
        doc = [_audit.record_to_json(r) for r in records]
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(table(records) + "\n")


def table(records: list[audit_pb2.AuditRecord]) -> str:
    if not records:
        return "no audit records"
    headers = ["TIME", "PRINCIPAL", "METHOD", "TARGETS", "OUTCOME", "INDEX", "PEER", "REQUEST"]
    rows = [
        [
            format_instant(r.time_ms),
            r.principal,
            r.method or "-",
            (",".join(r.target_ids) or "-") + (f" (+{r.targets_omitted})" if r.targets_omitted else ""),
            r.outcome,
            f"{r.raft_index}.{r.position}",
            r.peer or "-",
            r.request_id or "-",
        ]
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    )
