"""ChangeMembership: the replicated member list and its one change in flight (membership.proto).

A membership change goes through the log in two steps around the Raft library's own configuration entry
(raft.syncobj_replicator `change_voters`): BEGIN records the change as in flight, and is refused while
another one is (Raft changes one member at a time: two single-member changes in flight together could
leave two majorities that do not overlap); the leader then has the Raft configuration take it, and
FINISH records it as done. Any leader finishes a change its predecessor began (daemon.membership): the
change in flight is replicated state, not the proposing leader's memory.

The list is stored (meta "membership") from the cluster's first change on. Before it, the members are
the founding config's, which every member shares (daemon.datadir checks it at each start): that first
BEGIN carries them (`base`) and apply takes them as the current list. A BEGIN also carries the founders
its leader's data directory records: a stored list with other founders came with a store restored into
another configuration (`schedd restore`), and the change starts from `base` as a first change does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cronraft.proto.v1 import commands_pb2, membership_pb2
from cronraft.raft.commands.context import Ctx
from cronraft.raft.kv import Txn
from cronraft.raft.rejection import Code, Rejected

META_MEMBERSHIP = b"membership"

Membership = membership_pb2.Membership
MembershipChange = membership_pb2.MembershipChange
ClusterMember = membership_pb2.ClusterMember
ChangeMembership = membership_pb2.ChangeMembership

# The same rule as a config's member id (daemon.config): a name a path and a log line can hold.
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_MAX_ADDRESS = 255


def read_membership(txn: Txn) -> Membership | None:
    """The stored member list, or None before the cluster's first change."""
    raw = txn.get("meta", META_MEMBERSHIP)
    if raw is None:
        return None
    stored = Membership()
    stored.ParseFromString(raw)
    return stored


def describe(change: MembershipChange) -> str:
    """A change in words: "adding node4 (raft 10.0.0.4:7001)", "removing node2"."""
    m = change.member
    if change.kind == MembershipChange.ADD:
        return f"adding {m.node_id} (grpc {m.grpc_address}, raft {m.raft_address})"
    return f"removing {m.node_id}"


def check_member(m: ClusterMember, *, addresses: bool) -> None:
    """A member's id (and, with `addresses`, its two host:port addresses) well-formed, else
    InvalidArgument-like `Rejected` naming the field (the servicer checks the same before proposing)."""
    if not _NODE_ID.fullmatch(m.node_id):
        raise Rejected(
            Code.INVALID_ARGUMENT,
            f"{m.node_id!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="node_id",
        )
    if not addresses:
        return
    for name in ("grpc_address", "raft_address"):
        value: str = getattr(m, name)
        host, sep, port = value.rpartition(":")
        if (
            not sep
            or not host
            or not port.isdigit()
            or not 0 < int(port) < 65536
            or len(value) > _MAX_ADDRESS
        ):
            raise Rejected(Code.INVALID_ARGUMENT, f"{value!r}: expected host:port", field=name)


def pairs(members: Iterable[ClusterMember]) -> list[tuple[str, str]]:
    """The (node id, Raft address) pairs of `members`, sorted: what identifies a member list."""
    return sorted((m.node_id, m.raft_address) for m in members)


def change_membership(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    body = cmd.change_membership
    stored = read_membership(ctx.txn)
    if stored is not None and body.founders and pairs(stored.founders) != pairs(body.founders):
        # Restored into another configuration: the stored list names the backup's members.
        stored = Membership(members=body.base, founders=body.founders, version=stored.version)
    if stored is None:
        if not body.base:
            raise Rejected(Code.INVALID_STATE, "no member list is stored yet and the command carries none")
        stored = Membership(members=body.base, founders=body.founders or body.base)
    if body.step == ChangeMembership.BEGIN:
        _begin(ctx, stored, body.change)
    elif body.step == ChangeMembership.FINISH:
        _finish(ctx, stored, body.change)
    else:
        raise Rejected(Code.INVALID_ARGUMENT, f"unknown step {body.step}", field="step")
    stored.version += 1
    ctx.txn.put("meta", META_MEMBERSHIP, stored.SerializeToString(deterministic=True))


def _begin(ctx: Ctx, stored: Membership, change: MembershipChange) -> None:
    member = change.member
    by_id = {m.node_id: m for m in stored.members}
    pending = stored.pending if stored.HasField("pending") else None
    if change.kind == MembershipChange.ADD:
        check_member(member, addresses=True)
        if pending is not None:
            raise _in_flight(pending)
        if member.node_id in by_id:
            raise Rejected(
                Code.ALREADY_EXISTS,
                f"{member.node_id} is already a member; to replace it, remove it first "
                "(schedctl cluster remove-node), then add the new one",
            )
        for m in stored.members:
            for name in ("grpc_address", "raft_address"):
                if getattr(m, name) == getattr(member, name):
                    raise Rejected(
                        Code.ALREADY_EXISTS, f"{getattr(member, name)} is the {name} of member {m.node_id}"
                    )
        new = MembershipChange(kind=MembershipChange.ADD)
        new.member.CopyFrom(member)
    elif change.kind == MembershipChange.REMOVE:
        check_member(member, addresses=False)
        cancels_add = (
            pending is not None
            and pending.kind == MembershipChange.ADD
            and pending.member.node_id == member.node_id
        )
        if pending is not None and not cancels_add:
            raise _in_flight(pending)
        if member.node_id not in by_id and not cancels_add:
            raise Rejected(Code.NOT_FOUND, f"{member.node_id} is not a member")
        if not cancels_add and len(stored.members) == 1:
            raise Rejected(Code.INVALID_STATE, f"{member.node_id} is the last member: a cluster keeps one")
        new = MembershipChange(kind=MembershipChange.REMOVE)
        # Removing an addition in flight takes the addresses it was added with.
        new.member.CopyFrom(pending.member if cancels_add and pending is not None else by_id[member.node_id])
    else:
        raise Rejected(Code.INVALID_ARGUMENT, f"unknown kind {change.kind}", field="change.kind")
    new.began_index = ctx.index
    new.began_at_ms = ctx.now
    stored.pending.CopyFrom(new)
    if ctx.events is not None:
        ctx.audit("membership", step="begin", change=describe(new))


def _finish(ctx: Ctx, stored: Membership, change: MembershipChange) -> None:
    pending = stored.pending if stored.HasField("pending") else None
    if (
        pending is None
        or pending.kind != change.kind
        or pending.member.node_id != change.member.node_id
        or pending.began_index != change.began_index
    ):
        # A leader finishing a change that another one already finished (or a stale retry): nothing to do.
        raise Rejected(Code.INVALID_STATE, f"no such membership change in flight: {describe(change)}")
    if pending.kind == MembershipChange.ADD:
        stored.members.append(pending.member)
    else:
        kept = [m for m in stored.members if m.node_id != pending.member.node_id]
        del stored.members[:]
        stored.members.extend(kept)
    if ctx.events is not None:
        ctx.audit("membership", step="finish", change=describe(pending))
    stored.ClearField("pending")


def _in_flight(pending: MembershipChange) -> Rejected:
    return Rejected(
        Code.INVALID_STATE,
        f"a membership change is in flight ({describe(pending)}, begun at log index {pending.began_index}); "
        "Raft changes one member at a time: wait until `schedctl cluster status` shows no change in flight",
    )


__all__ = [
    "META_MEMBERSHIP",
    "change_membership",
    "check_member",
    "describe",
    "pairs",
    "read_membership",
]
