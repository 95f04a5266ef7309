"""Fire ahead: a task's Fire and Grant commit up to `fire_lead_ms` before its due time, and the worker
holds the start until then, so the commit and dispatch latency no longer delays the start.

The rules under test: the state machine accepts a Fire or Grant ahead only within the (capped) lead and
only for tasks that may fire ahead (overlap allow_all, no dependencies, no concurrency limit); the
execution carries the due time as not_before_ms; a pause or cancel committed before the due time
withdraws it; the leader core proposes eligible fires `fire_lead_ms` early and holds the others for their
due time; the lease tells the worker how long to wait; the worker starts no earlier, and a cancel during
the hold ends the attempt unstarted.
"""

from __future__ import annotations

import sys
import time
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
    worker_clock,
    worker_config,
)

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.daemon.leader.planner import FIRE_COALESCE_MS, coalesce_ms
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.firing import MAX_FIRE_LEAD_MS
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine
from tests.support.grants import grants_in

T0 = 1_767_225_600_000
DUE = T0 + 60_000
LEAD = 500
WINDOW = coalesce_ms(LEAD)  # fires due this long after the lead join its tick
SPACING = 5  # ms between the due times of the coalescing tests' tasks
Command = commands_pb2.Command
PY = sys.executable


def task_id(i: int) -> str:
    return make_id(T0, i.to_bytes(10, "big"))


class Store:
    """One state machine over MemKV; entries applied as given."""

    def __init__(self) -> None:
        self.kv = MemKV()
        self.sm = StateMachine(self.kv)
        self.index = 0
        self.apply([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))])

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)

    def create(self, i: int, *, due: int = DUE, **spec_fields: object) -> str:
        spec = common_pb2.TaskSpec(
            name=f"t{i}",
            schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=due)),
            payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
            queue="default",
            **spec_fields,  # type: ignore[arg-type]
        )
        (res,) = self.apply(
            [Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=task_id(i), spec=spec))]
        )
        assert res.applied, res.error
        return task_id(i)

    def fire(self, tid: str, at_ms: int, lead_ms: int, eid: int = 1) -> commands_pb2.CommandResult:
        cmd = Command(
            stamped_at_ms=at_ms,
            fire=commands_pb2.Fire(
                task_id=tid,
                nominal_time_ms=DUE,
                execution_id=make_id(at_ms, eid.to_bytes(10, "big")),
                lead_ms=lead_ms,
            ),
        )
        (res,) = self.apply([cmd])
        return res

    def grant(self, eid: str, at_ms: int, lead_ms: int) -> commands_pb2.CommandResult:
        cmd = Command(
            stamped_at_ms=at_ms,
            grant=commands_pb2.Grant(execution_id=eid, worker_id="w1", lease_ttl_ms=10_000, lead_ms=lead_ms),
        )
        (res,) = self.apply([cmd])
        return res


# -- the state machine ----------------------------------------------------------------------------


def test_a_fire_commits_ahead_only_within_its_lead_and_carries_the_due_time() -> None:
    s = Store()
    tid = s.create(1)
    early = s.fire(tid, DUE - LEAD - 1, LEAD)
    assert not early.applied and early.error_code == "not_due"
    no_lead = s.fire(tid, DUE - 100, 0)
    assert not no_lead.applied and no_lead.error_code == "not_due"
    res = s.fire(tid, DUE - LEAD, LEAD)
    assert res.applied, res.error
    assert res.execution.not_before_ms == DUE
    assert res.execution.state == common_pb2.EXECUTION_PENDING


def test_the_lead_is_capped_by_the_state_machine() -> None:
    s = Store()
    tid = s.create(1)
    res = s.fire(tid, DUE - MAX_FIRE_LEAD_MS - 1_000, MAX_FIRE_LEAD_MS + 10_000)
    assert not res.applied and res.error_code == "not_due"
    assert s.fire(tid, DUE - MAX_FIRE_LEAD_MS, MAX_FIRE_LEAD_MS + 10_000).applied


@pytest.mark.parametrize(
    "spec_fields",
    [
        {"overlap": common_pb2.OVERLAP_SKIP},
        {"max_concurrency": 1},
        {"depends_on": [common_pb2.Dependency(task_id=task_id(99))]},
    ],
    ids=["overlap-skip", "max-concurrency", "depends-on"],
)
def test_tasks_whose_fire_depends_on_the_moment_never_fire_ahead(spec_fields: dict[str, object]) -> None:
    s = Store()
    if "depends_on" in spec_fields:
        s.create(99)
    tid = s.create(1, **spec_fields)
    res = s.fire(tid, DUE - 100, LEAD)
    assert not res.applied and res.error_code == "not_due"
    late = s.fire(tid, DUE, LEAD)
    assert late.applied and late.execution.not_before_ms == 0  # fired at its due time: nothing to hold


