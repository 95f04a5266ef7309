"""The clock-health monitor: probes the peers' wall clocks, corrects the scheduling clock, and makes a
leader whose clock is off hand leadership away.

Every `probe_interval_ms` each node calls every peer's `Cluster.Clock` (a tiny unary RPC answering its
raw wall clock) and feeds the sample to the pure estimator (`daemon.clockhealth`). After each round:

- the scheduling clock (`CorrectedClock`, used for due times and command stamps) takes the measured
  offset as its correction (beyond a 50 ms deadband), so fires stay on time by the cluster's clock even
  on a node whose wall clock is off, leader or not;
- beyond `max_offset_ms` the node is unhealthy: a warning in the log, `clock_healthy` false in the
  status and the metrics, and, if it leads, a leadership transfer (Raft TimeoutNow) to the connected
  follower whose clock is closest to the median, retried every probe interval while the condition lasts
  (a skewed node elected again hands over again; its clock stays corrected meanwhile).

Leases never use any of this: their deadlines are on the monotonic clock (daemon.leader, client.worker).

A freshly started node has no estimate yet; `settled()` says when it has one (every peer measured once,
or a decided median, or 3 probe intervals passed): the node starts leader duties only then, so that a
skewed node elected at start-up never fires by its raw clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
import structlog

from cronraft.client._transport import Transport
from cronraft.daemon.clock import CorrectedClock
from cronraft.daemon.clockhealth import ClockEstimator, ClockPolicy, Estimate, Health, make_sample
from cronraft.proto.v1 import cluster_pb2, cluster_pb2_grpc
from cronraft.raft.audit import AuditLog

log = structlog.get_logger("cronraft.clock")

MAX_AGE_INTERVALS = 5  # a sample expires after this many probe intervals
SETTLE_INTERVALS = 3
WARN_EVERY_S = 10.0


class ClockMonitor:
    def __init__(
        self,
        *,
        node_id: str,
        peers: Mapping[str, str],  # peer node id -> gRPC address
        probe_interval_ms: int,
        max_offset_ms: int,
        clock: CorrectedClock,
        is_leader: Callable[[], bool],
        connected_peers: Callable[[], list[str]],
        transfer: Callable[[str | None], Awaitable[bool]],
        audit: AuditLog | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        on_peer_storage: Callable[[str, cluster_pb2.StorageStatus], None] | None = None,
        on_peer_versions: Callable[[str, cluster_pb2.ScheduleVersions], None] | None = None,
        on_peer_http: Callable[[str, str], None] | None = None,  # a peer's [http] address (cluster status)
        transport: Transport | None = None,  # TLS and the member token (daemon.security); None: plaintext
    ) -> None:
        self._transport = transport or Transport()
        self.node_id = node_id
        self.peers = dict(peers)
        self.interval_s = probe_interval_ms / 1000
        self.estimator = ClockEstimator(list(self.peers), max_age_ms=MAX_AGE_INTERVALS * probe_interval_ms)
        self.policy = ClockPolicy(max_offset_ms=max_offset_ms)
        self.clock = clock
        self._is_leader = is_leader
        self._connected_peers = connected_peers
        self._transfer = transfer
        self._audit = audit
        # A peer's answer also carries its storage status (daemon.storage): handed on as it arrives.
        self._on_peer_storage = on_peer_storage
        # ... and its schedule-result versions (daemon.versioncheck).
        self._on_peer_versions = on_peer_versions
        self._on_peer_http = on_peer_http
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._started_ms = mono_ns() / 1e6
        self._settle_ms = SETTLE_INTERVALS * probe_interval_ms
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._task: asyncio.Task[None] | None = None
        self.health = Health(offset_ms=0.0, healthy=True, correction_ms=0, measured=False)
        self.estimate = Estimate(offset_ms=0.0, decided=False)
        self._last_warning = -WARN_EVERY_S
        self.transfers = 0  # leadership transfers requested (sent) because of this node's clock

    # ------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        # With peers to judge it, a step of this node's wall clock is held until measured (clock.py).
        self.clock.hold_steps = bool(self.peers)
        for peer, address in self.peers.items():
            self._channels[peer] = self._transport.aio_channel(address)
        self._task = asyncio.create_task(self._run(), name="clock-monitor")

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """The members changed (daemon.membership): probe these peers from the next round on."""
        new = dict(peers)
        for peer in [p for p in self._channels if new.get(p) != self.peers.get(p)]:
            asyncio.get_running_loop().create_task(self._channels.pop(peer).close())
        if self._task is not None:
            for peer, address in new.items():
                if peer not in self._channels:
                    self._channels[peer] = self._transport.aio_channel(address)
        self.peers = new
        self.estimator.set_peers(list(new))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    # ------------------------------------------------------------------------------------- queries

    def wall_us(self) -> int:
        """This node's raw wall clock, for the peers' probes."""
        return self._wall_ns() // 1000

    def now_mono_ms(self) -> float:
        return self._mono_ns() / 1e6

    def settled(self) -> bool:
        now = self.now_mono_ms()
        return (
            self.policy.ever_decided
            or self.estimator.all_measured(now)
            or now - self._started_ms >= self._settle_ms
        )

    # ------------------------------------------------------------------------------------- the loop

    async def _run(self) -> None:
        while True:
            began = self._mono_ns()
            try:
                await asyncio.gather(*(self._probe(p) for p in self.peers))
                await self.evaluate()
            except Exception:  # a bug here must not stop the monitoring for the process's lifetime
                log.exception("clock probe round failed")
            # Until every peer answered once, probe faster: the leader duties wait for the estimate.
            interval = self.interval_s if self.settled() else min(self.interval_s, 0.2)
            spent = (self._mono_ns() - began) / 1e9
            await asyncio.sleep(max(0.0, interval - spent))

    async def _probe(self, peer: str) -> None:
        stub = cluster_pb2_grpc.ClusterStub(self._channels[peer])
        sent_wall, sent_mono = self._wall_ns(), self._mono_ns()
        try:
            resp: cluster_pb2.ClockResponse = await stub.Clock(
                cluster_pb2.ClockRequest(node_id=self.node_id), timeout=max(0.1, min(1.0, self.interval_s))
            )
        except grpc.RpcError:
            return  # a silent peer: its samples age out
        recv_mono = self._mono_ns()
        if peer not in self.peers:  # no longer a member (set_peers) while the probe was out
            return
        if self._on_peer_storage is not None and resp.HasField("storage"):
            self._on_peer_storage(peer, resp.storage)
        if self._on_peer_versions is not None:
            self._on_peer_versions(peer, resp.versions)
        if self._on_peer_http is not None:
            self._on_peer_http(peer, resp.http_address)
        self.estimator.add(
            peer,
            make_sample(
                sent_wall_ms=sent_wall / 1e6,
                sent_mono_ms=sent_mono / 1e6,
                recv_mono_ms=recv_mono / 1e6,
                peer_wall_ms=resp.wall_us / 1000,
            ),
        )

    async def evaluate(self) -> None:
        est = self.estimator.estimate(self.now_mono_ms())
        before = self.health
        health = self.policy.update(est)
        self.estimate, self.health = est, health
        pending = self.clock.pending_step_since_ms
        if est.decided and (
            pending is None or all(self.now_mono_ms() - r.age_ms >= pending for r in est.readings.values())
        ):
            # Every reading was taken after any pending step: the correction describes the clock as it
            # is now, so the scheduling clock may follow the step (corrected).
            self.clock.confirm(health.correction_ms)
        elif health.correction_ms != before.correction_ms:
            self.clock.correction_ms = health.correction_ms
        if health.correction_ms != before.correction_ms:
            log.info(
                "scheduling clock corrected",
                correction_ms=health.correction_ms,
                offset_ms=round(health.offset_ms, 1),
                peers=self._peer_summary(est),
            )
        if health.healthy != before.healthy or health.correction_ms != before.correction_ms:
            if self._audit is not None:
                self._audit.record("clock", offset_ms=round(health.offset_ms, 1), healthy=health.healthy)
            if health.healthy and not before.healthy:
                log.info("wall clock back within bounds", offset_ms=round(health.offset_ms, 1))
        if not health.healthy:
            await self._unhealthy(est, health, first=before.healthy)

    async def _unhealthy(self, est: Estimate, health: Health, *, first: bool) -> None:
        leading = self._is_leader()
        now_s = self.now_mono_ms() / 1000
        warn = first or now_s - self._last_warning >= WARN_EVERY_S  # a warning, not one per probe
        if warn:
            self._last_warning = now_s
            log.warning(
                "wall clock off the cluster median beyond the bound",
                offset_ms=round(health.offset_ms, 1),
                max_offset_ms=self.policy.max_offset_ms,
                correction_ms=health.correction_ms,
                leader=leading,
                peers=self._peer_summary(est),
            )
        if not leading:
            return
        target = self.policy.transfer_target(est, self._connected_peers())
        if target is None:
            if warn:
                log.warning("no follower with a healthy clock to hand leadership to; keeping it (corrected)")
            return
        sent = await self._transfer(target)
        if sent:
            self.transfers += 1
        log.warning(
            "handing leadership away: this leader's wall clock is off",
            target=target,
            sent=sent,
            offset_ms=round(health.offset_ms, 1),
        )

    def _peer_summary(self, est: Estimate) -> dict[str, float]:
        return {p: round(o, 1) for p in self.peers if (o := est.peer_offset(p)) is not None}


__all__ = ["ClockMonitor"]
