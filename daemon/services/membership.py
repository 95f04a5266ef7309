"""The Cluster service's membership changes: `AddNode` and `RemoveNode` (docs/operations.md, "Membership
changes"). Admin only (security.authz `RPC_ROLES`). Each proposes the BEGIN of its change on the leader
and answers once it applied: the state machine refuses a second change while one is in flight
(FAILED_PRECONDITION naming it). The leader then carries the change through (daemon.membership)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from cronraft.daemon.rejections import check_result, error_for
from cronraft.daemon.services.common import _guard, _request_id
from cronraft.proto.v1 import cluster_pb2, commands_pb2, membership_pb2
from cronraft.raft import features
from cronraft.raft.commands.membership import check_member
from cronraft.raft.rejection import Rejected

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

Change = membership_pb2.MembershipChange


class MembershipMethods:
    """AddNode and RemoveNode, mixed into the Cluster servicer (daemon.services.cluster)."""

    node: Node

    async def AddNode(
        self, request: cluster_pb2.AddNodeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cluster_pb2.MembershipResponse:
        member = membership_pb2.ClusterMember(
            node_id=request.node_id, grpc_address=request.grpc_address, raft_address=request.raft_address
        )
        return await _guard(context, self._begin(Change.ADD, member, request.request_id, "add-node"))

    async def RemoveNode(
        self, request: cluster_pb2.RemoveNodeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cluster_pb2.MembershipResponse:
        member = membership_pb2.ClusterMember(node_id=request.node_id)
        return await _guard(context, self._begin(Change.REMOVE, member, request.request_id, "remove-node"))

    async def _begin(
        self, kind: Change.Kind.ValueType, member: membership_pb2.ClusterMember, request_id: str, what: str
    ) -> cluster_pb2.MembershipResponse:
        node = self.node
        await node.writer()  # NotLeader, with the leader's address, on a follower
        with node.kv.read() as txn:  # a release before membership changes cannot apply them (upgrades)
            features.require(txn, features.MEMBERSHIP, what)
            key = _request_id(txn, request_id, what)
        try:  # a malformed id or address is refused before anything is proposed (apply checks it too)
            check_member(member, addresses=kind == Change.ADD)
        except Rejected as e:
            raise error_for(e.rejection) from None
        cmd = commands_pb2.Command(request_id=key, stamped_at_ms=node.clock.now_ms())
        body = cmd.change_membership
        body.step = membership_pb2.ChangeMembership.BEGIN
        body.change.kind = kind
        body.change.member.CopyFrom(member)
        body.base.extend(node.membership.base())
        body.founders.extend(node.membership.founders())
        (res,) = await node.propose([cmd])
        check_result(res)
        node.membership.refresh()
        stored = node.membership.stored()
        return cluster_pb2.MembershipResponse(membership=stored)


__all__ = ["MembershipMethods"]
