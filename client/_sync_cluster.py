"""The cluster calls of `Client`: its status, its statistics, and its audit trail.

GENERATED from client/_aio_cluster.py by scripts/gen_sync_client.py: edit that file,
then run `make clients` (`make check` fails when this file is stale).
"""

from __future__ import annotations

from cronraft.client import _audit, _parsing
from cronraft.client._sync_base import ClientBase
from cronraft.proto.v1 import audit_pb2, cluster_pb2, scheduler_pb2, stats_pb2

__all__ = ["ClusterCalls"]


class ClusterCalls(ClientBase):
    """The calls on the cluster itself (not on one of its objects)."""

    def cluster_status(self) -> cluster_pb2.StatusResponse:
        """The status of the cluster as seen by the first reachable node."""
        return self._invoke(
            lambda s: s.cluster.Status, cluster_pb2.StatusRequest(), cluster_pb2.StatusResponse, write=False
        )

    def cluster_stats(
        self, *, since: _parsing.Instant | None = None, limit: int = 10
    ) -> stats_pb2.ClusterStats:
        """The cluster's statistics over whole hours from `since` (None: the last 24 hours): outcomes,
        rates, quantiles, executions ended per minute over the last hour, and the `limit` (at most 20)
        tasks failing most and running longest. Needs reader in every namespace ("*")."""
        request = scheduler_pb2.GetClusterStatsRequest(
            since_ms=0 if since is None else _parsing.instant_ms(since, "since"), limit=limit
        )
        response = self._invoke(
            lambda s: s.scheduler.GetClusterStats, request, scheduler_pb2.GetClusterStatsResponse, write=False
        )
        return response.stats

    def list_audit(
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
            response = self._invoke(
                lambda s: s.audit.ListAudit, request, audit_pb2.ListAuditResponse, write=False
            )
            out.extend(response.records)
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
        return out
