"""The Scheduler service's statistics methods (issue 15): a task's and the cluster's, as the state machine
keeps them (raft.stats), over whole hours from `since_ms` (the last 24 hours by default), read at this
node's time."""

from __future__ import annotations

from typing import Any

import grpc

from cronraft.daemon.security.authz import require_all_namespaces
from cronraft.daemon.services.common import SchedulerBase, _guard, _task_for
from cronraft.daemon.services.executions import check_window
from cronraft.daemon.wire import check_id, check_limit
from cronraft.proto.v1 import scheduler_pb2
from cronraft.raft import features, stats

DEFAULT_WINDOW_MS = 24 * stats.HOUR_MS


class StatsMethods(SchedulerBase):
    """Scheduler methods on statistics (daemon.services.scheduler composes them with the other subjects)."""

    def _since(self, since_ms: int, now_ms: int) -> int:
        check_window(since_ms, 0, "since_ms", "until_ms")
        return since_ms or now_ms - DEFAULT_WINDOW_MS

    async def GetTaskStats(
        self, request: scheduler_pb2.GetTaskStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.GetTaskStatsResponse:
        async def run() -> scheduler_pb2.GetTaskStatsResponse:
            check_id(request.task_id, "task_id")
            now = self.node.clock.now_ms()
            since = self._since(request.since_ms, now)
            with self.node.kv.read() as txn:
                task = _task_for(txn, request.task_id, "GetTaskStats")
                features.require(txn, features.STATS, "GetTaskStats")  # none counted before (upgrades)
                return scheduler_pb2.GetTaskStatsResponse(
                    stats=stats.task_stats(txn, task, since_ms=since, now_ms=now)
                )

        return await _guard(context, run())

    async def GetClusterStats(
        self, request: scheduler_pb2.GetClusterStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.GetClusterStatsResponse:
        async def run() -> scheduler_pb2.GetClusterStatsResponse:
            # Cluster-wide figures and rankings name tasks of every namespace.
            require_all_namespaces("GetClusterStats")
            check_limit(request.limit, "limit", stats.TOP_K)
            now = self.node.clock.now_ms()
            since = self._since(request.since_ms, now)
            with self.node.kv.read() as txn:
                features.require(txn, features.STATS, "GetClusterStats")
                figures = stats.cluster_stats(txn, since_ms=since, now_ms=now, limit=request.limit or 10)
            return scheduler_pb2.GetClusterStatsResponse(stats=figures)

        return await _guard(context, run())


__all__ = ["StatsMethods"]
