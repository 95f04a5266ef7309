"""No fire lost (issue 17): an attempt that ended before its payload began is not an attempt.

Every path by which a committed fire could end without ever running, each closed here:
- the worker reports ATTEMPT_NOT_STARTED (a held start unconfirmed at its deadline, fenced, revoked,
  cancelled, shut down, or stopped while its sensor waited): the state machine grants the execution
  again, same attempt number, whatever its guarantee; a cancel asked for ends it cancelled;
- the leader expires a lease it knows never began (ExpireLease.unstarted): a held start it never
  confirmed, or a lease the very process it was granted to does not hold after a failover;
- a pause committed after a fire ahead but before its due time un-fires it, so a resume in time fires
  that nominal time after all (it used to end cancelled, and the resume went on to the next one);
- a fixed-delay task whose run ended while it was paused plans its next run on resume (the chain used to
  stop for good).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fake_gateway import (
    connected_stream,
    fake_leader,
    get,
    heartbeat_listing,
    make_lease,
    offers,
    running_worker,
    worker_config,
)
from test_fire_ahead import DUE, LEAD, T0, Command, Store, leader_over, recurring, stamp_lease, task_id

from cronraft.daemon.leader import CONFIRM_AHEAD_MS, CONFIRM_MARGIN_MS, LeaderCore, LeaderSettings
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import make_id
from cronraft.raft.commands import MAX_REGRANTS
from tests.support.grants import grants_in

PY = sys.executable
GUARANTEES = [common_pb2.AT_MOST_ONCE, common_pb2.AT_LEAST_ONCE, common_pb2.EXACTLY_ONCE]


def held_execution(s: Store, guarantee: int = common_pb2.AT_MOST_ONCE) -> common_pb2.Execution:
    """A one-time task (no retry policy) fired and granted ahead of its due time."""
    tid = s.create(1, guarantee=guarantee)
    ex = s.fire(tid, DUE - 400, LEAD).execution
    granted = s.grant(ex.execution_id, DUE - 400, LEAD)
    assert granted.applied, granted.error
    return granted.execution


def complete(s: Store, ex: common_pb2.Execution, outcome: int, at_ms: int) -> commands_pb2.CommandResult:
    (res,) = s.apply(
        [
            Command(
                stamped_at_ms=at_ms,
                complete=commands_pb2.Complete(
                    execution_id=ex.execution_id,
                    token=ex.token,
                    result=common_pb2.AttemptResult(
                        execution_id=ex.execution_id,
                        token=ex.token,
                        outcome=common_pb2.AttemptOutcome.ValueType(outcome),
                        error="lease expired before renewal; not started (self-fenced)",
                        finished_at_ms=at_ms,
                    ),
                ),
            )
        ]
    )
    return res


def expire(s: Store, ex: common_pb2.Execution, at_ms: int, *, unstarted: bool) -> commands_pb2.CommandResult:
    (res,) = s.apply(
        [
            Command(
                stamped_at_ms=at_ms,
                expire_lease=commands_pb2.ExpireLease(
                    execution_id=ex.execution_id, token=ex.token, unstarted=unstarted
                ),
            )
        ]
    )
    return res


def stored(s: Store, execution_id: str) -> common_pb2.Execution | None:
    with s.kv.read() as txn:
        return sm.read_execution(txn, execution_id)


# -- the state machine ----------------------------------------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES, ids=common_pb2.DeliveryGuarantee.Name)
def test_a_start_that_never_began_is_granted_again_without_spending_an_attempt(guarantee: int) -> None:
    s = Store()
    ex = held_execution(s, guarantee)
    assert ex.attempt == 1
    res = complete(s, ex, common_pb2.ATTEMPT_NOT_STARTED, DUE + 2_000)
    assert res.applied, res.error
    assert res.execution.state == common_pb2.EXECUTION_PENDING  # not failed: nothing ran
    assert res.execution.attempt == 0 and res.execution.regrants == 1
    assert res.execution.attempts[-1].outcome == common_pb2.ATTEMPT_NOT_STARTED
    again = s.grant(ex.execution_id, DUE + 2_001, LEAD)
    assert again.applied, again.error
    assert again.execution.attempt == 1  # the first real attempt is still attempt 1
    assert (again.execution.token.term, again.execution.token.index) != (ex.token.term, ex.token.index)
    late = complete(s, ex, common_pb2.ATTEMPT_SUCCEEDED, DUE + 2_002)  # the old token is fenced off
    assert not late.applied and late.error_code == "stale_token"


def test_a_start_that_never_began_ends_cancelled_when_a_cancel_was_asked_for() -> None:
    s = Store()
    ex = held_execution(s)
    (asked,) = s.apply(
        [
            Command(
                stamped_at_ms=DUE - 300,
                cancel_execution=commands_pb2.CancelExecution(execution_id=ex.execution_id, reason="ops"),
            )
        ]
    )
    assert asked.applied, asked.error
    res = complete(s, ex, common_pb2.ATTEMPT_NOT_STARTED, DUE - 200)
    assert res.execution.state == common_pb2.EXECUTION_CANCELLED
    assert "before it started" in res.execution.error


def test_regrants_are_bounded_then_count_as_a_failed_attempt() -> None:
    s = Store()
    ex = held_execution(s)
    now = DUE + 1
    for _ in range(MAX_REGRANTS):
        assert (
            complete(s, ex, common_pb2.ATTEMPT_NOT_STARTED, now).execution.state
            == common_pb2.EXECUTION_PENDING
        )
        now += 1
        ex = s.grant(ex.execution_id, now, LEAD).execution
    res = complete(s, ex, common_pb2.ATTEMPT_NOT_STARTED, now + 1)
    assert (
        res.execution.state == common_pb2.EXECUTION_FAILED
    )  # a worker that never starts cannot cycle it forever


@pytest.mark.parametrize("guarantee", GUARANTEES, ids=common_pb2.DeliveryGuarantee.Name)
def test_an_unstarted_lease_expiry_grants_again_for_every_guarantee(guarantee: int) -> None:
    s = Store()
    ex = held_execution(s, guarantee)
    res = expire(s, ex, DUE + 8_000, unstarted=True)
    assert res.applied, res.error
    assert res.execution.state == common_pb2.EXECUTION_PENDING and res.execution.attempt == 0
    assert res.execution.regrants == 1


def test_an_expiry_that_may_have_started_keeps_its_contract() -> None:
    """at_most_once: a lease that may have begun is never run again (unchanged)."""
    s = Store()
    ex = held_execution(s, common_pb2.AT_MOST_ONCE)
    res = expire(s, ex, DUE + 8_000, unstarted=False)
    assert res.execution.state == common_pb2.EXECUTION_LOST


def test_a_pause_before_the_due_time_unfires_and_a_resume_in_time_fires_the_same_nominal_time() -> None:
    s = Store()
    tid = recurring(s, 1)
    ex = s.fire(tid, DUE - 400, LEAD).execution
    assert s.grant(ex.execution_id, DUE - 400, LEAD).applied
    (paused,) = s.apply([Command(stamped_at_ms=DUE - 300, pause_task=commands_pb2.PauseTask(task_id=tid))])
    assert paused.applied, paused.error
    assert [c.execution_id for c in paused.cancels] == [ex.execution_id]  # its worker drops it
    assert stored(s, ex.execution_id) is None  # never began: the fire is undone
    assert paused.task.next_fire_ms == DUE and paused.task.fire_count == 0
    with s.kv.read() as txn:
        (rec,) = sm.ledger(txn, tid, DUE, DUE, 10)
    assert rec.outcome == common_pb2.PAUSED
    (resumed,) = s.apply([Command(stamped_at_ms=DUE - 200, resume_task=commands_pb2.ResumeTask(task_id=tid))])
    assert resumed.applied and resumed.task.next_fire_ms == DUE
    again = s.fire(tid, DUE - 100, LEAD, eid=2)
    assert again.applied, again.error
    assert again.execution.nominal_time_ms == DUE


def test_a_pause_before_the_due_time_resumed_after_it_records_the_time_as_paused() -> None:
    s = Store()
    tid = recurring(s, 1)
    s.fire(tid, DUE - 400, LEAD)
    s.apply([Command(stamped_at_ms=DUE - 300, pause_task=commands_pb2.PauseTask(task_id=tid))])
    (resumed,) = s.apply([Command(stamped_at_ms=DUE + 500, resume_task=commands_pb2.ResumeTask(task_id=tid))])
    assert resumed.task.next_fire_ms == DUE + 10_000  # the paused time passed: the next one
    with s.kv.read() as txn:
        (rec,) = sm.ledger(txn, tid, DUE, DUE, 10)
    assert rec.outcome == common_pb2.PAUSED


def test_a_fixed_delay_run_that_ended_while_paused_plans_the_next_run_on_resume() -> None:
    s = Store()
    tid = task_id(7)
    spec = common_pb2.TaskSpec(
        name="chain",
        schedule=common_pb2.Schedule(
            fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=5_000), start_at_ms=DUE
        ),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
    )
    (res,) = s.apply([Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=tid, spec=spec))])
    assert res.applied, res.error
    ex = s.fire(tid, DUE, 0).execution  # at its due time: nothing held
    ex = s.grant(ex.execution_id, DUE + 1, 0).execution
    s.apply([Command(stamped_at_ms=DUE + 10, pause_task=commands_pb2.PauseTask(task_id=tid))])
    done = complete(s, ex, common_pb2.ATTEMPT_SUCCEEDED, DUE + 100)
    assert done.execution.state == common_pb2.EXECUTION_SUCCEEDED
    (resumed,) = s.apply(
        [Command(stamped_at_ms=DUE + 1_000, resume_task=commands_pb2.ResumeTask(task_id=tid))]
    )
    assert resumed.task.next_fire_ms == DUE + 100 + 5_000  # the delay counts from the run's end
    (late,) = s.apply([Command(stamped_at_ms=DUE + 9_000, pause_task=commands_pb2.PauseTask(task_id=tid))])
    assert late.applied


def test_a_fixed_delay_run_due_while_paused_is_due_at_the_resume() -> None:
    """The run after the pause was planned (the previous one ended before it) and came due while paused:
    the resume records it `paused` and the chain goes on with a run due at once. It walked the schedule's
    next times past it (fixed delay has none) and completed the task: no run ever again."""
    s = Store()
    tid = task_id(8)
    spec = common_pb2.TaskSpec(
        name="chain",
        schedule=common_pb2.Schedule(
            fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=5_000), start_at_ms=DUE
        ),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
    )
    (res,) = s.apply([Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=tid, spec=spec))])
    assert res.applied, res.error
    ex = s.fire(tid, DUE, 0).execution
    ex = s.grant(ex.execution_id, DUE + 1, 0).execution
    done = complete(s, ex, common_pb2.ATTEMPT_SUCCEEDED, DUE + 100)
    assert done.task.next_fire_ms == DUE + 100 + 5_000
    s.apply([Command(stamped_at_ms=DUE + 200, pause_task=commands_pb2.PauseTask(task_id=tid))])
    resume_at = DUE + 20_000  # past the planned run's due time
    (resumed,) = s.apply([Command(stamped_at_ms=resume_at, resume_task=commands_pb2.ResumeTask(task_id=tid))])
    assert resumed.applied, resumed.error
    assert resumed.task.state == common_pb2.TASK_SCHEDULED
    assert resumed.task.next_fire_ms == resume_at
    with s.kv.read() as txn:
        (rec,) = sm.ledger(txn, tid, DUE + 5_100, DUE + 5_100, 10)
    assert rec.outcome == common_pb2.PAUSED
    fire = commands_pb2.Fire(
        task_id=tid, nominal_time_ms=resume_at, execution_id=make_id(resume_at, b"\x02" * 10)
    )
    (fired,) = s.apply([Command(stamped_at_ms=resume_at, fire=fire)])
    assert fired.applied and fired.execution.nominal_time_ms == resume_at, fired.error


# -- the leader -----------------------------------------------------------------------------------


def leased(s: Store, core: LeaderCore, incarnation: str = "inc-1") -> tuple[worker_pb2.Lease, int]:
    """Fire and grant a one-time task ahead through the leader core; the lease and its start (mono)."""
    core.worker_connected("w1", 10, ["default"], {}, 0, incarnation=incarnation)
    cmds = core.tick(DUE - LEAD, 1_000)  # the fire and its grant
    grants = grants_in(cmds)
    assert grants and grants[0].worker_incarnation == incarnation
    results = s.apply(cmds)
    assert all(r.applied for r in results), [r.error for r in results]
    core.on_committed(cmds, results, DUE - LEAD, 1_000)
    ((_, msg),) = [o for o in core.drain_outgoing() if o[1].HasField("leases")]
    (lease,) = msg.leases.leases
    start_mono = 1_000 + LEAD  # the due time on the leader's monotonic clock
    core.offered(lease.execution_id, lease.token, start_mono)
    return lease, start_mono


def expiry_of(core: LeaderCore, mono_ms: int) -> commands_pb2.ExpireLease:
    cmds = core.tick(DUE + 20_000, mono_ms)
    (x,) = [c.expire_lease for c in cmds if c.HasField("expire_lease")]
    return x


def renew(core: LeaderCore, lease: worker_pb2.Lease, mono_ms: int) -> None:
    ref = worker_pb2.LeaseRef(execution_id=lease.execution_id, token=lease.token)
    ack = core.heartbeat("w1", [ref], mono_ms)
    assert lease.execution_id in ack.renewed


def test_a_held_lease_never_confirmed_expires_as_unstarted() -> None:
    s = Store()
    s.create(1)
    core = leader_over(s, LEAD)
    lease, start = leased(s, core)
    renew(core, lease, start - CONFIRM_AHEAD_MS - CONFIRM_MARGIN_MS - 1)  # too early to confirm a start
    assert expiry_of(core, start + 60_000).unstarted


def test_a_held_lease_renewed_near_its_start_may_have_begun() -> None:
    s = Store()
    s.create(1)
    core = leader_over(s, LEAD)
    lease, start = leased(s, core)
    renew(core, lease, start - CONFIRM_AHEAD_MS)  # the confirming heartbeat: the worker may start it
    assert not expiry_of(core, start + 60_000).unstarted


@pytest.mark.parametrize("same_process", [True, False])
def test_a_new_leader_expires_an_earlier_lease_its_process_does_not_hold(same_process: bool) -> None:
    s = Store()
    s.create(1)
    old = leader_over(s, LEAD)
    lease, _ = leased(s, old, incarnation="inc-1")
    (epoch,) = s.apply([Command(stamped_at_ms=DUE, epoch=commands_pb2.Epoch(term=2, leader_id="n2"))])
    assert epoch.applied
    n = iter(range(1, 1 << 30))
    new = LeaderCore(
        s.kv,
        LeaderSettings(horizon_ms=10_000, fire_lead_ms=LEAD),
        node_id="n2",
        term=2,
        new_id=lambda ms: make_id(ms, next(n).to_bytes(10, "big")),
    )
    new.on_epoch_committed(DUE, 5_000)
    new.worker_connected("w1", 10, ["default"], {}, 5_000, incarnation="inc-1" if same_process else "inc-2")
    new.heartbeat("w1", [], 5_001, complete_listing=True)  # holds nothing, finished nothing
    cmds = new.tick(DUE + 1, 5_002)
    (x,) = [c.expire_lease for c in cmds if c.HasField("expire_lease")]
    assert x.execution_id == lease.execution_id
    assert x.unstarted is same_process  # a restarted process may have begun it before it died


@pytest.mark.parametrize(
    ("case", "expired"),
    [
        ("written to the old stream", True),
        ("listed as held", False),
        ("written to the new stream", False),
        ("another process", False),
    ],
)
def test_a_complete_listing_on_a_new_stream_expires_offers_the_old_stream_swallowed(
    case: str, expired: bool
) -> None:
    """S6: a worker cut from the leader comes back on a new stream (through a follower's relay); the
    offers written into the dead stream never reached it. Its complete listing on the new stream
    expires them at once as never begun, instead of after TTL + grace; nothing else."""
    s = Store()
    s.create(1)
    core = leader_over(s, LEAD)
    lease, start = leased(s, core, incarnation="inc-1")  # offered on the worker's first stream
    core.worker_connected(
        "w1", 10, ["default"], {}, 2_000, incarnation="inc-2" if case == "another process" else "inc-1"
    )
    if case == "written to the new stream":
        core.offered(lease.execution_id, lease.token, start)  # re-written: may still be in flight
    held = [worker_pb2.LeaseRef(execution_id=lease.execution_id, token=lease.token)]
    core.heartbeat("w1", held if case == "listed as held" else [], 2_001, complete_listing=True)
    cmds = core.tick(DUE - LEAD + 1, 2_002)
    found = [c.expire_lease for c in cmds if c.HasField("expire_lease")]
    if not expired:
        assert not found
        return
    (x,) = found
    assert x.execution_id == lease.execution_id
    assert x.unstarted  # never received, so never begun: the attempt is not spent


# -- the worker -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_lease_granted_ahead_but_read_after_its_due_time_still_waits_for_confirmation(
    tmp_path: Path,
) -> None:
    """The leader counts a held lease it never confirmed as never begun; so must the worker, even when
    the offer reached it with no delay left (written late): it starts only once confirmed."""
    stamps = tmp_path / "stamps"
    async with (
        fake_leader(lease_ttl_ms=30_000) as leader,
        running_worker(worker_config([leader.address], tmp_path / "o")) as worker,
    ):
        first = await get(leader.first_messages)
        assert first.hello.incarnation == worker.incarnation and len(worker.incarnation) == 32
        stream = await connected_stream(leader)
        leader.answer_heartbeats = False
        lease = stamp_lease("exec-late", stamps, 0)
        lease.start_at_ms = 1  # granted ahead of a due time long past
        stream.put_nowait(offers(lease))
        await heartbeat_listing(leader, {"exec-late"})
        for _ in range(3):  # unanswered heartbeats: not confirmed, not started
            await get(leader.heartbeats)
        assert not stamps.exists()
        leader.answer_heartbeats = True
        result = await leader.result_for("exec-late")
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED and stamps.exists()


@pytest.mark.asyncio
async def test_a_stop_while_the_sensor_waits_reports_not_started(tmp_path: Path) -> None:
    async with (
        fake_leader() as leader,
        running_worker(worker_config([leader.address], tmp_path / "o")),
    ):
        stream = await connected_stream(leader)
        lease = make_lease("exec-sensor", argv=[PY, "-c", "print('payload')"])
        lease.sensor.probe.command.argv.extend([PY, "-c", "raise SystemExit(1)"])  # never satisfied
        lease.sensor.interval_ms = 60_000
        lease.sensor.timeout_ms = 600_000
        stream.put_nowait(offers(lease))
        await heartbeat_listing(leader, {"exec-sensor"})
        stream.put_nowait(
            worker_pb2.GatewayMessage(
                cancel=worker_pb2.CancelAttempt(execution_id="exec-sensor", token=lease.token)
            )
        )
        result = await leader.result_for("exec-sensor")
    assert result.outcome == common_pb2.ATTEMPT_NOT_STARTED
    assert "while waiting for its sensor" in result.error


def immediate_lease(s: Store, core: LeaderCore) -> None:
    """A task that may not fire ahead (a concurrency limit), fired and granted at its due time."""
    s.create(1, max_concurrency=1)
    cmds = core.tick(DUE, 1_000)
    assert [c.WhichOneof("body") for c in cmds] == ["fire"] and len(grants_in(cmds)) == 1  # carried
    results = s.apply(cmds)
    assert all(r.applied for r in results), [r.error for r in results]
    core.on_committed(cmds, results, DUE, 1_000)


def test_a_lease_whose_offer_never_reached_a_stream_expires_as_unstarted() -> None:
    s = Store()
    core = leader_over(s, LEAD)
    immediate_lease(s, core)
    core.drain_outgoing()  # dropped with its stream: never written (the runner never restamped it)
    assert expiry_of(core, 60_000).unstarted


def test_a_lease_written_to_its_stream_and_started_on_receipt_may_have_begun() -> None:
    s = Store()
    core = leader_over(s, LEAD)
    immediate_lease(s, core)
    ((_, msg),) = core.drain_outgoing()
    (lease,) = msg.leases.leases
    assert lease.start_at_ms == 0  # not held: the worker starts it on receipt
    core.offered(lease.execution_id, lease.token, None)  # the runner writes it
    assert not expiry_of(core, 60_000).unstarted


def test_a_draining_worker_is_offered_nothing_more() -> None:
    s = Store()
    core = leader_over(s, LEAD)
    core.heartbeat("w1", [], 500, draining=True)
    s.create(1)
    cmds = core.tick(DUE - LEAD, 1_000)
    assert [c.WhichOneof("body") for c in cmds] == ["fire"]  # fired, but no grant to a draining worker
    assert grants_in(cmds) == []
