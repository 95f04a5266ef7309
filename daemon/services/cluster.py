"""The Cluster service: `Status` (this node's view of the cluster: members, leader, clocks, storage,
versions), `Clock`, the members' clock probe (daemon.clockprobe), and `Backup`, a consistent copy of
this node's store (daemon.backup)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from cronraft import bounds
from cronraft.daemon.backup import BackupSource, Origin
from cronraft.daemon.clusterid import read_cluster_id
from cronraft.daemon.services.common import _abort
from cronraft.daemon.services.membership import MembershipMethods
from cronraft.errors import CronraftError
from cronraft.proto.v1 import cluster_pb2, cluster_pb2_grpc
from cronraft.raft import features
from cronraft.raft import state as sm

if TYPE_CHECKING:
    from cronraft.daemon.node import Node


class ClusterServicer(MembershipMethods, cluster_pb2_grpc.ClusterServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self._backups: BackupSource | None = None  # made at the first backup: one per node

    async def Status(
        self, request: cluster_pb2.StatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cluster_pb2.StatusResponse:
        node = self.node
        st = node.replicator.status()
        with node.kv.read() as txn:
            epoch = sm.read_epoch(txn)
            level = features.level(txn)  # the cluster's feature level as applied here (raft.features)
        runner = node.runner if st.is_leader else None
        monitor = node.clock_monitor
        health, est = monitor.health, monitor.estimate
        now = monitor.now_mono_ms()
        members = []
        storage = node.storage.status()
        membership = node.membership
        for m in membership.members():  # the replicated list (daemon.membership)
            member = cluster_pb2.Member(
                node_id=m.id,
                raft_address=m.raft_address,
                grpc_address=m.grpc_address,
                connected=True if m.id == node.config.node.id else bool(st.connected.get(m.id, False)),
                http_address=node.peer_http_address(m.id),
                role=membership.role_of(m.id),
            )
            # Its storage: ours, or what the peer's answer to our last clock probe said.
            member.storage.CopyFrom(
                storage if m.id == node.config.node.id else node.storage.peer_status(m.id)
            )
            # Its schedule-result versions: ours, or its answer to our last clock probe (daemon.versioncheck).
            member.versions.CopyFrom(
                node.versions.message() if m.id == node.config.node.id else node.versions.peer_message(m.id)
            )
            if m.id == node.config.node.id:
                member.clock_measured = health.measured
                member.clock_offset_ms = round(health.offset_ms)
            elif (reading := monitor.estimator.reading(m.id, now)) is not None:
                # The peer's offset from the median, as this node sees it (its own reading + our offset).
                member.clock_measured = True
                member.clock_offset_ms = round(reading.offset_ms + est.offset_ms)
                member.clock_rtt_us = min(2**32 - 1, round(reading.rtt_ms * 1000))
                member.clock_age_ms = min(2**32 - 1, round(reading.age_ms))
            members.append(member)
        return cluster_pb2.StatusResponse(
            node_id=node.config.node.id,
            is_leader=st.is_leader,
            leader_id=st.leader_id or "",
            leader_address=node.leader_grpc_address(st) or "",
            term=st.term,
            commit_index=st.commit_index,
            applied_index=node.sm.last_applied(),
            members=members,
            epoch_term=epoch.term,
            connected_workers=runner.connected_workers if runner is not None else 0,
            ready=(runner.ready if runner is not None else st.ready),
            clock_offset_ms=round(health.offset_ms),
            clock_healthy=health.healthy,
            clock_correction_ms=health.correction_ms,
            clock_max_offset_ms=node.config.clock.max_offset_ms,
            clock_measured=health.measured,
            storage=storage,
            versions=node.versions.message(),
            versions_mismatch=node.versions.mismatch(),
            dispatch_held=bool(runner is not None and runner.held),
            features=sorted(level),
            features_waiting=node.versions.features_waiting(level),
            role=st.role,
            membership_change=membership.pending(),
            membership_version=membership.version,
            membership_progress=membership.progress if st.is_leader else "",
        )

    async def Clock(
        self, request: cluster_pb2.ClockRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cluster_pb2.ClockResponse:
        if len(request.node_id) > bounds.MAX_NODE_ID:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"node_id: longer than {bounds.MAX_NODE_ID} characters"
            )
        # The raw wall clock (not the corrected one): the peers measure clocks, not corrections, so
        # that two nodes' corrections never feed back into each other.
        return cluster_pb2.ClockResponse(
            node_id=self.node.config.node.id,
            wall_us=self.node.clock_monitor.wall_us(),
            storage=self.node.storage.status(),  # so that every node knows its peers' (daemon.storage)
            versions=self.node.versions.message(),  # and their schedule-result versions (daemon.versioncheck)
            http_address=self.node.config.http.address,  # and its HTTP listener (cluster status)
            # and its membership: a joining node's progress for the leader, a removed one's answer
            applied_index=self.node.sm.last_applied(),
            role=self.node.replicator.status().role,
            membership_version=self.node.membership.version,
            prober_membership=self.node.membership.prober_membership(request.node_id, request.raft_address),
        )

    # --- Backup (daemon.backup) ---

    async def Backup(
        self, request: cluster_pb2.BackupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[cluster_pb2.BackupChunk]:
        source = self._backup_source()
        try:
            # aclosing: a client that goes away ends the stream here, and the spool goes with it at once
            async with contextlib.aclosing(source.stream(request.max_bytes_per_s)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except CronraftError as e:
            await _abort(context, e)

    def _backup_source(self) -> BackupSource:
        if self._backups is None:
            node = self.node
            data_dir = node.config.node.data_dir

            def origin() -> Origin:
                return Origin(
                    cluster_id=read_cluster_id(data_dir),
                    node_id=node.config.node.id,
                    term=node.replicator.status().term,
                    versions=node.versions.own,
                )

            self._backups = BackupSource(
                node.kv,
                data_dir,
                origin=origin,
                reserve_bytes=node.storage.reserve,
                wall_ms=node.clock.now_ms,
            )
        return self._backups


__all__ = ["ClusterServicer"]
