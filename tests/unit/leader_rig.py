"""A leader core over one in-memory state machine, ticked every 10 ms of virtual time: the shared rig of
the leader tests that drive whole fire/grant/complete cycles (test_leader_backoff, test_versions)."""

from __future__ import annotations

import os
from collections.abc import Callable

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine
from tests.support.grants import grants_in

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STEP_MS = 10
Command = commands_pb2.Command


class LeaderRig:
    """`fault` (StateMachine's) raises inside apply for the commands it chooses; with `bounded_wakeup`,
    every step also checks that the wait the core asks for is bounded (never past a lease deadline,
    never a spin)."""

    def __init__(
        self, *, fault: Callable[[Command], None] | None = None, bounded_wakeup: bool = False
    ) -> None:
        self.kv = MemKV()
        self.sm = StateMachine(self.kv, fault=fault) if fault is not None else StateMachine(self.kv)
        self.bounded_wakeup = bounded_wakeup
        self.index = 0
        self.now = T0
        self.mono = 0
        self.proposed: list[Command] = []
        self.apply([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))])
        self.core = LeaderCore(
            self.kv,
            LeaderSettings(horizon_ms=10_000, lease_ttl_ms=5_000, expiry_grace_ms=1_000),
            node_id="n1",
            term=1,
            new_id=lambda ms: make_id(ms, os.urandom(10)),
        )
        self.core.on_epoch_committed(self.now, self.mono)

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)

    def create(self, schedule: common_pb2.Schedule) -> str:
        task_id = make_id(T0, os.urandom(10))
        spec = common_pb2.TaskSpec(
            name="t",
            schedule=schedule,
            payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
            guarantee=common_pb2.AT_LEAST_ONCE,
            max_attempts=3,
            queue="default",
        )
        cmd = Command(stamped_at_ms=self.now, create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec))
        (res,) = self.apply([cmd])
        assert res.applied, res.error
        self.core.on_committed([cmd], [res], self.now, self.mono)
        return task_id

    def run(self, seconds: float) -> None:
        end = self.now + int(seconds * 1000)
        while self.now < end:
            cmds = self.core.tick(self.now, self.mono)
            if cmds:
                self.proposed.extend(cmds)
                self.core.on_committed(cmds, self.apply(cmds), self.now, self.mono)
            if self.bounded_wakeup:
                assert 0 <= self.core.next_wakeup_ms(self.now, self.mono) <= 1000
            self.now += STEP_MS
            self.mono += STEP_MS

    def count(self, kind: str) -> int:
        """Proposed commands of `kind`; "grant" counts grants carried by Fires too (feature
        "fire_grant")."""
        if kind == "grant":
            return len(grants_in(self.proposed))
        return sum(1 for c in self.proposed if c.WhichOneof("body") == kind)