def test_a_grant_ahead_needs_the_lead_and_a_fire_at_its_due_time_holds_nothing() -> None:
    s = Store()
    tid = s.create(1)
    ex = s.fire(tid, DUE - 300, LEAD).execution
    refused = s.grant(ex.execution_id, DUE - 300, 0)
    assert not refused.applied and refused.error_code == "backoff"
    granted = s.grant(ex.execution_id, DUE - 300, LEAD)
    assert granted.applied and granted.execution.state == common_pb2.EXECUTION_RUNNING


def recurring(s: Store, i: int) -> str:
    """A fixed-rate task (every 10 s) whose first fire is due at DUE."""
    (res,) = s.apply(
        [
            Command(
                stamped_at_ms=T0,
                create_task=commands_pb2.CreateTask(
                    task_id=task_id(i),
                    spec=common_pb2.TaskSpec(
                        name=f"r{i}",
                        schedule=common_pb2.Schedule(
                            fixed_rate=common_pb2.FixedRateSchedule(period_ms=10_000, anchor_ms=DUE)
                        ),
                        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
                    ),
                ),
            )
        ]
    )
    assert res.applied, res.error
    assert res.task.next_fire_ms == DUE
    return task_id(i)


def test_a_cancel_before_the_due_time_withdraws_the_fire() -> None:
    s = Store()
    tid = recurring(s, 1)
    ex = s.fire(tid, DUE - 400, LEAD).execution
    assert s.grant(ex.execution_id, DUE - 400, LEAD).applied
    (res,) = s.apply([Command(stamped_at_ms=DUE - 100, cancel_task=commands_pb2.CancelTask(task_id=tid))])
    assert res.applied, res.error
    assert [c.execution_id for c in res.cancels] == [ex.execution_id]  # the worker is told to drop it
    with s.kv.read() as txn:
        from cronraft.raft import state as sm

        stored = sm.read_execution(txn, ex.execution_id)
    assert stored is not None and stored.state == common_pb2.EXECUTION_CANCELLED
    assert "before the execution's due time" in stored.error


def test_a_one_time_task_fired_ahead_cannot_be_paused_and_the_error_says_what_to_cancel() -> None:
    s = Store()
    tid = s.create(1)
    ex = s.fire(tid, DUE - 400, LEAD).execution
    (res,) = s.apply([Command(stamped_at_ms=DUE - 100, pause_task=commands_pb2.PauseTask(task_id=tid))])
    assert not res.applied and res.error_code == "invalid_state"
    assert f"cancel execution {ex.execution_id}" in res.error


def test_a_pause_after_the_due_time_leaves_the_running_execution_alone() -> None:
    s = Store()
    tid = recurring(s, 1)
    ex = s.fire(tid, DUE - 400, LEAD).execution
    assert s.grant(ex.execution_id, DUE - 400, LEAD).applied
    (res,) = s.apply([Command(stamped_at_ms=DUE + 1, pause_task=commands_pb2.PauseTask(task_id=tid))])
    assert res.applied and not res.cancels


# -- the leader core ------------------------------------------------------------------------------


def leader_over(s: Store, lead_ms: int) -> LeaderCore:
    n = iter(range(1, 1 << 30))
    core = LeaderCore(
        s.kv,
        LeaderSettings(horizon_ms=10_000, fire_lead_ms=lead_ms),
        node_id="n1",
        term=1,
        new_id=lambda ms: make_id(ms, next(n).to_bytes(10, "big")),
    )
    core.on_epoch_committed(DUE - 2_000, 0)
    core.worker_connected("w1", 10, ["default"], {})
    return core


