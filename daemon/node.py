"""One `schedd` node: store, state machine, replicator, gRPC server, and the leader runner when leading.

Writes go through the leader: a follower answers them with UNAVAILABLE and the leader's gRPC address in
the `cronraft-leader` trailing metadata (the SDK follows it). Reads are served from the local store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cronraft.daemon.clock import Clock, SystemClock
from cronraft.daemon.config import Config
from cronraft.daemon.datadir import claim
from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.notify import Notifier
from cronraft.daemon.runner import LeaderRunner
from cronraft.errors import CronraftError, NotLeader, Unavailable
from cronraft.proto.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    commands_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.replicator import RaftMember, RaftStatus, ReplicatorConfig, SyncObjReplicator
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

log = structlog.get_logger("cronraft.node")


class Node:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.runner: LeaderRunner | None = None
        self._server: grpc.aio.Server | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._stopping = False
        self._by_raft = {m.raft_address: m for m in config.cluster.members}
        self._by_id = {m.id: m for m in config.cluster.members}

        data = config.node.data_dir
        claim(config)  # refuses a data dir of another member or cluster
        fsync = config.cluster.durability == "fsync"
        self.kv = LmdbKV(data / "state", sync=fsync)
        self.sm = StateMachine(self.kv)
        self_member = config.self_member
        rconf = ReplicatorConfig(
            self_member=RaftMember(self_member.id, self_member.raft_address),
            peers=tuple(RaftMember(m.id, m.raft_address) for m in config.peers),
            data_dir=data / "raft",
            secret=config.cluster.secret,
            election_timeout_ms=config.raft.election_timeout_ms,
            heartbeat_ms=config.raft.heartbeat_ms,
            snapshot_min_entries=config.raft.snapshot_min_entries,
            snapshot_min_time_s=config.raft.snapshot_min_time_s,
            fsync=fsync,
        )
        self.replicator = SyncObjReplicator(
            rconf, self.sm.apply_entry, self.kv, applied_index=self.sm.last_applied
        )
        self.committer = GroupCommitter(self.replicator)
        # One notifier per process (not per term), so deliveries in flight survive a step-down.
        self.notifier = Notifier(global_targets=config.notify_targets)
        self._notify_task: asyncio.Task[None] | None = None
        s = config.scheduler
        self.settings = LeaderSettings(
            horizon_ms=s.horizon_ms,
            lease_ttl_ms=s.lease_ttl_ms,
            expiry_grace_ms=max(1000, s.lease_ttl_ms // 2),
            max_running=s.max_running,
            aging_step_ms=s.aging_step_ms,
        )

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        from cronraft.daemon.servicers import ClusterServicer, SchedulerServicer, WorkerGatewayServicer

        loop = asyncio.get_running_loop()

        def notify(_st: RaftStatus) -> None:
            loop.call_soon_threadsafe(self._state_changed.set)

        self.replicator.on_state_change(notify)
        self.replicator.start()
        self.committer.start()
        self._notify_task = asyncio.create_task(self.notifier.run(), name="notifier")

        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 8 << 20),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(self), server)
        worker_pb2_grpc.add_WorkerGatewayServicer_to_server(WorkerGatewayServicer(self), server)
        cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(self), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (
            scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
            worker_pb2.DESCRIPTOR.services_by_name["WorkerGateway"].full_name,
            cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        addr = self.config.self_member.grpc_address
        if server.add_insecure_port(addr) == 0:
            raise Unavailable(f"cannot bind gRPC address {addr}")
        await server.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self._watch_task = asyncio.create_task(self._watch_leadership(), name="leadership-watch")
        log.info(
            "node started", node=self.config.node.id, grpc=addr, raft=self.config.self_member.raft_address
        )

    async def stop(self) -> None:
        self._stopping = True
        self._state_changed.set()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self._server is not None:
            await self._server.stop(grace=2.0)
        await self.committer.close()
        await self.notifier.close(drain_s=2.0)
        if self._notify_task is not None:
            await self._notify_task
        self.replicator.stop()
        self.kv.close()
        log.info("node stopped", node=self.config.node.id)

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # ----------------------------------------------------------------------------- leadership

    async def _watch_leadership(self) -> None:
        # Polling as well as the callback: pysyncobj changes state on its own thread, and a missed
        # notification must not leave a stale runner alive.
        while not self._stopping:
            st = self.replicator.status()
            if st.is_leader and (self.runner is None or self.runner.term != st.term):
                if self.runner is not None:
                    await self.runner.stop()
                self.runner = LeaderRunner(
                    kv=self.kv,
                    committer=self.committer,
                    settings=self.settings,
                    node_id=self.config.node.id,
                    term=st.term,
                    clock=self.clock,
                    still_leader=lambda: self.replicator.status().is_leader,
                    heartbeat_interval_ms=self.config.scheduler.heartbeat_interval_ms,
                    notifier=self.notifier,
                )
                self.runner.start()
                log.info("became leader", term=st.term)
            elif not st.is_leader and self.runner is not None:
                runner, self.runner = self.runner, None
                await runner.stop(self.leader_grpc_address(st) or "")
                log.info("stepped down", term=runner.term, leader=st.leader_id)
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), 0.05)

    def leader_grpc_address(self, st: RaftStatus | None = None) -> str | None:
        st = st or self.replicator.status()
        if st.leader_id is None:
            return None
        m = self._by_id.get(st.leader_id) or self._by_raft.get(st.leader_id)
        return m.grpc_address if m is not None else None

    def leader_runner(self) -> LeaderRunner:
        """The runner if this node leads; NotLeader (with the leader's address) otherwise."""
        st = self.replicator.status()
        if not st.is_leader or self.runner is None or self.runner.term != st.term:
            raise NotLeader(self.leader_grpc_address(st))
        return self.runner

    async def propose(self, cmds: Sequence[commands_pb2.Command]) -> list[commands_pb2.CommandResult]:
        """Propose client commands on the leader and let the leader runner see their outcome."""
        runner = self.leader_runner()
        try:
            results = await self.committer.submit(list(cmds))
        except CronraftError:
            raise
        runner.observe(cmds, results)
        return results


__all__ = ["Node"]
