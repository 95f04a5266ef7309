"""The cluster calls of `AsyncClient`: its status, its statistics, its audit trail, backups, and membership
changes.

`AsyncClusterCalls` is one of the subject mixins `AsyncClient` (client/aio.py) is composed of; the sync
twin, `_sync_cluster.py`, is generated from this file by scripts/gen_sync_client.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import BinaryIO

import grpc  # type: ignore[import-untyped, unused-ignore]

from cronraft.client import _audit, _backup, _parsing, _requests, _routing
from cronraft.client._aio_base import AsyncClientBase
from cronraft.client._channels import rpc_status
from cronraft.client._transport import with_tls_hint
from cronraft.proto.v1 import audit_pb2, cluster_pb2, membership_pb2, scheduler_pb2, stats_pb2

__all__ = ["AsyncClusterCalls"]


class AsyncClusterCalls(AsyncClientBase):
    """The calls on the cluster itself (not on one of its objects)."""

    async def cluster_status(self) -> cluster_pb2.StatusResponse:
        """The status of the cluster as seen by the first reachable node."""
        return await self._invoke(
            lambda s: s.cluster.Status, cluster_pb2.StatusRequest(), cluster_pb2.StatusResponse, write=False
        )

    async def add_node(
        self, node_id: str, *, grpc_address: str, raft_address: str, request_id: str | None = None
    ) -> membership_pb2.Membership:
        """Begin adding the member `node_id` (docs/operations.md, "Membership changes"): start it first
        with `schedd --join` and an empty data directory. Returns the member list once the addition began
        (`pending`); the leader then carries it through: watch `cluster_status().membership_change`.
        Raises `FailedPrecondition` while another change is in flight. Needs the admin role."""
        rid = request_id or _requests.new_request_id()
        request = cluster_pb2.AddNodeRequest(
            node_id=node_id, grpc_address=grpc_address, raft_address=raft_address, request_id=rid
        )
        response = await self._invoke(
            lambda s: s.cluster.AddNode, request, cluster_pb2.MembershipResponse, write=True, request_id=rid
        )
        return response.membership

    async def remove_node(self, node_id: str, *, request_id: str | None = None) -> membership_pb2.Membership:
        """Begin removing the member `node_id` (or cancel its addition in flight); as `add_node`."""
        rid = request_id or _requests.new_request_id()
        request = cluster_pb2.RemoveNodeRequest(node_id=node_id, request_id=rid)
        response = await self._invoke(
            lambda s: s.cluster.RemoveNode,
            request,
            cluster_pb2.MembershipResponse,
            write=True,
            request_id=rid,
        )
        return response.membership

    async def cluster_stats(
        self, *, since: _parsing.Instant | None = None, limit: int = 10
    ) -> stats_pb2.ClusterStats:
        """The cluster's statistics over whole hours from `since` (None: the last 24 hours): outcomes,
        rates, quantiles, executions ended per minute over the last hour, and the `limit` (at most 20)
        tasks failing most and running longest. Needs reader in every namespace ("*")."""
        request = scheduler_pb2.GetClusterStatsRequest(
            since_ms=0 if since is None else _parsing.instant_ms(since, "since"), limit=limit
        )
        response = await self._invoke(
            lambda s: s.scheduler.GetClusterStats, request, scheduler_pb2.GetClusterStatsResponse, write=False
        )
        return response.stats

    async def list_audit(
        self,
        *,
        principal: str = "",
        method: str = "",
        since: _parsing.Instant | None = None,
        until: _parsing.Instant | None = None,
        target_id: str = "",
        limit: int | None = 100,
    ) -> list[audit_pb2.AuditRecord]:
        """The audit trail (docs/security.md, "Audit trail"): records of the writes, oldest first, filtered
        by principal, RPC name (e.g. "CreateTask"), stamped time in [since, until) and a target id or
        calendar name; at most `limit` (None: all). Read from the node the client reaches: every node
        holds the same trail up to the entry it applied. Needs the admin role."""
        request = _audit.request(principal, method, since, until, target_id)
        out: list[audit_pb2.AuditRecord] = []
        while limit is None or len(out) < limit:
            request.page_size = 1000 if limit is None else min(1000, limit - len(out))
            response = await self._invoke(
                lambda s: s.audit.ListAudit, request, audit_pb2.ListAuditResponse, write=False
            )
            out.extend(response.records)
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
        return out

    async def backup(
        self,
        sink: BinaryIO,
        *,
        max_bytes_per_s: int = 0,
        timeout_s: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> _backup.BackupReceipt:
        """Take a backup (docs/operations.md, "Backup and restore"): a consistent copy of the store of the
        first reachable node (a follower spares the leader: give the client that node only), written to
        `sink` as the bytes of a backup file as they arrive; `schedd restore` seeds a new cluster from it.
        `max_bytes_per_s` paces the node (0: its default, 64 MiB/s; more is lowered to it). `timeout_s`
        bounds the whole stream (None: unbounded; finding a node that answers is bounded by the client's
        `timeout_s`); `progress(bytes written)` is called after each chunk. The checksum is checked as the
        bytes arrive: a damaged stream raises `InternalError`. After an error, what was written to `sink`
        is no backup (discard it). Needs the admin role; one backup at a time per node
        (`ResourceExhausted`)."""
        request = cluster_pb2.BackupRequest(max_bytes_per_s=max_bytes_per_s)
        plan = _routing.CallPlan(
            self._router, write=False, timeout_s=self.timeout_s, max_redirects=self.max_redirects
        )
        while True:
            address = plan.address
            writer = _backup.BackupWriter(sink, progress)
            call = self._stubs_for(address).cluster.Backup(request, timeout=timeout_s)
            try:
                async for chunk in call:
                    writer.take(chunk)
            except grpc.RpcError as exc:
                code, details, leader = rpc_status(exc)
                if writer.written:  # part of a file is out: no retry can continue it
                    raise with_tls_hint(_routing.error_from_status(code, details), self._transport) from None
                delay = plan.failed(code, details, leader)
                if delay is None:
                    raise with_tls_hint(plan.give_up_error(), self._transport) from None
                if delay > 0:
                    await asyncio.sleep(delay)
                continue
            finally:
                call.cancel()  # a no-op once it ended; else (the sink or the checks failed) the node stops
            plan.succeeded()
            return writer.finish(address)
