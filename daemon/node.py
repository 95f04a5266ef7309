"""One `schedd` node: store, state machine, replicator, gRPC server, and the leader runner when leading.

Writes go through the leader: a follower answers them with UNAVAILABLE and the leader's gRPC address in
the `cronraft-leader` trailing metadata (the SDK follows it). Reads are served from the local store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cronraft import _native, bounds
from cronraft.client._transport import Transport
from cronraft.daemon.client_commits import propose_observed
from cronraft.daemon.clock import Clock, CorrectedClock, SystemClock
from cronraft.daemon.clockprobe import MAX_AGE_INTERVALS, ClockMonitor
from cronraft.daemon.config import Config
from cronraft.daemon.config.model import Member
from cronraft.daemon.datadir import claim, record_membership
from cronraft.daemon.http import HttpServer, Readiness, build_app, default_mounts, evaluate
from cronraft.daemon.http.collector import NodeCollector
from cronraft.daemon.http.grpc_metrics import GrpcMetrics
from cronraft.daemon.http.server import server_ssl_context
from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner
from cronraft.daemon.membership import MembershipManager, initial_role
from cronraft.daemon.metrics import NodeMetrics
from cronraft.daemon.notify import Notifier
from cronraft.daemon.preferred_leader import PreferredLeader, ProposalGate
from cronraft.daemon.relay import Relay, WriteForwarder
from cronraft.daemon.security.server import ServerSecurity
from cronraft.daemon.services import audit as audit_api
from cronraft.daemon.storage import StorageMonitor, effective_reserve
from cronraft.daemon.versioncheck import VersionWatch
from cronraft.daemon.wire import DecodingServer
from cronraft.errors import NotLeader, Unavailable
from cronraft.failpoint import raiser
from cronraft.proto.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    commands_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from cronraft.raft.audit import AuditLog
from cronraft.raft.commands.membership import read_membership
from cronraft.raft.groupcommit import GroupCommitter
from cronraft.raft.replicator import RaftMember, RaftStatus, ReplicatorConfig
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV
from cronraft.raft.syncobj_replicator import SyncObjReplicator
from cronraft.raft.versions import OVERRIDE_ENV, schedule_versions

log = structlog.get_logger("cronraft.node")

# The gRPC health service name that says whether this node's storage accepts writes (daemon.storage).
STORAGE_HEALTH = "cronraft.storage"

# How long a write waits for a new leader's first entry of its term (one round trip to a quorum, ms in
# practice) before it is refused UNAVAILABLE: Node.writer.
WRITER_WAIT_S = 5.0


def _apply_failpoint() -> Callable[[commands_pb2.Command], None] | None:
    """The `raft.apply` failpoint (`raise:KIND[:TEXT]`): a handler failure for commands of body KIND whose
    serialized form contains TEXT; None (no cost at all) unless CRONRAFT_FAILPOINTS sets it."""
    check = raiser("raft.apply")
    if check is None:
        return None

    def fault(cmd: commands_pb2.Command) -> None:
        check(cmd.WhichOneof("body") or "", cmd.SerializeToString())

    return fault


class Node:
    def __init__(self, config: Config, *, clock: Clock | None = None, join: bool = False) -> None:
        self.config = config
        # The scheduling clock: wall time corrected by this node's measured offset from the cluster
        # (daemon.clockprobe); its monotonic time is the inner clock's, untouched.
        self.clock = CorrectedClock(clock or SystemClock())
        self.audit = AuditLog.from_env(config.node.id)  # None unless CRONRAFT_AUDIT_DIR is set
        self._role: tuple[bool, int] | None = None
        self._waiting_for_clock = False
        self.runner: LeaderRunner | None = None
        self._server: grpc.aio.Server | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._stopping = False
        self._by_raft = {m.raft_address: m for m in config.cluster.members}
        self._by_id = {m.id: m for m in config.cluster.members}
        # This node's metrics registry (daemon.metrics); the apply below is timed into it.
        self.metrics = NodeMetrics()
        self._serving: bool | None = None  # the gRPC health's "" status last set (daemon.http.readiness)
        self._peer_http: dict[str, str] = {}  # peers' HTTP listeners, from their answers to our probes

        # TLS credentials, token file, JWT key (daemon.security): read before anything is opened, so
        # that a missing or bad file refuses the start (ConfigError) with nothing half started.
        self.security = ServerSecurity(config)
        data = config.node.data_dir
        # Refuses a data dir of another member or cluster; says which members to start from (the list
        # recorded as membership changes were applied, daemon.datadir) and whether this node is joining.
        claimed = claim(config, join=join)
        config = self.config = _with_members(config, claimed.members)
        self._by_raft = {m.raft_address: m for m in config.cluster.members}
        self._by_id = {m.id: m for m in config.cluster.members}
        fsync = config.cluster.durability == "fsync"
        storage = config.storage
        reserve = effective_reserve(storage.reserve_bytes, data)
        self.kv = LmdbKV(
            data / "state",
            map_size=storage.map_size_bytes,
            max_map_size=storage.max_map_size_bytes,
            sync=fsync,
        )
        # Its feature level comes from the log alone (raft.features: RaiseFeatures), never from its build.
        self.sm = StateMachine(self.kv, fault=_apply_failpoint(), fresh_features=frozenset())
        self.sm.collect_events = self.audit is not None
        self_member = config.self_member
        with self.kv.read() as txn:  # a joining node is a learner until its addition began
            learner, hold_elections = initial_role(claimed, read_membership(txn), self_member)
        rconf = ReplicatorConfig(
            self_member=RaftMember(self_member.id, self_member.raft_address),
            peers=tuple(RaftMember(m.id, m.raft_address) for m in config.peers),
            data_dir=data / "raft",
            secret=config.cluster.secret,
            election_timeout_ms=config.raft.election_timeout_ms,
            heartbeat_ms=config.raft.heartbeat_ms,
            snapshot_min_entries=config.raft.snapshot_min_entries,
            snapshot_min_time_s=config.raft.snapshot_min_time_s,
            snapshot_max_bytes=config.raft.snapshot_max_bytes,
            journal_reserve_bytes=reserve // 2,
            fsync=fsync,
            learner=learner,
            hold_elections=hold_elections,
        )
        self.replicator = SyncObjReplicator(
            rconf,
            self.metrics.timed_apply(self.sm.apply_entry),
            self.kv,
            applied_index=self.sm.last_applied,
            audit=self.audit,
            apply_events=self.sm.take_events,
            # Late-bound: the storage monitor below needs the replicator first.
            on_apply_failure=lambda index, exc: self.storage.on_apply_failure(index, exc),  # noqa: PLW0108
            on_apply_recovered=lambda index: self.storage.on_apply_recovered(index),  # noqa: PLW0108
            apply_many=self.metrics.timed_apply_many(
                lambda entries, unread: self.sm.apply_entries(entries, unread=unread)
            ),
        )
        # This node's storage (daemon.storage): what it refuses for lack of space, and why.
        self.storage = StorageMonitor(
            kv=self.kv,
            replicator=self.replicator,
            data_dir=data,
            reserve_bytes=reserve,
            is_leader=lambda: self.replicator.status().is_leader,
            connected_peers=self._connected_peers,
            transfer=self.replicator.transfer_leadership,
            on_change=self._storage_changed,
        )
        # The versions that change schedule results, this node's and its peers' (raft.versions): a leader
        # dispatches nothing while a member disagrees. The override is for tests only (OVERRIDE_ENV).
        override = os.environ.get(OVERRIDE_ENV, "")
        if override:
            log.warning("test-only version override in force", variable=OVERRIDE_ENV, value=override)
        self.versions = VersionWatch(
            node_id=config.node.id,
            own=schedule_versions(override),
            peers=[m.id for m in config.peers],
            max_age_s=MAX_AGE_INTERVALS * config.clock.probe_interval_ms / 1000,
        )
        self.clock_monitor = ClockMonitor(
            node_id=config.node.id,
            peers={m.id: m.grpc_address for m in config.peers},
            probe_interval_ms=config.clock.probe_interval_ms,
            max_offset_ms=config.clock.max_offset_ms,
            clock=self.clock,
            is_leader=lambda: self.replicator.status().is_leader,
            connected_peers=self._connected_peers,
            transfer=self.replicator.transfer_leadership,
            audit=self.audit,
            on_peer_storage=self.storage.note_peer,
            on_peer_versions=self.versions.note_peer,
            on_peer_http=self._peer_http.__setitem__,
            transport=self._probe_transport(),
        )
        # Proposals pass a gate a leader closes for a moment while it hands leadership to a preferred
        # member ([cluster] preferred_leader; daemon.preferred_leader).
        self.gate = ProposalGate(self.replicator)
        self.committer = GroupCommitter(self.gate, admit=self.storage.admit)
        # The member list this node sees, and the membership duties (daemon.membership).
        self.membership = MembershipManager(
            me=self_member,
            claim=claimed,
            kv=self.kv,
            replicator=self.replicator,
            on_members=self._members_changed,
            record=lambda members, version, state, founders: record_membership(
                self.config, members, version=version, state=state, founders=founders
            ),
            transport=self._probe_transport(),
            election_timeout_ms=config.raft.election_timeout_ms,
            propose=self.committer.submit,
            leading=lambda: self.runner is not None and self.replicator.status().is_leader,
            now_ms=self.clock.now_ms,
        )
        self.preferred = (
            PreferredLeader(
                node_id=config.node.id,
                preferred=config.cluster.preferred_leader,
                status=self.replicator.status,
                healthy=lambda peer: (s := self.storage.peer_status(peer)).measured and not s.exhausted,
                transfer=self.replicator.transfer_leadership,
                gate=self.gate,
            )
            if config.cluster.preferred_leader
            else None
        )
        self._preferred_task: asyncio.Task[None] | None = None
        # A follower relays workers' streams and clients' writes to the leader (daemon.relay).
        self.relay = Relay(
            node_id=config.node.id,
            own_address=self_member.grpc_address,
            enabled=config.cluster.relay,
            max_streams=config.cluster.relay_max_streams,
            max_writes=config.cluster.relay_max_writes,
            status=self.replicator.status,
            leader_address=self.leader_grpc_address,
            transport=self._probe_transport(),
        )
        # One notifier per process (not per term), so deliveries in flight survive a step-down.
        self.notifier = Notifier(
            global_targets=config.notify_targets,
            notifiers=config.notifiers,
            webhook_hosts=config.webhook_hosts,
        )
        self._notify_task: asyncio.Task[None] | None = None
        self.metrics.registry.register(NodeCollector(self))
        # The HTTP listener (daemon.http): /metrics, /healthz, /readyz and the mounts (the dashboard).
        self.http = (
            HttpServer(
                build_app(self, mounts=default_mounts()),
                config.http.address,
                ssl_context=server_ssl_context(config.tls),
            )
            if config.http.address
            else None
        )
        s = config.scheduler
        self.settings = LeaderSettings(
            horizon_ms=s.horizon_ms,
            lease_ttl_ms=s.lease_ttl_ms,
            expiry_grace_ms=max(1000, s.lease_ttl_ms // 2),
            # Two missed heartbeats (and at least a second): the worker's own stale-stream limit is
            # about the same, so both ends give up on a cut stream at once.
            worker_silent_ms=max(1000, 2 * s.heartbeat_interval_ms + 200),
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_running=s.max_running,
            aging_step_ms=s.aging_step_ms,
            fire_lead_ms=s.fire_lead_ms,
            stage_lead_ms=s.stage_lead_ms,
            stage_rate=s.stage_rate,
            max_pending_per_task=config.limits.max_pending_per_task,
            max_executions_per_task=config.limits.max_executions_per_task,
            max_result_bytes=config.limits.max_result_bytes,  # told to workers, stamped in Completes
        )
        # The quotas stamped into every client write this node proposes as leader (raft.quota).
        lim = config.limits
        self.limits = commands_pb2.Limits(
            max_tasks=lim.max_tasks,
            max_calendars=lim.max_calendars,
            max_pending_per_task=lim.max_pending_per_task,
            max_executions_per_task=lim.max_executions_per_task,
        )

    def _probe_transport(self) -> Transport:
        """How this node's clock probe reaches its peers: their CA, its own certificate when the
        members require client certificates, and the member token when they authenticate."""
        sec = self.security
        if not self.config.tls.enabled:
            return Transport(token=sec.probe_token())
        pair = sec.probe_client_cert()
        return Transport(
            ca=sec.peer_ca,
            cert=pair[0] if pair else None,
            key=pair[1] if pair else None,
            token=sec.probe_token(),
        )

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        from cronraft.daemon.services import ClusterServicer, SchedulerServicer, WorkerGatewayServicer

        loop = asyncio.get_running_loop()
        for warning in self.config.deprecations:
            log.warning("deprecated config key", problem=warning)

        def notify(st: RaftStatus) -> None:
            self._note_role(st)  # on the Raft thread, at the change: the audit's time is the change's
            loop.call_soon_threadsafe(self._state_changed.set)

        self.replicator.on_state_change(notify)
        self.replicator.start()
        self.committer.start()
        self.storage.start()
        self.clock_monitor.start()
        self.membership.start()
        self._notify_task = asyncio.create_task(self.notifier.run(), name="notifier")
        if self.preferred is not None:
            self._preferred_task = asyncio.create_task(self.preferred.run(), name="preferred-leader")

        server = grpc.aio.server(
            # calls counted (first, so that refused ones are too), authentication and roles
            # (daemon.security), then who calls what for the audit trail
            interceptors=[
                GrpcMetrics(self.metrics.registry),
                *self.security.interceptors,
                audit_api.CallInterceptor(),
                WriteForwarder(self.relay),  # a follower's writes go to the leader (daemon.relay)
            ],
            # Bounds of gRPC itself (cronraft.bounds): the largest message accepted, the streams one
            # connection may open at once, and the calls served at once (more: RESOURCE_EXHAUSTED).
            maximum_concurrent_rpcs=self.config.limits.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", bounds.SERVER_MAX_RECEIVE_BYTES),
                ("grpc.max_concurrent_streams", bounds.MAX_CONCURRENT_STREAMS),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        ours: Any = DecodingServer(server)  # undecodable requests: INVALID_ARGUMENT, not UNKNOWN
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(self), ours)
        worker_pb2_grpc.add_WorkerGatewayServicer_to_server(WorkerGatewayServicer(self), ours)
        cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(self), ours)
        audit_pb2_grpc.add_AuditServicer_to_server(audit_api.AuditServicer(self), ours)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (
            scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
            worker_pb2.DESCRIPTOR.services_by_name["WorkerGateway"].full_name,
            cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
            audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        addr = self.config.self_member.grpc_address
        creds = self.security.credentials
        port = server.add_secure_port(addr, creds) if creds is not None else server.add_insecure_port(addr)
        if port == 0:
            raise Unavailable(f"cannot bind gRPC address {addr}")
        self.security.announce()
        await server.start()
        await self._publish_readiness()
        await self._storage_changed(bool(self.storage.current().refused))
        self._server = server
        if self.http is not None:
            await self.http.start()
        self._watch_task = asyncio.create_task(self._watch_leadership(), name="leadership-watch")
        log.info(
            "node started",
            node=self.config.node.id,
            grpc=addr,
            raft=self.config.self_member.raft_address,
            apply=_native.describe(),
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
        await self.membership.stop()
        await self.clock_monitor.stop()
        await self.relay.close()
        if self._preferred_task is not None:
            self._preferred_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._preferred_task
        await self.storage.stop()
        if self.http is not None:
            await self.http.stop()
        if self._server is not None:
            await self._server.stop(grace=2.0)
        await self.committer.close()
        await self.notifier.close(drain_s=2.0)
        if self._notify_task is not None:
            await self._notify_task
        self.replicator.stop()
        self.kv.close()
        if self.audit is not None:
            self.audit.close()
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
            if st.is_leader and not self.clock_monitor.settled():
                # No clock estimate yet (just started): due times would follow this node's raw wall
                # clock, which may be off. Leader duties start once it is measured (a few probes).
                if not self._waiting_for_clock:
                    self._waiting_for_clock = True
                    log.info("leading; waiting for the first clock measurement before leader duties")
            elif st.is_leader and (self.runner is None or self.runner.term != st.term):
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
                    audit=self.audit,
                    retention=self.config.retention,
                    on_committed=self.metrics.observe_committed,
                )
                self._hold_on_versions(True)  # before its first tick
                self.runner.start()
                log.info("became leader", term=st.term)
            elif not st.is_leader and self.runner is not None:
                runner, self.runner = self.runner, None
                await runner.stop(self.leader_grpc_address(st) or "")
                log.info("stepped down", term=runner.term, leader=st.leader_id)
            self._hold_on_versions(st.is_leader)
            await self._publish_readiness()
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), 0.05)

    def _hold_on_versions(self, leading: bool) -> None:
        """While a member computes schedules with other versions (daemon.versioncheck), the leader runner
        fires and grants nothing; it resumes by itself once they agree."""
        mismatch = self.versions.check()
        runner = self.runner if leading else None
        self.versions.gate(self.kv, runner)  # the cluster's feature level: logged, raised (raft.features)
        if runner is None or mismatch == runner.held:
            return
        if mismatch:
            log.warning(
                "leader holds dispatching: members disagree on schedule-result versions", mismatch=mismatch
            )
        else:
            log.info("leader dispatches again: members agree on schedule-result versions")
        runner.hold(mismatch)

    def readiness(self, st: RaftStatus | None = None) -> Readiness:
        """Whether this node is ready (daemon.http.readiness): /readyz, the gRPC health's "" status and
        the `cronraft_ready` metric all say this."""
        st = st or self.replicator.status()
        storage = self.storage.current()
        return evaluate(
            st,
            applied_index=self.sm.last_applied(),
            storage_refused=storage.refused,
            storage_reason=storage.reason,
        )

    async def _publish_readiness(self) -> None:
        """The gRPC health service's overall status ("") follows readiness: SERVING only while this node
        is ready (a known leader, a quorum, caught up, storage accepting writes), NOT_SERVING otherwise,
        so that a load balancer's or Kubernetes' gRPC probe sends nothing to a node that cannot serve.
        Checked at every turn of the leadership watch (50 ms at most)."""
        health_servicer = getattr(self, "_health", None)
        if health_servicer is None or self._stopping:
            return
        try:
            readiness = self.readiness()
        except Exception:  # never let the leadership watch die of it
            log.exception("readiness check failed")
            return
        if readiness.ready == self._serving:
            return
        self._serving = readiness.ready
        status = health_pb2.HealthCheckResponse
        await health_servicer.set("", status.SERVING if readiness.ready else status.NOT_SERVING)
        if readiness.ready:
            log.info("ready: health SERVING")
        else:
            log.warning("not ready: health NOT_SERVING", failed=readiness.failed)

    def peer_http_address(self, node_id: str) -> str:
        """A member's HTTP listener: ours from the config, a peer's from its answer to our clock probe."""
        if node_id == self.config.node.id:
            return self.config.http.address
        return self._peer_http.get(node_id, "")

    async def _storage_changed(self, exhausted: bool) -> None:
        """The `cronraft.storage` health service: NOT_SERVING while this node's storage refuses writes.
        (The overall status, "", is readiness, which storage is part of: `_publish_readiness`.)"""
        health_servicer = getattr(self, "_health", None)
        if health_servicer is not None:
            status = health_pb2.HealthCheckResponse
            await health_servicer.set(STORAGE_HEALTH, status.NOT_SERVING if exhausted else status.SERVING)

    def _note_role(self, st: RaftStatus) -> None:
        """Audit each change of (leader?, term) (raft.audit "role")."""
        role = (st.is_leader, st.term)
        if role != self._role:
            self._role = role
            if self.audit is not None:
                self.audit.record("role", leader=st.is_leader, term=st.term)

    def _members_changed(self, members: tuple[Member, ...]) -> None:
        """The member list changed (daemon.membership): what this node shows, probes and hints follows."""
        self.config = _with_members(self.config, members)
        self._by_raft = {m.raft_address: m for m in self.config.cluster.members}
        self._by_id = {m.id: m for m in self.config.cluster.members}
        peers = self.config.peers
        self.clock_monitor.set_peers({m.id: m.grpc_address for m in peers})
        self.versions.peers = tuple(m.id for m in peers)
        log.info("members", members=[m.id for m in self.config.cluster.members])

    def _connected_peers(self) -> list[str]:
        return [peer for peer, up in self.replicator.status().connected.items() if up]

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

    async def writer(self) -> LeaderRunner:
        """The runner, once this node leads and has applied every entry of earlier terms (its term's epoch
        applied here): a write's checks read the store, and before that it can lack what committed last
        (LeaderRunner.until_ready). NotLeader on a follower; Unavailable (retried by the SDK) if the epoch
        does not commit within WRITER_WAIT_S (no quorum)."""
        runner = self.leader_runner()
        if not await runner.until_ready(WRITER_WAIT_S):
            raise Unavailable(
                f"this node leads term {runner.term} but has not committed its first entry of the term yet "
                f"(no quorum for {WRITER_WAIT_S:g} s); retry"
            )
        if self.leader_runner() is not runner:  # leadership moved while it waited
            raise NotLeader(self.leader_grpc_address(self.replicator.status()))
        return runner

    async def propose(self, cmds: Sequence[commands_pb2.Command]) -> list[commands_pb2.CommandResult]:
        """Propose client commands on the leader and let the leader runner see their outcome."""
        runner = self.leader_runner()
        audit_api.stamp(cmds)  # who asked: the audit trail's record is written at apply
        runner.prepare(cmds)  # the fire instants their apply needs, computed once here (raft.leaderplan)

        def observe(
            done: Sequence[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
        ) -> None:
            # Late (the caller went away), only while the same runner leads: a later leader loads what
            # committed before its Epoch from the store.
            if self.runner is runner:
                runner.observe(done, results)

        # Observed even if the caller is cancelled meanwhile (daemon.client_commits).
        return await propose_observed(self.committer.submit, list(cmds), observe)


def _with_members(config: Config, members: Sequence[Member]) -> Config:
    """`config` with the member list `members` (this node's own entry kept if the list lacks it: a
    learner, a removed node)."""
    me = config.self_member
    listed = tuple(members)
    if all(m.id != me.id for m in listed):
        listed = (*listed, me)
    return replace(config, cluster=replace(config.cluster, members=listed))


__all__ = ["Node"]
