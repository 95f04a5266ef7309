"""A small deterministic simulation of a Cronraft cluster, in virtual time.

Several nodes, each a real `StateMachine` over the in-memory store twin (`MemKV`); a stand-in for Raft
(one shared log, committed when the leader reaches a majority of nodes it is connected to, applied by
every connected node in log order, caught up on heal); the real `LeaderCore` on the leader; fake
workers that run leases for a given duration; a fake clock; and a seeded fake network that can drop
replies (outcome unknown), partition nodes and crash the leader. Everything is driven by `step()`, so a
run is a pure function of its seed.

What it abstracts away is Raft itself (pysyncobj is proven by the real-process tests); what it tests
is everything above it: apply, fencing, dedup, and the leader duties across failovers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.errors import OutcomeUnknown
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine
from tests.support.clock import FakeClock

Command = commands_pb2.Command


@dataclass
class SimNode:
    node_id: str
    kv: MemKV = field(default_factory=MemKV)
    sm: StateMachine = field(init=False)
    up: bool = True
    applied_upto: int = 0  # log position applied (== index of last applied entry)

    def __post_init__(self) -> None:
        self.sm = StateMachine(self.kv)


@dataclass
class RunningAttempt:
    lease: worker_pb2.Lease
    finishes_at_mono: int


class SimWorker:
    """A worker that 'runs' each lease for `run_ms` and reports success; it can crash or be cut off."""

    def __init__(
        self,
        worker_id: str,
        capacity: int,
        run_ms: int,
        *,
        labels: dict[str, str] | None = None,
        exit_code: Callable[[worker_pb2.Lease], int] | None = None,
    ) -> None:
        self.labels = labels or {}
        self.exit_code = exit_code or (lambda _lease: 0)
        self.worker_id = worker_id
        self.capacity = capacity
        self.run_ms = run_ms
        self.running: dict[str, RunningAttempt] = {}
        self.unacked: dict[str, common_pb2.AttemptResult] = {}
        self.connected = True
        self.alive = True
        self.started: list[tuple[str, int, tuple[int, int]]] = []  # (execution_id, attempt, token)

    def offer(self, lease: worker_pb2.Lease, mono: int) -> None:
        if not self.alive or lease.execution_id in self.running:
            return
        self.running[lease.execution_id] = RunningAttempt(lease, mono + self.run_ms)
        self.started.append((lease.execution_id, lease.attempt, (lease.token.term, lease.token.index)))

    def finished(self, mono: int, now: int) -> list[common_pb2.AttemptResult]:
        done = [eid for eid, a in self.running.items() if a.finishes_at_mono <= mono]
        for eid in done:
            a = self.running.pop(eid)
            code = self.exit_code(a.lease)
            self.unacked[eid] = common_pb2.AttemptResult(
                execution_id=eid,
                token=a.lease.token,
                outcome=common_pb2.ATTEMPT_SUCCEEDED if code == 0 else common_pb2.ATTEMPT_FAILED,
                exit_code=code,
                started_at_ms=now - self.run_ms,
                finished_at_ms=now,
                stdout_tail=f"ran {eid}".encode(),
            )
        return list(self.unacked.values())

    def lease_refs(self) -> list[worker_pb2.LeaseRef]:
        return [worker_pb2.LeaseRef(execution_id=e, token=a.lease.token) for e, a in self.running.items()]


class SimCluster:
    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 0,
        start_ms: int = 1_767_225_600_000,  # 2026-01-01T00:00:00Z
        settings: LeaderSettings | None = None,
        drop_rate: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = FakeClock(wall=start_ms, mono=1_000_000)
        self.nodes = [SimNode(f"n{i + 1}") for i in range(n)]
        self.log: list[bytes] = []
        self.settings = settings or LeaderSettings(
            horizon_ms=10_000, lease_ttl_ms=5_000, expiry_grace_ms=2_000
        )
        self.drop_rate = drop_rate
        self.partitioned: set[str] = set()
        self.term = 0
        self.leader: SimNode | None = None
        self.core: LeaderCore | None = None
        self.workers: dict[str, SimWorker] = {}
        self._hb_due = 0
        self.elect(self.nodes[0])

    # ------------------------------------------------------------------------------------ raft stand-in

    def _reachable(self, node: SimNode) -> bool:
        return node.up and node.node_id not in self.partitioned

    def _has_quorum(self) -> bool:
        assert self.leader is not None
        if not self._reachable(self.leader):
            return False
        return sum(1 for n in self.nodes if self._reachable(n)) * 2 > len(self.nodes)

    def _catch_up(self) -> None:
        for node in self.nodes:
            if self._reachable(node):
                while node.applied_upto < len(self.log):
                    node.applied_upto += 1
                    node.sm.apply_entry(node.applied_upto, self.log[node.applied_upto - 1])

    # ------------------------------------------------------------------------------------ leadership

    def elect(self, node: SimNode) -> None:
        self.term += 1
        self.leader = node
        self._catch_up()
        ids = self.rng
        self.core = LeaderCore(
            node.kv,
            self.settings,
            node_id=node.node_id,
            term=self.term,
            new_id=lambda ms: make_id(ms, ids.randbytes(10)),
        )
        try:
            self._run([self.core.epoch_command(self.clock.wall)])
        except OutcomeUnknown:
            return
        self.core.on_epoch_committed(self.clock.wall, self.clock.mono)
        for w in self.workers.values():
            if w.alive and w.connected:
                self.core.worker_connected(w.worker_id, w.capacity, ["default"], w.labels)

    def crash_leader(self) -> None:
        """Kill the leader process: its in-memory plan is gone; another reachable node takes over."""
        assert self.leader is not None
        old = self.leader
        old.up = False
        self.core = None
        candidates = [n for n in self.nodes if self._reachable(n)]
        self.elect(self.rng.choice(candidates))
        old.up = True  # restarts as a follower and catches up from the log
        self._catch_up()

    def add_worker(
        self,
        worker_id: str,
        capacity: int = 4,
        run_ms: int = 500,
        *,
        labels: dict[str, str] | None = None,
        exit_code: Callable[[worker_pb2.Lease], int] | None = None,
    ) -> SimWorker:
        w = SimWorker(worker_id, capacity, run_ms, labels=labels, exit_code=exit_code)
        self.workers[worker_id] = w
        if self.core is not None:
            self.core.worker_connected(worker_id, capacity, ["default"], w.labels)
        return w

    # ------------------------------------------------------------------------------------ driving

    def submit(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        """A client write through the leader (the leader sees its outcome, as the node's servicer does)."""
        assert self.core is not None
        results = self._apply_and_answer(cmds)
        self.core.on_committed(cmds, results, self.clock.wall, self.clock.mono)
        return results

    def _apply_and_answer(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        if self.leader is None or not self._has_quorum():
            raise OutcomeUnknown("no quorum")
        self.log.append(encode_batch(cmds))
        index = len(self.log)
        leader = self.leader
        while leader.applied_upto < index - 1:
            leader.applied_upto += 1
            leader.sm.apply_entry(leader.applied_upto, self.log[leader.applied_upto - 1])
        raw = leader.sm.apply_entry(index, self.log[-1])
        leader.applied_upto = index
        self._catch_up()
        assert raw is not None
        res = commands_pb2.BatchResult()
        res.ParseFromString(raw)
        if self.rng.random() < self.drop_rate:
            raise OutcomeUnknown("reply lost")
        return list(res.results)

    def _run(self, cmds: list[Command]) -> None:
        assert self.core is not None
        try:
            results = self._apply_and_answer(cmds)
        except OutcomeUnknown:
            self.core.on_proposal_failed(cmds, self.clock.mono)
            raise
        self.core.on_committed(cmds, results, self.clock.wall, self.clock.mono)

    def step(self, ms: int = 100) -> None:
        self.clock.advance(ms)
        core = self.core
        if core is None:
            return
        now, mono = self.clock.wall, self.clock.mono
        if not core.ready:
            try:
                self._run([core.epoch_command(now)])
                core.on_epoch_committed(now, mono)
            except OutcomeUnknown:
                return
        # Workers report what finished; heartbeats renew what runs.
        for w in self.workers.values():
            if not (w.alive and w.connected):
                continue
            results = w.finished(mono, now)
            if results:
                cmds = core.results(w.worker_id, results, now)
                if cmds:
                    with contextlib.suppress(OutcomeUnknown):
                        self._run(cmds)
            ack = core.heartbeat(w.worker_id, w.lease_refs(), mono)
            for eid in ack.revoked:
                w.running.pop(eid, None)
        cmds = core.tick(now, mono)
        if cmds:
            with contextlib.suppress(OutcomeUnknown):
                self._run(cmds)
        self._deliver()

    def _deliver(self) -> None:
        assert self.core is not None
        for worker_id, msg in self.core.drain_outgoing():
            w = self.workers.get(worker_id)
            if w is None or not (w.alive and w.connected):
                continue
            kind = msg.WhichOneof("kind")
            if kind == "leases":
                for lease in msg.leases.leases:
                    # What the runner does as it writes an offer to a stream (restamp): only an offer
                    # written may have begun (a dropped one expires as unstarted).
                    held = lease.start_delay_ms if lease.start_at_ms else None
                    self.core.offered(
                        lease.execution_id, lease.token, None if held is None else self.clock.mono + held
                    )
                    w.offer(lease, self.clock.mono)
            elif kind == "acks":
                for eid in msg.acks.execution_ids:
                    w.unacked.pop(eid, None)

    def run_for(self, ms: int, step_ms: int = 100) -> None:
        for _ in range(ms // step_ms):
            self.step(step_ms)

    # ------------------------------------------------------------------------------------ inspection

    def heal(self) -> None:
        self.partitioned.clear()
        self._catch_up()

    def dumps(self) -> list[dict[str, dict[bytes, bytes]]]:
        return [n.kv.dump() for n in self.nodes]
