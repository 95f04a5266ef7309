"""Leader duties, fencing and dedup in the deterministic simulation (virtual time, no sleeps)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from cronraft.daemon.leader import LeaderSettings
from cronraft.errors import OutcomeUnknown
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import make_id

from .simcluster import SimCluster

MINUTE = 60_000


def _spec(name: str, schedule: common_pb2.Schedule, **kw: object) -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(
        name=name,
        schedule=schedule,
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
        queue="default",
        max_attempts=3,
    )
    for k, v in kw.items():
        if hasattr(v, "SerializeToString"):
            getattr(spec, k).CopyFrom(v)
        else:
            setattr(spec, k, v)
    return spec


def _create(sim: SimCluster, spec: common_pb2.TaskSpec, request_id: str = "") -> common_pb2.Task:
    """Create through the leader, retrying an unknown outcome with the same request id (as the SDK)."""
    task_id = make_id(sim.clock.wall, sim.rng.randbytes(10))
    cmd = commands_pb2.Command(
        request_id=request_id or f"create:{task_id}",
        stamped_at_ms=sim.clock.wall,
        create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec),
    )
    for _ in range(50):
        try:
            (res,) = sim.submit([cmd])
        except OutcomeUnknown:
            continue
        assert res.applied, res.error
        return res.task
    raise AssertionError("could not create the task")


def _executions(sim: SimCluster, node: int, task_id: str) -> list[common_pb2.Execution]:
    with sim.nodes[node].kv.read() as txn:
        execs, _ = sm.list_executions(txn, task_id, page_size=1000)
    return execs


def _cron(expr: str) -> common_pb2.Schedule:
    return common_pb2.Schedule(cron=common_pb2.CronSchedule(expression=expr, time_zone="UTC"))


def test_every_due_fire_runs_once_across_leader_crashes() -> None:
    sim = SimCluster(3, seed=1)
    sim.add_worker("w1")
    sim.add_worker("w2")
    sim.clock.advance(1)
    task = _create(sim, _spec("every-minute", _cron("* * * * *")))
    one_time = _create(
        sim, _spec("once", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 90_000)))
    )

    for minute in range(30):
        sim.run_for(MINUTE, step_ms=250)
        if minute % 7 == 6:
            sim.crash_leader()
    sim.run_for(30_000, step_ms=250)  # let the last runs finish and their results commit

    for node in range(3):
        execs = _executions(sim, node, task.task_id)
        nominals = [e.nominal_time_ms for e in execs]
        assert len(nominals) == len(set(nominals)), "a fire was committed twice"
        expected = {task.next_fire_ms + i * MINUTE for i in range(30)}
        assert expected <= set(nominals), f"missed fires: {sorted(expected - set(nominals))}"
        assert all(e.state == common_pb2.EXECUTION_SUCCEEDED for e in execs if e.nominal_time_ms in expected)
        once = _executions(sim, node, one_time.task_id)
        assert [e.state for e in once] == [common_pb2.EXECUTION_SUCCEEDED]
    dumps = sim.dumps()
    assert dumps[0] == dumps[1] == dumps[2], "nodes diverged"
    # Each execution ran on exactly one worker attempt: no duplicate start of the same execution.
    starts = Counter(eid for w in sim.workers.values() for eid, _, _ in w.started)
    assert max(starts.values()) == 1


def test_worker_crash_expires_lease_and_retries_with_a_newer_token() -> None:
    sim = SimCluster(3, seed=2)
    w1 = sim.add_worker("w1", capacity=1, run_ms=60_000)
    sim.clock.advance(1)
    task = _create(
        sim, _spec("long", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 1_000)))
    )
    sim.run_for(2_000)
    assert len(w1.running) == 1
    first_token = w1.started[0][2]
    w1.alive = False  # crashes: no heartbeats, no results
    sim.core.worker_disconnected("w1")  # type: ignore[union-attr]
    w2 = sim.add_worker("w2", capacity=1, run_ms=1_000)
    sim.run_for(sim.settings.lease_ttl_ms + sim.settings.expiry_grace_ms + 5_000)
    (ex,) = _executions(sim, 0, task.task_id)
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED
    assert ex.attempt == 2
    assert (ex.token.term, ex.token.index) > first_token
    assert w2.started and w2.started[0][2] > first_token


def test_stale_token_result_is_rejected() -> None:
    sim = SimCluster(3, seed=3)
    w1 = sim.add_worker("w1", capacity=1, run_ms=60_000)
    sim.clock.advance(1)
    task = _create(
        sim, _spec("t", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 1_000)))
    )
    sim.run_for(2_000)
    old_lease = next(iter(w1.running.values())).lease
    w1.connected = False  # partitioned: the leader stops hearing from it
    sim.core.worker_disconnected("w1")  # type: ignore[union-attr]
    sim.add_worker("w2", capacity=1, run_ms=1_000)
    sim.run_for(sim.settings.lease_ttl_ms + sim.settings.expiry_grace_ms + 5_000)
    (ex,) = _executions(sim, 0, task.task_id)
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED and ex.worker_id == "w2"
    # The partitioned worker's late result carries the old token: the state machine refuses it.
    late = commands_pb2.Command(
        stamped_at_ms=sim.clock.wall,
        complete=commands_pb2.Complete(
            execution_id=ex.execution_id,
            token=old_lease.token,
            result=common_pb2.AttemptResult(outcome=common_pb2.ATTEMPT_FAILED, exit_code=9),
        ),
    )
    (res,) = sim.submit([late])
    assert not res.applied and res.error_code == "stale_token"
    (after,) = _executions(sim, 1, task.task_id)
    assert after.state == common_pb2.EXECUTION_SUCCEEDED and after.exit_code == 0


def test_lost_replies_are_retried_without_duplicates() -> None:
    sim = SimCluster(3, seed=4, drop_rate=0.3)
    sim.add_worker("w1", capacity=8, run_ms=200)
    sim.clock.advance(1)
    tasks = [_create(sim, _spec(f"t{i}", _cron("*/2 * * * *")), request_id=f"req-{i}") for i in range(5)]
    # The same request ids again: answered from the dedup table, nothing new is created.
    again = [_create(sim, _spec(f"t{i}", _cron("*/2 * * * *")), request_id=f"req-{i}") for i in range(5)]
    assert [t.task_id for t in tasks] == [t.task_id for t in again]
    with sim.nodes[0].kv.read() as txn:
        all_tasks, _ = sm.list_tasks(txn, page_size=100)
    assert len(all_tasks) == 5
    sim.run_for(10 * MINUTE, step_ms=200)
    sim.drop_rate = 0.0
    sim.run_for(MINUTE, step_ms=200)
    for t in tasks:
        execs = _executions(sim, 2, t.task_id)
        nominals = [e.nominal_time_ms for e in execs]
        assert len(nominals) == len(set(nominals))
        assert len(nominals) >= 5
        assert all(e.state == common_pb2.EXECUTION_SUCCEEDED for e in execs)


def test_at_most_once_lost_lease_is_not_redispatched() -> None:
    sim = SimCluster(3, seed=5)
    w1 = sim.add_worker("w1", capacity=1, run_ms=60_000)
    sim.clock.advance(1)
    task = _create(
        sim,
        _spec(
            "amo",
            common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 1_000)),
            guarantee=common_pb2.AT_MOST_ONCE,
        ),
    )
    sim.run_for(2_000)
    w1.alive = False
    sim.core.worker_disconnected("w1")  # type: ignore[union-attr]
    w2 = sim.add_worker("w2", capacity=1, run_ms=100)
    sim.run_for(30_000)
    (ex,) = _executions(sim, 0, task.task_id)
    assert ex.state == common_pb2.EXECUTION_LOST
    assert ex.attempt == 1
    assert w2.started == []


def test_nothing_is_dispatched_before_the_epoch_and_the_grant_commit() -> None:
    sim = SimCluster(3, seed=6)
    sim.add_worker("w1")
    sim.clock.advance(1)
    _create(sim, _spec("t", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 500))))
    # Partition two followers: the leader has no quorum, so nothing commits and nothing goes out.
    sim.partitioned = {"n2", "n3"}
    sim.run_for(5_000)
    assert sim.workers["w1"].started == []
    sim.heal()
    sim.run_for(2_000)
    assert len(sim.workers["w1"].started) == 1


def test_new_leader_waits_out_old_leases_before_redispatch() -> None:
    sim = SimCluster(3, seed=7)
    w1 = sim.add_worker("w1", capacity=1, run_ms=8_000)
    sim.clock.advance(1)
    task = _create(sim, _spec("t", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 500))))
    sim.run_for(1_000)
    assert len(w1.running) == 1
    sim.crash_leader()
    # The worker keeps running and renews with the new leader: the execution is not started twice.
    sim.run_for(15_000)
    (ex,) = _executions(sim, 0, task.task_id)
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED
    assert ex.attempt == 1
    assert len(w1.started) == 1


@pytest.mark.parametrize("n_far", [2_000])
def test_wheel_holds_only_the_horizon(n_far: int) -> None:
    sim = SimCluster(1, seed=8)
    sim.clock.advance(1)
    far = 4_102_444_800_000  # 2100-01-01
    for i in range(n_far):
        _create(sim, _spec(f"far{i}", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=far + i))))
    for i in range(3):
        _create(
            sim,
            _spec(f"near{i}", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 2_000))),
        )
    sim.step(100)
    assert sim.core is not None
    assert len(sim.core.wheel) == 3


def test_a_heartbeat_before_the_epoch_commits_revokes_nothing() -> None:
    sim = SimCluster(3, seed=9)
    w1 = sim.add_worker("w1", capacity=1, run_ms=8_000)
    sim.clock.advance(1)
    _create(sim, _spec("t", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 500))))
    sim.run_for(1_000)
    (lease,) = [a.lease for a in w1.running.values()]
    # A new leader whose epoch has not committed yet (no quorum) hears the worker's heartbeat first.
    sim.partitioned = {"n3"}
    sim.crash_leader()  # n1 dies; n2 leads but cannot commit its epoch while n1 is down and n3 cut off
    assert sim.core is not None and not sim.core.ready
    ack = sim.core.heartbeat("w1", w1.lease_refs(), sim.clock.mono)
    assert list(ack.revoked) == [] and list(ack.renewed) == []
    sim.heal()
    sim.run_for(1_000)
    ack = sim.core.heartbeat("w1", w1.lease_refs(), sim.clock.mono)
    assert list(ack.renewed) == [lease.execution_id]


def test_overlap_skip_holds_across_a_leader_crash() -> None:
    sim = SimCluster(3, seed=10)
    w = sim.add_worker("w1", capacity=4, run_ms=25_000)
    sim.clock.advance(1)
    every10s = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=10_000))
    task = _create(sim, _spec("slow", every10s, overlap=common_pb2.OVERLAP_SKIP))
    sim.run_for(30_000, step_ms=250)
    sim.crash_leader()
    sim.run_for(60_000, step_ms=250)
    # Never two runs at once: each lease is granted after the previous run ended.
    execs = sorted(_executions(sim, 0, task.task_id), key=lambda e: e.nominal_time_ms)
    ran = [e for e in execs if e.state in (common_pb2.EXECUTION_SUCCEEDED, common_pb2.EXECUTION_RUNNING)]
    for a, b in itertools.pairwise(ran):
        assert b.leased_at_ms >= a.finished_at_ms > 0, "two runs of the task overlapped"
    with sim.nodes[1].kv.read() as txn:
        recs = sm.ledger(txn, task.task_id, 0, 2**62, 1000)
    assert sum(r.outcome == common_pb2.SKIPPED_OVERLAP for r in recs) >= 4
    assert len(w.started) == len(ran)


def test_a_stale_result_neither_revokes_the_current_attempt_nor_is_acked_to_its_worker() -> None:
    sim = SimCluster(3, seed=11)
    w1 = sim.add_worker("w1", capacity=1, run_ms=60_000)
    sim.clock.advance(1)
    task = _create(sim, _spec("t", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 500))))
    sim.run_for(1_000)
    old = next(iter(w1.running.values())).lease
    w1.connected = False
    sim.core.worker_disconnected("w1")  # type: ignore[union-attr]
    w2 = sim.add_worker("w2", capacity=1, run_ms=20_000)
    sim.run_for(sim.settings.lease_ttl_ms + sim.settings.expiry_grace_ms + 1_000)
    assert len(w2.running) == 1  # attempt 2 runs on w2
    core = sim.core
    assert core is not None
    # w1 comes back and reports its fenced-off attempt: refused as stale...
    core.worker_connected("w1", 1, ["default"], {})
    stale = common_pb2.AttemptResult(
        execution_id=old.execution_id, token=old.token, outcome=common_pb2.ATTEMPT_FAILED
    )
    cmds = core.results("w1", [stale], sim.clock.wall)
    sim._run(cmds)
    acks = [(w, m) for w, m in core.drain_outgoing() if m.WhichOneof("kind") == "acks"]
    # ...acknowledged to w1 (so it stops resending), not to w2...
    assert [w for w, _ in acks] == ["w1"]
    # ...and w2's running attempt keeps its lease: its heartbeat is renewed, not revoked.
    ack = core.heartbeat("w2", w2.lease_refs(), sim.clock.mono)
    assert list(ack.renewed) == [old.execution_id] and list(ack.revoked) == []
    sim.run_for(25_000)
    (ex,) = _executions(sim, 0, task.task_id)
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED and ex.worker_id == "w2" and ex.attempt == 2


def test_a_silent_worker_is_offered_nothing_and_its_slots_return_when_it_speaks() -> None:
    """A stream cut without a reset (partition) looks connected; a worker silent past
    `worker_silent_ms` gets no new lease, so no attempt is burnt on it (fault scenario S6)."""
    settings = LeaderSettings(
        horizon_ms=10_000, lease_ttl_ms=5_000, expiry_grace_ms=2_000, worker_silent_ms=1_500
    )
    sim = SimCluster(3, seed=5, settings=settings)
    w1 = sim.add_worker("w1", capacity=4, run_ms=200)
    sim.add_worker("w2", capacity=4, run_ms=200)
    sim.clock.advance(1)
    w1.connected = False  # the leader is not told: no heartbeats arrive, offers vanish
    sim.run_for(2_000)
    tasks = [
        _create(
            sim, _spec(f"t{i}", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 500)))
        )
        for i in range(8)
    ]
    sim.run_for(6_000)
    execs = [ex for t in tasks for ex in _executions(sim, 0, t.task_id)]
    assert len(execs) == 8
    assert all(ex.state == common_pb2.EXECUTION_SUCCEEDED for ex in execs)
    assert {ex.worker_id for ex in execs} == {"w2"} and all(ex.attempt == 1 for ex in execs)
    assert not w1.started
    w1.connected = True  # it speaks again: eligible at once
    more = [
        _create(
            sim, _spec(f"u{i}", common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + 500)))
        )
        for i in range(8)
    ]
    sim.run_for(3_000)
    assert {ex.worker_id for t in more for ex in _executions(sim, 0, t.task_id)} == {"w1", "w2"}
