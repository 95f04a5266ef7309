"""Execution semantics in the simulation (virtual time): retries with backoff, the dead-letter queue and
redrive, priority order with aging, routing by labels, per-task and cluster-wide concurrency."""

from __future__ import annotations

import itertools

from cronraft.daemon.leader import LeaderSettings
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import retry
from cronraft.raft import state as sm

from .simcluster import SimCluster
from .test_sim import _create, _executions, _spec


def _at(sim: SimCluster, delay_ms: int) -> common_pb2.Schedule:
    return common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=sim.clock.wall + delay_ms))


def test_failures_retry_with_exponential_backoff_then_dead_letter_and_redrive() -> None:
    sim = SimCluster(3, seed=21)
    attempts_at: list[int] = []

    def failing(lease: worker_pb2.Lease) -> int:
        attempts_at.append(sim.clock.wall)
        return 3

    sim.add_worker("w1", capacity=2, run_ms=100, exit_code=failing)
    sim.clock.advance(1)
    policy = common_pb2.RetryPolicy(initial_backoff_ms=2_000, multiplier=3.0, max_backoff_ms=60_000)
    task = _create(sim, _spec("flaky", _at(sim, 500), max_attempts=3, retry=policy))
    sim.run_for(60_000, step_ms=100)
    (ex,) = _executions(sim, 0, task.task_id)
    assert ex.state == common_pb2.EXECUTION_FAILED and ex.dead_lettered and ex.attempt == 3
    assert [a.exit_code for a in ex.attempts] == [3, 3, 3]
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    # Backoff 2 s then 6 s, each reduced by at most 20 % jitter (plus the 100 ms run and step).
    assert 1_600 <= gaps[0] <= 2_400 and 4_800 <= gaps[1] <= 6_400, gaps
    with sim.nodes[2].kv.read() as txn:
        letters, _ = retry.list_dead_letters(txn, task.task_id, 10, "")
    assert [d.execution_id for d in letters] == [ex.execution_id] and letters[0].attempts == 3
    assert "exit" in letters[0].reason or "attempt 3 of 3" in letters[0].reason

    # Redrive: the same execution runs again with a fresh budget; this time it succeeds.
    sim.workers["w1"].exit_code = lambda lease: 0
    sim.submit(
        [
            commands_pb2.Command(
                stamped_at_ms=sim.clock.wall,
                redrive_dead_letters=commands_pb2.RedriveDeadLetters(execution_ids=[ex.execution_id]),
            )
        ]
    )
    sim.run_for(5_000, step_ms=100)
    (again,) = _executions(sim, 1, task.task_id)
    assert again.state == common_pb2.EXECUTION_SUCCEEDED and again.redrives == 1 and again.attempt == 4
    with sim.nodes[0].kv.read() as txn:
        assert retry.list_dead_letters(txn, "", 10, "")[0] == []


def test_non_retryable_exit_codes_are_final_at_once() -> None:
    sim = SimCluster(1, seed=22)
    sim.add_worker("w1", capacity=1, run_ms=100, exit_code=lambda lease: 2)
    sim.clock.advance(1)
    policy = common_pb2.RetryPolicy(initial_backoff_ms=1_000, non_retryable_exit_codes=[2])
    task = _create(sim, _spec("usage-error", _at(sim, 100), max_attempts=5, retry=policy))
    sim.run_for(10_000)
    (ex,) = _executions(sim, 0, task.task_id)
    assert ex.attempt == 1 and ex.state == common_pb2.EXECUTION_FAILED and ex.dead_lettered


