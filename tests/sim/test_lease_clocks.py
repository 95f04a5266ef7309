"""Leases never depend on wall clocks (issue 5): the leader's lease expiry follows the monotonic clock
only, whatever the wall clock (or its correction for skew, daemon.clockprobe) does.

Each test would fail if lease deadlines were measured on `now_ms` instead of `mono_ms`: a wall clock
stepped forward by an hour would expire every lease at once, a wall clock standing still would never
expire one. The worker's side (self-fencing on its monotonic clock) is tested in
tests/unit/test_lease_clocks.py.
"""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import make_id

from .simcluster import SimCluster, SimWorker

HOUR = 3_600_000


def _running(sim: SimCluster) -> tuple[str, SimWorker]:
    """One one-time task, leased to a worker whose attempt runs for an hour of monotonic time."""
    w1 = sim.add_worker("w1", capacity=1, run_ms=HOUR)
    sim.clock.advance(1)
    task_id = make_id(sim.clock.wall, sim.rng.randbytes(10))
    spec = common_pb2.TaskSpec(
        name="long",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 1_000)),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
        queue="default",
    )
    (res,) = sim.submit(
        [
            commands_pb2.Command(
                request_id="c1",
                stamped_at_ms=sim.clock.wall,
                create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec),
            )
        ]
    )
    assert res.applied, res.error
    sim.run_for(2_000)
    assert len(w1.running) == 1
    return task_id, w1


def _execution(sim: SimCluster, task_id: str) -> common_pb2.Execution:
    with sim.nodes[0].kv.read() as txn:
        (ex,), _ = sm.list_executions(txn, task_id)
    return ex


def test_wall_clock_steps_expire_no_renewed_lease() -> None:
    sim = SimCluster(3, seed=11)
    task_id, w1 = _running(sim)
    for step in (HOUR, -2 * HOUR, 5_000, -5_000):  # NTP steps, a skew correction, both ways
        sim.clock.wall += step
        sim.run_for(3 * (sim.settings.lease_ttl_ms + sim.settings.expiry_grace_ms))
        ex = _execution(sim, task_id)
        assert ex.state == common_pb2.EXECUTION_RUNNING and ex.attempt == 1, f"after a {step} ms step"
        assert len(w1.running) == 1


def test_an_unrenewed_lease_expires_by_monotonic_time_even_if_the_wall_clock_stands_still() -> None:
    sim = SimCluster(3, seed=12)
    task_id, w1 = _running(sim)
    w1.connected = False  # no heartbeats from here on
    budget = sim.settings.lease_ttl_ms + sim.settings.expiry_grace_ms
    wall = sim.clock.wall
    for _ in range(budget // 100 + 20):
        sim.step(100)
        sim.clock.wall = wall  # the wall clock is frozen (or stepped back by exactly the elapsed time)
    ex = _execution(sim, task_id)
    # Expired (then granted again: the core still counts w1 as connected, its stream never closed).
    assert ex.attempts and "lease expired" in ex.attempts[0].error
    assert ex.attempt == 2