def test_the_leader_fires_eligible_tasks_ahead_and_holds_the_others_for_their_due_time() -> None:
    s = Store()
    eager = s.create(1)
    skip = s.create(2, overlap=common_pb2.OVERLAP_SKIP)
    core = leader_over(s, LEAD)
    # Fires due within the coalescing window after the lead go in the same tick (one entry, not one each).
    assert core.tick(DUE - LEAD - WINDOW - 1, 1) == []
    # Wakes for the lead, not for the due time.
    assert core.next_wakeup_ms(DUE - LEAD - WINDOW - 1, 1) == WINDOW + 1

    cmds = core.tick(DUE - LEAD, 2)
    fires = [c.fire for c in cmds if c.HasField("fire")]
    grants = grants_in(cmds)
    assert [f.task_id for f in fires] == [eager] and fires[0].lead_ms == LEAD + WINDOW
    assert len(grants) == 1 and grants[0].lead_ms == LEAD + WINDOW
    assert core.next_wakeup_ms(DUE - LEAD, 2) == LEAD  # the skip task is held for its due time

    results = s.apply(cmds)
    assert all(r.applied for r in results), [r.error for r in results]
    core.on_committed(cmds, results, DUE - LEAD + 40, 42)
    ((worker_id, msg),) = core.drain_outgoing()
    (lease,) = msg.leases.leases
    assert worker_id == "w1" and lease.task_id == eager
    assert lease.start_delay_ms == LEAD - 40  # what is left of the lead when the offer goes out
    assert lease.start_at_ms == DUE  # the runner recomputes the delay from it as the message is written

    at_due = core.tick(DUE, 3)
    assert [c.fire.task_id for c in at_due if c.HasField("fire")] == [skip]
    assert [c.fire.lead_ms for c in at_due if c.HasField("fire")] == [0]
    results = s.apply(at_due)
    assert all(r.applied for r in results), [r.error for r in results]
    core.on_committed(at_due, results, DUE + 5, 50)
    ((_, msg),) = core.drain_outgoing()
    assert [x.start_delay_ms for x in msg.leases.leases] == [0]


def test_fires_due_close_together_are_proposed_in_one_tick() -> None:
    """60 tasks due 5 ms apart (start instants spread over the second, as W5's): the leader, waking when
    it must, fires them in 3 ticks, not 60 (each tick's commands leave in one entry), each ahead."""
    s = Store()
    n = 60
    for i in range(n):
        s.create(i + 1, due=DUE + SPACING * i)
    core = leader_over(s, LEAD)
    now, ticks, fired = DUE - LEAD - 100, 0, 0
    while fired < n:
        fires = [c.fire for c in core.tick(now, now) if c.HasField("fire")]
        if fires:
            ticks += 1
            fired += len(fires)
            assert all(f.lead_ms >= LEAD for f in fires)  # every one still ahead of its due time
        now += max(1, core.next_wakeup_ms(now, now))
    assert ticks == 3  # 21, 21, 18 fires (a 100 ms window: both ends included), not 60 ticks


def test_ticks_between_the_wakeups_start_no_fires_of_the_coalescing_window() -> None:
    """A busy leader ticks at every commit and results message, not only when it asked to wake: those
    ticks fire nothing until a fire is due within the lead, then the whole window goes in one tick."""
    s = Store()
    n = 60
    for i in range(n):
        s.create(i + 1, due=DUE + SPACING * i)
    core = leader_over(s, LEAD)
    now, ticks, fired = DUE - LEAD - 100, 0, 0
    while fired < n:
        fires = [c.fire for c in core.tick(now, now) if c.HasField("fire")]
        if fires:
            ticks += 1
            fired += len(fires)
            assert all(f.lead_ms >= LEAD for f in fires)
            assert now == DUE - LEAD + (ticks - 1) * (WINDOW + SPACING)  # when the window's first is due
        now += 1  # a tick every millisecond
    assert ticks == 3


def test_the_coalescing_window_is_a_fifth_of_the_lead_at_most_100_ms() -> None:
    """A short lead keeps a short window (the time in which a task change no longer reaches a fire grows
    with what the operator set), a long one is capped; without a lead, nothing is coalesced."""
    assert [coalesce_ms(lead) for lead in (0, 4, 50, 500, 5_000)] == [
        0,
        0,
        10,
        FIRE_COALESCE_MS,
        FIRE_COALESCE_MS,
    ]
    assert FIRE_COALESCE_MS == 100
    s = Store()
    near, far = s.create(1, due=DUE), s.create(2, due=DUE + 11)
    core = leader_over(s, 50)
    fires = [c.fire for c in core.tick(DUE - 50, 1) if c.HasField("fire")]
    assert [(f.task_id, f.lead_ms) for f in fires] == [(near, 60)]  # the one due 11 ms later waits
    fires = [c.fire for c in core.tick(DUE - 39, 2) if c.HasField("fire")]
    assert [f.task_id for f in fires] == [far]


def test_without_a_lead_nothing_fires_before_its_due_time() -> None:
    s = Store()
    s.create(1)
    core = leader_over(s, 0)
    assert core.tick(DUE - 1, 1) == []
    assert any(c.HasField("fire") for c in core.tick(DUE, 2))