def test_dispatch_follows_priority_and_aging_lets_low_through() -> None:
    settings = LeaderSettings(
        horizon_ms=10_000, lease_ttl_ms=5_000, expiry_grace_ms=2_000, aging_step_ms=30_000
    )
    sim = SimCluster(1, seed=23, settings=settings)
    sim.clock.advance(1)
    order: list[str] = []
    names: dict[str, str] = {}

    def record(lease: worker_pb2.Lease) -> int:
        order.append(names[lease.task_id])
        return 0

    due = 1_000
    for name, prio in [("low", common_pb2.LOW), ("medium", common_pb2.MEDIUM), ("high", common_pb2.HIGH)]:
        t = _create(sim, _spec(name, _at(sim, due), priority=prio))
        names[t.task_id] = name
    sim.run_for(2_000)  # all three are pending, no worker yet
    sim.add_worker("w1", capacity=1, run_ms=1_000, exit_code=record)
    sim.run_for(10_000)
    assert order == ["high", "medium", "low"]

    # Aging: a low-priority execution that waited two aging steps goes before a fresh high one.
    order.clear()
    sim.workers["w1"].alive = False
    sim.core.worker_disconnected("w1")  # type: ignore[union-attr]
    old_low = _create(sim, _spec("old-low", _at(sim, 100), priority=common_pb2.LOW))
    names[old_low.task_id] = "old-low"
    sim.run_for(65_000)
    fresh = _create(sim, _spec("fresh-high", _at(sim, 100), priority=common_pb2.HIGH))
    names[fresh.task_id] = "fresh-high"
    sim.run_for(1_000)
    sim.add_worker("w2", capacity=1, run_ms=1_000, exit_code=record)
    sim.run_for(10_000)
    assert order == ["old-low", "fresh-high"]


def test_labels_route_work_and_a_fire_without_an_eligible_worker_waits() -> None:
    sim = SimCluster(1, seed=24)
    gpu = sim.add_worker("gpu-1", capacity=2, run_ms=100, labels={"gpu": "yes"})
    cpu = sim.add_worker("cpu-1", capacity=2, run_ms=100)
    sim.clock.advance(1)
    needs_gpu = _spec("train", _at(sim, 500))
    needs_gpu.worker_labels["gpu"] = "yes"
    needs_tpu = _spec("tpu", _at(sim, 500))
    needs_tpu.worker_labels["tpu"] = "v5"
    t1 = _create(sim, needs_gpu)
    t2 = _create(sim, needs_tpu)
    sim.run_for(5_000)
    assert [e for e, _, _ in gpu.started] == [_executions(sim, 0, t1.task_id)[0].execution_id]
    assert cpu.started == []
    (waiting,) = _executions(sim, 0, t2.task_id)
    assert waiting.state == common_pb2.EXECUTION_PENDING


def _peaks(sim: SimCluster, task_id: str, steps: int = 100) -> tuple[int, int]:
    peak_task, peak_all = 0, 0
    for _ in range(steps):
        sim.step(100)
        with sim.nodes[0].kv.read() as txn:
            running = list(sm.running_executions(txn))
        peak_task = max(peak_task, sum(e.task_id == task_id for e in running))
        peak_all = max(peak_all, len(running))
    return peak_task, peak_all


def test_max_concurrency_bounds_a_tasks_running_executions() -> None:
    sim = SimCluster(1, seed=25)
    sim.add_worker("w1", capacity=10, run_ms=3_000)
    sim.clock.advance(1)
    every_second = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1_000))
    task = _create(sim, _spec("burst", every_second, max_concurrency=2))
    assert _peaks(sim, task.task_id) == (2, 2)


def test_the_cluster_wide_cap_bounds_all_running_executions() -> None:
    settings = LeaderSettings(horizon_ms=10_000, lease_ttl_ms=5_000, expiry_grace_ms=2_000, max_running=3)
    sim = SimCluster(1, seed=26, settings=settings)
    w = sim.add_worker("w1", capacity=10, run_ms=3_000)
    sim.clock.advance(1)
    every_second = common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1_000))
    task = _create(sim, _spec("a", every_second))
    _create(sim, _spec("b", every_second))
    _, peak_all = _peaks(sim, task.task_id)
    assert peak_all == 3
    assert len(w.running) <= 3


def test_a_fire_without_an_eligible_worker_shows_why_and_expires_at_its_start_deadline() -> None:
    sim = SimCluster(3, seed=27)
    sim.add_worker("cpu-1", capacity=2, run_ms=100)
    sim.clock.advance(1)
    spec = _spec("needs-tpu", _at(sim, 500), start_deadline_ms=10_000)
    spec.worker_labels["tpu"] = "v5"
    task = _create(sim, spec)
    sim.run_for(4_000)
    (ex,) = _executions(sim, 1, task.task_id)
    assert ex.state == common_pb2.EXECUTION_PENDING
    assert ex.waiting_reason == "no worker of queue 'default' carries labels tpu=v5"
    sim.run_for(10_000)
    (ex,) = _executions(sim, 2, task.task_id)
    assert ex.state == common_pb2.EXECUTION_EXPIRED
    assert "not started within 10000 ms" in ex.error and "tpu=v5" in ex.error


