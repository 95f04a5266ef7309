"""`schedctl cluster add-node` and `cluster remove-node` (docs/operations.md, "Membership changes"): begin
the change on the leader, then (unless --no-wait) follow it in `cluster status` until it is done. The
sub-parsers, the handlers and the change's JSON."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cronraft import timefmt
from cronraft.client.cli.common import EXIT_SERVER, Reported, emit, print_error
from cronraft.client.cli.options import Parser, examples
from cronraft.client.sdk import Client
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import membership_pb2

__all__ = ["add_membership_parsers", "membership_to_json"]

_POLL_S = 0.5
_KINDS = {membership_pb2.MembershipChange.ADD: "add", membership_pb2.MembershipChange.REMOVE: "remove"}


def add_membership_parsers(cluster_commands: Any, opts: Parser) -> None:
    """Add `cluster add-node` and `cluster remove-node` to `cluster`'s sub-command action."""
    add = cluster_commands.add_parser(
        "add-node",
        parents=[opts],
        help="add a member to the cluster",
        description=(
            "Add the member ID: start it first with `schedd --config FILE --join` (FILE lists the current "
            "members and itself) and an empty data directory; it catches up from the leader as a learner, "
            "then the leader adds it to the Raft configuration. One change at a time. Needs the admin role."
        ),
        epilog=examples(
            "schedctl cluster add-node node4 --grpc 10.0.0.4:50051 --raft 10.0.0.4:7001",
            "schedctl cluster add-node node4 --grpc 10.0.0.4:50051 --raft 10.0.0.4:7001 --no-wait",
        ),
    )
    add.add_argument("node_id", metavar="ID", help="the new member's id (its node.id)")
    add.add_argument(
        "--grpc", required=True, metavar="HOST:PORT", help="its gRPC address, as clients dial it"
    )
    add.add_argument(
        "--raft", required=True, metavar="HOST:PORT", help="its Raft address, as members dial it"
    )
    _wait_flags(add)
    add.set_defaults(handler=_add_node)
    remove = cluster_commands.add_parser(
        "remove-node",
        parents=[opts],
        help="remove a member from the cluster",
        description=(
            "Remove the member ID (dead or alive; the leader itself hands leadership over first), or cancel "
            "the addition of ID while it is in flight. One change at a time. Needs the admin role."
        ),
        epilog=examples(
            "schedctl cluster remove-node node2", "schedctl -o json cluster remove-node node2 --no-wait"
        ),
    )
    remove.add_argument("node_id", metavar="ID", help="the member's id")
    _wait_flags(remove)
    remove.set_defaults(handler=_remove_node)


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the change until it is done (default); --no-wait: return once it began (it goes on)",
    )
    p.add_argument(
        "--wait-timeout",
        default="10m",
        metavar="DURATION",
        help="how long to follow the change before giving up on it (it goes on; default 10m)",
    )


def _add_node(client: Client, args: argparse.Namespace) -> None:
    began = client.add_node(args.node_id, grpc_address=args.grpc, raft_address=args.raft)
    _follow(client, args, began)


def _remove_node(client: Client, args: argparse.Namespace) -> None:
    began = client.remove_node(args.node_id)
    _follow(client, args, began)


def _follow(client: Client, args: argparse.Namespace, began: membership_pb2.Membership) -> None:
    """Print the change that began; unless --no-wait, follow it in `cluster status` until done."""
    change = began.pending
    limit_s = timefmt.parse_duration(args.wait_timeout) / 1000
    if limit_s <= 0:
        raise InvalidArgument("--wait-timeout", "must be positive")
    _note(f"{_describe(change)}: began at log index {change.began_index}")
    final = began
    if args.wait:
        final = _wait_done(client, change, limit_s)
    emit(args, membership_to_json(final), lambda: _table(final))


def _wait_done(
    client: Client, change: membership_pb2.MembershipChange, limit_s: float
) -> membership_pb2.Membership:
    deadline = time.monotonic() + limit_s
    said = ""
    while True:
        st = client.cluster_status()
        current = st.membership_change
        if not st.HasField("membership_change") or current.began_index != change.began_index:
            done = membership_pb2.Membership(version=st.membership_version)
            done.members.extend(
                membership_pb2.ClusterMember(
                    node_id=m.node_id, grpc_address=m.grpc_address, raft_address=m.raft_address
                )
                for m in st.members
                if m.role == "voter"
            )
            _note(f"{_describe(change)}: done")
            return done
        if st.membership_progress and st.membership_progress != said:
            said = st.membership_progress
            _note(said)
        if time.monotonic() >= deadline:
            print_error(
                f"{_describe(change)} is still in flight after --wait-timeout "
                f"({said or 'no progress reported'}); "
                "it goes on: watch `schedctl cluster status`, or cancel an addition with `schedctl cluster "
                "remove-node`"
            )
            raise Reported(EXIT_SERVER)
        time.sleep(_POLL_S)


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _describe(change: membership_pb2.MembershipChange) -> str:
    verb = "adding" if change.kind == membership_pb2.MembershipChange.ADD else "removing"
    return f"{verb} {change.member.node_id}"


def _member_json(m: membership_pb2.ClusterMember) -> dict[str, Any]:
    return {"node_id": m.node_id, "grpc_address": m.grpc_address, "raft_address": m.raft_address}


def membership_to_json(m: membership_pb2.Membership) -> dict[str, Any]:
    """The member list and the change in flight (docs/cli.md, "Membership")."""
    pending = None
    if m.HasField("pending"):
        p = m.pending
        pending = {
            "kind": _KINDS.get(p.kind, "unknown"),
            "member": _member_json(p.member),
            "began_index": p.began_index,
            "began_at_ms": p.began_at_ms,
        }
    return {
        "members": [_member_json(x) for x in m.members],
        "change_in_flight": pending,
        "version": m.version,
    }


def _table(m: membership_pb2.Membership) -> str:
    rows = [(x.node_id, x.grpc_address, x.raft_address) for x in m.members]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_COLUMNS)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [_COLUMNS, *rows]
    ]
    if m.HasField("pending"):
        lines.append(f"in flight: {_describe(m.pending)} (began at log index {m.pending.began_index})")
    return "\n".join(lines)


_COLUMNS = ("MEMBER", "GRPC_ADDRESS", "RAFT_ADDRESS")