def test_a_fire_ahead_waiting_for_a_worker_is_granted_ahead_when_one_comes() -> None:
    s = Store()
    tid = s.create(1)
    core = leader_over(s, LEAD)
    core.worker_disconnected("w1")
    cmds = core.tick(DUE - LEAD, 1)
    assert [c.WhichOneof("body") for c in cmds] == ["fire"]
    results = s.apply(cmds)
    core.on_committed(cmds, results, DUE - LEAD, 1)
    core.worker_connected("w2", 1, ["default"], {})
    grants = [c for c in core.tick(DUE - 200, 2) if c.HasField("grant")]
    assert len(grants) == 1 and grants[0].grant.lead_ms == LEAD + WINDOW
    results = s.apply(grants)
    assert results[0].applied, results[0].error
    core.on_committed(grants, results, DUE - 200, 3)
    ((_, msg),) = core.drain_outgoing()
    assert msg.leases.leases[0].task_id == tid and msg.leases.leases[0].start_delay_ms == 200


# -- the worker -----------------------------------------------------------------------------------


def stamp_lease(eid: str, stamps: Path, delay_ms: int) -> worker_pb2.Lease:
    code = f"import time; open({str(stamps)!r}, 'a').write(str(time.monotonic_ns()) + '\\n')"
    lease = make_lease(eid, argv=[PY, "-c", code])
    lease.start_delay_ms = delay_ms
    return lease


@pytest.mark.asyncio
async def test_the_worker_holds_the_start_for_the_lease_delay(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path / "o")):
        stream = await connected_stream(leader)
        sent = time.monotonic_ns()
        stream.put_nowait(offers(stamp_lease("exec-held", stamps, 400)))
        result = await leader.result_for("exec-held")
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED
    started = int(stamps.read_text().split()[0])
    assert started - sent >= 400 * 1_000_000  # never before the delay (the leader's clock: the due time)


@pytest.mark.asyncio
async def test_a_cancel_during_the_hold_ends_the_attempt_unstarted(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path / "o")):
        stream = await connected_stream(leader)
        lease = stamp_lease("exec-withdrawn", stamps, 30_000)
        stream.put_nowait(offers(lease))
        stream.put_nowait(
            worker_pb2.GatewayMessage(
                cancel=worker_pb2.CancelAttempt(execution_id="exec-withdrawn", token=lease.token)
            )
        )
        result = await leader.result_for("exec-withdrawn")
    assert result.outcome == common_pb2.ATTEMPT_NOT_STARTED  # nothing ran: the cluster decides
    assert "cancelled; not started" in result.error and result.started_at_ms == 0
    assert not stamps.exists()


@pytest.mark.asyncio
async def test_a_lease_that_ran_out_during_the_hold_is_fenced_unstarted(tmp_path: Path) -> None:
    """After a SIGSTOP the hold's timer and the fence check wake together; the start must not win (fault
    scenario S8 saw the paused worker start an attempt the leader had already granted elsewhere)."""
    stamps = tmp_path / "stamps"
    clock = worker_clock()
    async with fake_leader(lease_ttl_ms=1000) as leader:
        # No pass of the fence loop after the first: only the check at the start can catch it.
        config = worker_config([leader.address], tmp_path / "o", fence_check_interval_s=3600.0)
        async with running_worker(config, clock=clock):
            stream = await connected_stream(leader)
            stream.put_nowait(offers(stamp_lease("exec-stale", stamps, 300)))
            await heartbeat_listing(leader, {"exec-stale"})  # held (listed as running), not started
            leader.answer_heartbeats = False
            clock.advance_to(1010.0)  # the local deadline (about 1001) passed during the hold
            result = await leader.result_for("exec-stale")
    assert result.outcome == common_pb2.ATTEMPT_NOT_STARTED
    assert "not started" in result.error and "self-fenced" in result.error
    assert not stamps.exists()


@pytest.mark.asyncio
async def test_a_held_start_waits_for_the_leader_to_confirm_the_lease(tmp_path: Path) -> None:
    """Cut off from the leader at its due time, a held lease does not start (it could not be renewed and
    would run again elsewhere); once the leader renews it, it starts (fault scenario S6)."""
    stamps = tmp_path / "stamps"
    async with (
        fake_leader(lease_ttl_ms=30_000) as leader,
        running_worker(worker_config([leader.address], tmp_path / "o")),
    ):
        stream = await connected_stream(leader)
        leader.answer_heartbeats = False
        stream.put_nowait(offers(stamp_lease("exec-unconfirmed", stamps, 100)))
        await heartbeat_listing(leader, {"exec-unconfirmed"})  # received and held
        for _ in range(4):  # the next heartbeats, none answered: well past its 100 ms hold
            hb = await get(leader.heartbeats)
            assert [ref.execution_id for ref in hb.leases] == ["exec-unconfirmed"]  # still held
        assert not stamps.exists()
        leader.answer_heartbeats = True
        result = await leader.result_for("exec-unconfirmed")
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED
    assert stamps.exists()