def test_a_downstream_run_waits_for_its_upstream_on_the_same_logical_date() -> None:
    sim = SimCluster(3, seed=28)
    sim.add_worker("w1", capacity=4, run_ms=2_000)
    sim.clock.advance(1)
    daily = common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="0 2 * * *", time_zone="UTC"))
    upstream = _create(sim, _spec("extract", daily))
    report_spec = _spec("report", common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="0 1 * * *")))
    report_spec.depends_on.add(task_id=upstream.task_id)
    report = _create(sim, report_spec)
    # 01:00 the report fires; it must wait for 02:00's extract run of the same day to succeed.
    sim.run_for(61 * 60_000 + 5_000, step_ms=1_000)
    (waiting,) = _executions(sim, 0, report.task_id)
    assert waiting.state == common_pb2.EXECUTION_PENDING
    assert waiting.waiting_reason.startswith(f"waiting for extract ({upstream.task_id})")
    with sim.nodes[1].kv.read() as txn:
        (rec,) = sm.ledger(txn, report.task_id, 0, 2**62, 10)
    assert rec.reason == waiting.waiting_reason  # explain says why it did not run
    sim.run_for(62 * 60_000, step_ms=1_000)
    (ran,) = _executions(sim, 0, report.task_id)
    (up,) = _executions(sim, 0, upstream.task_id)
    assert up.state == ran.state == common_pb2.EXECUTION_SUCCEEDED
    assert ran.started_at_ms >= up.finished_at_ms


def test_dependency_cycles_are_refused_naming_the_cycle_and_deadlines_fail_the_run() -> None:
    sim = SimCluster(1, seed=29)
    sim.add_worker("w1")
    sim.clock.advance(1)
    far = common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=4_102_444_800_000))
    a = _create(sim, _spec("a", far))
    b_spec = _spec("b", far)
    b_spec.depends_on.add(task_id=a.task_id)
    b = _create(sim, b_spec)
    a_spec = _spec("a", far)
    a_spec.depends_on.add(task_id=b.task_id)
    (res,) = sim.submit(
        [
            commands_pb2.Command(
                stamped_at_ms=sim.clock.wall,
                update_task=commands_pb2.UpdateTask(task_id=a.task_id, spec=a_spec),
            )
        ]
    )
    assert not res.applied and "cycle: a" in res.error and f"b ({b.task_id})" in res.error

    c_spec = _spec("c", _at(sim, 500), dependency_deadline_ms=5_000)
    c_spec.depends_on.add(task_id=a.task_id)
    c = _create(sim, c_spec)
    sim.run_for(8_000)
    (ex,) = _executions(sim, 0, c.task_id)
    assert ex.state == common_pb2.EXECUTION_FAILED and "dependencies unmet after 5000 ms" in ex.error


def test_a_fixed_delay_task_runs_again_after_each_run_across_a_leader_crash() -> None:
    """Each run's end plans the next one (the end + the delay), a due time the leader's wheel has loaded
    already: the leader learns it from the Complete's result. Before 3d23e14 it ran once, then never again
    while its leader lived."""
    sim = SimCluster(3, seed=29)
    sim.add_worker("w1", capacity=4, run_ms=500)
    sim.clock.advance(1)
    delay = common_pb2.Schedule(fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=2_000))
    task = _create(sim, _spec("chain", delay))
    sim.run_for(12_000)
    before = len(_executions(sim, 0, task.task_id))
    assert before >= 4  # ~2.5 s a run (0.5 s running, then the delay): 4-5 in 12 s
    sim.crash_leader()
    sim.run_for(12_000)
    runs = sorted(_executions(sim, 0, task.task_id), key=lambda e: e.nominal_time_ms)
    assert len(runs) >= before + 3  # it goes on under the new leader
    ended = [e for e in runs if e.state == common_pb2.EXECUTION_SUCCEEDED]
    assert len(ended) >= len(runs) - 1  # all but a run under way (or the one the crash cut) succeeded
    for prev, nxt in itertools.pairwise(runs):
        if prev.completed_at_ms:
            assert nxt.nominal_time_ms == prev.completed_at_ms + 2_000  # never two at once, never early
